"""The run lease's named operations: take, renew, give back.

Each is one UPDATE of the run row. `take_lease` is the one that matters under a race: it
sets the owner only where the lease is free (no holder, expired, already ours, or held by
the one `stale` owner the caller proved dead) and returns the row as it stands afterwards,
so the same statement that decides the race also tells the loser who won. PostgreSQL
re-checks the CASE against the winner's committed row before it writes; SQLite runs one
writer at a time. Neither needs a read before the write, so there is nothing to race on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batcher.store.models import TABLES

RUN = TABLES["run"]


@dataclass(frozen=True)
class Holder:
    """Who holds a run's lease after `take_lease`, and until when."""

    owner: str | None
    expires_at: datetime | None


def take_lease(
    db: Engine, run_id: int, owner: str, ttl_s: float, stale: str | None = None
) -> Holder | None:
    """Take the lease of `run_id` for `owner` if it is free; None when there is no such run.

    The result names the holder after the statement: `owner` when we won, else the winner.
    """
    now = datetime.now(UTC)
    free = sa.or_(
        RUN.c.lease_owner.is_(None),
        RUN.c.lease_owner == owner,
        RUN.c.lease_expires_at.is_(None),
        RUN.c.lease_expires_at < now,
        *([RUN.c.lease_owner == stale] if stale else []),
    )
    expires = now + timedelta(seconds=ttl_s)
    stamp = sa.literal(now, RUN.c.lease_since.type)
    kept = sa.and_(RUN.c.lease_owner == owner, RUN.c.lease_since.is_not(None))
    stmt = (
        sa.update(RUN)
        .where(RUN.c.id == run_id)
        .values(
            lease_owner=sa.case(
                (free, sa.literal(owner, RUN.c.lease_owner.type)), else_=RUN.c.lease_owner
            ),
            lease_expires_at=sa.case(
                (free, sa.literal(expires, RUN.c.lease_expires_at.type)),
                else_=RUN.c.lease_expires_at,
            ),
            # since when the holder has it: kept when we take our own lease again
            lease_since=sa.case((sa.and_(free, ~kept), stamp), else_=RUN.c.lease_since),
            lease_renewed_at=sa.case((free, stamp), else_=RUN.c.lease_renewed_at),
        )
        .returning(RUN.c.lease_owner, RUN.c.lease_expires_at)
    )
    with db.begin() as conn:
        row = conn.execute(stmt).first()
    if row is None:
        return None
    return Holder(row.lease_owner, _aware(row.lease_expires_at))


def renew_lease(db: Engine, run_id: int, owner: str, ttl_s: float) -> bool:
    """Extend `owner`'s lease by `ttl_s` from now; False when it is no longer theirs."""
    now = datetime.now(UTC)
    with db.begin() as conn:
        moved = conn.execute(
            sa.update(RUN)
            .where(RUN.c.id == run_id, RUN.c.lease_owner == owner)
            .values(lease_expires_at=now + timedelta(seconds=ttl_s), lease_renewed_at=now)
        ).rowcount
    return moved == 1


def release_lease(db: Engine, run_id: int, owner: str) -> None:
    """Give `owner`'s lease back (nothing happens when it is not theirs)."""
    with db.begin() as conn:
        conn.execute(
            sa.update(RUN)
            .where(RUN.c.id == run_id, RUN.c.lease_owner == owner)
            .values(
                lease_owner=None, lease_expires_at=None, lease_since=None, lease_renewed_at=None
            )
        )


def _aware(value: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back; they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
