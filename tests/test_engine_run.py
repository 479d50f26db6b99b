"""The engine end to end against the sandbox, through the real SDKs over HTTP."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from engine_helpers import (  # noqa: F401 - fixtures
    POLL,
    RUN,
    attempts,
    batches,
    check_accounted,
    clients_fixture,
    db_fixture,
    items_by_status,
    sandbox_fixture,
    served_fixture,
    write_job,
)

from batcher.errors import LeaseHeld
from batcher.plan.estimate import budget_refusal, estimate_run
from batcher.report.exports import iter_export_rows
from batcher.run import engine
from batcher.run.lease import acquire
from batcher.spec import load_spec
from batcher.store.views import item_detail, list_items

EXAMPLE = "jobs/example.toml"


def test_example_job_completes_and_costs_match_the_billing(db, sandbox, clients):
    spec = load_spec(EXAMPLE)
    run_id = engine.start_run(db, spec, spec.input_file())
    outcome = engine.drive_run(db, run_id, clients=clients, poll=POLL)
    n_lines = sum(1 for _ in open(spec.input_file()))
    assert outcome.status == "completed"
    assert outcome.n_items == n_lines
    check_accounted(db, run_id, sandbox, n_lines)
    assert outcome.cost_pusd > 0 and outcome.baseline_pusd > outcome.cost_pusd
    assert outcome.exit_code == (0 if outcome.items.get("succeeded") == n_lines else 1)
    assert {b["status"] for b in batches(db, run_id)} == {"reconciled"}


def test_a_completed_run_is_left_alone(db, sandbox, clients, tmp_path):
    spec = load_spec(write_job(tmp_path, 6))
    run_id = engine.start_run(db, spec, spec.input_file())
    first = engine.drive_run(db, run_id, clients=clients, poll=POLL)
    again = engine.resume_run(db, run_id, clients=clients, poll=POLL)
    assert first.summary() == again.summary()
    assert sandbox.stats()["batches_created"]["openai"] == 1


def test_submit_only_then_resume(db, sandbox, clients, tmp_path):
    spec = load_spec(write_job(tmp_path, 8))
    run_id = engine.start_run(db, spec, spec.input_file())
    submitted = engine.drive_run(db, run_id, clients=clients, poll=POLL, submit_only=True)
    assert submitted.status == "running" and submitted.exit_code == 3
    assert [b["status"] for b in batches(db, run_id)] == ["submitted"]
    # in flight by their batch: the submit did not write the item rows again
    assert engine.outcome_of(db, run_id).items == {"in_flight": 8}
    assert items_by_status(db, run_id) == {"queued": 8}
    assert len(list_items(db, run_id, status="in_flight")) == 8  # `batcher items --status`
    assert list_items(db, run_id, status="queued") == []
    assert item_detail(db, run_id, "t0")["status"] == "in_flight"  # `batcher show`
    exported = [row for chunk in iter_export_rows(db, run_id) for row in chunk]
    assert [row["status"] for row in exported] == ["in_flight"] * 8  # `batcher export`
    done = engine.resume_run(db, run_id, clients=clients, poll=POLL)
    assert done.status == "completed" and done.exit_code == 0, done.message
    check_accounted(db, run_id, sandbox, 8)


def test_stop_event_leaves_the_run_resumable(db, sandbox, clients, tmp_path):
    from batcher.run.progress import QuietReporter

    stop = threading.Event()

    class StopOnceSubmitted(QuietReporter):
        def batch(self, batch_id, label, done, total, status):
            stop.set()  # as Ctrl-C would, once the batch is at the provider

    spec = load_spec(write_job(tmp_path, 5))
    run_id = engine.start_run(db, spec, spec.input_file())
    sandbox.configure(faults="slow:count=1:factor=20")
    outcome = engine.drive_run(
        db, run_id, clients=clients, poll=POLL, stop=stop, reporter=StopOnceSubmitted()
    )
    assert outcome.status == "running" and outcome.exit_code == 3
    assert [b["status"] for b in batches(db, run_id)] == ["submitted"]
    sandbox.advance_clock(60)
    assert engine.resume_run(db, run_id, clients=clients, poll=POLL).exit_code == 0
    assert sandbox.stats()["batches_created"]["openai"] == 1


def test_a_second_driver_is_told_who_holds_the_lease(db, clients, tmp_path):
    spec = load_spec(write_job(tmp_path, 2))
    run_id = engine.start_run(db, spec, spec.input_file())
    acquire(db, run_id, "otherhost:4242:abcd")
    with pytest.raises(LeaseHeld, match="otherhost:4242:abcd"):
        engine.resume_run(db, run_id, clients=clients, poll=POLL)


def test_the_lease_of_a_dead_local_process_is_taken_over(db, sandbox, clients, tmp_path):
    import socket

    spec = load_spec(write_job(tmp_path, 2))
    run_id = engine.start_run(db, spec, spec.input_file())
    acquire(db, run_id, f"{socket.gethostname()}:999999:dead")  # no such pid
    assert engine.resume_run(db, run_id, clients=clients, poll=POLL).status == "completed"
    with db.connect() as conn:
        owner = conn.execute(sa.select(RUN.c.lease_owner).where(RUN.c.id == run_id)).scalar()
    assert owner is None  # given back when the driver stopped


def test_budget_refuses_naming_by_how_much(db, tmp_path):
    spec = load_spec(write_job(tmp_path, 20, classifier="fixed:frontier"))
    with pytest.raises(engine.BudgetExceeded, match=r"over the budget of \$0\.000001 "):
        engine.start_run(db, spec, spec.input_file(), max_usd=0.000001)
    with db.connect() as conn:
        run = conn.execute(sa.select(RUN.c.status, RUN.c.error)).one()
    assert run.status == "failed" and "--max-usd" in run.error
    assert all(b["status"] == "planned" for b in batches(db, 1))
    # the refusal's figure, estimated while planning, is the one the run gives when read back
    read_back = estimate_run(db, 1, spec)
    assert budget_refusal(read_back, 0.000001, "max_usd") in run.error


def test_status_lists_runs_and_batches(db, sandbox, clients, tmp_path):
    spec = load_spec(write_job(tmp_path, 3))
    run_id = engine.start_run(db, spec, spec.input_file())
    engine.drive_run(db, run_id, clients=clients, poll=POLL)
    rows = engine.run_status(db)
    assert rows[0]["run"] == run_id and rows[0]["status"] == "completed"
    detail = engine.run_status(db, run_id)
    assert detail["succeeded"] == 3 and detail["lease_owner"] is None
    assert [b["status"] for b in detail["batches"]] == ["reconciled"]
    assert {a["status"] for a in attempts(db, run_id)} == {"succeeded"}


def test_runs_and_leases_on_postgresql(pg_url, sandbox, clients, tmp_path):
    from batcher.store import open_store

    db = open_store(pg_url)
    spec = load_spec(write_job(tmp_path, 10, classifier="heuristic"))
    run_id = engine.start_run(db, spec, spec.input_file())
    acquire(db, run_id, "pg-host:1:cafe")
    with pytest.raises(LeaseHeld, match="pg-host:1:cafe"):
        engine.drive_run(db, run_id, clients=clients, poll=POLL)
    with db.begin() as conn:
        conn.execute(sa.update(RUN).values(lease_owner=None, lease_expires_at=None))
    outcome = engine.drive_run(db, run_id, clients=clients, poll=POLL)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    check_accounted(db, run_id, sandbox, 10)


def test_progress_log_lines(db, sandbox, clients, tmp_path):
    import io

    from batcher.run.progress import LogReporter

    stream = io.StringIO()
    spec = load_spec(write_job(tmp_path, 5))
    run_id = engine.start_run(db, spec, spec.input_file())
    engine.drive_run(db, run_id, clients=clients, poll=POLL, reporter=LogReporter(stream))
    lines = stream.getvalue().splitlines()
    assert any(line.endswith("(openai:gpt-5-nano): completed, 5/5 requests") for line in lines)
    assert "items 5/5 finished, cost so far $" in lines[-1]
    assert all(line.startswith("[0:") for line in lines)


def test_lost_lease_stops_the_driver(db, sandbox, clients, tmp_path):
    from batcher.run.lease import Lease

    spec = load_spec(write_job(tmp_path, 2))
    run_id = engine.start_run(db, spec, spec.input_file())
    with Lease(db, run_id, "me", ttl_s=0.15) as lease:
        with db.begin() as conn:
            conn.execute(sa.update(RUN).values(lease_owner="intruder"))
        assert lease.lost.wait(2)
    with db.connect() as conn:  # giving back a lease that is not ours leaves it alone
        assert conn.execute(sa.select(RUN.c.lease_owner)).scalar() == "intruder"


def test_a_run_stored_by_ingest_is_planned_and_driven_by_resume(db, sandbox, clients, tmp_path):
    from batcher.plan.ingest import ingest

    spec = load_spec(write_job(tmp_path, 3))
    run_id = ingest(db, spec, spec.input_file()).run_id
    outcome = engine.resume_run(db, run_id, clients=clients, poll=POLL)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    check_accounted(db, run_id, sandbox, 3)
