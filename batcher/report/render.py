"""Turning a `Report` into text: a rich table, JSON, CSV or Markdown (HTML is report_html.py).

Money is exact everywhere: JSON and CSV carry dollars as fixed-point strings with twelve
decimals (whole picodollars); tables and Markdown trim trailing zeros but never round.
"""

from __future__ import annotations

import csv
import io
import re
import textwrap
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

from batcher.money.amounts import fmt_money
from batcher.plan.groups import short_id
from batcher.report.build import CacheGroupRow, Costs, Report, RunInfo, TierRow, usd

# Wide and fixed: tables take their natural width (money is never cut short) and the same run
# prints the same text on any terminal.
TABLE_WIDTH = 400
NARROW_WIDTH = 100  # the default: fits a 100-column terminal (`--wide` for everything)
NUMERIC = re.compile(r"^(-?\$?[\d,.]+%?|-)$")


def money(pusd: int | None) -> str | None:
    """Exact dollars as a fixed-point string ('0.000001230000'), for machines."""
    return None if pusd is None else format(usd(pusd), "f")


def show_usd(pusd: int | None) -> str:
    """Exact dollars for people: '$1,234.50', '$0.00000123', '-$2.00' (no rounding)."""
    if pusd is None:
        return "-"
    amount = usd(pusd).normalize()
    if amount.as_tuple().exponent > -2:
        amount = amount.quantize(Decimal("0.01"))
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(amount):,f}"


def show_pct(rate: Decimal | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _rate(rate: Decimal | None) -> float | None:
    return None if rate is None else float(rate)


def _when(run: RunInfo) -> str | None:
    return run.created_at.isoformat(timespec="seconds") if run.created_at else None


# ----------------------------------------------------------------------------- JSON


def _costs_json(costs: Costs) -> dict[str, Any]:
    return {
        "cost_usd": money(costs.cost),
        "standard_usd": money(costs.standard),
        "uncached_usd": money(costs.uncached),
        "baseline_usd": money(costs.baseline),
        "routing_usd": money(costs.routing),
        "second_opinions_usd": money(costs.second_opinions),
        "calibration_usd": money(costs.calibration_sample),
        "caching_usd": money(costs.caching),
        "batch_usd": money(costs.batch),
        "saved_usd": money(costs.saved),
        "effective_discount": _rate(costs.discount),
    }


def _tier_json(row: TierRow) -> dict[str, Any]:
    return {
        "tier": row.tier,
        "provider": row.provider,
        "model": row.model,
        "items": row.items,
        "succeeded": row.succeeded,
        "success_rate": _rate(row.success_rate),
        "attempts": row.attempts,
        "reused": row.reused,
        "input_tokens": row.input_tokens,
        "cache_read_tokens": row.cache_read_tokens,
        "cache_write_tokens": row.cache_write_tokens,
        "output_tokens": row.output_tokens,
        "cost_usd": money(row.costs.cost),
        "cost_per_success_usd": money(row.cost_per_success),
        "savings": _costs_json(row.costs),
    }


def _run_json(run: RunInfo) -> dict[str, Any]:
    return {
        "id": run.id,
        "job": run.job_name,
        "status": run.status,
        "in_flight": run.in_flight,
        "created_at": _when(run),
        "items": run.items,
        "succeeded": run.succeeded,
        "unfinished": run.unfinished,
        "cost_usd": money(run.costs.cost),
        "baseline_usd": money(run.costs.baseline),
        "saved_usd": money(run.costs.saved),
    }


def _group_json(group: CacheGroupRow) -> dict[str, Any]:
    return {
        "cache_group": short_id(group.cache_group),
        "prompt": group.name,
        "provider": group.provider,
        "model": group.model,
        "attempts": group.attempts,
        "prefix_tokens": group.prefix_tokens,
        "cacheable_tokens": group.cacheable_tokens,
        "expected_read_tokens": group.expected_read_tokens,
        "read_under_half_of_expected": group.read_low,
        "cache_read_tokens": group.cache_read_tokens,
        "efficiency": _rate(group.efficiency),
    }


def report_dict(report: Report) -> dict[str, Any]:
    """The report as plain data (money as exact strings): what `--format json` prints."""
    return {
        "title": report.title(),
        "in_flight": bool(report.in_flight),
        "warnings": report.warnings(),
        "runs": [_run_json(r) for r in report.runs],
        "tiers": [_tier_json(r) for r in report.tiers],
        "total": _tier_json(report.total),
        "savings": _costs_json(report.total.costs),
        "cache_groups": [_group_json(g) for g in report.cache_groups],
        "lost_batches": [
            {
                "run": row.batch.run_id,
                "batch": row.batch.batch_id,
                "provider": row.batch.provider,
                "provider_batch_id": row.batch.provider_batch_id,
                "requests": row.batch.n_requests,
                "unfinished": row.batch.n_lost,
                "may_have_cost_usd": usd(row.may_cost_pusd),
            }
            for row in report.lost
        ],
        "direct": [
            {
                "model": f"{d.provider}:{d.model}",
                "attempts": d.attempts,
                "possibly_billed_twice": d.resent,
            }
            for d in report.direct
        ],  # fmt: skip
        "agreement": [
            {
                "first_tier": a.tier,
                "compared": a.compared,
                "agreed": a.agreed,
                "agreement_rate": _rate(a.rate),
                "escalated_by_disagreement": a.escalated,
            }
            for a in report.agreement
        ],
        "calibration": [
            {
                "first_tier": r.tier,
                "sampled": r.sampled,
                "agreed": r.agreed,
                "agreement_rate": _rate(r.rate),
            }
            for r in report.calibration
        ],  # fmt: skip
    }


# ----------------------------------------------------------------------------- CSV

CSV_COLUMNS = (
    "section",
    "run",
    "job",
    "status",
    "created_at",
    "tier",
    "provider",
    "model",
    "cache_group",
    "prompt",
    "items",
    "succeeded",
    "success_rate",
    "attempts",
    "reused",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "cost_usd",
    "cost_per_success_usd",
    "baseline_usd",
    "routing_usd",
    "second_opinions_usd",
    "calibration_usd",
    "caching_usd",
    "batch_usd",
    "saved_usd",
    "effective_discount",
    "prefix_tokens",
    "cacheable_tokens",
    "expected_read_tokens",
    "read_under_half_of_expected",
    "cache_efficiency",
)


def _csv_rows(report: Report) -> list[dict[str, Any]]:
    """One long table: a `section` column says whether a row is a run, a tier, the total or
    a cache group, so one CSV carries the whole report."""
    rows: list[dict[str, Any]] = []
    for run in report.runs:
        data = _run_json(run)
        rows.append({"section": "run", "run": run.id, "job": run.job_name, **data})
    for row in [*report.tiers, report.total]:
        data = _tier_json(row)
        data.update(data.pop("savings"))
        section = "total" if row is report.total else "tier"
        rows.append({"section": section, **data, "tier": "" if section == "total" else row.tier})
    for group in report.cache_groups:
        data = _group_json(group)
        data["cache_efficiency"] = data.pop("efficiency")
        rows.append({"section": "cache_group", **data})
    return rows


def render_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(_csv_rows(report))
    return out.getvalue()


# ----------------------------------------------------------------------------- table, md

Section = tuple[str, Sequence[str], list[list[str]]]  # title, columns, rows of cells


def _cash(pusd: int | None, exact: bool) -> str:
    """Exact dollars (Markdown, HTML), or to cents / four significant digits (tables)."""
    if exact or pusd is None:
        return show_usd(pusd)
    return fmt_money(usd(pusd))


def _tier_cells(row: TierRow, wide: bool, exact: bool) -> list[str]:
    model = f"{row.provider}:{row.model}" if wide else row.model
    cells = [
        row.tier,
        model if row.provider else "",
        f"{row.items:,}",
        f"{row.succeeded:,}",
        show_pct(row.success_rate),
        f"{row.attempts:,}",
        f"{row.reused:,}",
        f"{row.input_tokens:,}",
        f"{row.cache_read_tokens:,}",
        f"{row.cache_write_tokens:,}",
        f"{row.output_tokens:,}",
        _cash(row.costs.cost, exact),
        _cash(row.cost_per_success, exact),
        _cash(row.costs.baseline, exact),
    ]
    return cells if wide else [cells[i] for i in NARROW_TIER]


TIER_COLUMNS = (
    "tier", "model", "items", "succeeded", "success", "attempts", "reused", "input tok",
    "cache read tok", "cache write tok", "output tok", "cost", "cost/success", "baseline",
)  # fmt: skip
NARROW_TIER = (0, 1, 2, 4, 5, 11, 12, 13)  # what fits 100 columns; --wide shows all
GROUP_COLUMNS = (
    "cache group", "model", "attempts", "prefix tok", "cacheable tok", "cache read tok",
    "expected read tok", "efficiency", "check",
)  # fmt: skip
NARROW_GROUP = (0, 1, 2, 5, 7, 8)


def report_sections(report: Report, *, wide: bool = True, exact: bool = True) -> list[Section]:
    """The report's tables. Not `wide`: the columns that fit 100 terminal columns (models
    without their provider); not `exact`: money to cents or four significant digits."""

    def cash(pusd: int | None) -> str:
        return _cash(pusd, exact)

    runs = (
        "Runs",
        ("run", "job", "created", "status", "items", "succeeded", "cost", "baseline", "saved")
        if wide
        else ("run", "job", "created", "status", "succeeded", "cost", "baseline", "saved"),
        [
            [
                str(r.id),
                r.job_name,
                (_when(r) or "") if wide else _short_when(r),
                r.status + (" (in flight)" * (r.in_flight and wide)),
                *(
                    [f"{r.items:,}", f"{r.succeeded:,}"]
                    if wide
                    else [f"{r.succeeded:,}/{r.items:,}"]
                ),
                cash(r.costs.cost),
                cash(r.costs.baseline),
                cash(r.costs.saved),
            ]
            for r in report.runs
        ],
    )
    tier_columns = TIER_COLUMNS if wide else [TIER_COLUMNS[i] for i in NARROW_TIER]
    tiers = (
        "By tier",
        tier_columns,
        [_tier_cells(r, wide, exact) for r in [*report.tiers, report.total]],
    )
    c = report.total.costs
    opinions = [["second opinions (see note 2)", cash(c.second_opinions)]] if c.opinions else []
    if c.calibration:
        opinions.append(["calibration sample (see note 2)", cash(c.calibration_sample)])
    savings = (
        "Savings vs baseline",
        ("", "amount"),
        [
            ["baseline (see note 1)", cash(c.baseline)],
            ["saved by routing", cash(c.routing)],
            *opinions,
            ["saved by caching", cash(c.caching)],
            ["saved by batch discount", cash(c.batch)],
            ["total saved", cash(c.saved)],
            ["paid", cash(c.cost)],
            ["effective discount", show_pct(c.discount)],
        ],
    )
    groups = [
        [
            g.label,
            f"{g.provider}:{g.model}" if wide else g.model,
            f"{g.attempts:,}",
            f"{g.prefix_tokens:,}",
            f"{g.cacheable_tokens:,}",
            f"{g.cache_read_tokens:,}",
            f"{g.expected_read_tokens:,}",
            show_pct(g.efficiency),
            "under half of expected" if g.read_low else "",
        ]
        for g in report.cache_groups
    ]
    keep = range(len(GROUP_COLUMNS)) if wide else NARROW_GROUP
    cache = (
        "Cache efficiency (share of cacheable prefix tokens billed as cache reads)",
        [GROUP_COLUMNS[i] for i in keep],
        [[row[i] for i in keep] for row in groups],
    )
    sections = [runs, tiers, savings, cache]
    if report.agreement:
        sections.append(_agreement_section(report))
    if report.calibration:
        sections.append(_calibration_section(report))
    if report.direct:
        rows = [[f"{d.provider}:{d.model}", f"{d.attempts:,}", f"{d.resent:,}"]
                for d in report.direct]  # fmt: skip
        direct = ("Direct mode (one request at a time, standard rates)",
                  ("model", "attempts", "possibly billed twice"), rows)  # fmt: skip
        sections.append(direct)
    return sections


def _calibration_section(report: Report) -> tuple:
    return (
        "Calibration sample (agreement with the frontier tier)",
        ("first tier", "sampled", "agreed", "agreement rate"),
        [[r.tier, f"{r.sampled:,}", f"{r.agreed:,}", show_pct(r.rate)] for r in report.calibration],
    )


def _agreement_section(report: Report) -> tuple:
    return (
        "Agreement cascade (first-tier answers checked by second opinions)",
        ("first tier", "compared", "agreed", "agreement rate", "escalated by disagreement"),
        [
            [a.tier, f"{a.compared:,}", f"{a.agreed:,}", show_pct(a.rate), f"{a.escalated:,}"]
            for a in report.agreement
        ],
    )


def _short_when(run: RunInfo) -> str:
    return f"{run.created_at:%Y-%m-%d %H:%M}" if run.created_at else ""


# The footnotes under every rendering of a report (table, md, html).
NOTES = (
    "1. Baseline: each attempt's input tokens and its visible output tokens (hidden reasoning "
    "excluded) priced on the job's frontier model at standard rates with no cache; routing, "
    "caching and batch discount add up to baseline minus paid.",
    "2. Second opinions (agreement cascade) and the calibration sample: their cost at "
    "standard, uncached rates, each a part of the split of its own; all-frontier would have "
    "asked once, so they have no baseline.",
)


def render_table(report: Report, *, wide: bool = False) -> str:
    """The report for a terminal: 100 columns at most (text wrapped between words), or with
    `wide` every column at its natural width."""
    out = io.StringIO()
    width = TABLE_WIDTH if wide else NARROW_WIDTH
    console = Console(file=out, width=width, color_system=None, soft_wrap=False)

    def say(text: str) -> None:
        console.print(text if wide else "\n".join(textwrap.wrap(text, NARROW_WIDTH)))

    say(report.title())
    for line in report.warnings():
        say(f"WARNING: {line}")
    for title, columns, rows in report_sections(report, wide=wide, exact=False):
        table = Table(title=title, title_justify="left")
        for n, column in enumerate(columns):
            # a cell never breaks inside a word: a row wraps between words, if at all
            longest = max(
                len(w) for text in [column, *(r[n] for r in rows)] for w in [*text.split(), ""]
            )
            justify = "right" if _numeric(rows, n) else "left"
            table.add_column(column, justify=justify, min_width=longest)
        for row in rows or [["(none)"] + [""] * (len(columns) - 1)]:
            table.add_row(*row)
        console.print(table)
    for note in NOTES:
        say(note)
    # rich pads titles to the console width; trailing blanks only get in the way
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()) + "\n"


def _numeric(rows: list[list[str]], n: int) -> bool:
    """Right-align a column whose every cell is a number, an amount or a percentage."""
    return bool(rows) and all(NUMERIC.match(row[n]) for row in rows)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_md(report: Report) -> str:
    lines = [f"# {report.title()}", ""]
    for line in report.warnings():
        lines += [f"> **Warning:** {line}", ""]
    for title, columns, rows in report_sections(report):
        lines += [f"## {title}", ""]
        if not rows:
            lines += ["(none)", ""]
            continue
        lines.append("| " + " | ".join(columns) + " |")
        align = ["---:" if _numeric(rows, n) else "---" for n in range(len(columns))]
        lines.append("|" + "|".join(align) + "|")
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
        lines.append("")
    lines += [*NOTES, ""]
    return "\n".join(lines)
