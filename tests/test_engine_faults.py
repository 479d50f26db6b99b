"""The engine through the sandbox's injected faults: every item accounted for, nothing billed
twice, every billed cent stored."""

from __future__ import annotations

import threading
import time
from collections import Counter

import orjson
import pytest
from engine_helpers import (  # noqa: F401 - fixtures
    POLL,
    SPEC,
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

from batcher.providers import Clients
from batcher.providers.calls import RetryPolicy
from batcher.run import engine
from batcher.spec import load_spec


def run_job(db, clients, tmp_path, n: int, classifier: str = "fixed:nano", spec: str = SPEC):
    spec = load_spec(write_job(tmp_path, n, classifier, spec=spec))
    run_id = engine.start_run(db, spec, spec.input_file())
    return run_id, engine.drive_run(db, run_id, clients=clients, poll=POLL)


def by_item(db, run_id: int) -> dict[int, list[dict]]:
    chains: dict[int, list[dict]] = {}
    for attempt in attempts(db, run_id):
        chains.setdefault(attempt["item_id"], []).append(attempt)
    return chains


# The same fault tests with nano on a named OpenAI-compatible provider in batch mode: the
# OpenAI batch module under another name, base URL and key.
ON_NANO = pytest.mark.parametrize(
    "nano_spec", [SPEC, compatible_spec("batch")], ids=["openai", "openai-compatible"]
)


@ON_NANO
def test_bursts_of_429_and_500_on_every_call(db, sandbox, clients, tmp_path, nano_spec):
    sandbox.configure(
        faults="http429:count=6:retry_after=0.05,"
        "http500:count=4:route=retrieve|list|files|results,"
        "http529:count=3:provider=anthropic:route=retrieve|results"
    )
    run_id, outcome = run_job(db, clients, tmp_path, 12, "heuristic", nano_spec)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    check_accounted(db, run_id, sandbox, 12)
    fired = {f["kind"]: f["fired"] for f in sandbox.configure()["faults"]}
    assert fired["http429"] == 6 and fired["http500"] == 4


@ON_NANO
def test_create_answered_500_after_creating_bills_one_batch(
    db, sandbox, clients, tmp_path, nano_spec
):
    sandbox.configure(faults="create_lost:count=1")
    run_id, outcome = run_job(db, clients, tmp_path, 10, spec=nano_spec)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    assert sandbox.stats()["batches_created"]["openai"] == 1  # adopted, not created again
    assert len(batches(db, run_id)) == 1
    check_accounted(db, run_id, sandbox, 10)


def test_create_refused_with_500_is_sent_again(db, sandbox, clients, tmp_path):
    sandbox.configure(faults="http500:count=2:route=create")
    run_id, outcome = run_job(db, clients, tmp_path, 5)
    assert outcome.exit_code == 0, outcome.message
    assert sandbox.stats()["batches_created"]["openai"] == 1
    check_accounted(db, run_id, sandbox, 5)


def test_token_limit_exceeded_waits_and_submits_again(db, sandbox, clients, tmp_path):
    sandbox.configure(faults="token_limit:count=1")
    run_id, outcome = run_job(db, clients, tmp_path, 6)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    first, second = batches(db, run_id)
    assert first["raw_status"] == "failed" and "token_limit_exceeded" in first["error"]
    assert second["round"] == 2 and second["status"] == "reconciled"
    for chain in by_item(db, run_id).values():
        assert [a["status"] for a in chain] == ["errored", "succeeded"]
        assert chain[0]["error_code"] == "token_limit_exceeded"
    check_accounted(db, run_id, sandbox, 6)


def test_batch_failing_validation_says_why(db, sandbox, clients, tmp_path):
    sandbox.configure(faults="invalid_batch:count=1:provider=openai")
    run_id, outcome = run_job(db, clients, tmp_path, 4)
    # The provider refused the file itself: sending the same requests again would not help,
    # so the items end failed, each with the provider's reason, and nothing was billed.
    assert outcome.status == "completed" and outcome.exit_code == 1
    assert items_by_status(db, run_id) == {"failed": 4}
    failed = batches(db, run_id)[0]
    assert failed["raw_status"] == "failed" and "invalid_request" in failed["error"]
    for chain in by_item(db, run_id).values():
        assert [a["status"] for a in chain] == ["errored"]
        assert chain[0]["error_code"] == "invalid_request"
        assert "rejected" in chain[0]["error_message"]
    assert sandbox.billed() == []
    check_accounted(db, run_id, sandbox, 4)


def test_anthropic_refusing_the_create_is_settled(db, sandbox, clients, tmp_path):
    sandbox.configure(faults="invalid_batch:count=1:provider=anthropic")
    run_id, outcome = run_job(db, clients, tmp_path, 4, classifier="fixed:frontier")
    assert outcome.status == "completed" and outcome.exit_code == 1
    refused = batches(db, run_id)[0]
    assert refused["status"] == "abandoned" and refused["provider_batch_id"] is None
    assert "rejected" in refused["error"]
    assert sandbox.stats()["batches_created"]["anthropic"] == 0
    assert items_by_status(db, run_id) == {"failed": 4}
    assert {a["error_code"] for a in attempts(db, run_id)} == {"invalid_request_error"}


def test_expired_batch_keeps_half_and_retries_the_rest(db, sandbox, clients, tmp_path):
    sandbox.configure(faults="expire:count=1:after=0.5")
    run_id, outcome = run_job(db, clients, tmp_path, 20)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    first, second = batches(db, run_id)
    assert first["raw_status"] == "expired"
    assert first["n_succeeded"] == 10 and first["n_expired"] == 10
    assert second["n_requests"] == 10 and second["n_succeeded"] == 10
    chains = by_item(db, run_id)
    assert sorted(len(c) for c in chains.values()) == [1] * 10 + [2] * 10
    check_accounted(db, run_id, sandbox, 20)


def test_malformed_answers_climb_the_ladder_until_valid(db, sandbox, clients, tmp_path):
    sandbox.configure(malformed={"gpt-5-nano": 1.0, "gpt-5-mini": 1.0})
    run_id, outcome = run_job(db, clients, tmp_path, 6)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    for chain in by_item(db, run_id).values():
        assert [(a["tier"], a["status"]) for a in chain] == [
            ("nano", "invalid"),
            ("mid", "invalid"),
            ("frontier", "succeeded"),
        ]
    assert [b["round"] for b in batches(db, run_id)] == [1, 2, 3]
    check_accounted(db, run_id, sandbox, 6)


def test_malformed_answers_everywhere_exhaust_the_ladder(db, sandbox, clients, tmp_path):
    sandbox.configure(malformed={"*": 1.0})
    run_id, outcome = run_job(db, clients, tmp_path, 5)
    assert outcome.status == "completed" and outcome.exit_code == 1
    assert items_by_status(db, run_id) == {"failed": 5}
    for chain in by_item(db, run_id).values():
        assert [a["tier"] for a in chain] == ["nano", "mid", "frontier"]
        assert {a["status"] for a in chain} == {"invalid"}
    check_accounted(db, run_id, sandbox, 5)


@ON_NANO
def test_cancelled_run_keeps_what_finished(db, sandbox, clients, tmp_path, nano_spec):
    spec = load_spec(write_job(tmp_path, 40, spec=nano_spec))
    run_id = engine.start_run(db, spec, spec.input_file())
    sandbox.configure(faults="slow:count=5:factor=100")  # validating 15 s, processing 30 s
    engine.drive_run(db, run_id, clients=clients, poll=POLL, submit_only=True)
    sandbox.advance_clock(15 + 15)  # half of the requests have run
    result = {}
    cancelling = threading.Thread(
        target=lambda: result.update(
            outcome=engine.cancel_run(db, run_id, clients=clients, poll=POLL)
        )
    )
    cancelling.start()
    deadline = time.monotonic() + 30
    while not cancel_reached(sandbox) and time.monotonic() < deadline:
        time.sleep(0.01)  # the clock stands still until the cancel is in: half stays unrun
    while cancelling.is_alive() and time.monotonic() < deadline:
        sandbox.advance_clock(5)  # the cancel takes 20 s of sandbox time
        cancelling.join(0.1)
    outcome = result["outcome"]
    assert outcome.status == "cancelled" and outcome.exit_code == 4
    status = items_by_status(db, run_id)
    assert 0 < status["succeeded"] < 40 and status["succeeded"] + status["cancelled"] == 40
    batch = batches(db, run_id)[0]
    assert batch["raw_status"] == "cancelled" and batch["n_cancelled"] == status["cancelled"]
    check_accounted(db, run_id, sandbox, 40)


def cancel_reached(sandbox) -> bool:
    """Whether the sandbox has received a cancel for one of its OpenAI batches."""
    with sandbox.state.lock:
        batches = list(sandbox.state.openai_batches.values())
    return any(b.timeline.cancel_requested is not None for b in batches)


def test_cancel_before_submitting_abandons_everything(db, sandbox, clients, tmp_path):
    spec = load_spec(write_job(tmp_path, 3))
    run_id = engine.start_run(db, spec, spec.input_file())
    outcome = engine.cancel_run(db, run_id, clients=clients, poll=POLL)
    assert outcome.status == "cancelled" and outcome.items == {"cancelled": 3}
    assert [b["status"] for b in batches(db, run_id)] == ["abandoned"]
    assert not any(sandbox.stats()["batches_created"].values())


def enqueued_tokens(path: str) -> int:
    """Input tokens of a batch file as the sandbox counts them against the limit."""
    from batcher.sandbox.prompts import count, openai_parts

    with open(path, "rb") as f:
        lines = [orjson.loads(line) for line in f]
    return sum(count(openai_parts(line["body"], line["url"])) for line in lines)


def test_enqueued_token_limit_waits_for_the_running_batch(db, sandbox, clients, tmp_path):
    path = write_job(tmp_path, 10)
    with open(path, "a") as f:
        f.write("[batching]\nopenai_max_lines = 5\n")  # two batches of five
    spec = load_spec(path)
    run_id = engine.start_run(db, spec, spec.input_file())
    one_batch = max(enqueued_tokens(b["path"]) for b in batches(db, run_id))
    # Room for one batch of the model at a time: the second must wait for the first.
    sandbox.configure(openai_token_limit={"gpt-5-nano": int(one_batch * 1.5)})
    outcome = engine.drive_run(db, run_id, clients=clients, poll=POLL)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    refused = [b for b in batches(db, run_id) if b["raw_status"] == "failed"]
    assert refused and all("token_limit_exceeded" in b["error"] for b in refused)
    codes = Counter(a["error_code"] for a in attempts(db, run_id) if a["status"] == "errored")
    assert set(codes) == {"token_limit_exceeded"}
    check_accounted(db, run_id, sandbox, 10)


def test_cancel_from_another_process_is_carried_out_by_the_driver(db, sandbox, clients, tmp_path):
    spec = load_spec(write_job(tmp_path, 6))
    run_id = engine.start_run(db, spec, spec.input_file())
    sandbox.configure(faults="slow:count=5:factor=1000")
    result = {}
    driver = threading.Thread(
        target=lambda: result.update(
            outcome=engine.drive_run(db, run_id, clients=clients, poll=POLL)
        )
    )
    driver.start()
    deadline = time.monotonic() + 20
    while batches(db, run_id)[0]["status"] != "submitted" and time.monotonic() < deadline:
        time.sleep(0.02)
    told = engine.cancel_run(db, run_id, clients=clients, poll=POLL)
    assert told.message == "the process driving this run is cancelling it"
    while batches(db, run_id)[0]["raw_status"] != "cancelling" and time.monotonic() < deadline:
        time.sleep(0.02)  # the driver sees the run cancelled and cancels its batch
    while driver.is_alive() and time.monotonic() < deadline:
        sandbox.advance_clock(300)  # the provider takes its time to cancel
        driver.join(0.1)
    assert result["outcome"].status == "cancelled"
    assert items_by_status(db, run_id) == {"cancelled": 6}
    assert batches(db, run_id)[0]["raw_status"] == "cancelled"


def test_output_files_gone_retries_every_request(db, sandbox, clients, tmp_path):
    import openai

    spec = load_spec(write_job(tmp_path, 4))
    run_id = engine.start_run(db, spec, spec.input_file())
    engine.drive_run(db, run_id, clients=clients, poll=POLL, submit_only=True)
    sdk = openai.OpenAI(base_url=sandbox.openai_base_url, api_key="sk-test")
    batch_id = batches(db, run_id)[0]["provider_batch_id"]
    deadline = time.monotonic() + 20
    while (remote := sdk.batches.retrieve(batch_id)).status != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    sdk.files.delete(remote.output_file_id)  # expired or deleted before we read it
    outcome = engine.resume_run(db, run_id, clients=clients, poll=POLL)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    first, second = batches(db, run_id)
    assert first["status"] == "reconciled" and first["n_errored"] == 4
    assert second["round"] == 2 and second["n_succeeded"] == 4
    for chain in by_item(db, run_id).values():
        assert [a["error_code"] for a in chain] == ["missing_result", None]


def impatient(sandbox) -> Clients:
    """Clients that give up a call after 4 quick tries."""
    return Clients.for_sandbox(sandbox, RetryPolicy(attempts=4, base_s=0.001, cap_s=0.005))


def test_polls_ride_out_an_outage_longer_than_the_client_retries(db, sandbox, clients, tmp_path):
    spec = load_spec(write_job(tmp_path, 3))
    run_id = engine.start_run(db, spec, spec.input_file())
    # 10 failures in a row: more than one poll's 4 tries, fewer than the loop tolerates.
    sandbox.configure(faults="http500:count=10:route=retrieve")
    outcome = engine.drive_run(db, run_id, clients=impatient(sandbox), poll=POLL)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    check_accounted(db, run_id, sandbox, 3)


def test_a_long_outage_stops_the_run_saying_how_to_continue(db, sandbox, clients, tmp_path):
    spec = load_spec(write_job(tmp_path, 3))
    run_id = engine.start_run(db, spec, spec.input_file())
    sandbox.configure(faults="http500:count=100000:route=retrieve")
    outcome = engine.drive_run(db, run_id, clients=impatient(sandbox), poll=0.01)
    assert outcome.status == "failed" and outcome.exit_code == 1
    assert "openai batch retrieve failed: HTTP 500" in outcome.message
    assert f"`batcher resume {run_id}` continues" in outcome.message
    sandbox.configure(clear_faults=True)
    assert engine.resume_run(db, run_id, clients=clients, poll=POLL).exit_code == 0


def test_results_that_cannot_be_read_yet_are_read_later(db, sandbox, clients, tmp_path):
    spec = load_spec(write_job(tmp_path, 4, classifier="fixed:frontier"))
    run_id = engine.start_run(db, spec, spec.input_file())
    sandbox.configure(faults="http500:count=10:route=results")  # over two reads' 4 tries
    outcome = engine.drive_run(db, run_id, clients=impatient(sandbox), poll=POLL)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    assert [b["status"] for b in batches(db, run_id)] == ["reconciled"]
    check_accounted(db, run_id, sandbox, 4)
