"""Crash-safe submission: a batch left `submitting` is looked up, adopted, re-planned, or, when
the provider cannot tell, the run stops and says what to check and which command continues."""

from __future__ import annotations

from pathlib import Path

from engine_helpers import (  # noqa: F401 - fixtures
    POLL,
    batches,
    check_accounted,
    clients_fixture,
    db_fixture,
    items_by_status,
    sandbox_fixture,
    served_fixture,
    write_job,
)

from batcher.providers import connect
from batcher.run import engine
from batcher.run.submit import mark_intent
from batcher.spec import load_spec


def planned_run(db, tmp_path, n: int, classifier: str) -> tuple[int, dict]:
    spec = load_spec(write_job(tmp_path, n, classifier))
    run_id = engine.start_run(db, spec, spec.input_file())
    (batch,) = batches(db, run_id)
    return run_id, batch


def test_two_candidates_stop_the_run_and_adopt_settles_it(db, sandbox, clients, tmp_path):
    run_id, batch = planned_run(db, tmp_path, 3, "fixed:frontier")
    assert mark_intent(db, batch["id"])  # the runner died here, or the create went unanswered
    provider = connect("anthropic", clients)
    # Two batches of the same size appear after the intent: Anthropic batches carry no
    # metadata, so nothing tells which one is ours.
    first = provider.submit(batch["id"], Path(batch["path"]), batch["model"])
    second = provider.submit(batch["id"], Path(batch["path"]), batch["model"])

    stopped = engine.resume_run(db, run_id, clients=clients, poll=POLL)
    assert stopped.status == "failed" and stopped.exit_code == 1
    for text in (batch["id"], first.provider_batch_id, second.provider_batch_id):
        assert text in stopped.message
    assert f"batcher resume {run_id} --adopt {batch['id']}=PROVIDER_BATCH_ID" in stopped.message
    assert batches(db, run_id)[0]["status"] == "submitting"  # nothing decided for the user

    adopt = {batch["id"]: first.provider_batch_id}
    done = engine.resume_run(db, run_id, clients=clients, poll=POLL, adopt=adopt)
    assert done.status == "completed" and done.exit_code == 0, done.message
    assert batches(db, run_id)[0]["provider_batch_id"] == first.provider_batch_id
    assert sandbox.stats()["batches_created"]["anthropic"] == 2  # no third one


def test_not_created_sends_the_batch_again(db, sandbox, clients, tmp_path):
    run_id, batch = planned_run(db, tmp_path, 2, "fixed:frontier")
    assert mark_intent(db, batch["id"])
    sandbox.configure(faults="http500:count=100:route=list")  # the lookup cannot answer
    stopped = engine.resume_run(db, run_id, clients=clients, poll=POLL)
    assert stopped.status == "failed" and "looking it up at anthropic failed" in stopped.message
    sandbox.configure(clear_faults=True)
    done = engine.resume_run(db, run_id, clients=clients, poll=POLL, not_created=[batch["id"]])
    assert done.exit_code == 0, done.message
    check_accounted(db, run_id, sandbox, 2)


def test_an_intent_that_never_reached_the_provider_is_sent_once(db, sandbox, clients, tmp_path):
    run_id, batch = planned_run(db, tmp_path, 4, "fixed:nano")
    assert mark_intent(db, batch["id"])
    done = engine.resume_run(db, run_id, clients=clients, poll=POLL)
    assert done.exit_code == 0, done.message
    assert sandbox.stats()["batches_created"]["openai"] == 1
    check_accounted(db, run_id, sandbox, 4)


def test_an_openai_batch_created_before_the_crash_is_adopted(db, sandbox, clients, tmp_path):
    run_id, batch = planned_run(db, tmp_path, 4, "fixed:nano")
    assert mark_intent(db, batch["id"])
    created = connect("openai", clients).submit(batch["id"], Path(batch["path"]), batch["model"])
    # Another batch of the same size, not ours: metadata tells them apart.
    connect("openai", clients).submit("someone-else", Path(batch["path"]), batch["model"])
    done = engine.resume_run(db, run_id, clients=clients, poll=POLL)
    assert done.exit_code == 0, done.message
    assert batches(db, run_id)[0]["provider_batch_id"] == created.provider_batch_id
    assert items_by_status(db, run_id) == {"succeeded": 4}


def test_a_fresh_intent_is_looked_up_again_before_it_is_declared_not_created(
    db, sandbox, clients, tmp_path
):
    from batcher.run.submit import settle

    run_id, batch = planned_run(db, tmp_path, 2, "fixed:nano")
    assert mark_intent(db, batch["id"])
    provider = connect("openai", clients)
    # A create that timed out may still be under way at the provider: not listed yet is not
    # proof, so within the grace period the batch stays `submitting`.
    kind, detail = settle(db, provider, batch["id"], grace_s=60)
    assert kind == "wait" and "not listed at openai yet" in detail
    assert batches(db, run_id)[0]["status"] == "submitting"
    kind, _ = settle(db, provider, batch["id"], grace_s=0)
    assert kind == "retry" and batches(db, run_id)[0]["status"] == "planned"
