"""The report as one self-contained HTML page with inline SVG charts.

Nothing is fetched: no scripts, no fonts, no stylesheets, no images from elsewhere (even the
favicon is an empty data: URL), so the page opens the same offline, from an e-mail
attachment or from a CI artifact. The charts are plain SVG drawn here; the numbers on them
come from the exact figures, floats are used only for the geometry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from batcher.report.build import Report, usd
from batcher.report.render import NOTES, NUMERIC, report_sections, show_usd

WIDTH = 760
BAR_COLORS = {"cost": "#2f6fde", "baseline": "#c7ccd6"}

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330;
       margin: 2rem auto; max-width: 1240px; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .25rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
.warning { background: #fff4d6; border: 1px solid #e8c35a; padding: .5rem .75rem; }
.headline { display: flex; gap: 2rem; flex-wrap: wrap; margin: 1rem 0; }
.headline div { background: #f3f5f9; padding: .6rem 1rem; border-radius: 6px; }
.headline b { display: block; font-size: 1.3rem; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #e1e4ea; }
td.num, th.num { white-space: nowrap; }
th { text-align: left; background: #f3f5f9; } td.num, th.num { text-align: right; }
.scroll { overflow-x: auto; }
.charts { display: flex; flex-wrap: wrap; gap: 1.5rem; }
svg.chart { background: #fff; border: 1px solid #e1e4ea; border-radius: 6px; }
svg.chart text { font: 11px system-ui, sans-serif; fill: #1d2330; }
svg.chart .grid { stroke: #e1e4ea; } svg.chart .axis { stroke: #8a93a3; }
"""


def _nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (axis top)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


def _tick(value: float) -> str:
    return f"${value:,.6g}"


def _svg_open(chart_id: str, title: str, height: int) -> list[str]:
    return [
        f'<svg class="chart" id="{chart_id}" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="12" y="20" font-weight="bold">{escape(title)}</text>',
    ]


def runs_chart(report: Report) -> str:
    """Grouped bars on a time axis: what each run cost against its baseline, placed at the
    time it was created (evenly when the runs have no times or share one)."""
    runs = report.runs
    height, top, bottom, left, right = 300, 40, 60, 80, 20
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    # the cost can top the baseline (escalations pay twice), so scale to the larger of both
    amounts = [float(usd(max(r.costs.baseline, r.costs.cost))) for r in runs]
    peak = _nice_max(max(amounts, default=0.0))
    parts = _svg_open("chart-runs", "Cost against baseline per run", height)
    for k in range(5):  # horizontal grid with dollar ticks
        y = top + plot_h - plot_h * k / 4
        parts.append(
            f'<line class="grid" x1="{left}" x2="{WIDTH - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_tick(peak * k / 4)}</text>'
        )
    slot = plot_w / max(len(runs), 1)
    bar = max(1.0, min(28.0, slot * 0.38))
    label_every = max(1, math.ceil(len(runs) / 8))  # dates need about 80 px each
    centres = _time_axis(runs, left + slot / 2, plot_w - slot)
    for n, run in enumerate(runs):
        x0 = centres[n] - bar
        for k, (kind, pusd) in enumerate(
            (("baseline", run.costs.baseline), ("cost", run.costs.cost))
        ):
            h = plot_h * float(usd(pusd)) / peak
            parts.append(
                f'<rect class="bar {kind}" x="{x0 + k * bar:.1f}" y="{top + plot_h - h:.1f}" '
                f'width="{bar:.1f}" height="{h:.1f}" fill="{BAR_COLORS[kind]}">'
                f"<title>run {run.id} {kind}: {escape(show_usd(pusd))}</title></rect>"
            )
        if n % label_every == 0:
            day = run.created_at.strftime("%Y-%m-%d") if run.created_at else ""
            cx = centres[n]
            parts.append(
                f'<text x="{cx:.1f}" y="{top + plot_h + 16}" text-anchor="middle">#{run.id}</text>'
            )
            parts.append(
                f'<text x="{cx:.1f}" y="{top + plot_h + 30}" text-anchor="middle">{day}</text>'
            )
    parts.append(
        f'<line class="axis" x1="{left}" x2="{WIDTH - right}" y1="{top + plot_h}" '
        f'y2="{top + plot_h}"/>'
    )
    legend_y = height - 12
    for k, kind in enumerate(("cost", "baseline")):
        x = left + k * 110
        parts.append(
            f'<rect x="{x}" y="{legend_y - 10}" width="12" height="12" fill="{BAR_COLORS[kind]}"/>'
        )
        parts.append(f'<text x="{x + 18}" y="{legend_y}">{kind}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _time_axis(runs: Sequence, start: float, span: float) -> list[float]:
    """x of each run: proportional to its creation time across the runs shown."""
    times = [r.created_at.timestamp() if r.created_at else None for r in runs]
    known = [t for t in times if t is not None]
    if len(runs) < 2 or len(known) < len(runs) or max(known) == min(known):
        step = span / max(len(runs) - 1, 1)
        return [start + step * n for n in range(len(runs))]
    first, last = min(known), max(known)
    return [start + span * (t - first) / (last - first) for t in known]


def bar_chart(chart_id: str, title: str, bars: Sequence[tuple[str, int | None]]) -> str:
    """Horizontal bars, one a label, each labelled with its exact amount (None: no bar).
    The label column is as wide as the longest label, so no label is cut off."""
    longest = max((len(label) for label, _ in bars), default=0)
    left, right, row_h, top = max(100, 7 * longest + 20), 130, 28, 36
    height = top + row_h * max(len(bars), 1) + 12
    plot_w = WIDTH - left - right
    peak = max((float(usd(v)) for _, v in bars if v), default=0.0) or 1.0
    parts = _svg_open(chart_id, title, height)
    for n, (label, pusd) in enumerate(bars):
        y = top + row_h * n
        parts.append(f'<text x="{left - 8}" y="{y + 17}" text-anchor="end">{escape(label)}</text>')
        w = plot_w * float(usd(pusd)) / peak if pusd and pusd > 0 else 0.0
        parts.append(
            f'<rect class="bar" x="{left}" y="{y + 5}" width="{w:.1f}" height="{row_h - 10}" '
            f'fill="{BAR_COLORS["cost"]}"><title>{escape(label)}: {escape(show_usd(pusd))}'
            "</title></rect>"
        )
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + 17}">{escape(show_usd(pusd))}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _table(columns: Sequence[str], rows: list[list[str]]) -> str:
    num = [all(NUMERIC.match(r[n]) for r in rows) for n in range(len(columns))]
    cls = [' class="num"' if x else "" for x in num]
    head = "".join(f"<th{cls[n]}>{escape(c)}</th>" for n, c in enumerate(columns))
    body = "".join(
        "<tr>" + "".join(f"<td{cls[n]}>{escape(c)}</td>" for n, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _headline(report: Report) -> str:
    t = report.total
    rate = t.costs.discount
    cells = [
        ("paid", show_usd(t.costs.cost)),
        ("baseline", show_usd(t.costs.baseline)),
        ("saved", show_usd(t.costs.saved)),
        ("effective discount", "-" if rate is None else f"{rate * 100:.1f}%"),
        ("succeeded", f"{t.succeeded:,} of {t.items:,}"),
        ("cost per success", show_usd(t.cost_per_success)),
    ]
    inner = "".join(f"<div>{escape(k)}<b>{escape(v)}</b></div>" for k, v in cells)
    return f'<div class="headline">{inner}</div>'


def render_html(report: Report) -> str:
    """One self-contained HTML page: headline figures, the report's tables and three charts
    (cost against baseline per run, cost by tier, cost per success by tier)."""
    label = [(f"{r.tier} ({r.model})", r) for r in report.tiers]
    charts = [
        runs_chart(report),
        bar_chart("chart-tier-cost", "Cost by tier", [(n, r.costs.cost) for n, r in label]),
        bar_chart(
            "chart-tier-cps",
            "Cost per success by tier",
            [(n, r.cost_per_success) for n, r in label],
        ),
    ]
    body = [f"<h1>{escape(report.title())}</h1>", _headline(report)]
    body += [f'<p class="warning">{escape(w)}</p>' for w in report.warnings()]
    body.append('<div class="charts">' + "\n".join(charts) + "</div>")
    # the tables that fit 1280 px; every column is in --format json and csv
    for title, columns, rows in report_sections(report, wide=False):
        body.append(f"<h2>{escape(title)}</h2>")
        body.append(_table(columns, rows) if rows else "<p>(none)</p>")
    body.append("<h2>Failures by reason</h2>")
    failures = [[reason, f"{n:,}"] for reason, n in report.failures]
    body.append(_table(("reason", "failed items"), failures) if failures else "<p>(none)</p>")
    body += [f'<p class="note">{escape(note)}</p>' for note in NOTES]
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(report.title())} - batcher report</title>\n"
        '<link rel="icon" href="data:,">\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )
