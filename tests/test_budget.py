"""max_usd is a hard cap on what a run spends, escalations included, through the real SDKs
against the sandbox."""

from __future__ import annotations

import random
from decimal import Decimal

import orjson
from engine_helpers import (  # noqa: F401 - fixtures
    POLL,
    SPEC,
    attempts,
    batches,
    check_accounted,
    clients_fixture,
    db_fixture,
    items_by_status,
    sandbox_fixture,
    served_fixture,
)

from batcher.money.amounts import to_pusd
from batcher.plan.estimate import estimate_run
from batcher.run import engine
from batcher.spec import load_spec

CAP = 0.02


def long_ticket_job(tmp_path, n: int = 20, words: int = 700):
    """Tickets of ~2,500 tokens each, all different (so no cache helps): cheap on nano and
    mini, about $0.004 each on the frontier tier."""
    rng = random.Random(7)
    folder = tmp_path / "long"
    folder.mkdir()
    with open(folder / "input.jsonl", "wb") as f:
        for i in range(n):
            body = " ".join(f"{rng.choice('abcdefgh')}{rng.randrange(10**6)}" for _ in range(words))
            f.write(orjson.dumps({"id": f"t{i}", "prompt": f"Ticket {i}: {body}"}) + b"\n")
    path = folder / "job.toml"
    spec = SPEC.format(classifier="fixed:nano")
    path.write_text(f'input = "input.jsonl"\nmax_usd = {CAP}\n{spec}')
    return load_spec(path)


def test_max_usd_stops_escalations_before_they_cross_the_cap(db, sandbox, clients, tmp_path):
    # Every cheap answer fails its check, so every item climbs nano -> mid -> frontier: the
    # whole ladder would cost several times the cap.
    sandbox.configure(malformed={"gpt-5-nano": 1.0, "gpt-5-mini": 1.0})
    spec = long_ticket_job(tmp_path)
    run_id = engine.start_run(db, spec, spec.input_file())
    plan = estimate_run(db, run_id, spec)
    assert plan.cost_pusd <= to_pusd(Decimal(str(CAP))) < plan.worst_case_pusd

    outcome = engine.drive_run(db, run_id, clients=clients, poll=POLL)

    assert outcome.status == "failed" and outcome.exit_code == 1
    assert outcome.cost_pusd <= to_pusd(Decimal(str(CAP)))
    assert f"batcher resume {run_id} --max-usd " in outcome.message
    assert "spent $" in outcome.message and "needs up to $" in outcome.message
    # nano and mid were sent and paid; the frontier round was laid out and held back
    sent = {b["round"]: b["status"] for b in batches(db, run_id)}
    assert sent == {1: "reconciled", 2: "reconciled", 3: "planned"}
    assert not sandbox.billed(model="claude-sonnet-4-6")
    assert items_by_status(db, run_id) == {"queued": 20}

    # raising the cap as the message says finishes the run
    raise_to = float(outcome.message.rsplit("--max-usd ", 1)[1].rstrip("`"))
    done = engine.resume_run(db, run_id, clients=clients, poll=POLL, max_usd=raise_to)
    assert done.status == "completed" and done.exit_code == 0, done.message
    assert done.cost_pusd <= to_pusd(Decimal(str(raise_to)))
    assert done.cost_pusd > to_pusd(Decimal(str(CAP)))  # the cap did hold back real money
    check_accounted(db, run_id, sandbox, 20)
    assert {a["tier"] for a in attempts(db, run_id) if a["status"] == "succeeded"} == {"frontier"}
