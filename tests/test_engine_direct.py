"""Direct mode on DeepSeek, through the openai SDK's async client and the sandbox's chat
completions over HTTP: costs at standard rates equal to the billing priced here, DeepSeek's
cache fields, 429 and 500 bursts, the sandbox's rate limit, client-side rate limits, a
request billed but answered 500, cancel, and the report's direct-mode section."""

from __future__ import annotations

import time

import orjson
import pytest
from engine_helpers import (  # noqa: F401 - fixtures
    DEEPSEEK_SPEC,
    POLL,
    attempts,
    batches,
    check_accounted,
    clients_fixture,
    compatible_spec,
    db_fixture,
    items_by_status,
    sandbox_fixture,
    served_fixture,
    write_job,
)

from batcher.report.build import build_report, select_runs
from batcher.run import engine
from batcher.spec import load_spec

# Over the sandbox's 1,024-token caching minimum, so requests after the first read the cache.
LONG_SPEC = DEEPSEEK_SPEC.replace(
    'Allowed labels: billing, technical, account"',
    "Allowed labels: billing, technical, account\\n" + "Read the whole ticket. " * 250 + '"',
)


def run_job(db, clients, tmp_path, n: int, spec: str = DEEPSEEK_SPEC, extra: str = ""):
    job = load_spec(write_job(tmp_path, n, "fixed:nano", spec=spec + extra))
    run_id = engine.start_run(db, job, job.input_file())
    return run_id, engine.drive_run(db, run_id, clients=clients, poll=POLL)


def direct_rows(db, run_id):
    return build_report(db, select_runs(db, run_id)).direct


def test_clean_run_costs_the_standard_price_of_what_was_billed(db, sandbox, clients, tmp_path):
    keep = "\n[batching]\nkeep_files = true\n"  # to read what was sent
    run_id, outcome = run_job(db, clients, tmp_path, 6, spec=LONG_SPEC, extra=keep)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    assert items_by_status(db, run_id) == {"succeeded": 6}
    (batch,) = batches(db, run_id)
    assert batch["provider"] == "deepseek" and batch["provider_batch_id"].startswith("direct-")
    done = attempts(db, run_id)
    assert sum(1 for a in done if a["cache_read_tokens"]) >= 5  # prompt_cache_hit_tokens
    assert all(a["cost_pusd"] == a["standard_pusd"] for a in done)  # no batch discount
    with open(batch["path"], "rb") as f:
        assert "prompt_cache_key" not in orjson.loads(f.readline())["body"]
    check_accounted(db, run_id, sandbox, 6)
    (row,) = direct_rows(db, run_id)
    assert (row.provider, row.attempts, row.resent) == ("deepseek", 6, 0)


# The same tests with nano on a named OpenAI-compatible provider in direct mode, pointed at
# the sandbox's OpenAI chat completions (so the sandbox sees it as "openai").
ON_NANO = pytest.mark.parametrize(
    "nano_spec,seen_as",
    [(DEEPSEEK_SPEC, "deepseek"), (compatible_spec("direct"), "openai")],
    ids=["deepseek", "openai-compatible"],
)


@ON_NANO
def test_bursts_of_429_and_500(db, sandbox, clients, tmp_path, nano_spec, seen_as):
    sandbox.configure(
        faults=f"http429:count=6:retry_after=0.02:provider={seen_as}:route=chat,"
        f"http500:count=3:provider={seen_as}:route=chat"
    )
    run_id, outcome = run_job(db, clients, tmp_path, 5, spec=nano_spec)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    fired = {f["kind"]: f["fired"] for f in sandbox.configure()["faults"]}
    assert fired == {"http429": 6, "http500": 3}
    check_accounted(db, run_id, sandbox, 5)
    # A 500 may come after the work was done: the repeat is counted, a 429 is not.
    assert direct_rows(db, run_id)[0].resent == 3


def test_sandbox_rate_limit_answers_429_with_retry_after(db, sandbox, clients, tmp_path):
    sandbox.configure(speed=600.0, chat_rpm={"deepseek": 2})  # a minute is 0.1 s
    run_id, outcome = run_job(db, clients, tmp_path, 6)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    assert items_by_status(db, run_id) == {"succeeded": 6}
    assert sandbox.stats()["rate_limited"]["deepseek"] >= 2  # waited out, never billed
    check_accounted(db, run_id, sandbox, 6)


def test_client_side_rate_limit_spaces_the_requests(db, sandbox, clients, tmp_path):
    extra = "[providers.deepseek]\nrequests_per_minute = 300\nconcurrency = 8\n"  # 5 a second
    started = time.monotonic()
    run_id, outcome = run_job(db, clients, tmp_path, 10, extra=extra)
    assert outcome.status == "completed", outcome.message
    assert time.monotonic() - started >= 0.9  # 5 at once (one second's burst), 5 over ~1 s
    check_accounted(db, run_id, sandbox, 10)


@ON_NANO
def test_request_billed_but_answered_500_is_counted_as_possibly_billed_twice(
    db, sandbox, clients, tmp_path, nano_spec, seen_as
):
    sandbox.configure(faults=f"create_lost:count=1:provider={seen_as}")
    run_id, outcome = run_job(db, clients, tmp_path, 4, spec=nano_spec)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    billed = sandbox.billed(provider=seen_as)
    paid = [a for a in attempts(db, run_id) if a["cost_pusd"]]
    assert len(billed) == len(paid) + 1  # the lost answer's request was billed twice
    assert direct_rows(db, run_id)[0].resent == 1  # and the report says so


@pytest.mark.parametrize(
    "spec",
    [DEEPSEEK_SPEC + "[providers.deepseek]\nconcurrency = 2\n",
     compatible_spec("direct", extra="concurrency = 2\n")],
    ids=["deepseek", "openai-compatible"],
)  # fmt: skip
def test_cancelled_run_stops_sending_and_keeps_what_finished(db, sandbox, clients, tmp_path, spec):
    sandbox.configure(chat_latency_s=0.2)
    job = load_spec(write_job(tmp_path, 8, spec=spec))
    run_id = engine.start_run(db, job, job.input_file())
    engine.drive_run(db, run_id, clients=clients, poll=POLL, submit_only=True)
    deadline = time.monotonic() + 10
    while len(sandbox.billed()) < 2:  # the first two answered; two more in flight
        assert time.monotonic() < deadline
        time.sleep(0.02)
    outcome = engine.cancel_run(db, run_id, clients=clients, poll=POLL)
    assert outcome.status == "cancelled" and outcome.exit_code == 4
    status = items_by_status(db, run_id)
    assert status["cancelled"] >= 2 and status["succeeded"] >= 2 and sum(status.values()) == 8
    assert len(sandbox.billed()) == status["succeeded"] <= 6
    assert batches(db, run_id)[0]["raw_status"] == "cancelled"
    check_accounted(db, run_id, sandbox, 8)
