"""The worker pool's rows: who is in the pool, and which open run a worker takes next.

`claim_run` is the one that matters under concurrency. It picks the oldest open run whose
lease is free (nobody holds it, or the holder stopped renewing and it expired) with
`FOR UPDATE SKIP LOCKED`, so workers polling at the same moment each get a different run
instead of queueing on one row lock, and takes its lease in the same transaction with the
same conditional UPDATE as `batcher.store.lease.take_lease`. On SQLite (one writer at a time;
SKIP LOCKED is not rendered) the UPDATE's own condition still lets only one claimer win.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batcher.store.models import TABLES
from batcher.store.states import RunStatus

RUN, WORKER = TABLES["run"], TABLES["worker"]
# Runs a worker drives: planned (left by `run --detach` or a pool scheduler) or running (left
# by `submit`, an interrupted driver, or a dead one). Failed runs wait for a person.
CLAIMABLE = (RunStatus.PLANNED.value, RunStatus.RUNNING.value)
CLAIM_TRIES = 5


@dataclass(frozen=True)
class Claim:
    run_id: int
    taken_from: str | None  # the previous holder whose lease had expired, if any


def register(db: Engine, owner: str, host: str, pid: int, slots: int, ttl_s: float) -> None:
    now = datetime.now(UTC)
    with db.begin() as conn:
        conn.execute(sa.delete(WORKER).where(WORKER.c.owner == owner))
        conn.execute(
            sa.insert(WORKER).values(
                owner=owner, host=host, pid=pid, slots=slots, ttl_s=ttl_s,
                started_at=now, heartbeat_at=now,
            )
        )  # fmt: skip


def heartbeat(db: Engine, owner: str) -> None:
    with db.begin() as conn:
        conn.execute(
            sa.update(WORKER).where(WORKER.c.owner == owner).values(heartbeat_at=datetime.now(UTC))
        )


def unregister(db: Engine, owner: str) -> None:
    with db.begin() as conn:
        conn.execute(sa.delete(WORKER).where(WORKER.c.owner == owner))


def forget_stale(db: Engine, older_than_s: float) -> int:
    """Drop the rows of workers whose heartbeat stopped more than `older_than_s` ago."""
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    with db.begin() as conn:
        return conn.execute(sa.delete(WORKER).where(WORKER.c.heartbeat_at < cutoff)).rowcount


def claim_run(db: Engine, owner: str, ttl_s: float, *, orphans_only: bool = False) -> Claim | None:
    """Take the lease of the oldest open run nobody drives; None when there is none.

    `orphans_only` takes only runs whose holder stopped renewing (a worker with no free slot
    still rescues those: their batches run on the provider's clock).
    """
    for _ in range(CLAIM_TRIES):  # another claimer won the run we chose: choose again
        claim, chosen = _claim_once(db, owner, ttl_s, orphans_only)
        if claim is not None or chosen is None:
            return claim
    return None


def _claim_once(
    db: Engine, owner: str, ttl_s: float, orphans_only: bool
) -> tuple[Claim | None, int | None]:
    """(the claim, the run chosen): the claim is None when nothing was free or another
    claimer took the chosen run first (possible on SQLite, where nothing is row-locked)."""
    now = datetime.now(UTC)
    expired = sa.and_(RUN.c.lease_owner.is_not(None), RUN.c.lease_expires_at < now)
    free = expired if orphans_only else sa.or_(RUN.c.lease_owner.is_(None), expired)
    with db.begin() as conn:
        row = conn.execute(
            sa.select(RUN.c.id, RUN.c.lease_owner)
            .where(RUN.c.status.in_(CLAIMABLE), free)
            .order_by(RUN.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if row is None:
            return None, None
        taken = conn.execute(
            sa.update(RUN)
            .where(RUN.c.id == row.id, RUN.c.status.in_(CLAIMABLE), free)
            .values(
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=ttl_s),
                lease_since=now,
                lease_renewed_at=now,
            )
        ).rowcount
    return (Claim(row.id, row.lease_owner) if taken else None), row.id


def pool(db: Engine) -> list[dict]:
    """The pool for `batcher workers`: one row a worker and run it holds (a worker with no
    run gets one row with run None), then runs held by drivers outside the pool."""
    now = datetime.now(UTC)
    with db.connect() as conn:
        workers = conn.execute(sa.select(WORKER).order_by(WORKER.c.started_at)).all()
        held = conn.execute(
            sa.select(
                RUN.c.id,
                RUN.c.status,
                RUN.c.lease_owner,
                RUN.c.lease_since,
                RUN.c.lease_renewed_at,
                RUN.c.lease_expires_at,
            )
            .where(RUN.c.lease_owner.is_not(None))
            .order_by(RUN.c.id)
        ).all()
    by_owner: dict[str, list] = {}
    for run in held:
        by_owner.setdefault(run.lease_owner, []).append(run)
    rows = []
    for w in workers:
        beat = _aware(w.heartbeat_at)
        alive = (now - beat).total_seconds() <= w.ttl_s
        for run in by_owner.pop(w.owner, None) or [None]:
            rows.append(_row(w.owner, "worker" if alive else "worker (no heartbeat)", run, beat))
    for owner, runs in by_owner.items():
        for run in runs:
            rows.append(_row(owner, "driver", run, _aware(run.lease_renewed_at)))
    return rows


def _row(owner: str, kind: str, run, heartbeat: datetime | None) -> dict:  # noqa: ANN001
    expires = _aware(run.lease_expires_at) if run else None
    return {
        "owner": owner,
        "kind": kind,
        "run": run.id if run else None,
        "run_status": run.status if run else None,
        "since": _aware(run.lease_since) if run else None,
        "heartbeat": heartbeat if run is None else _aware(run.lease_renewed_at) or heartbeat,
        "lease_expires": expires,
        "expired": bool(expires and expires < datetime.now(UTC)),
    }


def _aware(value: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back; they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
