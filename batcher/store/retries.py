"""Queries the retry planning asks: how small the next batches should be after expiries."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batcher.store.models import TABLES
from batcher.store.states import AttemptStatus

ATTEMPT, BATCH = TABLES["attempt"], TABLES["batch"]


def split_after_expiry(conn: Connection, run_id: int) -> int | None:
    """The most requests a new batch of run `run_id` should hold, or None for no limit.

    When a waiting attempt (planned, no batch yet) follows its item's second expiry or later,
    its previous batch expired again at its size: the retry goes in batches of at most half
    that size (the smallest such half, at least 1), so a provider short of capacity gets work
    it can finish within its window.
    """
    waiting, previous, expired = ATTEMPT.alias("w"), ATTEMPT.alias("p"), ATTEMPT.alias("e")
    repeats = (
        sa.select(sa.func.count())
        .where(expired.c.item_id == waiting.c.item_id, expired.c.status == AttemptStatus.EXPIRED)
        .scalar_subquery()
    )
    smallest = conn.execute(
        sa.select(sa.func.min(BATCH.c.n_requests))
        .select_from(waiting)
        .join(
            previous,
            sa.and_(previous.c.item_id == waiting.c.item_id, previous.c.seq == waiting.c.seq - 1),
        )
        .join(BATCH, BATCH.c.id == previous.c.batch_id)
        .where(
            waiting.c.run_id == run_id,
            waiting.c.status == AttemptStatus.PLANNED,
            waiting.c.batch_id.is_(None),
            previous.c.status == AttemptStatus.EXPIRED,
            repeats >= 2,
        )
    ).scalar()
    return None if smallest is None else max(1, int(smallest) // 2)
