"""Read-only queries for `batcher status` on a SQLite file, through the sqlite3 module.

Importing SQLAlchemy and the tables takes about 0.3 s of CPU on this project's machine, more
than the whole command should; these few SELECTs need neither. They mirror the queries of
`runs.recent`, `runs.get`, `items.counts_by_status`, `attempts.cost_totals` and
`batches.for_status` (a test compares the two paths). A database that does not exist yet,
or whose schema these queries do not fit, is left to the usual path (`open_peek` -> None, or
sqlite3.Error from a query), which creates or migrates it.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from batcher.store.paths import sqlite_file
from batcher.store.states import IN_FLIGHT_SQL, ItemStatus, with_in_flight

BATCH_COLUMNS = (
    "id", "round", "provider", "model", "status", "raw_status", "n_requests", "n_succeeded",
    "n_errored", "n_expired", "n_cancelled", "provider_batch_id", "error",
)  # fmt: skip


def open_peek(url: str | None) -> sqlite3.Connection | None:
    """A connection to the SQLite file of `url` when it exists, else None."""
    path = sqlite_file(url)
    if path is None or not path.is_file():
        return None
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("PRAGMA query_only=ON")  # this path never writes, whatever calls it
    return conn


def recent(conn: sqlite3.Connection, limit: int = 50) -> list[tuple[int, str, str, datetime]]:
    """(id, job name, status, created) of the newest runs first."""
    rows = conn.execute(
        "SELECT id, job_name, status, created_at FROM run ORDER BY id DESC LIMIT ?", (limit,)
    ).fetchall()
    return [(i, job, status, _when(created)) for i, job, status, created in rows]


def run(conn: sqlite3.Connection, run_id: int) -> dict[str, Any] | None:
    """The run's status, error, lease owner and options, or None."""
    row = conn.execute(
        "SELECT status, error, lease_owner, options_json FROM run WHERE id = ?", (run_id,)
    ).fetchone()
    if row is None:
        return None
    return dict(zip(("status", "error", "lease_owner", "options_json"), row, strict=True))


def counts_by_status(conn: sqlite3.Connection, run_id: int) -> dict[str, int]:
    sql = "SELECT status, count(*) FROM item WHERE run_id = ? GROUP BY status"
    stored = dict(conn.execute(sql, (run_id,)).fetchall())
    if not stored.get(ItemStatus.QUEUED):
        return stored
    (flying,) = conn.execute(IN_FLIGHT_SQL, (run_id,)).fetchone()
    return with_in_flight(stored, flying)


def cost_totals(conn: sqlite3.Connection, run_id: int) -> tuple[int, int]:
    """(billed cost, baseline cost) of the run so far, in picodollars."""
    cost, baseline = conn.execute(
        "SELECT coalesce(sum(cost_pusd), 0), coalesce(sum(baseline_pusd), 0) FROM attempt"
        " WHERE run_id = ?",
        (run_id,),
    ).fetchone()
    return int(cost), int(baseline)


def batches_for_status(conn: sqlite3.Connection, run_id: int) -> list[dict[str, Any]]:
    sql = (
        f"SELECT {', '.join(BATCH_COLUMNS)} FROM batch WHERE run_id = ?"
        " ORDER BY round, created_at, id"
    )
    return [dict(zip(BATCH_COLUMNS, r, strict=True)) for r in conn.execute(sql, (run_id,))]


def _when(text: str | None) -> datetime | None:
    """A time as SQLAlchemy stores it on SQLite ("2026-12-03 13:48:39.123456")."""
    return datetime.fromisoformat(text) if text else None
