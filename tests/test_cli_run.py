"""The engine's commands: run, submit, resume, status, cancel; output and exit codes."""

from __future__ import annotations

import json

from cli_helpers import (  # noqa: F401 - fixtures
    cli_db_url_fixture,
    env_sandbox_fixture,
    invoke,
)
from click.testing import CliRunner
from engine_helpers import (  # noqa: F401 - fixtures
    sandbox_fixture,
    served_fixture,
    write_job,
)

from batcher.cli import cli
from batcher.run.lease import acquire
from batcher.store import open_store


def test_run_with_sandbox_succeeds_with_exit_0(tmp_path, db_url):
    spec = write_job(tmp_path, 7)
    result = invoke("run", str(spec), "--sandbox", "--db", db_url, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed"
    assert summary["items"] == summary["succeeded"] == 7
    assert float(summary["cost_usd"]) > 0


def test_run_prints_the_report_and_a_verdict(tmp_path, db_url):
    result = invoke("run", str(write_job(tmp_path, 3)), "--sandbox", "--db", db_url)
    assert result.exit_code == 0
    assert "By tier" in result.stdout and "Savings vs baseline" in result.stdout
    assert "run 1 completed: 3/3 succeeded, 0 failed, 0 cancelled; paid $" in result.stdout


def test_second_run_reuses_answers_unless_told_not_to(tmp_path, db_url):
    spec = str(write_job(tmp_path, 4))
    assert invoke("run", spec, "--sandbox", "--db", db_url).exit_code == 0
    again = json.loads(invoke("run", spec, "--sandbox", "--db", db_url, "--json").stdout)
    assert again["succeeded"] == 4 and again["cost_usd"] == "0"
    fresh = json.loads(
        invoke("run", spec, "--sandbox", "--db", db_url, "--json", "--no-reuse").stdout
    )
    assert fresh["succeeded"] == 4 and float(fresh["cost_usd"]) > 0


def test_run_with_bad_input_exits_2_and_submits_nothing(tmp_path, db_url):
    spec = write_job(tmp_path, 2)
    (spec.parent / "input.jsonl").write_text('{"prompt": "fine"}\nnot json\n')
    result = invoke("run", str(spec), "--sandbox", "--db", db_url)
    assert result.exit_code == 2
    assert "input.jsonl:2" in result.stderr


def test_submit_exits_3_then_resume_finishes(tmp_path, db_url, env_sandbox):
    spec = write_job(tmp_path, 4)
    submitted = invoke("submit", str(spec), "--db", db_url)
    assert submitted.exit_code == 3
    assert "batcher resume 1" in submitted.stderr
    status = json.loads(invoke("status", "1", "--db", db_url, "--json").stdout)
    assert status["in_flight"] == 4 and status["batches"][0]["status"] == "submitted"
    resumed = invoke("resume", "1", "--db", db_url, "--poll-interval", "0.03", "--json")
    assert resumed.exit_code == 0
    assert json.loads(resumed.stdout)["succeeded"] == 4
    listing = json.loads(invoke("status", "--db", db_url, "--json").stdout)
    assert [(r["run"], r["status"], r["succeeded"]) for r in listing] == [(1, "completed", 4)]


def test_cancel_exits_4(tmp_path, db_url, env_sandbox):
    env_sandbox.configure(faults="slow:count=1:factor=5")
    assert invoke("submit", str(write_job(tmp_path, 3)), "--db", db_url).exit_code == 3
    result = invoke("cancel", "1", "--db", db_url, "--poll-interval", "0.03", "--json")
    assert result.exit_code == 4
    assert json.loads(result.stdout)["cancelled"] == 3


def test_resume_of_a_run_driven_elsewhere_exits_3_naming_the_holder(tmp_path, db_url, env_sandbox):
    assert invoke("submit", str(write_job(tmp_path, 2)), "--db", db_url).exit_code == 3
    acquire(open_store(db_url), 1, "cron-host:77:beef")
    result = invoke("resume", "1", "--db", db_url)
    assert result.exit_code == 3
    assert "cron-host:77:beef" in result.stderr


def test_resume_of_an_unknown_run_exits_2(db_url):
    result = invoke("resume", "99", "--db", db_url)
    assert result.exit_code == 2
    assert "no run 99" in result.stderr


def test_adopt_needs_local_equals_remote(db_url):
    result = CliRunner().invoke(cli, ["resume", "1", "--db", db_url, "--adopt", "nonsense"])
    assert result.exit_code == 2
    assert "LOCAL_BATCH=PROVIDER_BATCH_ID" in result.output


def test_a_run_over_budget_exits_1_and_resumes_with_a_higher_budget(tmp_path, db_url, env_sandbox):
    spec = write_job(tmp_path, 3)
    refused = invoke("run", str(spec), "--db", db_url, "--max-usd", "0.0000001")
    assert refused.exit_code == 1
    assert "over the budget" in refused.stderr and "--max-usd" in refused.stderr
    assert invoke("resume", "1", "--db", db_url).exit_code == 1  # still the budget it started with
    assert env_sandbox.stats()["batches_created"]["openai"] == 0
    resumed = invoke("resume", "1", "--db", db_url, "--max-usd", "1", "--poll-interval", "0.03")
    assert resumed.exit_code == 0


def test_help_documents_the_exit_codes():
    result = invoke("run", "--help")
    assert "Exit codes:" in result.output
    assert "3  still running" in result.output
    assert "batcher run jobs/example.toml --sandbox" in result.output


def test_status_tables_for_people(tmp_path, db_url, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    assert invoke("run", str(write_job(tmp_path, 2)), "--sandbox", "--db", db_url).exit_code == 0
    listing = invoke("status", "--db", db_url)
    assert listing.exit_code == 0 and "Runs" in listing.stdout and "completed" in listing.stdout
    detail = invoke("status", "1", "--db", db_url)
    assert "Run 1" in detail.stdout and "Batches" in detail.stdout
    assert "reconciled" in detail.stdout and "gpt-5-nano" in detail.stdout
