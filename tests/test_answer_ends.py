"""How an attempt ended decides what follows: a truncated answer is retried larger, then
escalated; an error is retried, escalated to a larger context, or ends the item at once, by
the class the provider module reads from the provider's error. Through the real SDKs against
the sandbox."""

from __future__ import annotations

import orjson
from engine_helpers import (  # noqa: F401 - fixtures
    POLL,
    SPEC,
    attempts,
    check_accounted,
    clients_fixture,
    db_fixture,
    items_by_status,
    sandbox_fixture,
    served_fixture,
)

from batcher.run import engine
from batcher.spec import load_spec


def job(tmp_path, lines: list[dict], spec: str = SPEC):
    folder = tmp_path / "job"
    folder.mkdir(parents=True)
    with open(folder / "input.jsonl", "wb") as f:
        for i, line in enumerate(lines):
            f.write(orjson.dumps({"id": f"t{i}", **line}) + b"\n")
    (folder / "job.toml").write_text(
        'input = "input.jsonl"\n' + spec.format(classifier="fixed:nano")
    )
    return load_spec(folder / "job.toml")


def chains(db, run_id: int) -> dict[int, list[dict]]:
    found: dict[int, list[dict]] = {}
    for attempt in attempts(db, run_id):
        found.setdefault(attempt["item_id"], []).append(attempt)
    return found


def test_truncated_answers_retry_larger_then_escalate(db, sandbox, clients, tmp_path):
    # 100 tokens leave gpt-5 models too little room after their hidden reasoning (64 to 256
    # tokens a request) on some items: those answers come back cut off (finish_reason length).
    spec_text = SPEC.replace("max_tokens = 512", "max_tokens = 100").replace(
        "max_attempts = 4", "max_attempts = 6"
    )
    spec = job(tmp_path, [{"prompt": f"Ticket {i}: my invoice is wrong."} for i in range(12)],
               spec_text)  # fmt: skip
    run_id = engine.start_run(db, spec, spec.input_file())
    outcome = engine.drive_run(db, run_id, clients=clients, poll=POLL)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message

    truncated = 0
    for chain in chains(db, run_id).values():
        for before, after in zip(chain, chain[1:], strict=False):
            assert before["status"] == "truncated"
            assert before["stop_reason"] == "max_tokens"
            assert before["verdict"].startswith("truncated")
            truncated += 1
            if before["max_tokens"] is None:  # first cut on a tier: same tier, twice the cap
                assert (after["tier"], after["max_tokens"]) == (before["tier"], 200)
            else:  # cut again at the larger cap: the next tier, at the item's own cap
                assert after["tier"] != before["tier"] and after["max_tokens"] is None
        assert chain[-1]["status"] == "succeeded" and chain[-1]["stop_reason"] == "end"
    assert truncated >= 3  # the case happened, more than once
    # the larger cap reached the provider: some answers used more than the first cap allowed,
    # and none more than the larger one
    out = {r["custom_id"]: r["tokens"]["output"] for r in sandbox.billed()}
    larger = [out[a["custom_id"]] for c in chains(db, run_id).values() for a in c
              if a["max_tokens"] == 200]  # fmt: skip
    assert max(larger) > 100 and max(larger) <= 200
    assert max(out.values()) <= 200
    check_accounted(db, run_id, sandbox, 12)


def test_errors_fail_fast_escalate_for_context_or_retry_by_class(db, sandbox, clients, tmp_path):
    # gpt-5-nano's window is made small so a long ticket is over it; mini has the same window
    # in the price data, so a too-long request skips it for the frontier tier's larger one.
    sandbox.configure(
        context_windows={"gpt-5-nano": 1500}, faults="request_error:count=2:model=gpt-5-nano"
    )
    long = "the export job stalls again " * 250  # ~1,500 tokens
    lines = (
        [{"prompt": f"Ticket {i}: login fails.", "params": {"max_tokens": 50}} for i in range(3)]
        + [{"prompt": f"Ticket {i}: {long}"} for i in range(3, 6)]
        + [{"prompt": f"Ticket {i}: I was charged twice."} for i in range(6, 9)]
    )
    spec = job(tmp_path, lines)
    run_id = engine.start_run(db, spec, spec.input_file())
    outcome = engine.drive_run(db, run_id, clients=clients, poll=POLL)
    assert outcome.status == "completed"

    found = sorted(chains(db, run_id).values(), key=lambda c: c[0]["item_id"])
    # invalid request (max_tokens refused on gpt-5 models): one attempt, no retry, the
    # provider's message kept
    for chain in found[:3]:
        assert len(chain) == 1
        (only,) = chain
        assert (only["status"], only["error_class"]) == ("errored", "invalid")
        assert only["error_code"] == "unsupported_parameter"
        assert "max_completion_tokens" in only["error_message"]
    # too long for nano's context: straight to the frontier tier, which answers
    for chain in found[3:6]:
        assert [(a["tier"], a["error_class"]) for a in chain] == [
            ("nano", "too_long"),
            ("frontier", None),
        ]
        assert chain[0]["error_code"] == "context_length_exceeded"
        assert chain[-1]["status"] == "succeeded"
    # transient (injected 500s): same tier again
    for chain in found[6:]:
        assert {a["tier"] for a in chain} == {"nano"} and chain[-1]["status"] == "succeeded"
    retried = [c for c in found[6:] if len(c) > 1]
    assert retried and all(c[0]["error_class"] == "transient" for c in retried)
    assert items_by_status(db, run_id) == {"failed": 3, "succeeded": 6}
    check_accounted(db, run_id, sandbox, 9)


TEMPLATE = (
    "You are a careful analyst. Explain your reasoning, compare the options and answer in "
    "JSON format.\n{text}\nReply with one label."
)


def test_the_classifier_reads_what_differs_between_items(db, sandbox, clients, tmp_path):
    # Every prompt carries the same instruction lines with two high keywords ("reason",
    # "compare"): read whole, every item would go to the frontier tier.
    short = [TEMPLATE.format(text=f"Classify ticket {i}: refund") for i in range(4)]
    plain = [TEMPLATE.format(text=f"Ticket {i}: the app shows an old invoice.") for i in range(4)]
    lines = [{"prompt": p} for p in short + plain]
    spec = job(tmp_path, lines, SPEC.replace('classifier = "{classifier}"', ""))
    run_id = engine.start_run(db, spec, spec.input_file())
    outcome = engine.drive_run(db, run_id, clients=clients, poll=POLL)
    assert outcome.status == "completed"
    first = {c[0]["custom_id"]: c[0]["model"] for c in chains(db, run_id).values()}
    sent = [r["model"] for r in sandbox.billed() if r["custom_id"] in first]
    assert sent.count("gpt-5-nano") == 4 and sent.count("gpt-5-mini") == 4
    assert "claude-sonnet-4-6" not in sent
    # "prompt" reads the whole message as before: the shared lines send all to the frontier
    whole = SPEC.replace('classifier = "{classifier}"', 'classifier_text = "prompt"')
    from batcher.plan.planner import plan_input

    other = job(tmp_path / "whole", lines, whole)
    tiers = {
        row["tier"]: row["items"] for row in plan_input(db, other, other.input_file()).plan.tiers
    }
    assert tiers == {"frontier": 8}
