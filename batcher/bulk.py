"""Status writes and key lookups for the million-row paths (reconcile, follow-ups, reuse).

`set_status_rows` is `states.set_status_many` as one DBAPI executemany: the same contract
(a row whose current status may not move to `to` is left alone, so a repeated call changes
nothing), the sources taken from the state machine's table, but rows are plain tuples and
the SQL is built once. Going through SQLAlchemy's per-row parameter processing costs ~20 us a
row, more than the UPDATE itself; the reconcile benchmark needs well under that.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batcher.states import allowed_sources

MAX_KEYS = 5000  # bound parameters in one IN list; SQLite allows 32766
SQLITE_CACHE_KIB = 65536  # page cache for bulk work: a batch's rows and index pages stay hot


def _mark(conn: Connection) -> str:
    style = conn.dialect.paramstyle
    if style == "qmark":
        return "?"
    if style in ("format", "pyformat"):
        return "%s"
    raise NotImplementedError(f"bulk writes support qmark and format paramstyles, not {style}")


@lru_cache(maxsize=256)
def _update_sql(mark: str, table: str, to: str, columns: tuple[str, ...]) -> str:
    sources = sorted(str(s) for s in allowed_sources(table, to))
    if not sources:
        raise ValueError(f"no transition of {table} leads to {to!r}")
    # Statuses are our own enum values, never user input: safe to write inline.
    allowed = ", ".join(f"'{s}'" for s in sources)
    sets = "".join(f", {c} = {mark}" for c in columns)
    return f"UPDATE {table} SET status = '{to}'{sets} WHERE id = {mark} AND status IN ({allowed})"


def set_status_rows(
    conn: Connection,
    table: sa.Table,
    to: str,
    columns: Sequence[str],
    rows: list[tuple[Any, ...]],
) -> int:
    """Move many rows of `table` to status `to`; returns how many moved.

    Each row is the values of `columns` followed by the row's id. Values go to the driver as
    they are: pass database-ready values (see `db_value` for times). Rows are written in id
    order, which keeps the B-tree pages each write touches close together.
    """
    if not rows:
        return 0
    rows = sorted(rows, key=itemgetter(-1))
    sql = _update_sql(_mark(conn), table.name, str(to), tuple(columns))
    return conn.exec_driver_sql(sql, rows).rowcount


def db_value(conn: Connection, column: sa.Column, value: Any) -> Any:
    """`value` as the driver must receive it for `column` (SQLite stores times as text)."""
    process = column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    return process(value) if process is not None else value


def select_by_keys(
    conn: Connection, sql_before_in: str, keys: Sequence[Any], params: tuple[Any, ...] = ()
) -> Iterator[tuple[Any, ...]]:
    """Rows of `sql_before_in + " IN (...)"` for `keys`, in slices of MAX_KEYS.

    `sql_before_in` uses `{p}` where a leading parameter goes, matched by `params`.
    """
    mark = _mark(conn)
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
    """A larger SQLite page cache for this connection (the default 2 MB thrashes)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        conn.exec_driver_sql("PRAGMA wal_autocheckpoint = 20000")
        conn.exec_driver_sql("")
