"""Lost batches: batches the provider no longer knows (archived past retention, deleted).

`mark_lost` is the named transition: the batch becomes `lost` and its unfinished attempts end
in the same transaction, `errored` with code `batch_lost` (a free retry on the same tier, see
batcher.run.followups) or `cancelled` when the run is being cancelled. `lost_batches` lists
them for reports with what their requests may have cost: the provider may have run and
billed them before it forgot the batch, and there is no usage left to read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batcher.store.models import TABLES
from batcher.store.states import AttemptStatus, BatchStatus, set_status

BATCH, ATTEMPT, ITEM, RUN = TABLES["batch"], TABLES["attempt"], TABLES["item"], TABLES["run"]
LOST_CODE = "batch_lost"


@dataclass(frozen=True)
class LostBatch:
    run_id: int
    batch_id: str
    provider: str
    model: str
    provider_batch_id: str | None
    n_requests: int
    n_lost: int  # attempts that had no result when the batch was lost
    input_tokens: int  # their estimated input tokens (for the "may have cost" figure)
    error: str | None

    @property
    def id_text(self) -> str:
        if self.provider_batch_id:
            return f"{self.batch_id} ({self.provider_batch_id})"
        return self.batch_id


def mark_lost(conn: Connection, batch_id: str, reason: str, *, cancelling: bool = False) -> int:
    """Batch `batch_id` is gone at its provider: mark it `lost` and end its unfinished
    attempts. Returns how many attempts ended (0 when the batch was not open any more)."""
    now = datetime.now(UTC)
    moved = set_status(
        conn, BATCH, BatchStatus.LOST, BATCH.c.id == batch_id, {"error": reason, "ended_at": now}
    )
    if not moved:
        return 0
    to = AttemptStatus.CANCELLED if cancelling else AttemptStatus.ERRORED
    values = {"error_code": LOST_CODE, "error_message": reason, "finished_at": now}
    return set_status(conn, ATTEMPT, to, ATTEMPT.c.batch_id == batch_id, values)


def lost_batches(conn: Connection, run_ids: list[int]) -> list[LostBatch]:
    """The lost batches of `run_ids`, oldest first."""
    lost_attempts = (
        sa.select(
            ATTEMPT.c.batch_id,
            sa.func.count().label("n"),
            sa.func.coalesce(sa.func.sum(ITEM.c.est_input_tokens), 0).label("tokens"),
        )
        .join(ITEM, ITEM.c.id == ATTEMPT.c.item_id)
        .where(
            ATTEMPT.c.run_id.in_(run_ids),
            ATTEMPT.c.error_code == LOST_CODE,
        )
        .group_by(ATTEMPT.c.batch_id)
        .subquery()
    )
    rows = conn.execute(
        sa.select(
            BATCH.c.run_id,
            BATCH.c.id,
            BATCH.c.provider,
            BATCH.c.model,
            BATCH.c.provider_batch_id,
            BATCH.c.n_requests,
            sa.func.coalesce(lost_attempts.c.n, 0),
            sa.func.coalesce(lost_attempts.c.tokens, 0),
            BATCH.c.error,
        )
        .outerjoin(lost_attempts, lost_attempts.c.batch_id == BATCH.c.id)
        .where(BATCH.c.run_id.in_(run_ids), BATCH.c.status == BatchStatus.LOST)
        .order_by(BATCH.c.run_id, BATCH.c.round, BATCH.c.created_at, BATCH.c.id)
    ).all()
    return [LostBatch(r[0], r[1], r[2], r[3], r[4], r[5], int(r[6]), int(r[7]), r[8]) for r in rows]
