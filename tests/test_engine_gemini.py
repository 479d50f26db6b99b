"""The engine on Gemini batch mode, through google-genai and the sandbox over HTTP: costs equal
to the billing priced here, faults, a create that answered 500, expiry, cancel, a failed job."""

from __future__ import annotations

import threading
import time

import orjson
import pytest
from engine_helpers import (  # noqa: F401 - fixtures
    GEMINI_SPEC,
    POLL,
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
    with start_sandbox(speed=4.0) as sandbox:  # a 4x clock: each job takes ~0.15 s
        yield sandbox


# Over Gemini 2.5 Flash's 2,048-token caching minimum, so mid's requests share a cached prefix.
LONG = 'system = "You label support tickets.\\nAllowed labels: billing, technical, account\\n'
LONG_SPEC = GEMINI_SPEC.replace(
    'system = "You label support tickets.\\nAllowed labels: billing, technical, account',
    LONG.rstrip("\\n") + "\\n" + "Read the whole ticket before you answer. " * 300,
)


def run_job(db, clients, tmp_path, n: int, classifier: str = "fixed:nano", spec=GEMINI_SPEC):
    job = load_spec(write_job(tmp_path, n, classifier, spec=spec))
    run_id = engine.start_run(db, job, job.input_file())
    return run_id, engine.drive_run(db, run_id, clients=clients, poll=POLL)


def test_clean_run_costs_what_the_sandbox_billed_with_implicit_cache_reads(
    db, sandbox, clients, tmp_path
):
    run_id, outcome = run_job(db, clients, tmp_path, 6, classifier="fixed:mid", spec=LONG_SPEC)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    assert items_by_status(db, run_id) == {"succeeded": 6}
    (batch,) = batches(db, run_id)
    assert batch["provider"] == "google" and batch["raw_status"] == "JOB_STATE_SUCCEEDED"
    assert batch["provider_batch_id"].startswith("batches/")
    assert batch["input_file_id"].startswith("files/")
    done = attempts(db, run_id)
    assert sum(1 for a in done if a["cache_read_tokens"]) == 5  # all but the first
    assert all(a["reasoning_tokens"] > 0 for a in done)  # 2.5 Flash thinks, billed as output
    check_accounted(db, run_id, sandbox, 6)


def test_bursts_of_429_and_500_on_every_call(db, sandbox, clients, tmp_path):
    sandbox.configure(
        faults="http429:count=5:retry_after=0.02:provider=google:route=files|create|retrieve,"
        "http500:count=4:provider=google:route=files|retrieve|list|results"
    )
    run_id, outcome = run_job(db, clients, tmp_path, 5)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    fired = {f["kind"]: f["fired"] for f in sandbox.configure()["faults"]}
    assert fired == {"http429": 5, "http500": 4}
    assert sandbox.stats()["batches_created"]["google"] == 1
    check_accounted(db, run_id, sandbox, 5)


def test_create_answered_500_after_creating_bills_one_job(db, sandbox, clients, tmp_path):
    sandbox.configure(faults="create_lost:count=1:provider=google")
    run_id, outcome = run_job(db, clients, tmp_path, 4)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    assert sandbox.stats()["batches_created"]["google"] == 1  # found by display name, adopted
    assert len(batches(db, run_id)) == 1
    check_accounted(db, run_id, sandbox, 4)


def test_expired_job_returns_nothing_and_every_request_runs_again(db, sandbox, clients, tmp_path):
    sandbox.configure(faults="expire:count=1:after=0.5:provider=google")
    run_id, outcome = run_job(db, clients, tmp_path, 6)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    first, second = batches(db, run_id)
    assert first["raw_status"] == "JOB_STATE_EXPIRED" and second["n_succeeded"] == 6
    assert {r["batch_id"] for r in sandbox.billed()} == {second["provider_batch_id"][8:]}
    check_accounted(db, run_id, sandbox, 6)


def test_expired_job_with_partial_results_keeps_them(db, sandbox, clients, tmp_path):
    sandbox.configure(
        faults="expire:count=1:after=0.5:provider=google", gemini_partial_results=True
    )
    run_id, outcome = run_job(db, clients, tmp_path, 6)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    first, second = batches(db, run_id)
    assert first["n_succeeded"] == 3 and second["n_requests"] == 3
    check_accounted(db, run_id, sandbox, 6)


def test_failed_job_is_retried_within_the_transient_budget(db, sandbox, clients, tmp_path):
    sandbox.configure(faults="invalid_batch:count=4:provider=google")
    run_id, outcome = run_job(db, clients, tmp_path, 2)
    # The job fails without a reason the SDK passes on: each item is tried 1 + 2 times.
    assert outcome.status == "completed" and outcome.exit_code == 1
    assert items_by_status(db, run_id) == {"failed": 2}
    assert [b["raw_status"] for b in batches(db, run_id)] == ["JOB_STATE_FAILED"] * 3
    assert {a["error_code"] for a in attempts(db, run_id)} == {"job_failed"}
    assert sandbox.billed() == []


def test_cancelled_run_cancels_the_job(db, sandbox, clients, tmp_path):
    job = load_spec(write_job(tmp_path, 5, spec=GEMINI_SPEC))
    run_id = engine.start_run(db, job, job.input_file())
    sandbox.configure(faults="slow:count=5:factor=100")
    engine.drive_run(db, run_id, clients=clients, poll=POLL, submit_only=True)
    result = {}
    cancelling = threading.Thread(
        target=lambda: result.update(
            outcome=engine.cancel_run(db, run_id, clients=clients, poll=POLL)
        )
    )
    cancelling.start()
    deadline = time.monotonic() + 30
    while cancelling.is_alive() and time.monotonic() < deadline:
        sandbox.advance_clock(5)  # the cancel takes 20 s of sandbox time
        cancelling.join(0.1)
    outcome = result["outcome"]
    assert outcome.status == "cancelled" and outcome.exit_code == 4
    assert items_by_status(db, run_id) == {"cancelled": 5}
    assert batches(db, run_id)[0]["raw_status"] == "JOB_STATE_CANCELLED"
    assert sandbox.billed() == []
    check_accounted(db, run_id, sandbox, 5)


def test_responses_file_gone_sends_every_request_again(db, sandbox, clients, tmp_path):
    from google import genai
    from google.genai import types

    job = load_spec(write_job(tmp_path, 3, spec=GEMINI_SPEC))
    run_id = engine.start_run(db, job, job.input_file())
    engine.drive_run(db, run_id, clients=clients, poll=POLL, submit_only=True)
    gem = genai.Client(
        api_key="k", http_options=types.HttpOptions(base_url=sandbox.gemini_base_url)
    )
    name = batches(db, run_id)[0]["provider_batch_id"]
    deadline = time.monotonic() + 20
    while not (remote := gem.batches.get(name=name)).done:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    gem.files.delete(name=remote.dest.file_name)  # expired (48 h) or deleted before we read it
    outcome = engine.resume_run(db, run_id, clients=clients, poll=POLL)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    first, second = batches(db, run_id)
    assert first["n_errored"] == 3 and second["n_succeeded"] == 3
    assert {a["error_code"] for a in attempts(db, run_id)} == {"missing_result", None}


def test_validation_json_schema_is_sent_as_gemini_structured_output(db, sandbox, clients, tmp_path):
    schema = (
        '{ type = "object", required = ["label"], additionalProperties = false, '
        'properties = { label = { enum = ["billing", "technical", "account"] } } }'
    )
    spec = GEMINI_SPEC.replace(
        '[validation]\nlabels = ["billing", "technical", "account"]',
        "[validation]\njson_schema = " + schema.replace("{", "{{").replace("}", "}}"),
    )  # doubled braces: write_job fills the spec in with str.format
    spec += "\n[batching]\nkeep_files = true\n"  # the test reads what was sent
    run_id, outcome = run_job(db, clients, tmp_path, 3, spec=spec)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    assert items_by_status(db, run_id) == {"succeeded": 3}
    assert {a["tier"] for a in attempts(db, run_id)} == {"nano"}  # valid at the first try
    with open(batches(db, run_id)[0]["path"], "rb") as f:
        config = orjson.loads(f.readline())["request"]["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"]["additionalProperties"] is False
