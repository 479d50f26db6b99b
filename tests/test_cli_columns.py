"""Tables fit a 100-column terminal: `report`, `plan` and `status` with COLUMNS=100 print no
line over 100 characters and no wrapped row; --wide and --json give the rest; money in tables
is rounded to cents or four significant digits; cache groups read "name shortid" in both
`plan` and `report`."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from cli_helpers import own_state_dir
from click.testing import CliRunner
from conftest import REPO

from batcher.cli import cli

ROW = re.compile(r"^│ (?P<first>[^│]*?) *│")


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The example job, run once on the sandbox: the database and the job's folder."""
    folder = tmp_path_factory.mktemp("columns")
    shutil.copytree(REPO / "jobs", folder / "jobs")
    db = f"sqlite:///{folder / 'state.db'}"
    with own_state_dir(folder):
        result = invoke("run", str(folder / "jobs" / "example.toml"), "--sandbox", "--db", db)
    assert result.exit_code == 0, result.output
    return folder, db, result.stdout


def invoke(*args: str):
    runner = CliRunner(env={"COLUMNS": "100"})
    return runner.invoke(cli, list(args), catch_exceptions=False, terminal_width=100)


def assert_fits(text: str) -> None:
    """No line over 100 characters, and no table row carried over to a second line (a
    carried-over row starts with an empty first cell; no table here has one)."""
    for line in text.splitlines():
        assert len(line) <= 100, line
        match = ROW.match(line)
        if match:
            assert match["first"].strip(), f"wrapped row: {line}"


def test_report_plan_and_status_fit_100_columns(example):
    folder, db, run_output = example
    assert_fits(run_output)
    report = invoke("report", "1", "--db", db).stdout
    assert_fits(report)
    assert "│ nano     │ gpt-5-nano        │   179 │" in report
    plan = invoke("plan", str(folder / "jobs" / "example.toml"), "--db", db).stdout
    assert_fits(plan)
    for args in (("status",), ("status", "1")):
        assert_fits(invoke(*args, "--db", db).stdout)


def test_tables_round_money_and_json_keeps_it_exact(example):
    _, db, _ = example
    report = invoke("report", "1", "--db", db).stdout
    money = re.findall(r"\$[\d,.]+", report)
    assert money and all(
        re.fullmatch(r"\$[\d,]+\.\d\d|\$0\.0*[1-9]\d{0,3}|\$0", m) for m in money
    ), money
    exact = json.loads(invoke("report", "1", "--db", db, "--format", "json").stdout)
    assert len(exact["total"]["cost_usd"].split(".")[1]) == 12


def test_wide_shows_every_column(example):
    folder, db, _ = example
    wide = invoke("report", "1", "--db", db, "--wide").stdout
    assert "cache write tok" in wide and "openai:gpt-5-nano" in wide
    plan = invoke("plan", str(folder / "jobs" / "example.toml"), "--db", db, "--wide").stdout
    assert "cache key" in plan
    status = invoke("status", "1", "--db", db, "--wide").stdout
    assert "provider batch id" in status


def test_cache_groups_have_one_name_and_id_in_plan_and_report(example):
    folder, db, _ = example
    plan = invoke("plan", str(folder / "jobs" / "example.toml"), "--db", db, "--json")
    groups = {(g["prompt"], g["group"]) for g in json.loads(plan.stdout)["groups"]["largest"]}
    report = json.loads(invoke("report", "1", "--db", db, "--format", "json").stdout)
    assert {(g["prompt"], g["cache_group"]) for g in report["cache_groups"]} == groups
    assert {name for name, _ in groups} == {"billing", "technical", "account"}
    table = invoke("report", "1", "--db", db).stdout
    for name, short in groups:
        assert re.fullmatch(r"[0-9a-f]{8}", short)
        assert f"│ {name} {short} " in table
