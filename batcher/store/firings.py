"""The `schedule_firing` table: what each firing of a schedule did with each input.

A firing is claimed by inserting its row (unique per schedule, fire time and input hash), so
two schedulers on one database fire each slot once; its outcome is written once, at the end.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batcher.store.models import TABLES

FIRING = TABLES["schedule_firing"]


def claim(
    conn: Connection,
    name: str,
    scheduled_for: datetime,
    now: datetime,
    path: str | None,
    sha: str,
    run_id: int | None = None,
) -> int:
    """Insert the firing row and return its id; IntegrityError when another process did."""
    values = {
        "schedule_name": name,
        # UTC: SQLite keeps the wall time only, and 02:30 CET is not 02:30 CEST.
        "scheduled_for": scheduled_for.astimezone(UTC),
        "fired_at": now,
        "input_path": path,
        "input_sha256": sha,
        "run_id": run_id,
    }
    return conn.execute(FIRING.insert().values(**values).returning(FIRING.c.id)).scalar_one()


def set_run(conn: Connection, firing_id: int, run_id: int) -> None:
    conn.execute(FIRING.update().where(FIRING.c.id == firing_id).values(run_id=run_id))


def finish(
    conn: Connection,
    firing_id: int,
    outcome: str,
    error: str | None,
    run_id: int | None,
    now: datetime,
) -> None:
    """Write the outcome of a claimed firing (once: a finished firing is left alone)."""
    values = {"outcome": outcome, "error": error, "run_id": run_id, "finished_at": now}
    conn.execute(
        FIRING.update().where(FIRING.c.id == firing_id, FIRING.c.outcome.is_(None)).values(**values)
    )


def latest(conn: Connection, name: str) -> sa.Row | None:
    """The latest firing row of schedule `name`, or None."""
    query = sa.select(FIRING).where(FIRING.c.schedule_name == name)
    return conn.execute(query.order_by(FIRING.c.id.desc()).limit(1)).first()
