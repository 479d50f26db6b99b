"""Queries the retry planning asks: how small the next batches should be after expiries;
and `batcher retry`'s rows: the items of a finished run to try again, their new attempts,
and taking them back when the budget refuses the round.

A retried item gets one new attempt (seq + 1, never overwriting the old ones) and moves back
to `queued`; the run moves back to `planned`. Until the round is laid out the old statuses
can be restored (`withdraw`), so a refused budget leaves the run as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batcher.store.models import TABLES
from batcher.store.states import AttemptStatus, ItemStatus, RunStatus, set_status

RUN, ITEM, ATTEMPT, BATCH = TABLES["run"], TABLES["item"], TABLES["attempt"], TABLES["batch"]


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


def last_attempts(conn: Connection, run_id: int, statuses: Sequence[str]) -> list[sa.Row]:
    """Items of the run in `statuses` with their latest attempt: item_id, item_status,
    system_hash, request_json, seq, tier, provider, model; by item id."""
    later = ATTEMPT.alias("later")
    newer = sa.exists().where(later.c.item_id == ATTEMPT.c.item_id, later.c.seq > ATTEMPT.c.seq)
    query = (
        sa.select(
            ITEM.c.id.label("item_id"),
            ITEM.c.status.label("item_status"),
            ITEM.c.system_hash,
            ITEM.c.request_json,
            ATTEMPT.c.seq,
            ATTEMPT.c.tier,
            ATTEMPT.c.provider,
            ATTEMPT.c.model,
        )
        .join(ATTEMPT, ATTEMPT.c.item_id == ITEM.c.id)
        .where(ITEM.c.run_id == run_id, ITEM.c.status.in_(list(statuses)), ~newer)
        .order_by(ITEM.c.id)
    )
    return list(conn.execute(query).all())


def queue_attempts(conn: Connection, attempts: list[dict[str, Any]]) -> None:
    """Insert the new planned attempts and queue their items."""
    conn.execute(ATTEMPT.insert(), attempts)
    ids = [a["item_id"] for a in attempts]
    set_status(conn, ITEM, ItemStatus.QUEUED, ITEM.c.id.in_(ids))


def withdraw(conn: Connection, attempts: list[dict[str, Any]], was: dict[int, str]) -> None:
    """Undo `queue_attempts`: the new attempts go, each item gets its status `was` back
    (its answer, verdict and final attempt were never touched)."""
    ids = [a["item_id"] for a in attempts]
    conn.execute(
        sa.delete(ATTEMPT).where(
            ATTEMPT.c.id.in_(
                sa.select(ATTEMPT.c.id).where(
                    ATTEMPT.c.item_id.in_(ids), ATTEMPT.c.batch_id.is_(None),
                    ATTEMPT.c.status == "planned",
                )
            )
        )
    )  # fmt: skip
    for status in set(was.values()):
        back = [i for i in ids if was[i] == status]
        set_status(conn, ITEM, status, ITEM.c.id.in_(back))


def reopen_run(conn: Connection, run_id: int, spec_json: str) -> None:
    """The run is planned again (a new round) under `spec_json` (its cap may have changed),
    and no longer finished."""
    values = {"finished_at": None, "spec_json": spec_json, "error": None}
    set_status(conn, RUN, RunStatus.PLANNED, RUN.c.id == run_id, values)


def last_round(conn: Connection, run_id: int) -> int:
    query = sa.select(sa.func.coalesce(sa.func.max(BATCH.c.round), 0)).where(
        BATCH.c.run_id == run_id
    )
    return conn.execute(query).scalar_one()
