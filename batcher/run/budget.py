"""`max_usd` as a hard cap on what a run spends, retries and escalations included.

Before anything new is submitted the driver asks `over_budget`: what the run was billed so
far plus the estimate of every attempt not billed yet (planned, or in a batch at the provider)
must stay within the cap. The estimate prices output at each request's max_tokens, an upper
bound, so a run that passes spends at most the cap. A round that would cross it is not sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.engine import Engine

from batcher.money.amounts import to_pusd, to_usd
from batcher.plan.estimate import estimate_run
from batcher.spec import JobSpec
from batcher.store import attempts
from batcher.store.states import AttemptStatus

UNBILLED = (AttemptStatus.PLANNED, AttemptStatus.SUBMITTED)


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """Money of a run against its cap, in picodollars."""

    cap_pusd: int
    spent_pusd: int  # billed so far
    pending_pusd: int  # estimate of the attempts not billed yet

    @property
    def needed_pusd(self) -> int:
        return self.spent_pusd + self.pending_pusd

    @property
    def over(self) -> bool:
        return self.needed_pusd > self.cap_pusd

    @property
    def raise_to(self) -> Decimal:
        """The cap that lets it through, in dollars rounded up to a cent."""
        return Decimal(math.ceil(to_usd(self.needed_pusd) * 100)) / 100

    def message(self, run_id: int) -> str:
        """Spent, needed, and the command that raises the cap (rounded up to a cent)."""
        return (
            f"run {run_id}: stopped at its budget: spent ${_usd(self.spent_pusd)} of "
            f"max_usd ${_usd(self.cap_pusd)}; the next round needs up to "
            f"${_usd(self.pending_pusd)} more (${_usd(self.needed_pusd)} in all), so it was "
            f"not submitted. Raise the cap with `batcher resume {run_id} --max-usd {self.raise_to}`"
        )


def _usd(pusd: int) -> str:
    return f"{to_usd(pusd).normalize():f}"


def spent_pusd(db: Engine, run_id: int) -> int:
    """What the run was billed so far (every attempt, every round)."""
    with db.connect() as conn:
        cost, _ = attempts.cost_totals(conn, run_id)
    return cost


def check_spend(db: Engine, run_id: int, spec: JobSpec) -> BudgetCheck | None:
    """The run's money against `spec.max_usd`; None when the spec sets no cap."""
    if spec.max_usd is None:
        return None
    pending = estimate_run(db, run_id, spec, statuses=UNBILLED).cost_pusd
    cap = to_pusd(Decimal(str(spec.max_usd)))
    return BudgetCheck(cap, spent_pusd(db, run_id), pending)
