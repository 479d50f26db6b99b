"""Key lookups and value conversion for the million-row paths (reconcile, follow-ups, reuse).

Their status writes go through `states.set_status_many`, the state machine's bulk writer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batcher.errors import StoreError

MAX_KEYS = 5000  # bound parameters in one IN list; SQLite allows 32766
# Page cache for bulk work, so a batch's rows and index pages stay hot. 16 MB: 32 saved up
# to a twentieth of reconciling into a database of a million attempts on a busy machine
# (bench/reconcile.py: the reuse index takes its inserts in random order; 0.86 of the
# minimal loop against 0.85 on a quiet one), but in a pipelined run the cache fills while
# the layout writes and the SDKs are loaded: a mixed 500,000-item run peaked at 244 MB with
# it, 230-234 MB without (bench/e2e.py, issue 16's cap is 256 MB).
SQLITE_CACHE_KIB = 16384
BULK_CACHE = "batcher_bulk_cache"  # key in a pooled connection's info: its cache was raised


def placeholder(conn: Connection) -> str:
    """The DBAPI parameter marker of `conn`'s driver, for SQL written by hand."""
    style = conn.dialect.paramstyle
    if style == "qmark":
        return "?"
    if style in ("format", "pyformat"):
        return "%s"
    raise StoreError(
        f"the {conn.dialect.driver} driver's {style!r} parameters are not supported: use "
        "SQLite or PostgreSQL with psycopg"
    )


def executemany(conn: Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> int:
    """One DBAPI executemany of plain tuples; `sql` marks parameters with `{p}`. A dict per row
    through SQLAlchemy costs more than the I/O on the million-row paths."""
    if not rows:
        return 0
    cursor = conn.connection.cursor()
    try:
        cursor.executemany(sql.format(p=placeholder(conn)), rows)
        return cursor.rowcount
    finally:
        cursor.close()


def db_value(conn: Connection | Engine, column: sa.Column, value: Any) -> Any:
    """`value` as the driver of `conn` (or of an engine) must receive it for `column` (SQLite
    stores times as text)."""
    process = column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    return process(value) if process is not None else value


def select_by_keys(
    conn: Connection, sql_before_in: str, keys: Sequence[Any], params: tuple[Any, ...] = ()
) -> Iterator[tuple[Any, ...]]:
    """Rows of `sql_before_in + " IN (...)"` for `keys`, in slices of MAX_KEYS.

    `sql_before_in` uses `{p}` where a leading parameter goes, matched by `params`.
    """
    mark = placeholder(conn)
    head = sql_before_in.format(p=mark)
    for start in range(0, len(keys), MAX_KEYS):
        part = tuple(keys[start : start + MAX_KEYS])
        sql = f"{head} IN ({', '.join([mark] * len(part))})"
        cursor = conn.connection.cursor()  # plain tuples: no Row objects on the bulk path
        try:
            cursor.execute(sql, params + part)
            yield from cursor.fetchall()
        finally:
            cursor.close()


def tune_for_bulk(conn: Connection) -> None:
    """A larger SQLite page cache for this connection (the default 2 MB thrashes), until it
    goes back to the pool (see store.db): a pooled connection that kept it would hold its
    pages for the rest of the process, and the run's threads take turns with several."""
    if conn.dialect.name == "sqlite":
        conn.info[BULK_CACHE] = True
        conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        conn.exec_driver_sql("PRAGMA wal_autocheckpoint = 20000")
        conn.exec_driver_sql("")
