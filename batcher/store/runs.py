"""Whole runs as one unit: find the ones a prune would remove, and delete them with every
row and batch file that belongs to them."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batcher.store.db import state_dir
from batcher.store.models import TABLES

RUN, ITEM, ATTEMPT, BATCH = TABLES["run"], TABLES["item"], TABLES["attempt"], TABLES["batch"]
FIRING = TABLES["schedule_firing"]


def find_runs(
    db: Engine, *, before: datetime | None = None, statuses: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Runs created before `before` (any time when None) whose status is one of `statuses`
    (any when empty), oldest first: id, job, status, items, created."""
    query = sa.select(RUN.c.id, RUN.c.job_name, RUN.c.status, RUN.c.n_items, RUN.c.created_at)
    if before is not None:
        query = query.where(RUN.c.created_at < before)
    if statuses:
        query = query.where(RUN.c.status.in_(list(statuses)))
    with db.connect() as conn:
        rows = conn.execute(query.order_by(RUN.c.id)).all()
    return [
        {"run": r.id, "job": r.job_name, "status": r.status, "items": r.n_items,
         "created": r.created_at}
        for r in rows
    ]  # fmt: skip


def delete_runs(db: Engine, run_ids: Iterable[int]) -> int:
    """Delete the runs with their items, attempts and batches in one transaction, then their
    batch files. Answers other runs reused keep their copies (a reused attempt holds the
    output itself); a schedule firing keeps its record, without its run. Returns how many
    runs were deleted."""
    ids = list(run_ids)
    if not ids:
        return 0
    with db.begin() as conn:
        # A reused attempt names its source only for the audit trail: it outlives the source.
        sources = sa.select(ATTEMPT.c.id).where(ATTEMPT.c.run_id.in_(ids)).scalar_subquery()
        conn.execute(
            sa.update(ATTEMPT)
            .where(ATTEMPT.c.run_id.not_in(ids), ATTEMPT.c.reused_from.in_(sources))
            .values(reused_from=None)
        )
        conn.execute(sa.update(FIRING).where(FIRING.c.run_id.in_(ids)).values(run_id=None))
        for table in (ATTEMPT, BATCH, ITEM):
            conn.execute(sa.delete(table).where(table.c.run_id.in_(ids)))
        deleted = conn.execute(sa.delete(RUN).where(RUN.c.id.in_(ids))).rowcount
    for run_id in ids:
        shutil.rmtree(state_dir() / "batches" / f"run-{run_id}", ignore_errors=True)
    return deleted


def runs_at_provider(db: Engine, run_ids: Iterable[int]) -> set[int]:
    """Those of `run_ids` with a batch the provider may still be working on (submitting or
    submitted): deleting them would lose answers that are being paid for."""
    ids = list(run_ids)
    if not ids:
        return set()
    with db.connect() as conn:
        return set(
            conn.execute(
                sa.select(BATCH.c.run_id)
                .where(BATCH.c.run_id.in_(ids), BATCH.c.status.in_(["submitting", "submitted"]))
                .distinct()
            ).scalars()
        )


def was_submitted() -> sa.ColumnElement[bool]:
    """A condition on `run`: it got past planning. Runs only ingested or planned, and failed
    runs of which nothing left (a budget refusal, a missing key), fail it, so job-level
    reports do not count their items as missing answers."""
    moved = sa.exists().where(ATTEMPT.c.run_id == RUN.c.id, ATTEMPT.c.status != "planned")
    sent = sa.exists().where(
        BATCH.c.run_id == RUN.c.id, BATCH.c.status.not_in(["planned", "abandoned"])
    )
    return sa.and_(
        RUN.c.status.not_in(["created", "planned"]),
        sa.or_(RUN.c.status != "failed", moved, sent),
    )
