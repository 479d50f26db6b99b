"""The state machine of runs, items, attempts and batches: the only code that writes a status.

Every status column changes through `set_status`, which refuses transitions that the table
below does not allow by putting the allowed sources into the UPDATE's WHERE clause. That makes
a change atomic and idempotent: applying the same transition twice changes nothing the second
time, which is what crash recovery relies on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from functools import lru_cache
from operator import itemgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # SQLAlchemy loads with the first write: the CLI reads the enums without it
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection


class RunStatus(StrEnum):
    CREATED = "created"  # items ingested, nothing planned yet
    # tiers and groups decided, batches laid out (or, for a run driven at once, being laid
    # out as they are submitted: see batcher.plan.onepass); nothing sent
    PLANNED = "planned"
    RUNNING = "running"  # batches are being submitted, polled or reconciled
    COMPLETED = "completed"  # every item reached a terminal status
    FAILED = "failed"  # stopped on an error that needs a person; `resume` continues
    CANCELLED = "cancelled"  # cancelled by the user; finished items are kept


class ItemStatus(StrEnum):
    PENDING = "pending"  # ingested, no attempt yet
    QUEUED = "queued"  # has an attempt, waiting in a planned batch or at the provider
    # Its current attempt is at the provider. Derived, not stored (see IN_FLIGHT_SQL): a
    # submit writes its batch and attempts, not every item row again. Rows of runs from
    # before that change may still hold it.
    IN_FLIGHT = "in_flight"
    SUCCEEDED = "succeeded"  # a valid answer is stored
    FAILED = "failed"  # retries and escalations exhausted
    CANCELLED = "cancelled"  # its run was cancelled before it finished


# Queued items of a run (the one parameter) with an attempt at the provider: in flight.
IN_FLIGHT_SQL = (
    "SELECT count(DISTINCT a.item_id) FROM attempt a JOIN item i ON i.id = a.item_id"
    " WHERE a.run_id = ? AND a.status = 'submitted' AND i.status = 'queued'"
)


def with_in_flight(stored: dict[str, int], flying: int) -> dict[str, int]:
    """Item counts by stored status, with the `flying` queued items (IN_FLIGHT_SQL) counted
    in flight instead."""
    counts = dict(stored)
    if flying:
        counts[ItemStatus.QUEUED] -= flying
        counts[ItemStatus.IN_FLIGHT] = counts.get(ItemStatus.IN_FLIGHT, 0) + flying
        if not counts[ItemStatus.QUEUED]:
            del counts[ItemStatus.QUEUED]
    return counts


class AttemptStatus(StrEnum):
    PLANNED = "planned"  # placed in a batch that has not reached the provider
    SUBMITTED = "submitted"  # its batch is at the provider
    SUCCEEDED = "succeeded"  # answered and the answer passed validation
    INVALID = "invalid"  # answered, but the answer failed validation (escalate)
    TRUNCATED = "truncated"  # answered, but cut off at max_tokens (retry larger, escalate)
    ERRORED = "errored"  # the provider returned an error for this request (retry)
    EXPIRED = "expired"  # the batch expired before this request ran (retry)
    CANCELLED = "cancelled"  # its batch was cancelled before this request ran
    REUSED = "reused"  # answered from an earlier identical request, at no cost


class BatchStatus(StrEnum):
    PLANNED = "planned"  # file written locally, nothing sent
    SUBMITTING = "submitting"  # intent recorded; upload or create may have reached the provider
    SUBMITTED = "submitted"  # the provider holds it; raw_status says where it is
    ENDED = "ended"  # terminal at the provider (completed, failed, expired, cancelled)
    RECONCILED = "reconciled"  # every result stored; nothing more to do
    ABANDONED = "abandoned"  # never reached the provider (e.g. the run was cancelled first)
    LOST = "lost"  # the provider no longer knows it (archived, deleted): results are gone


RUN_TERMINAL = {RunStatus.COMPLETED, RunStatus.CANCELLED}
ITEM_TERMINAL = {ItemStatus.SUCCEEDED, ItemStatus.FAILED, ItemStatus.CANCELLED}
ATTEMPT_FINAL = {
    AttemptStatus.SUCCEEDED,
    AttemptStatus.INVALID,
    AttemptStatus.TRUNCATED,
    AttemptStatus.ERRORED,
    AttemptStatus.EXPIRED,
    AttemptStatus.CANCELLED,
    AttemptStatus.REUSED,
}

# target status -> the statuses it may be reached from
TRANSITIONS: dict[str, dict[str, set[str]]] = {
    "run": {
        # a finished run is planned again by `batcher retry`
        RunStatus.PLANNED: {
            RunStatus.CREATED,
            RunStatus.PLANNED,
            RunStatus.COMPLETED,
            RunStatus.CANCELLED,
            RunStatus.FAILED,
        },
        RunStatus.RUNNING: {RunStatus.PLANNED, RunStatus.RUNNING, RunStatus.FAILED},
        RunStatus.COMPLETED: {RunStatus.RUNNING},
        RunStatus.FAILED: {RunStatus.PLANNED, RunStatus.RUNNING},
        RunStatus.CANCELLED: {
            RunStatus.CREATED,
            RunStatus.PLANNED,
            RunStatus.RUNNING,
            RunStatus.FAILED,
        },
    },
    "item": {
        # failed and cancelled items are queued again by `batcher retry`
        ItemStatus.QUEUED: {
            ItemStatus.PENDING,
            ItemStatus.IN_FLIGHT,
            ItemStatus.FAILED,
            ItemStatus.CANCELLED,
        },
        ItemStatus.IN_FLIGHT: {ItemStatus.QUEUED},
        ItemStatus.SUCCEEDED: {ItemStatus.PENDING, ItemStatus.QUEUED, ItemStatus.IN_FLIGHT},
        ItemStatus.FAILED: {ItemStatus.PENDING, ItemStatus.QUEUED, ItemStatus.IN_FLIGHT},
        ItemStatus.CANCELLED: {ItemStatus.PENDING, ItemStatus.QUEUED, ItemStatus.IN_FLIGHT},
    },
    "attempt": {
        AttemptStatus.SUBMITTED: {AttemptStatus.PLANNED},
        AttemptStatus.SUCCEEDED: {AttemptStatus.PLANNED, AttemptStatus.SUBMITTED},
        AttemptStatus.INVALID: {AttemptStatus.SUBMITTED},
        AttemptStatus.TRUNCATED: {AttemptStatus.SUBMITTED},
        AttemptStatus.ERRORED: {AttemptStatus.PLANNED, AttemptStatus.SUBMITTED},
        AttemptStatus.EXPIRED: {AttemptStatus.SUBMITTED},
        AttemptStatus.CANCELLED: {AttemptStatus.PLANNED, AttemptStatus.SUBMITTED},
        AttemptStatus.REUSED: {AttemptStatus.PLANNED},
    },
    "batch": {
        BatchStatus.SUBMITTING: {BatchStatus.PLANNED},
        BatchStatus.PLANNED: {BatchStatus.SUBMITTING},  # the create provably never happened
        BatchStatus.SUBMITTED: {BatchStatus.SUBMITTING, BatchStatus.SUBMITTED},
        BatchStatus.ENDED: {BatchStatus.SUBMITTED},
        BatchStatus.RECONCILED: {BatchStatus.ENDED},
        BatchStatus.ABANDONED: {BatchStatus.PLANNED, BatchStatus.SUBMITTING},
        BatchStatus.LOST: {BatchStatus.SUBMITTED, BatchStatus.ENDED},
    },
}


def allowed_sources(entity: str, to: str) -> set[str]:
    """The statuses from which `entity` may move to `to` (empty when `to` is unknown)."""
    return TRANSITIONS[entity].get(to, set())


def set_status(
    conn: Connection,
    table: sa.Table,
    to: str,
    where: sa.ColumnElement[bool],
    values: Mapping[str, Any] | None = None,
) -> int:
    """Move the rows of `table` matched by `where` to status `to`; returns how many moved.

    Rows whose current status may not move to `to` are left alone, so a repeated call is a
    no-op. `values` sets other columns in the same UPDATE (raw provider status, times, ids).
    """
    import sqlalchemy as sa

    sources = allowed_sources(table.name, to)
    if not sources:
        raise ValueError(f"no transition of {table.name} leads to {to!r}")
    stmt = (
        sa.update(table)
        .where(where, table.c.status.in_([str(s) for s in sources]))
        .values(status=str(to), **dict(values or {}))
    )
    return conn.execute(stmt).rowcount


@lru_cache(maxsize=256)
def _bulk_update_sql(
    mark: str, table: str, to: str, columns: tuple[str, ...], nulls: tuple[str, ...] = ()
) -> str:
    sources = sorted(str(s) for s in allowed_sources(table, to))
    if not sources:
        raise ValueError(f"no transition of {table} leads to {to!r}")
    # Statuses are our own enum values, never user input: safe to write inline. Equalities
    # joined by OR, not an IN list: SQLite tests a list of three or more constants against a
    # temporary table, built again for every row of an executemany (an item's UPDATE took
    # 3.5 us with one, 1.7 without).
    allowed = " OR ".join(f"status = '{s}'" for s in sources)
    sets = "".join(f", {c} = {mark}" for c in columns) + "".join(f", {c} = NULL" for c in nulls)
    return f"UPDATE {table} SET status = '{to}'{sets} WHERE id = {mark} AND ({allowed})"


def set_status_many(
    conn: Connection,
    table: sa.Table,
    to: str,
    columns: Sequence[str],
    rows: list[tuple[Any, ...]],
    nulls: Sequence[str] = (),
) -> int:
    """Move many rows of `table` to status `to` in one executemany; returns how many moved.

    Each row is the values of `columns` followed by the row's id; the `nulls` columns are
    set to NULL by the statement itself (sqlite3 binds a None only after failed adapter
    lookups, more than an integer or a string costs). Like `set_status`, a row
    whose current status may not move to `to` is left alone. This is the bulk path
    (reconciling a million results): the SQL is built once and rows go to the DBAPI as plain
    tuples, because SQLAlchemy's per-row parameter processing costs more than the UPDATE.
    Pass database-ready values (see `batcher.store.bulk.db_value` for times). Rows are written in
    id order, which keeps the B-tree pages each write touches close together.
    """
    from batcher.store.bulk import placeholder

    if not rows:
        return 0
    rows = sorted(rows, key=itemgetter(-1))
    sql = _bulk_update_sql(placeholder(conn), table.name, str(to), tuple(columns), tuple(nulls))
    return conn.exec_driver_sql(sql, rows).rowcount
