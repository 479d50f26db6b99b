"""Read-only queries for `batcher status`, through the sqlite3 module or psycopg alone.

Importing SQLAlchemy and the tables takes about 0.3 s of CPU on this project's machine, more
than the whole command should; these few SELECTs need neither. They mirror the queries of
`runs.recent`, `runs.get`, `items.counts_by_status`, `attempts.cost_totals` and
`batches.for_status` (a test compares the two paths, on either database). A database that
does not exist yet, cannot be reached, or whose schema these queries do not fit, is left to
the usual path (`open_peek` -> None, or `Peek.errors` from a query), which creates or
migrates it, or says what is wrong.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from batcher.store.paths import resolve_url, sqlite_file
from batcher.store.states import IN_FLIGHT_SQL, ItemStatus, with_in_flight

BATCH_COLUMNS = (
    "id", "round", "provider", "model", "status", "raw_status", "n_requests", "n_succeeded",
    "n_errored", "n_expired", "n_cancelled", "provider_batch_id", "error",
)  # fmt: skip


class Peek:
    """A read-only DBAPI connection that takes this module's SQL ("?" parameters)."""

    def __init__(self, conn: Any, mark: str, errors: tuple[type[Exception], ...]):
        self.conn, self.mark = conn, mark
        self.errors = errors  # what a query raises when the schema does not fit

    def execute(self, sql: str, params: tuple = ()) -> Any:
        return self.conn.execute(sql if self.mark == "?" else sql.replace("?", self.mark), params)

    def close(self) -> None:
        self.conn.close()


def open_peek(url: str | None) -> Peek | None:
    """A read-only connection to the database of `url`: an existing SQLite file, or a
    PostgreSQL server that answers; None otherwise."""
    path = sqlite_file(url)
    if path is not None:
        if not path.is_file():
            return None
        conn = sqlite3.connect(path, timeout=30)
        conn.execute("PRAGMA query_only=ON")  # this path never writes, whatever calls it
        return Peek(conn, "?", (sqlite3.Error,))
    libpq_url = _libpq_url(resolve_url(url))
    if libpq_url is None:
        return None
    import psycopg  # a tenth of a second: a third of what SQLAlchemy and the tables take

    try:
        conn = psycopg.connect(libpq_url, connect_timeout=10)
    except psycopg.Error:
        return None
    conn.read_only = True  # this path never writes, whatever calls it
    return Peek(conn, "%s", (psycopg.Error,))


def _libpq_url(url: str) -> str | None:
    """The libpq form of a SQLAlchemy PostgreSQL URL with the psycopg driver (the query, such
    as options=-csearch_path%3D..., is libpq's too); None for any other database."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgresql+psycopg"):
        return None
    return f"postgresql://{rest}"


def recent(conn: Peek, limit: int = 50) -> list[tuple[int, str, str, datetime]]:
    """(id, job name, status, created) of the newest runs first."""
    rows = conn.execute(
        "SELECT id, job_name, status, created_at FROM run ORDER BY id DESC LIMIT ?", (limit,)
    ).fetchall()
    return [(i, job, status, _when(created)) for i, job, status, created in rows]


def run(conn: Peek, run_id: int) -> dict[str, Any] | None:
    """The run's status, error, lease owner and options, or None."""
    row = conn.execute(
        "SELECT status, error, lease_owner, options_json FROM run WHERE id = ?", (run_id,)
    ).fetchone()
    if row is None:
        return None
    return dict(zip(("status", "error", "lease_owner", "options_json"), row, strict=True))


def counts_by_status(conn: Peek, run_id: int) -> dict[str, int]:
    sql = "SELECT status, count(*) FROM item WHERE run_id = ? GROUP BY status"
    stored = dict(conn.execute(sql, (run_id,)).fetchall())
    if not stored.get(ItemStatus.QUEUED):
        return stored
    (flying,) = conn.execute(IN_FLIGHT_SQL, (run_id,)).fetchone()
    return with_in_flight(stored, flying)


def cost_totals(conn: Peek, run_id: int) -> tuple[int, int]:
    """(billed cost, baseline cost) of the run so far, in picodollars."""
    cost, baseline = conn.execute(
        "SELECT coalesce(sum(cost_pusd), 0), coalesce(sum(baseline_pusd), 0) FROM attempt"
        " WHERE run_id = ?",
        (run_id,),
    ).fetchone()
    return int(cost), int(baseline)


def batches_for_status(conn: Peek, run_id: int) -> list[dict[str, Any]]:
    sql = (
        f"SELECT {', '.join(BATCH_COLUMNS)} FROM batch WHERE run_id = ?"
        " ORDER BY round, created_at, id"
    )
    return [dict(zip(BATCH_COLUMNS, r, strict=True)) for r in conn.execute(sql, (run_id,))]


def _when(value: str | datetime | None) -> datetime | None:
    """A time as SQLAlchemy stores it on SQLite ("2026-12-03 13:48:39.123456"), or as
    PostgreSQL gives it."""
    if isinstance(value, str):
        return datetime.fromisoformat(value) if value else None
    return value
