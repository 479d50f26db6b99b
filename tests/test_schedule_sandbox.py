"""Schedules driving real runs: the engine, the official SDKs over HTTP, the sandbox.

A firing started by the scheduler's clock runs a job to completion against the sandbox; a
firing stopped mid-run (what SIGTERM does) leaves the run open, and the next start resumes it
without submitting anything twice.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from schedule_fixtures import Clock, utc, write_input

from batcher.cli import cli
from batcher.providers import Clients
from batcher.providers.calls import RetryPolicy
from batcher.sandbox import start_sandbox
from batcher.schedule.daemon import Scheduler
from batcher.schedule.firing import EngineDriver, fire
from batcher.schedule.schedules import Schedules
from batcher.store import open_store
from batcher.store.models import TABLES

RUN, ITEM, BATCH = TABLES["run"], TABLES["item"], TABLES["batch"]
FIRING = TABLES["schedule_firing"]

SPEC = """
name = "sandbox-nightly"
[tiers]
nano = "openai:gpt-5-nano"
frontier = "anthropic:claude-sonnet-4-6"
[defaults]
max_tokens = 512  # room for gpt-5-nano's hidden reasoning (up to 256) and the label
system = "You label support tickets.\\nAllowed labels: billing, technical, account"
[routing]
classifier = "fixed:{tier}"
ladder = ["nano", "frontier"]
[validation]
labels = ["billing", "technical", "account"]
[polling]
interval_s = 0.05
max_interval_s = 0.2
"""


@pytest.fixture(scope="module")
def served():
    with start_sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def sandbox(served):
    served.reset()
    return served


@pytest.fixture
def driver(sandbox):
    clients = Clients.for_sandbox(sandbox, RetryPolicy(attempts=12, base_s=0.02, cap_s=0.5))
    return EngineDriver(clients, poll=0.03)


def job(tmp_path, tier="nano", n=6):
    spec = tmp_path / "jobs" / "nightly.toml"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(SPEC.format(tier=tier))
    prompts = [f"Ticket {i}: my invoice {i} was charged twice." for i in range(n)]
    write_input(tmp_path / "in" / "tickets.jsonl", prompts)
    return spec, f"{tmp_path / 'in'}/*.jsonl"


def items_by_status(db, run_id):
    with db.connect() as conn:
        return dict(
            conn.execute(
                sa.select(ITEM.c.status, sa.func.count())
                .where(ITEM.c.run_id == run_id)
                .group_by(ITEM.c.status)
            ).all()
        )


def test_a_firing_drives_a_sandbox_run_to_completion(db_url, tmp_path, driver, sandbox):
    spec, pattern = job(tmp_path, tier="nano", n=6)
    clock = Clock(utc(2026, 3, 1, 0, 0))
    scheduler = Scheduler(open_store(db_url), driver=driver, clock=clock)
    scheduler.schedules.add("nightly", job=str(spec), input=pattern, cron="0 2 * * *")

    clock.set(utc(2026, 3, 1, 2, 0))
    scheduler.tick()
    scheduler.wait_idle(timeout=120)

    info = scheduler.schedules.get("nightly")
    assert (info.last_outcome, info.last_error) == ("completed", None)
    with scheduler.db.connect() as conn:
        run = conn.execute(sa.select(RUN).where(RUN.c.id == info.last_run_id)).one()
    assert (run.status, run.schedule_name, run.n_items) == ("completed", "nightly", 6)
    assert items_by_status(scheduler.db, run.id) == {"succeeded": 6}
    assert sandbox.stats()["batches_created"]["openai"] == 1

    # The next night has nothing new: the same content is not sent again.
    clock.set(utc(2026, 3, 2, 2, 0))
    scheduler.tick()
    scheduler.wait_idle(timeout=60)
    assert scheduler.schedules.get("nightly").last_outcome == "nothing_new"
    assert sandbox.stats()["batches_created"]["openai"] == 1
    scheduler.close()


def test_a_stopped_firing_resumes_on_the_next_start_without_resubmitting(
    sqlite_url, tmp_path, driver, sandbox
):
    spec, pattern = job(tmp_path, tier="frontier", n=4)
    sandbox.configure(in_progress_s=3600.0)  # the batch stays at the provider for an hour
    clock = Clock(utc(2026, 3, 1, 0, 0))
    first = Scheduler(open_store(sqlite_url), driver=driver, clock=clock)
    first.schedules.add("nightly", job=str(spec), input=pattern, cron="0 2 * * *")
    clock.set(utc(2026, 3, 1, 2, 0))
    first.tick()
    _wait_for(lambda: _submitted_batches(first.db) == 1)
    first.request_stop()  # SIGTERM
    first.close()
    with first.db.connect() as conn:
        run_id, status = conn.execute(sa.select(RUN.c.id, RUN.c.status)).one()
        outcome = conn.execute(sa.select(FIRING.c.outcome)).scalar_one()
    assert (status, outcome) == ("running", "stopped")

    sandbox.advance_clock(3700)  # the provider finishes the batch while we are down
    second = Scheduler(open_store(sqlite_url), driver=driver, clock=clock)
    clock.set(utc(2026, 3, 2, 2, 0))
    second.tick()
    second.wait_idle(timeout=120)
    info = second.schedules.get("nightly")
    assert (info.last_outcome, info.last_run_id) == ("completed", run_id)
    assert items_by_status(second.db, run_id) == {"succeeded": 4}
    with second.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(RUN)).scalar() == 1
    stats = sandbox.stats()
    assert stats["batches_created"]["anthropic"] == 1  # never sent twice
    assert stats["duplicates"]["anthropic"] == []
    second.close()


def _submitted_batches(db) -> int:
    with db.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(BATCH.c.provider_batch_id.is_not(None))
        ).scalar()


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def test_run_now_from_the_command_line_uses_the_environments_endpoints(
    sqlite_url, tmp_path, sandbox, monkeypatch
):
    spec, pattern = job(tmp_path, tier="nano", n=3)
    monkeypatch.setenv("OPENAI_BASE_URL", sandbox.openai_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-sandbox")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", sandbox.anthropic_base_url)  # escalations
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-sandbox")
    runner = CliRunner()
    added = runner.invoke(cli, ["schedule", "add", "nightly", "--job", str(spec), "--input",
                                pattern, "--cron", "0 2 * * *", "--db", sqlite_url])  # fmt: skip
    assert added.exit_code == 0, added.output
    result = runner.invoke(cli, ["schedule", "run-now", "nightly", "--db", sqlite_url])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"schedule=nightly input={tmp_path / 'in' / 'tickets.jsonl'} run=1 outcome=completed "
        "items=3 succeeded=3\n"
    )
    again = runner.invoke(cli, ["schedule", "run-now", "nightly", "--db", sqlite_url])
    assert (again.exit_code, again.stdout) == (
        0,
        "schedule=nightly input=- run=- outcome=nothing_new (1 matching input(s) already "
        "processed)\n",
    )
    assert sandbox.stats()["batches_created"]["openai"] == 1


def test_sigterm_stops_the_daemon_mid_run_and_the_next_start_finishes_it(
    sqlite_url, tmp_path, sandbox
):
    spec, pattern = job(tmp_path, tier="frontier", n=3)
    sandbox.configure(in_progress_s=3600.0)
    runner = CliRunner()
    added = runner.invoke(cli, ["schedule", "add", "often", "--job", str(spec), "--input",
                                pattern, "--every", "2s", "--db", sqlite_url])  # fmt: skip
    assert added.exit_code == 0, added.output
    env = {**os.environ, "BATCHER_DB": sqlite_url,
           "ANTHROPIC_BASE_URL": sandbox.anthropic_base_url, "ANTHROPIC_API_KEY": "sk-ant-x",
           "OPENAI_BASE_URL": sandbox.openai_base_url, "OPENAI_API_KEY": "sk-x"}  # fmt: skip
    db = open_store(sqlite_url)

    first = _daemon(env, tmp_path / "first.log")
    try:
        _wait_for(lambda: _submitted_batches(db) == 1, timeout=60)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
    finally:
        _kill(first)
    log = (tmp_path / "first.log").read_text()
    assert re.search(r"schedule=often input=\S+tickets.jsonl run=1 outcome=stopped", log), log
    with db.connect() as conn:
        assert conn.execute(sa.select(RUN.c.status)).scalar_one() == "running"

    sandbox.advance_clock(3700)  # the provider finishes the batch while the daemon is down
    second = _daemon(env, tmp_path / "second.log")
    try:
        _wait_for(lambda: "outcome=completed" in (tmp_path / "second.log").read_text(), 60)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    finally:
        _kill(second)
    log = (tmp_path / "second.log").read_text()
    assert re.search(
        r"schedule=often input=\S+tickets.jsonl run=1 outcome=completed items=3 succeeded=3", log
    ), log
    assert items_by_status(db, 1) == {"succeeded": 3}
    stats = sandbox.stats()
    assert stats["batches_created"]["anthropic"] == 1 and stats["duplicates"]["anthropic"] == []


def _daemon(env: dict, log_path) -> subprocess.Popen:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-c", "from batcher.cli import main; main()", "scheduler",
             "--poll", "0.2"],
            env=env, stdout=log, stderr=log,
        )  # fmt: skip


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def test_run_now_exits_1_when_the_run_ends_with_failed_items(sqlite_url, tmp_path, sandbox):
    spec, pattern = job(tmp_path, tier="nano", n=2)
    sandbox.configure(malformed={"gpt-5-nano": 1.0, "claude-sonnet-4-6": 1.0})
    runner = CliRunner()
    runner.invoke(cli, ["schedule", "add", "nightly", "--job", str(spec), "--input", pattern,
                        "--cron", "0 2 * * *", "--db", sqlite_url])  # fmt: skip
    env = {
        "OPENAI_BASE_URL": sandbox.openai_base_url,
        "OPENAI_API_KEY": "sk-x",
        "ANTHROPIC_BASE_URL": sandbox.anthropic_base_url,
        "ANTHROPIC_API_KEY": "sk-x",
    }
    result = runner.invoke(cli, ["schedule", "run-now", "nightly", "--db", sqlite_url], env=env)
    assert result.exit_code == 1
    assert result.stdout.endswith("run=1 outcome=completed items=2 succeeded=0 failed=2\n")


def test_a_run_another_scheduler_drives_is_left_alone(db_url, tmp_path, driver, sandbox):
    spec, pattern = job(tmp_path, tier="nano", n=2)
    sandbox.configure(in_progress_s=3600.0)
    clock = Clock(utc(2026, 3, 1, 0, 0))
    one = Scheduler(open_store(db_url), driver=driver, clock=clock)
    one.schedules.add("nightly", job=str(spec), input=pattern, every="1h")
    one.tick(utc(2026, 3, 1, 1, 0))
    _wait_for(lambda: _submitted_batches(one.db) == 1)

    two = Scheduler(open_store(db_url), driver=driver, clock=clock)  # another process
    two.tick(utc(2026, 3, 1, 2, 0))
    two.wait_idle(timeout=60)
    info = two.schedules.get("nightly")
    assert (info.last_outcome, info.last_run_id) == ("busy", 1)
    assert "run 1" in info.last_error
    one.request_stop()
    one.close()
    two.close()
    assert sandbox.stats()["batches_created"]["openai"] == 1


def test_a_run_over_budget_is_refused_at_every_firing(sqlite_url, tmp_path, driver, sandbox):
    spec, pattern = job(tmp_path, tier="frontier", n=3)
    spec.write_text("max_usd = 0.000001\n" + spec.read_text())
    clock = Clock(utc(2026, 3, 1, 0, 0))
    scheduler = Scheduler(open_store(sqlite_url), driver=driver, clock=clock)
    scheduler.schedules.add("nightly", job=str(spec), input=pattern, cron="0 2 * * *")
    for day in (1, 2):
        scheduler.tick(utc(2026, 3, day, 2, 0))
        scheduler.wait_idle(timeout=60)
        info = scheduler.schedules.get("nightly")
        assert (info.last_outcome, info.last_run_id) == ("failed", 1)
        assert "over the budget of $0.000001 (max_usd); nothing was submitted" in info.last_error
    with scheduler.db.connect() as conn:
        assert conn.execute(sa.select(RUN.c.id, RUN.c.status)).all() == [(1, "failed")]
    assert not any(sandbox.stats()["batches_created"].values())
    scheduler.close()


def test_the_stored_job_runs_on_its_own_from_its_plain_arguments(
    sqlite_url, tmp_path, sandbox, monkeypatch
):
    spec, pattern = job(tmp_path, tier="nano", n=2)
    schedules = Schedules(open_store(sqlite_url))
    schedules.add("nightly", job=str(spec), input=pattern, cron="0 2 * * *")
    stored = schedules.job("nightly")  # unpickled from the job store
    schedules.close()
    monkeypatch.setenv("OPENAI_BASE_URL", sandbox.openai_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", sandbox.anthropic_base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-x")
    assert stored.func is fire
    [result] = stored.func(*stored.args, **stored.kwargs)  # no scheduler, no engine object
    assert (result.outcome, result.run_id, result.items) == ("completed", 1, {"succeeded": 2})
