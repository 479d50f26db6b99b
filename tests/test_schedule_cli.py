"""`batcher schedule ...` and `batcher scheduler` from the command line: output, errors, exit
codes, and the daemon's log lines and clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from schedule_fixtures import write_spec

from batcher.cli import cli


@pytest.fixture
def run(sqlite_url):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(cli, [*args, "--db", sqlite_url], catch_exceptions=False)

    return invoke


@pytest.fixture
def spec(tmp_path):
    return write_spec(tmp_path / "jobs")


def test_add_list_pause_resume_remove(run, spec, tmp_path):
    added = run("schedule", "add", "nightly", "--job", str(spec), "--input",
                str(tmp_path / "in/*.jsonl"), "--cron", "0 2 * * *", "--tz", "Europe/Berlin",
                "--json")  # fmt: skip
    assert added.exit_code == 0, added.output
    row = json.loads(added.output)
    assert row["trigger"] == "0 2 * * * Europe/Berlin"
    assert (row["paused"], row["grace_s"], row["last_outcome"]) == (False, 21600, None)

    run("schedule", "add", "sweep", "--job", str(spec), "--input", str(tmp_path / "drop"),
        "--every", "6h", "--grace", "30m")  # fmt: skip
    listed = json.loads(run("schedule", "list", "--json").output)
    assert [s["name"] for s in listed] == ["nightly", "sweep"]
    assert listed[1]["input"] == str(tmp_path / "drop")
    assert listed[1]["grace_s"] == 1800

    paused = run("schedule", "pause", "nightly", "--json")
    assert json.loads(paused.output)["paused"] is True
    table = run("schedule", "list").output
    assert "paused" in table and "every 6h" in table
    assert json.loads(run("schedule", "resume", "nightly", "--json").output)["paused"] is False

    removed = run("schedule", "remove", "sweep")
    assert removed.output == (
        "Removed schedule sweep (its firings and runs stay in the database).\n"
    )
    assert [s["name"] for s in json.loads(run("schedule", "list", "--json").output)] == ["nightly"]


def test_add_uses_the_specs_schedule_section(run, tmp_path):
    spec = write_spec(tmp_path / "jobs")
    spec.write_text(
        spec.read_text().replace(
            'name = "nightly-labels"',
            'name = "nightly-labels"\ninput = "in.jsonl"',
        )
        + '\n[schedule]\ncron = "15 3 * * 1-5"\ntz = "America/New_York"\n'
    )
    row = json.loads(run("schedule", "add", "nightly", "--job", str(spec), "--json").output)
    assert row["trigger"] == "15 3 * * mon-fri America/New_York"
    assert row["input"] == str(spec.parent / "in.jsonl")


def test_errors_are_one_line_with_usage_exit_code(run, spec, sqlite_url):
    run("schedule", "add", "nightly", "--job", str(spec), "--input", "x", "--cron", "0 2 * * *")
    cases = [
        (("schedule", "add", "nightly", "--job", str(spec), "--input", "x", "--cron", "0 3 * * *"),
         "Error: a schedule named 'nightly' exists; `batcher schedule remove nightly` first, "
         "or pick another name"),
        (("schedule", "add", "other", "--job", str(spec), "--input", "x", "--every", "soon"),
         "Error: --every 'soon': write a duration like 30m, 6h, 1h30m or 1d"),
        (("schedule", "add", "other", "--job", str(spec), "--input", "x"),
         "Error: give exactly one of --cron EXPR or --every DURATION"),
        (("schedule", "pause", "ghost"),
         "Error: no schedule named 'ghost'; `batcher schedule list` shows them"),
        (("schedule", "run-now", "ghost"),
         "Error: no schedule named 'ghost'; `batcher schedule list` shows them"),
    ]  # fmt: skip
    for args, message in cases:
        result = CliRunner().invoke(cli, [*args, "--db", sqlite_url])
        assert (result.exit_code, result.output) == (2, message + "\n"), args


def test_run_now_prints_one_line_per_input_and_fails_when_nothing_matches(run, spec, tmp_path):
    pattern = str(tmp_path / "in/*.jsonl")
    run("schedule", "add", "nightly", "--job", str(spec), "--input", pattern, "--every", "1d")
    result = run("schedule", "run-now", "nightly")
    assert result.exit_code == 1
    assert result.stdout == (
        f"schedule=nightly input=- run=- outcome=no_input error='no file matches {pattern}'\n"
    )
    listed = json.loads(run("schedule", "list", "--json").output)[0]
    assert (listed["last_outcome"], listed["last_error"]) == (
        "no_input",
        f"no file matches {pattern}",
    )


def test_scheduler_daemon_logs_firings_and_stops_on_sigterm(run, spec, tmp_path, sqlite_url):
    pattern = str(tmp_path / "in/*.jsonl")
    run("schedule", "add", "often", "--job", str(spec), "--input", pattern, "--every", "1s")
    log_path = tmp_path / "scheduler.log"
    # the scheduler checks the job's key before it starts; nothing is sent in this test
    env = {**os.environ, "BATCHER_DB": sqlite_url, "OPENAI_API_KEY": "sk-test"}
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-c", "from batcher.cli import main; main()", "scheduler",
             "--poll", "0.2"],
            env=env, stderr=log, stdout=log,
        )  # fmt: skip
        try:
            _wait_for_text(log_path, "outcome=no_input")
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=20) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
    text = log_path.read_text()
    assert f"schedule=often input=- run=- outcome=no_input error='no file matches {pattern}'" in (
        text
    )
    assert "SIGTERM received: stopping at the next safe point" in text
    assert text.rstrip().endswith("scheduler stopped")


def _wait_for_text(path: Path, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged; log so far:\n{path.read_text()}")
        time.sleep(0.05)


def test_scheduler_exits_1_with_one_line_when_the_database_is_unreachable():
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    result = CliRunner().invoke(cli, ["scheduler", "--db", url])
    assert result.exit_code == 1
    assert result.output.startswith(
        "Error: cannot open the state database postgresql+psycopg://nobody@127.0.0.1:1/none:"
    )
    assert result.output.count("\n") == 1
