"""`batcher report` and `batcher export` through the CLI: exact output, exit codes, errors."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest
from click.testing import CliRunner
from report_db import add_item, add_run, attempt, build_completed_run

from batcher.cli import cli
from batcher.money.amounts import fmt_money, to_usd
from batcher.store import open_store


@pytest.fixture
def db(sqlite_url):
    engine = open_store(sqlite_url)
    yield sqlite_url, engine
    engine.dispose()


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_report_prints_tiers_savings_and_cache_groups(db):
    url, engine = db
    run_id, attempts = build_completed_run(engine)
    result = run_cli("report", run_id, "--db", url)

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(f"Run {run_id} (labels)\n")
    for title in ("By tier", "Savings vs baseline", "Cache efficiency"):
        assert title in out
    cost = sum(a["cost_pusd"] for a in attempts)
    assert f"{fmt_money(to_usd(cost))} " in out  # $0.00007830: four significant digits
    assert "effective discount" in out and "97.6%" in out
    assert "in flight" not in out
    assert run_cli("report", run_id, "--db", url).stdout == out  # the same twice


def test_report_json_carries_money_as_exact_strings(db):
    url, engine = db
    run_id, attempts = build_completed_run(engine)
    data = orjson.loads(run_cli("report", run_id, "--db", url, "--format", "json").stdout)

    savings = data["savings"]
    assert isinstance(savings["cost_usd"], str)
    parts = sum(Decimal(savings[k]) for k in ("routing_usd", "caching_usd", "batch_usd"))
    assert parts == Decimal(savings["saved_usd"])
    assert Decimal(savings["baseline_usd"]) == to_usd(sum(a["baseline_pusd"] for a in attempts))
    assert [t["tier"] for t in data["tiers"]] == ["nano", "mid", "frontier"]


def test_report_csv_and_md(db):
    url, engine = db
    run_id, _ = build_completed_run(engine)
    rows = list(csv.DictReader(io.StringIO(run_cli("report", run_id, "--db", url, "--format",
                                                   "csv").stdout)))  # fmt: skip
    assert [r["tier"] for r in rows if r["section"] == "tier"] == ["nano", "mid", "frontier"]
    md = run_cli("report", run_id, "--db", url, "--format", "md").stdout
    assert md.startswith(f"# Run {run_id} (labels)\n")


def test_report_without_run_shows_the_latest_and_filters_by_job_and_date(db):
    url, engine = db
    build_completed_run(engine, created_at=datetime(2026, 11, 1, tzinfo=UTC))
    second, _ = build_completed_run(engine, created_at=datetime(2026, 11, 5, tzinfo=UTC))
    third, _ = build_completed_run(
        engine, job="other", created_at=datetime(2026, 11, 6, tzinfo=UTC)
    )

    assert run_cli("report", "--db", url).stdout.startswith(f"Run {third} (other)")
    data = orjson.loads(
        run_cli("report", "--job", "labels", "--db", url, "--format", "json").stdout
    )
    assert [r["job"] for r in data["runs"]] == ["labels", "labels"]
    data = orjson.loads(
        run_cli("report", "--since", "2026-11-02", "--db", url, "--format", "json").stdout
    )
    assert [r["id"] for r in data["runs"]] == [second, third]
    assert data["title"] == "2 runs of labels, other"


def test_report_of_a_run_in_flight_warns(db):
    url, engine = db
    run_id = add_run(engine, status="running")
    add_item(engine, run_id, 1, "in_flight", [attempt("nano", "submitted", 0, input_tokens=0)])
    out = run_cli("report", run_id, "--db", url).stdout
    assert f"WARNING: Run {run_id} is still in flight (status running, 1 of 1 items" in out


def test_report_html_writes_a_file(db, tmp_path):
    url, engine = db
    run_id, _ = build_completed_run(engine)
    page = tmp_path / "r.html"
    result = run_cli("report", run_id, "--db", url, "--format", "html", "-o", page)
    assert result.exit_code == 0
    assert result.stderr == f"Wrote the report to {page}\n"
    assert page.read_text().count('<svg class="chart"') == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "99"], "Error: run 99 not found: `batcher status` lists the runs\n"),
        (
            ["report", "--format", "html"],
            "Error: --format html writes a page: add -o FILE, e.g. -o report.html\n",
        ),
        (
            ["report", "--since", "last week"],
            "Error: --since 'last week' is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM\n",
        ),
        (
            ["report", "--job", "nightly"],
            "Error: no run matches --job nightly: widen the filter or check the job's name\n",
        ),
        (["export", "99"], "Error: run 99 not found: `batcher status` lists the runs\n"),
        (
            ["export", "1", "--format", "parquet"],
            "Error: --format parquet writes a file: add -o FILE, e.g. -o results.parquet\n",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(db, args, message):
    url, engine = db
    build_completed_run(engine)
    result = run_cli(*args, "--db", url)
    assert (result.exit_code, result.stderr) == (2, message)


def test_export_to_a_file_and_to_stdout(db, tmp_path):
    url, engine = db
    run_id, _ = build_completed_run(engine)
    path = tmp_path / "out.jsonl"
    result = run_cli("export", run_id, "--db", url, "-o", path)
    assert result.exit_code == 0
    assert result.stderr == f"Exported 6 items of run {run_id} to {path}\n"
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [r["id"] for r in rows] == [f"t-{n}" for n in range(1, 7)]

    stdout = run_cli("export", run_id, "--db", url, "--format", "csv").stdout
    assert stdout.splitlines()[0].startswith("id,line_no,prompt,messages,")
    assert len(stdout.splitlines()) == 7


def test_help_teaches_with_examples():
    for command in ("report", "export"):
        out = run_cli(command, "--help").stdout
        assert "Examples:" in out and f"batcher {command} " in out
