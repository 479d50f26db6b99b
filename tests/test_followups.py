"""After a failed attempt: retry, escalate or end the item; answers reused across runs."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from reconcile_fixtures import (
    ATTEMPT,
    BATCH,
    ITEM,
    item_rows,
    make_spec,
    plan,
    rows_of,
    send,
    snapshot,
)

from batcher.plan.planner import lay_out_batches
from batcher.plan.requests import defaults_fingerprint, request_hash
from batcher.providers.base import Result, Usage
from batcher.run.followups import Decision, FollowupPolicy, Step, plan_followups
from batcher.run.reconcile import fail_batch, reconcile_batch
from batcher.run.reuse import apply_reuse
from batcher.store.db import open_store

GOOD, BAD = '{"label": "billing"}', '{"label": "nonsense"}'
USAGE = Usage(input_tokens=200, output_tokens=10)
LADDER = ("nano", "mid", "frontier")


# --- the policy, as a specification ---------------------------------------------------------

POLICY = FollowupPolicy(max_attempts=4, transient_retries=2, ladder=LADDER)


def chain(*steps: str) -> list[Step]:
    """'nano:errored:server_error' ... -> Steps with seq 1, 2, ..."""
    out = []
    for seq, text in enumerate(steps, 1):
        tier, status, *code = text.split(":")
        out.append(Step(seq, tier, status, code[0] if code else None))
    return out


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (["nano:succeeded"], Decision("succeed")),
        (["nano:reused"], Decision("succeed")),
        (["nano:cancelled"], Decision("cancel", reason="cancelled before it ran")),
        (["nano:submitted"], Decision("wait")),
        # an invalid answer climbs the ladder
        (["nano:invalid"], Decision("escalate", tier="mid")),
        (["nano:invalid", "mid:invalid"], Decision("escalate", tier="frontier")),
        (
            ["nano:invalid", "mid:invalid", "frontier:invalid"],
            Decision("fail", reason="invalid answer and no tier above 'frontier'"),
        ),
        # transient errors retry on the same tier, twice
        (["nano:errored:server_error"], Decision("retry", tier="nano")),
        (["nano:expired:batch_expired", "nano:errored:missing_result"], Decision("retry", "nano")),
        (
            ["nano:errored:x", "nano:errored:y", "nano:errored:missing_result"],
            Decision("fail", reason="missing_result: transient retries on 'nano' used up"),
        ),
        # an expiry has a budget of its own: neither transient_retries nor max_attempts
        (["nano:expired"], Decision("retry", tier="nano", free=True, reason="expired")),
        (
            ["nano:errored:x", "nano:errored:y", "nano:expired", "nano:errored:missing_result"],
            Decision("fail", reason="missing_result: transient retries on 'nano' used up"),
        ),
        (
            ["nano:errored:x"] * 2 + ["nano:invalid"] + ["mid:expired"] * 5,
            Decision("retry", tier="mid", free=True, reason="expired"),
        ),
        (["nano:expired"] * 6, Decision("fail", reason="expired 6 times (expired_retries)")),
        # ... and each tier has its own transient retries, but max_attempts caps them all
        (["nano:errored:x", "nano:invalid", "mid:errored:x"], Decision("retry", tier="mid")),
        (
            ["nano:errored:x", "nano:invalid", "mid:errored:x", "mid:errored:x"],
            Decision("fail", reason="x after 4 attempts (max_attempts)"),
        ),
        (
            ["nano:errored:x", "nano:errored:x", "nano:invalid", "mid:invalid"],
            Decision("fail", reason="invalid answer after 4 attempts (max_attempts)"),
        ),
        # a refused batch retries free, even past every budget, up to free_retries
        (["nano:errored:token_limit_exceeded"], Decision("retry", tier="nano", free=True)),
        (
            ["nano:errored:x"] * 3 + ["nano:invalid"] + ["mid:errored:batch_failed"] * 5,
            Decision("retry", tier="mid", free=True),
        ),
        (
            ["nano:errored:token_limit_exceeded"] * 11,
            Decision("fail", reason="token_limit_exceeded 11 times"),
        ),
        # the request's own fault is not retried
        (
            ["nano:errored:invalid_request_error"],
            Decision("fail", reason="invalid_request_error: the provider refuses this request"),
        ),
        # off the ladder: nowhere to escalate
        (["solo:invalid"], Decision("fail", reason="invalid answer and no tier above 'solo'")),
    ],
)
def test_policy(steps, expected):
    assert POLICY.decide(chain(*steps)) == expected


def test_policy_from_spec():
    spec = make_spec(
        retry={"max_attempts": 2, "transient_retries": 0},
        routing={"ladder": ["nano", "frontier"]},
        on_invalid="fail",
    )
    policy = FollowupPolicy.from_spec(spec)
    windows = policy.windows
    assert policy == FollowupPolicy(
        2, 0, ("nano", "frontier"), escalate_invalid=False, windows=windows
    )
    assert windows["nano"] and windows["frontier"]  # context windows from the price data
    assert policy.decide(chain("nano:invalid")).reason == "invalid answer (on_invalid = fail)"
    assert policy.decide(chain("nano:errored:x")).kind == "fail"
    with pytest.raises(ValueError, match="retry limits"):
        FollowupPolicy(0, 1, LADDER)


# --- on the database ----------------------------------------------------------------------


@pytest.fixture
def db(db_url):
    engine = open_store(db_url)
    yield engine
    engine.dispose()


def open_attempts(db, batch_id):
    return rows_of(db, ATTEMPT, ATTEMPT.c.batch_id == batch_id)


def answer_all(db, spec, run_id, answer) -> int:
    """Send, answer and reconcile every planned batch of the run; returns how many."""
    batches = send(db, run_id)
    for batch_id in batches:
        results = [r for a in open_attempts(db, batch_id) if (r := answer(a)) is not None]
        reconcile_batch(db, batch_id, results, spec)
    return len(batches)


def next_round(db, spec, run_id, round_no):
    summary = plan_followups(db, run_id, spec)
    lay_out_batches(db, run_id, spec, round=round_no)
    return summary


def items_by_custom_id(db, run_id):
    return {r["custom_id"]: r for r in item_rows(db, ITEM.c.run_id == run_id)}


def test_each_outcome_gets_its_next_step(db, tmp_path):
    spec = make_spec(routing={"classifier": "fixed:nano"})
    run_id = plan(db, spec, tmp_path, 5)
    plan_for = {"t0": "good", "t1": "bad", "t2": "error", "t3": "cancel", "t4": "missing"}
    ids = {r["id"]: r["custom_id"] for r in rows_of(db, ITEM, ITEM.c.run_id == run_id)}

    def answer(attempt):
        what = plan_for[ids[attempt["item_id"]]]
        cid = attempt["custom_id"]
        return {
            "good": Result(cid, "succeeded", GOOD, USAGE),
            "bad": Result(cid, "succeeded", BAD, USAGE),
            "error": Result(cid, "errored", error_code="server_error"),
            "cancel": Result(cid, "cancelled"),
            "missing": None,
        }[what]

    answer_all(db, spec, run_id, answer)
    summary = plan_followups(db, run_id, spec)
    assert (summary.retried, summary.escalated, summary.cancelled) == (2, 1, 1)
    assert (summary.failed, summary.succeeded, summary.new_attempts) == (0, 0, 3)

    items = items_by_custom_id(db, run_id)
    assert {k: v["status"] for k, v in items.items()} == {
        "t0": "succeeded",
        "t1": "queued",
        "t2": "queued",
        "t3": "cancelled",
        "t4": "queued",
    }
    new = {
        r["item_id"]: r
        for r in rows_of(db, ATTEMPT, (ATTEMPT.c.run_id == run_id) & (ATTEMPT.c.seq == 2))
    }
    bad, err = new[items["t1"]["id"]], new[items["t2"]["id"]]
    assert (bad["tier"], bad["provider"], bad["model"]) == ("mid", "openai", "gpt-5-mini")
    assert (err["tier"], err["model"]) == ("nano", "gpt-5-nano")
    assert bad["custom_id"] == f"i{items['t1']['id']}-a2"
    assert bad["status"] == "planned" and bad["batch_id"] is None and bad["cost_pusd"] == 0
    with db.connect() as conn:
        system_hash, request_json = conn.execute(
            sa.select(ITEM.c.system_hash, ITEM.c.request_json).where(ITEM.c.id == items["t1"]["id"])
        ).one()
    fingerprint = defaults_fingerprint(spec)
    assert bad["request_hash"] == request_hash(
        "openai", "gpt-5-mini", system_hash, request_json, fingerprint
    )
    cancelled = items["t3"]
    first = rows_of(db, ATTEMPT, ATTEMPT.c.item_id == cancelled["id"])
    assert cancelled["final_attempt_id"] == first[0]["id"] and len(first) == 1

    before = snapshot(db, run_id)
    again = plan_followups(db, run_id, spec)
    assert again.new_attempts == 0 and snapshot(db, run_id) == before

    # the planner lays the follow-ups out into a new round; their hash is unchanged
    assert lay_out_batches(db, run_id, spec, round=2)
    laid = rows_of(db, ATTEMPT, ATTEMPT.c.id == bad["id"])[0]
    assert laid["batch_id"] is not None and laid["request_hash"] == bad["request_hash"]


def test_invalid_answers_climb_the_ladder_until_valid(db, tmp_path):
    spec = make_spec(routing={"classifier": "fixed:nano"})
    run_id = plan(db, spec, tmp_path, 3)
    # t0 is answered well by every tier, t1 only by frontier, t2 by none
    good_from = {"t0": "nano", "t1": "frontier", "t2": None}
    ids = {r["id"]: r["custom_id"] for r in rows_of(db, ITEM, ITEM.c.run_id == run_id)}
    rank = {"nano": 0, "mid": 1, "frontier": 2}

    def answer(attempt):
        tier = good_from[ids[attempt["item_id"]]]
        ok = tier is not None and rank[attempt["tier"]] >= rank[tier]
        return Result(attempt["custom_id"], "succeeded", GOOD if ok else BAD, USAGE)

    rounds = 0
    while answer_all(db, spec, run_id, answer):
        rounds += 1
        next_round(db, spec, run_id, rounds + 1)
    assert rounds == 3

    items = items_by_custom_id(db, run_id)
    assert [items[k]["status"] for k in ("t0", "t1", "t2")] == ["succeeded", "succeeded", "failed"]
    tiers = {
        k: [a["tier"] for a in rows_of(db, ATTEMPT, ATTEMPT.c.item_id == items[k]["id"])]
        for k in items
    }
    assert tiers == {"t0": ["nano"], "t1": LADDER_LIST, "t2": LADDER_LIST}
    chain_t2 = rows_of(db, ATTEMPT, ATTEMPT.c.item_id == items["t2"]["id"])
    assert [a["status"] for a in chain_t2] == ["invalid"] * 3  # every attempt kept
    assert items["t2"]["final_attempt_id"] == chain_t2[-1]["id"]
    # the failed item keeps its last paid answer and the verdict that refused it
    assert items["t2"]["output"] == BAD
    assert items["t2"]["verdict"] == chain_t2[-1]["verdict"] is not None
    assert items["t1"]["output"] == GOOD


LADDER_LIST = list(LADDER)


def test_expiries_are_bounded_by_their_own_budget(db, tmp_path):
    spec = make_spec(
        routing={"classifier": "fixed:nano"},
        retry={"max_attempts": 1, "transient_retries": 0, "expired_retries": 2},
    )
    run_id = plan(db, spec, tmp_path, 1)
    rounds = 0
    while answer_all(db, spec, run_id, lambda a: Result(a["custom_id"], "expired")):
        rounds += 1
        next_round(db, spec, run_id, rounds + 1)
    (item,) = rows_of(db, ITEM, ITEM.c.run_id == run_id)
    attempts = rows_of(db, ATTEMPT, ATTEMPT.c.item_id == item["id"])
    assert item["status"] == "failed" and rounds == 3
    assert [(a["seq"], a["tier"], a["status"]) for a in attempts] == [
        (1, "nano", "expired"),
        (2, "nano", "expired"),
        (3, "nano", "expired"),
    ]
    assert [a["custom_id"] for a in attempts] == [f"i{item['id']}-a{n}" for n in (1, 2, 3)]


def test_token_limit_exceeded_does_not_use_the_budget(db, tmp_path):
    spec = make_spec(
        routing={"classifier": "fixed:nano"}, retry={"max_attempts": 1, "transient_retries": 0}
    )
    run_id = plan(db, spec, tmp_path, 2)
    refusal = [{"code": "token_limit_exceeded", "message": "Enqueued token limit", "line": None}]
    for round_no in (2, 3):  # refused twice, then accepted
        for batch_id in send(db, run_id):
            fail_batch(db, batch_id, refusal, spec)
        summary = next_round(db, spec, run_id, round_no)
        assert (summary.retried, summary.free_retries, summary.failed) == (2, 2, 0)
    answer_all(db, spec, run_id, lambda a: Result(a["custom_id"], "succeeded", GOOD, USAGE))
    assert plan_followups(db, run_id, spec).new_attempts == 0
    items = rows_of(db, ITEM, ITEM.c.run_id == run_id)
    assert {i["status"] for i in items} == {"succeeded"}
    statuses = [a["status"] for a in rows_of(db, ATTEMPT, ATTEMPT.c.item_id == items[0]["id"])]
    assert statuses == ["errored", "errored", "succeeded"]


def test_a_refused_line_fails_its_item_and_the_rest_retry(db, tmp_path):
    spec = make_spec(routing={"classifier": "fixed:nano"})
    run_id = plan(db, spec, tmp_path, 3)
    (batch_id,) = send(db, run_id)
    errors = [{"code": "invalid_json_line", "message": "bad", "line": 2}]
    fail_batch(db, batch_id, errors, spec)
    summary = plan_followups(db, run_id, spec)
    assert (summary.failed, summary.retried, summary.free_retries) == (1, 2, 2)


def test_answers_are_reused_across_runs(db, tmp_path):
    spec = make_spec(routing={"classifier": "fixed:nano"})
    first = plan(db, spec, tmp_path, 4, "night1.jsonl")
    answer_all(db, spec, first, lambda a: Result(a["custom_id"], "succeeded", GOOD, USAGE))
    # the one answer that fails validation today is not reused
    with db.begin() as conn:
        conn.execute(sa.update(ATTEMPT).where(ATTEMPT.c.item_id == 4).values(output=BAD))

    second = plan(db, spec, tmp_path, 6, "night2.jsonl")  # t0..t3 again, plus t4, t5
    (old_batch,) = rows_of(db, BATCH, BATCH.c.run_id == second)
    assert apply_reuse(db, second, spec) == 3
    assert apply_reuse(db, second, spec) == 0  # idempotent

    items = items_by_custom_id(db, second)
    assert [items[f"t{i}"]["status"] for i in range(6)] == ["succeeded"] * 3 + ["queued"] * 3
    earlier = {a["item_id"]: a for a in rows_of(db, ATTEMPT, ATTEMPT.c.run_id == first)}
    for n in range(3):
        (attempt,) = rows_of(db, ATTEMPT, ATTEMPT.c.item_id == items[f"t{n}"]["id"])
        assert attempt["status"] == "reused" and attempt["output"] == GOOD
        assert attempt["reused_from"] == earlier[n + 1]["id"]
        assert attempt["verdict"] == "reused: ok: json, label"
        assert attempt["cost_pusd"] == attempt["baseline_pusd"] == attempt["input_tokens"] == 0
        assert items[f"t{n}"]["final_attempt_id"] == attempt["id"]
        assert items[f"t{n}"]["output"] == GOOD

    # the planned batch held reused requests: it is abandoned, the rest laid out again
    (old,) = rows_of(db, BATCH, BATCH.c.id == old_batch["id"])
    assert old["status"] == "abandoned"
    (new_batch,) = lay_out_batches(db, second, spec, round=1)
    rest = rows_of(db, ATTEMPT, ATTEMPT.c.batch_id == new_batch)
    assert sorted(a["item_id"] for a in rest) == [items[f"t{n}"]["id"] for n in (3, 4, 5)]
    answer_all(db, spec, second, lambda a: Result(a["custom_id"], "succeeded", GOOD, USAGE))
    assert {i["status"] for i in rows_of(db, ITEM, ITEM.c.run_id == second)} == {"succeeded"}


def test_follow_up_attempts_are_reused_too(db, tmp_path):
    spec = make_spec(routing={"classifier": "fixed:nano"})
    first = plan(db, spec, tmp_path, 1, "a.jsonl")
    answer_all(db, spec, first, lambda a: Result(a["custom_id"], "succeeded", BAD, USAGE))
    next_round(db, spec, first, 2)  # escalated to mid, which answers well
    answer_all(db, spec, first, lambda a: Result(a["custom_id"], "succeeded", GOOD, USAGE))

    second = plan(db, spec, tmp_path, 1, "b.jsonl")
    assert apply_reuse(db, second, spec) == 0  # nano's answer was invalid: nothing to reuse
    answer_all(db, spec, second, lambda a: Result(a["custom_id"], "succeeded", BAD, USAGE))
    plan_followups(db, second, spec)
    assert apply_reuse(db, second, spec) == 1  # mid's answer from the first run
    (item,) = item_rows(db, ITEM.c.run_id == second)
    assert (item["status"], item["output"]) == ("succeeded", GOOD)
    assert lay_out_batches(db, second, spec, round=2) == []


def test_an_item_left_behind_by_a_crash_is_settled(db, tmp_path):
    """The attempt succeeded but its item was not marked (an older writer, a manual fix):
    plan_followups completes the item from the attempt."""
    spec = make_spec(routing={"classifier": "fixed:nano"})
    run_id = plan(db, spec, tmp_path, 1)
    answer_all(db, spec, run_id, lambda a: Result(a["custom_id"], "succeeded", GOOD, USAGE))
    with db.begin() as conn:
        unfinished = {"status": "in_flight", "answer_attempt_id": None, "final_attempt_id": None}
        conn.execute(sa.update(ITEM).values(**unfinished))
    summary = plan_followups(db, run_id, spec)
    assert (summary.succeeded, summary.new_attempts) == (1, 0)
    (item,) = item_rows(db, ITEM.c.run_id == run_id)
    (attempt,) = rows_of(db, ATTEMPT, ATTEMPT.c.run_id == run_id)
    assert (item["status"], item["output"], item["final_attempt_id"]) == (
        "succeeded",
        GOOD,
        attempt["id"],
    )


def test_follow_ups_of_some_batches_read_only_their_items(db, tmp_path):
    # The run loop follows up on the batches that just ended, not on every open item.
    spec = make_spec(routing={"classifier": "fixed:nano"}, batching={"openai_max_lines": 2})
    run_id = plan(db, spec, tmp_path, 4)
    answer_all(
        db, spec, run_id, lambda a: Result(a["custom_id"], "errored", error_code="server_error")
    )
    first, second = sorted(
        {a["batch_id"] for a in rows_of(db, ATTEMPT, ATTEMPT.c.run_id == run_id)}
    )
    in_first = {a["item_id"] for a in open_attempts(db, first)}

    scoped = plan_followups(db, run_id, spec, batch_ids=[first])

    assert scoped.retried == 2
    retried = {a["item_id"] for a in rows_of(db, ATTEMPT, ATTEMPT.c.seq == 2)}
    assert retried == in_first
    assert plan_followups(db, run_id, spec).retried == 2  # the other batch's, once asked
    assert plan_followups(db, run_id, spec, batch_ids=[first, second]).retried == 0
