"""The `item` table: one input line's route and final outcome.

An item's status follows its attempts: `queue` when a new attempt is planned for it, `finish`
when the follow-up policy or reuse decides its end (it keeps the answer and verdict of the
attempt named), `cancel_unfinished` when its run is cancelled. Moving items in flight is
`batcher.store.batches.adopt`'s job, because it happens with their batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import groupby
from operator import itemgetter
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batcher.store.bulk import placeholder, select_by_keys
from batcher.store.models import TABLES
from batcher.store.states import (
    IN_FLIGHT_SQL,
    ITEM_TERMINAL,
    AttemptStatus,
    ItemStatus,
    set_status,
    set_status_many,
    with_in_flight,
)

ITEM, ATTEMPT = TABLES["item"], TABLES["attempt"]
# What an item keeps of the attempt that ended it.
ENDS = ["answer_attempt_id", "verdict", "final_attempt_id"]
_TERMINAL = [str(s) for s in ITEM_TERMINAL]


# --- reads --------------------------------------------------------------------------------


def counts_by_status(conn: Connection, run_id: int) -> dict[str, int]:
    """Items of the run by status, `in_flight` derived (see ItemStatus.IN_FLIGHT)."""
    query = (
        sa.select(ITEM.c.status, sa.func.count())
        .where(ITEM.c.run_id == run_id)
        .group_by(ITEM.c.status)
    )
    stored = dict(conn.execute(query).all())
    if not stored.get(ItemStatus.QUEUED):
        return stored
    sql = IN_FLIGHT_SQL.replace("?", placeholder(conn))
    return with_in_flight(stored, conn.exec_driver_sql(sql, (run_id,)).scalar_one())


def count_open(conn: Connection, run_id: int) -> int:
    """Items of the run that have not reached a terminal status."""
    query = sa.select(sa.func.count()).where(
        ITEM.c.run_id == run_id, ITEM.c.status.not_in(_TERMINAL)
    )
    return conn.execute(query).scalar_one()


def count_pending(conn: Connection, run_id: int) -> int:
    """Items ingested but not planned yet."""
    query = sa.select(sa.func.count()).where(
        ITEM.c.run_id == run_id, ITEM.c.status == ItemStatus.PENDING
    )
    return conn.execute(query).scalar_one()


def progress(conn: Connection, run_id: int) -> tuple[int, int]:
    """(items, items finished) of the run."""
    query = sa.select(sa.func.count(), sa.func.count().filter(ITEM.c.status.in_(_TERMINAL))).where(
        ITEM.c.run_id == run_id
    )
    total, done = conn.execute(query).one()
    return total, done


def requests_of(conn: Connection, item_ids: list[int]) -> dict[int, tuple]:
    """item id -> (id, system_hash, request_json), for hashing new attempts' requests."""
    rows = select_by_keys(conn, "SELECT id, system_hash, request_json FROM item WHERE id", item_ids)
    return {row[0]: row for row in rows}


# --- transitions --------------------------------------------------------------------------


def finish(conn: Connection, status: str, rows: Sequence[tuple[Any, ...]]) -> int:
    """End items with `status` (succeeded, failed, cancelled); each row is (the id of the
    attempt holding the answer or None, verdict, final attempt id, item id). The answer itself
    stays on its attempt. Returns how many moved."""
    if str(status) not in _TERMINAL:
        raise ValueError(f"{status!r} does not end an item")
    return set_status_many(conn, ITEM, status, ENDS, list(rows))


def queue(conn: Connection, item_ids: Sequence[int]) -> int:
    """Items with a new attempt planned (a retry or an escalation) wait for its batch."""
    return set_status_many(conn, ITEM, ItemStatus.QUEUED, [], [(i,) for i in item_ids])


def queue_laid_out(conn: Connection, run_id: int) -> int:
    """The run's pending items whose first attempt is laid out become queued, with their cache
    group (provider and model are the attempt's; the prefix is the item's system prompt)."""
    laid_out = sa.and_(
        ITEM.c.run_id == run_id,
        ITEM.c.status == ItemStatus.PENDING.value,
        sa.exists().where(ATTEMPT.c.item_id == ITEM.c.id),
    )
    values = {"cache_group": ITEM.c.system_hash}
    return set_status(conn, ITEM, ItemStatus.QUEUED, laid_out, values)


# --- planning -----------------------------------------------------------------------------


def unplanned_queries(
    run_id: int, tiers: dict[str, str], status: str = ItemStatus.PENDING
) -> tuple[sa.Select, sa.Select, sa.Select]:
    """The planner's reads of the run's routed items (in `status`) without an attempt: rows
    (id, NULL, "provider:model", tier, system hash, request json) in cache-group order, each
    group's size in the same order, and the count per (ref, tier). `tiers` maps a tier to its
    "provider:model"; an item's explicit model wins."""
    by_tier = sa.case(dict(tiers), value=ITEM.c.tier)
    ref = sa.func.coalesce(ITEM.c.explicit_model, by_tier)
    keys = (ref, ITEM.c.tier, ITEM.c.system_hash)
    todo = sa.and_(
        ITEM.c.run_id == run_id,
        ITEM.c.status == str(status),
        ref.isnot(None),  # a tier the spec does not define stays pending; plan_run says so
        ~sa.exists().where(ATTEMPT.c.item_id == ITEM.c.id),  # laid out before a crash
    )
    rows = sa.select(ITEM.c.id, sa.null(), *keys, ITEM.c.request_json).where(todo)
    sizes = sa.select(*keys, sa.func.count()).where(todo).group_by(*keys).order_by(*keys)
    totals = sa.select(ref, ITEM.c.tier, sa.func.count()).where(todo).group_by(ref, ITEM.c.tier)
    return rows.order_by(*keys, ITEM.c.id), sizes, totals


def unrouted(conn: Connection, run_id: int, after: int, limit: int) -> list[sa.Row]:
    """Pending items without a tier (ingested without routing), by id after `after`."""
    query = (
        sa.select(
            ITEM.c.id, ITEM.c.request_json, ITEM.c.metadata_json, ITEM.c.explicit_model,
            ITEM.c.explicit_tier, ITEM.c.system_hash,
        )
        .where(
            ITEM.c.run_id == run_id,
            ITEM.c.status == ItemStatus.PENDING.value,
            ITEM.c.tier.is_(None),
            ITEM.c.id > after,
        )
        .order_by(ITEM.c.id)
        .limit(limit)
    )  # fmt: skip
    return list(conn.execute(query))


def set_routes(conn: Connection, routes: Sequence[tuple[int, str | None, str, int]]) -> None:
    """Each item's route: rows of (id, tier, reason, estimated input tokens)."""
    p = sa.bindparam
    update = (
        sa.update(ITEM)
        .where(ITEM.c.id == p("_id"))
        .values(tier=p("_tier"), route_reason=p("_reason"), est_input_tokens=p("_tokens"))
    )
    names = ("_id", "_tier", "_reason", "_tokens")
    conn.execute(update, [dict(zip(names, r, strict=True)) for r in routes])


def explicit_models(conn: Connection, run_id: int) -> list[str]:
    """The distinct "provider:model" refs items of the run asked for."""
    query = (
        sa.select(ITEM.c.explicit_model)
        .where(ITEM.c.run_id == run_id, ITEM.c.explicit_model.isnot(None))
        .distinct()
    )
    return list(conn.execute(query).scalars())


def tier_split(conn: Connection, run_id: int) -> list[tuple[str, str, int]]:
    """(tier, route reason, items) of the run."""
    query = (
        sa.select(ITEM.c.tier, ITEM.c.route_reason, sa.func.count())
        .where(ITEM.c.run_id == run_id)
        .group_by(ITEM.c.tier, ITEM.c.route_reason)
    )
    return [tuple(row) for row in conn.execute(query)]


# --- ingesting ---------------------------------------------------------------------------


class ItemIds:
    """Ids for new item rows, chosen before they are inserted.

    SQLite: the ingest's transaction holds the write lock from its first insert (the run
    row) on, so nobody else adds items meanwhile and the ids after the largest are free.
    PostgreSQL: taken from the table's own sequence, which is safe beside other writers.
    """

    def __init__(self, conn: Connection):
        self.conn = conn
        self.sequence = conn.dialect.name == "postgresql"
        self.next_id: int | None = None

    def take(self, n: int) -> list[int]:
        if self.sequence:
            query = sa.text(
                "SELECT nextval(pg_get_serial_sequence('item', 'id')) FROM generate_series(1, :n)"
            )
            return list(self.conn.execute(query, {"n": n}).scalars())
        if self.next_id is None:
            largest = self.conn.execute(sa.select(sa.func.max(ITEM.c.id))).scalar()
            self.next_id = (largest or 0) + 1
        start, self.next_id = self.next_id, self.next_id + n
        return list(range(start, start + n))


# Columns of an item row as bound per row; run_id and status are the same for every row of
# an ingest and go into the statement as literals (binding is the driver's costliest step).
ITEM_COLUMNS = (
    "line_no", "custom_id", "system_hash", "request_json", "metadata_json",
    "explicit_model", "explicit_tier", "tier", "route_reason", "est_input_tokens",
)  # fmt: skip
# Most items set none of the routing columns: their rows leave them out, because binding
# five NULLs cost more than a third of SQLite's own time per row.
PLAIN_COLUMNS = ITEM_COLUMNS[:5]
# Columns most rows leave NULL (system_hash, metadata_json, explicit_model, explicit_tier):
# a row's NULLs among them are written as literals of its statement instead of bound, for
# the same reason (sqlite3 binds None only after two failed adapter lookups).
MOSTLY_NULL = (2, 4, 5, 6)


def _null_shape(row: tuple) -> tuple:
    """The row's length, and which of its MOSTLY_NULL columns are NULL: rows are written
    with one statement per shape."""
    if len(row) == len(PLAIN_COLUMNS):
        return (len(row), row[2] is None, row[4] is None)
    return (len(row), row[2] is None, row[4] is None, row[5] is None, row[6] is None)


class ItemWriter:
    """Batched inserts of item rows as tuples straight through the DBAPI cursor.

    SQLAlchemy's executemany builds and processes a dict per row; on a million rows that was
    a third of the ingest time. On PostgreSQL with psycopg the rows go through COPY, several
    times faster than INSERTs there. Rows are tuples of PLAIN_COLUMNS or ITEM_COLUMNS (told
    apart by length); runs of one shape (see `_null_shape`) are written in order, so item
    ids follow the lines. A `planned` writer stores the items queued, with the ids it is
    given and their system prompt as cache group (see `ItemSink`). The rows stay inside the
    caller's transaction.
    """

    def __init__(self, conn: Connection, run_id: int, planned: bool = False):
        self.conn, self.run_id, self.planned = conn, int(run_id), planned
        self.status = ItemStatus.QUEUED.value if planned else ItemStatus.PENDING.value
        dialect = conn.dialect
        self.mark = placeholder(conn)
        self.quote = dialect.identifier_preparer.quote
        self.use_copy = dialect.name == "postgresql" and dialect.driver == "psycopg"
        self.statements: dict[tuple, tuple[str, Callable[[tuple], tuple]]] = {}
        if self.use_copy:
            head, tail = (("id",), ("cache_group",)) if planned else ((), ())
            self.copy_sql = {}
            for cols in (PLAIN_COLUMNS, ITEM_COLUMNS):
                names = ", ".join(map(self.quote, (*head, "run_id", *cols, "status", *tail)))
                self.copy_sql[len(cols)] = f"COPY {self.quote('item')} ({names}) FROM STDIN"

    def write(self, rows: list[tuple], ids: list[int] | None = None) -> None:
        """Insert `rows`; a planned writer needs each row's id in `ids`."""
        cursor = self.conn.connection.cursor()
        try:
            if self.use_copy:
                for n, run in groupby(rows, key=len):  # planned rows: one kind (ItemSink)
                    self._copy(cursor, self.copy_sql[n], run, ids)
                return
            start = 0  # of the run in `rows` (and `ids`)
            for shape, run in groupby(rows, key=_null_shape):
                sql, pick = self._statement(shape)
                run = list(run)
                if ids is None:
                    cursor.executemany(sql, [pick(row) for row in run])
                else:
                    run_ids = ids[start : start + len(run)]
                    cursor.executemany(
                        sql, [(i, *pick(row)) for i, row in zip(run_ids, run, strict=True)]
                    )
                start += len(run)
        finally:
            cursor.close()

    def _statement(self, shape: tuple) -> tuple[str, Callable[[tuple], tuple]]:
        """The INSERT of rows of `shape` and what it binds of each row: the run's id and
        status, and the shape's NULLs, are literals."""
        found = self.statements.get(shape)
        if found is not None:
            return found
        length, nulls = shape[0], dict(zip(MOSTLY_NULL, shape[1:], strict=False))
        names = ["run_id", *ITEM_COLUMNS[:length], "status"]
        values = [str(self.run_id)]
        bound = []
        for i in range(length):
            if nulls.get(i):
                values.append("NULL")
            else:
                values.append(self.mark)
                bound.append(i)
        values.append(f"'{self.status}'")
        if self.planned:  # the id first, the cache group (the system prompt's key) last
            names = ["id", *names, "cache_group"]
            values = [self.mark, *values, "NULL" if nulls[2] else self.mark]
            bound += [] if nulls[2] else [2]
        sql = (
            f"INSERT INTO {self.quote('item')} ({', '.join(map(self.quote, names))}) "
            f"VALUES ({', '.join(values)})"
        )
        found = self.statements[shape] = (sql, itemgetter(*bound))
        return found

    def _copy(self, cursor: Any, sql: str, rows: Iterable[tuple], ids: list[int] | None) -> None:
        run_id, status = self.run_id, self.status
        with cursor.copy(sql) as copy:
            if ids is None:
                for row in rows:
                    copy.write_row((run_id, *row, status))
            else:
                for i, row in zip(ids, rows, strict=True):
                    copy.write_row((i, run_id, *row, status, row[2]))


def stored_lines(conn: Connection, run_id: int, custom_ids: list[str]) -> dict[str, int]:
    """custom_id -> line of the given ids already stored in the run."""
    found: dict[str, int] = {}
    for start in range(0, len(custom_ids), 500):  # well under every bind-parameter limit
        query = sa.select(ITEM.c.custom_id, ITEM.c.line_no).where(
            ITEM.c.run_id == run_id,
            ITEM.c.custom_id.in_(custom_ids[start : start + 500]),
        )
        for custom_id, line_no in conn.execute(query):
            found[custom_id] = line_no
    return found


# --- exporting ----------------------------------------------------------------------------


def count(conn: Connection, run_id: int) -> int:
    return conn.execute(sa.select(sa.func.count()).where(ITEM.c.run_id == run_id)).scalar_one()


def shown_status() -> sa.Case:
    """The item's status with `in_flight` derived: queued with an attempt at the provider
    (see ItemStatus.IN_FLIGHT)."""
    flying = sa.exists().where(
        ATTEMPT.c.item_id == ITEM.c.id, ATTEMPT.c.status == AttemptStatus.SUBMITTED
    )
    queued = sa.and_(ITEM.c.status == ItemStatus.QUEUED, flying)
    return sa.case((queued, ItemStatus.IN_FLIGHT.value), else_=ITEM.c.status)


def export_rows(conn: Connection, run_id: int, chunk: int) -> Iterator[Sequence[sa.Row]]:
    """The run's items in input order with their final attempt and what all their attempts
    spent, `chunk` rows at a time (streamed: a server-side cursor on PostgreSQL, stepwise
    fetch on SQLite)."""
    result = conn.execution_options(yield_per=chunk).execute(_export_query(run_id))
    yield from result.partitions()


def metadata_keys(conn: Connection, run_id: int) -> list[str]:
    """Every key of the run's item metadata, in order of first appearance (export columns)."""
    keys: dict[str, None] = {}
    query = sa.select(ITEM.c.metadata_json).where(
        ITEM.c.run_id == run_id, ITEM.c.metadata_json.is_not(None)
    )
    for text in conn.execution_options(yield_per=CHUNK_KEYS).execute(query).scalars():
        value = orjson.loads(text)
        if isinstance(value, dict):
            keys.update(dict.fromkeys(value))
    return list(keys)


CHUNK_KEYS = 10_000


def _export_query(run_id: int) -> sa.Select:
    i, a = ITEM, ATTEMPT
    final, answer = a.alias("final"), a.alias("answer")
    s = sa.func.sum
    spent = (
        sa.select(
            a.c.item_id,
            sa.func.count().label("attempts"),
            s(a.c.input_tokens).label("input_tokens"),
            s(a.c.cache_read_tokens).label("cache_read_tokens"),
            s(a.c.cache_write_5m_tokens + a.c.cache_write_1h_tokens).label("cache_write_tokens"),
            s(a.c.output_tokens).label("output_tokens"),
            s(a.c.reasoning_tokens).label("reasoning_tokens"),
            s(a.c.cost_pusd).label("cost_pusd"),
        )
        .where(a.c.run_id == run_id)
        .group_by(a.c.item_id)
        .subquery("spent")
    )
    return (
        sa.select(
            i.c.custom_id,
            i.c.line_no,
            i.c.system_hash,
            i.c.request_json,
            i.c.metadata_json,
            i.c.explicit_tier,
            i.c.explicit_model,
            shown_status().label("status"),
            answer.c.output,
            sa.func.coalesce(final.c.tier, i.c.tier).label("tier"),
            final.c.provider,
            final.c.model,
            final.c.error_code,
            final.c.error_message,
            sa.func.coalesce(i.c.verdict, final.c.verdict).label("verdict"),
            final.c.answer_key,
            *(spent.c[name] for name in spent.c.keys() if name != "item_id"),
        )
        .select_from(
            i.outerjoin(final, final.c.id == i.c.final_attempt_id)
            .outerjoin(answer, answer.c.id == i.c.answer_attempt_id)
            .outerjoin(spent, spent.c.item_id == i.c.id)
        )
        .where(i.c.run_id == run_id)
        .order_by(i.c.line_no)
    )
