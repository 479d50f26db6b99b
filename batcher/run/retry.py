"""`batcher retry RUN`: a new round for the items of a finished run that did not succeed.

The chosen items (failed and cancelled ones, or with `only_failed` just the failed) get one
new attempt each, on `tier` or on the tier of their last attempt, inside the same run: the
round is estimated and checked against the run's cap like any round (what was billed plus
the estimate of everything not billed yet; `max_usd` replaces the cap), then laid out in
batches of round last + 1 and driven by `drive_run` as any round. A budget refusal takes the
new attempts back and leaves the run as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from batcher.errors import UsageError
from batcher.money.amounts import to_usd
from batcher.plan.estimate import Estimate, estimate_run
from batcher.plan.requests import defaults_fingerprint, request_hash
from batcher.run.budget import BudgetCheck, check_spend
from batcher.run.engine import BudgetExceeded, outcome_of, run_spec
from batcher.store import retries
from batcher.store.states import ITEM_TERMINAL, AttemptStatus, ItemStatus, RunStatus


@dataclass
class RetryRound:
    """What `plan_retry` queued: items by their status before, the round, its estimate."""

    run_id: int
    round: int
    items: dict[str, int]
    estimate: Estimate | None

    @property
    def n_items(self) -> int:
        return sum(self.items.values())


def plan_retry(
    db: Engine,
    run_id: int,
    *,
    only_failed: bool = False,
    tier: str | None = None,
    max_usd: float | None = None,
) -> RetryRound:
    """Queue new attempts for the run's unsuccessful items and lay them out as a new round.

    Raises UsageError (unknown run or tier, a run still going), BudgetExceeded (nothing
    queued: the run is as it was). A round of no items has `estimate` None.
    """
    spec = run_spec(db, run_id)
    if tier is not None and tier not in spec.tiers:
        raise UsageError(
            f"--tier {tier!r} is not a tier of run {run_id}: use {', '.join(spec.tiers)}"
        )
    outcome = outcome_of(db, run_id)
    unfinished = sum(n for s, n in outcome.items.items() if s not in ITEM_TERMINAL)
    if unfinished or outcome.status in (RunStatus.RUNNING, RunStatus.PLANNED, RunStatus.CREATED):
        raise UsageError(
            f"run {run_id} is {outcome.status} with {unfinished} unfinished items: "
            f"`batcher resume {run_id}` finishes it; retry a finished run"
        )
    statuses = [ItemStatus.FAILED] if only_failed else [ItemStatus.FAILED, ItemStatus.CANCELLED]
    with db.connect() as conn:
        rows = retries.last_attempts(conn, run_id, [str(s) for s in statuses])
        round_no = retries.last_round(conn, run_id) + 1
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.item_status] = counts.get(row.item_status, 0) + 1
    if not rows:
        return RetryRound(run_id, round_no, counts, None)
    attempts = _new_attempts(run_id, spec, rows, tier)
    with db.begin() as conn:
        retries.queue_attempts(conn, attempts)
    if max_usd is not None:  # the run's cap from now on, as with `resume --max-usd`
        spec = spec.model_copy(update={"max_usd": max_usd})
    estimate = estimate_run(db, run_id, spec)
    check = check_spend(db, run_id, spec)
    if check is not None and check.over:
        with db.begin() as conn:
            retries.withdraw(conn, attempts, {r.item_id: r.item_status for r in rows})
        raise BudgetExceeded(refusal(run_id, len(rows), check))
    from batcher.plan.planner import lay_out_batches

    with db.begin() as conn:
        retries.reopen_run(conn, run_id, spec.snapshot())
    lay_out_batches(db, run_id, spec, round=round_no)
    return RetryRound(run_id, round_no, counts, estimate)


def refusal(run_id: int, n_items: int, check: BudgetCheck) -> str:
    """Spent, needed, and the command that raises the cap (rounded up to a cent)."""
    return (
        f"run {run_id}: retrying {n_items} items needs up to {_usd(check.pending_pusd)} more "
        f"({_usd(check.needed_pusd)} in all) and the run spent {_usd(check.spent_pusd)} of "
        f"its max_usd {_usd(check.cap_pusd)}; nothing was submitted. Raise the cap with "
        f"`batcher retry {run_id} --max-usd {check.raise_to}`"
    )


def _usd(pusd: int) -> str:
    return f"${to_usd(pusd).normalize():f}"


def _new_attempts(run_id: int, spec, rows, tier: str | None) -> list[dict]:
    fingerprint = defaults_fingerprint(spec)
    attempts = []
    for row in rows:
        provider, model = spec.model_of(tier) if tier else (row.provider, row.model)
        seq = row.seq + 1
        attempts.append(
            {
                "run_id": run_id,
                "item_id": row.item_id,
                "seq": seq,
                "tier": tier or row.tier,
                "provider": provider,
                "model": model,
                "custom_id": f"i{row.item_id}-a{seq}",
                "status": AttemptStatus.PLANNED.value,
                "request_hash": request_hash(
                    provider, model, row.system_hash, row.request_json, fingerprint
                ),
            }
        )
    return attempts
