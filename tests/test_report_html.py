"""The HTML report opened in real headless Chromium with the network disabled: it renders,
its three charts are in the DOM, the console stays silent, and a screenshot is kept under
test-artifacts/ (git-ignored) for people to look at.

`make test` installs Debian's chromium when it is missing; without it these tests fail and
say how to install it.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from datetime import UTC, datetime
from html import unescape
from pathlib import Path

import pytest
from report_db import add_item, add_run, attempt, build_completed_run

from batcher.report.build import build_report, select_runs
from batcher.report.formats import render_report
from batcher.store import open_store

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
OFFLINE_FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--proxy-server=127.0.0.1:9",  # nothing listens there: any fetch would fail
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--enable-logging=stderr",
    "--v=0",
]
CONSOLE = re.compile(r":CONSOLE[:(]")  # how Chromium logs console messages to stderr


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            "chromium is not installed: run `make test` (it installs it) or "
            "`apt-get install -y chromium`"
        )
    return path


def open_in_chromium(chromium, page: Path, profile: Path, *action: str):
    """Run headless Chromium on `page` with a fresh profile; returns (stdout, console lines)."""
    proc = subprocess.run(
        [chromium, *OFFLINE_FLAGS, f"--user-data-dir={profile}", *action, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, [line for line in proc.stderr.splitlines() if CONSOLE.search(line)]


@pytest.fixture
def report_page(sqlite_url, tmp_path) -> Path:
    """A report over three nightly runs, one of them still in flight."""
    db = open_store(sqlite_url)
    for day in (1, 2):
        build_completed_run(db, created_at=datetime(2026, 11, day, 2, 0, tzinfo=UTC))
    live = add_run(db, status="running", created_at=datetime(2026, 11, 5, 2, 0, tzinfo=UTC))
    add_item(db, live, 1, "succeeded", [attempt("nano", "succeeded", 900_000)])
    add_item(db, live, 2, "in_flight", [attempt("mid", "submitted", 0, input_tokens=0)])
    add_item(db, live, 3, "failed", [attempt("nano", "errored", 0, error_code="server_error")])
    page = tmp_path / "report.html"
    page.write_text(render_report(build_report(db, select_runs(db, job="labels")), "html"))
    db.dispose()
    return page


def test_the_page_fetches_nothing(report_page):
    html = report_page.read_text()
    assert "<script" not in html and "url(" not in html and "@import" not in html
    assert re.findall(r'(?:src|href)="([^"]*)"', html) == ["data:,"]  # only the empty favicon
    # the SVG namespace is an identifier, not a fetch; no other address appears
    assert set(re.findall(r"https?://[^\"' ]+", html)) == {"http://www.w3.org/2000/svg"}


def test_chromium_renders_the_charts_with_a_silent_console(chromium, report_page, tmp_path):
    dom, console = open_in_chromium(chromium, report_page, tmp_path / "profile", "--dump-dom")

    assert console == []
    assert re.findall(r'<svg class="chart" id="([^"]+)"', dom) == [
        "chart-runs",
        "chart-tier-cost",
        "chart-tier-cps",
    ]
    # one cost bar and one baseline bar per run; one bar per tier in each tier chart
    assert len(re.findall(r'<rect class="bar cost"', dom)) == 3
    assert len(re.findall(r'<rect class="bar baseline"', dom)) == 3
    assert len(re.findall(r'<rect class="bar" ', dom)) == 6
    assert "still in flight" in dom
    assert "Cost per success by tier" in dom


def test_chromium_takes_a_screenshot(chromium, report_page, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    _, console = open_in_chromium(
        chromium,
        report_page,
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1280,1800",
    )
    assert console == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (1280, 1800)
    assert len(data) > 20_000  # a page with tables and charts, not a blank image


def test_the_console_check_catches_errors(chromium, tmp_path):
    """The silent-console assertions above would catch a broken page: this one logs two."""
    page = tmp_path / "broken.html"
    page.write_text(
        '<!doctype html><link rel="icon" href="data:,">'
        '<script>console.error("chart failed"); notDefined();</script>'
    )
    _, console = open_in_chromium(chromium, page, tmp_path / "profile", "--dump-dom")
    assert len(console) == 2
    assert '"chart failed"' in console[0]
    assert "ReferenceError: notDefined is not defined" in console[1]


# Run in the page by the test only (the report itself has no script): the widest element, and
# every chart label that sticks out of its chart, written into the title for --dump-dom.
MEASURE = """<script>
const over = [...document.querySelectorAll("svg.chart text")].filter(t => {
  const box = t.getBBox(), svg = t.ownerSVGElement.viewBox.baseVal;
  return box.x < 0 || box.x + box.width > svg.width;
}).map(t => t.textContent);
const wide = Math.max(...[...document.querySelectorAll("body *")].map(e =>
  e.getBoundingClientRect().right));
document.title = JSON.stringify({page: document.documentElement.scrollWidth,
                                 widest: Math.ceil(wide), clipped: over});
</script>"""


def test_the_page_fits_1280_px_with_no_label_cut_off(chromium, report_page, tmp_path):
    measured = tmp_path / "measured.html"
    measured.write_text(report_page.read_text().replace("</body>", MEASURE + "</body>"))
    dom, _ = open_in_chromium(
        chromium, measured, tmp_path / "profile", "--window-size=1280,1800", "--dump-dom"
    )
    figures = json.loads(unescape(re.search(r"<title>(.*?)</title>", dom).group(1)))
    assert figures["page"] <= 1280 and figures["widest"] <= 1280, figures
    assert figures["clipped"] == []
    assert "Failures by reason" in dom and "<td>server_error</td>" in dom
    # the runs sit on a time axis: 1, 2 and 5 November, so the second gap is three times
    # the first (an evenly spaced axis would make them equal)
    xs = [float(x) for x in re.findall(r'<rect class="bar cost" x="([\d.]+)"', dom)]
    assert abs((xs[2] - xs[1]) - 3 * (xs[1] - xs[0])) < 1, xs
