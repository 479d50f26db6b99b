"""The engine on xAI's Batch API, through the openai SDK and the sandbox over HTTP: costs equal
to the billing priced here, 429/500 bursts, a create that answered 500, expiry with partial
results, cancel, a batch xAI refused."""

from __future__ import annotations

import pytest
from engine_helpers import (  # noqa: F401 - fixtures
    POLL,
    XAI_SPEC,
    attempts,
    batches,
    check_accounted,
    clients_fixture,
    db_fixture,
    items_by_status,
    sandbox_fixture,
    write_job,
)

from batcher.run import engine
from batcher.sandbox import start_sandbox
from batcher.spec import load_spec


@pytest.fixture(scope="module", name="served")
def served_fixture():
    with start_sandbox(speed=4.0) as sandbox:
        yield sandbox


def run_job(db, clients, tmp_path, n: int, classifier: str = "fixed:nano"):
    keep = "\n[batching]\nkeep_files = true\n"  # a test reads what was sent
    job = load_spec(write_job(tmp_path, n, classifier, spec=XAI_SPEC + keep))
    run_id = engine.start_run(db, job, job.input_file())
    return run_id, engine.drive_run(db, run_id, clients=clients, poll=POLL)


def test_clean_run_costs_what_the_sandbox_billed(db, sandbox, clients, tmp_path):
    run_id, outcome = run_job(db, clients, tmp_path, 5)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    assert items_by_status(db, run_id) == {"succeeded": 5}
    (batch,) = batches(db, run_id)
    assert batch["provider"] == "xai" and batch["raw_status"] == "completed"
    assert batch["provider_batch_id"].startswith("batch_")
    with open(batch["path"], "rb") as f:
        assert b"prompt_cache_key" not in f.read()  # not an xAI field
    check_accounted(db, run_id, sandbox, 5)


def test_bursts_of_429_and_500_on_every_call(db, sandbox, clients, tmp_path):
    sandbox.configure(
        faults="http429:count=5:retry_after=0.02:provider=xai:route=files|create|retrieve,"
        "http500:count=4:provider=xai:route=files|retrieve|list|results"
    )
    run_id, outcome = run_job(db, clients, tmp_path, 4)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    fired = {f["kind"]: f["fired"] for f in sandbox.configure()["faults"]}
    assert fired == {"http429": 5, "http500": 4}
    assert sandbox.stats()["batches_created"]["xai"] == 1
    check_accounted(db, run_id, sandbox, 4)


def test_create_answered_500_after_creating_bills_one_batch(db, sandbox, clients, tmp_path):
    sandbox.configure(faults="create_lost:count=1:provider=xai")
    run_id, outcome = run_job(db, clients, tmp_path, 4)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    assert sandbox.stats()["batches_created"]["xai"] == 1  # found by its name, adopted
    assert len(batches(db, run_id)) == 1
    check_accounted(db, run_id, sandbox, 4)


def test_expired_batch_keeps_what_finished_and_sends_the_rest_again(db, sandbox, clients, tmp_path):
    sandbox.configure(faults="expire:count=1:after=0.5:provider=xai")
    run_id, outcome = run_job(db, clients, tmp_path, 6)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    first, second = batches(db, run_id)
    assert first["raw_status"] == "expired" and first["n_succeeded"] == 3
    assert second["n_requests"] == 3 and second["n_succeeded"] == 3
    check_accounted(db, run_id, sandbox, 6)


def test_refused_batch_is_retried_within_the_transient_budget(db, sandbox, clients, tmp_path):
    sandbox.configure(faults="invalid_batch:count=4:provider=xai")
    run_id, outcome = run_job(db, clients, tmp_path, 2)
    assert outcome.status == "completed" and outcome.exit_code == 1
    assert items_by_status(db, run_id) == {"failed": 2}
    assert [b["raw_status"] for b in batches(db, run_id)] == ["failed"] * 3
    assert sandbox.billed() == []


def test_cancelled_run_cancels_the_batch(db, sandbox, clients, tmp_path):
    job = load_spec(write_job(tmp_path, 5, spec=XAI_SPEC))
    run_id = engine.start_run(db, job, job.input_file())
    sandbox.configure(faults="slow:count=5:factor=100")
    engine.drive_run(db, run_id, clients=clients, poll=POLL, submit_only=True)
    outcome = engine.cancel_run(db, run_id, clients=clients, poll=POLL)
    assert outcome.status == "cancelled" and outcome.exit_code == 4
    assert items_by_status(db, run_id) == {"cancelled": 5}
    assert batches(db, run_id)[0]["raw_status"] == "cancelled"
    assert sandbox.billed() == []
    check_accounted(db, run_id, sandbox, 5)


def test_request_errors_are_retried_on_the_same_tier(db, sandbox, clients, tmp_path):
    sandbox.configure(faults="request_error:count=2:provider=xai")
    run_id, outcome = run_job(db, clients, tmp_path, 4)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    assert items_by_status(db, run_id) == {"succeeded": 4}
    assert sum(1 for a in attempts(db, run_id) if a["error_code"] == "500") == 2
    check_accounted(db, run_id, sandbox, 4)
