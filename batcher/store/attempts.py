"""The `attempt` table: one submission of one item to one model, with its answer and bill.

Transitions: `mark_all_submitted` (a batch that reached the provider), `record_results` (the
bulk path of reconciling: one executemany per target status), `mark_missing` (no result came
back), `record_errors` (a refused batch), `record_reused` (answered from an earlier run), and
`plan_next` (new attempts for retries and escalations, their items queued in the same call).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import groupby
from operator import itemgetter
from typing import Any, NamedTuple, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batcher.store import items
from batcher.store.bulk import executemany, placeholder, select_by_keys
from batcher.store.models import TABLES
from batcher.store.states import (
    ATTEMPT_FINAL,
    ITEM_TERMINAL,
    AttemptStatus,
    ItemStatus,
    set_status,
    set_status_many,
)

ATTEMPT, ITEM, BATCH = TABLES["attempt"], TABLES["item"], TABLES["batch"]

# Tokens and costs, in the order Pricer.billing gives them: all 0 for a reused answer.
BILLED_COLUMNS = [
    "input_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_pusd",
    "standard_pusd",
    "uncached_pusd",
    "baseline_pusd",
]
# What a result sets, by its kind: an answer leaves the error columns alone and an error the
# answer's, NULL on every submitted attempt. Not binding those NULLs matters: the sqlite3
# module binds None through its adapter lookup (~0.25 us a parameter, more than an integer
# or a string), which on a million results costs seconds. For the same reason the columns
# a result often leaves NULL come last, and a row may leave them out (see record_results).
ANSWER_COLUMNS = [*BILLED_COLUMNS, "output", "verdict", "finished_at", "answer_key", "stop_reason"]
ERRORED_COLUMNS = [*BILLED_COLUMNS, "finished_at", "error_code", "error_class", "error_message"]
ANSWERED = {AttemptStatus.SUCCEEDED, AttemptStatus.INVALID, AttemptStatus.TRUNCATED}
REUSED_COLUMNS = ["output", "verdict", "reused_from", "finished_at", *BILLED_COLUMNS, "answer_key"]
ERROR_COLUMNS = ["error_code", "error_message", "finished_at"]
MISSING_RESULT = "missing_result"
_OPEN_ITEMS = [s.value for s in ItemStatus if s not in ITEM_TERMINAL]
_FINAL = [s.value for s in ATTEMPT_FINAL]
CALIBRATION = "calibration"  # attempt.role of a calibration sample's frontier answer


class ChainStep(NamedTuple):
    """One attempt of an item's chain, as the follow-up policy reads it."""

    id: int
    seq: int
    tier: str
    provider: str
    model: str
    status: str
    error_code: str | None
    output: str | None
    verdict: str | None
    error_class: str | None  # transient, too_long, invalid (m009)
    max_tokens: int | None  # the cap it was sent with, when not the item's own (m009)
    role: str = "primary"
    answer_key: str | None = None
    stop_reason: str | None = None  # what a learned scorer reads (batcher.tune)
    input_tokens: int = 0
    output_tokens: int = 0


# --- reads --------------------------------------------------------------------------------


def cost_totals(conn: Connection, run_id: int) -> tuple[int, int]:
    """(billed cost, baseline cost) of the run so far, in picodollars."""
    query = sa.select(
        sa.func.coalesce(sa.func.sum(ATTEMPT.c.cost_pusd), 0),
        sa.func.coalesce(sa.func.sum(ATTEMPT.c.baseline_pusd), 0),
    ).where(ATTEMPT.c.run_id == run_id)
    cost, baseline = conn.execute(query).one()
    return int(cost), int(baseline)


def count_unbatched(conn: Connection, run_id: int) -> int:
    """Planned attempts of the run that wait to be laid out into a batch."""
    query = sa.select(sa.func.count()).where(
        ATTEMPT.c.run_id == run_id,
        ATTEMPT.c.status == AttemptStatus.PLANNED,
        ATTEMPT.c.batch_id.is_(None),
    )
    return conn.execute(query).scalar_one()


def result_targets(conn: Connection, batch_id: str) -> dict[str, tuple[str, int | None, int]]:
    """custom_id -> (custom_id, attempt id, item id) of every attempt of the batch, the
    attempt id None for an attempt that has a result already.

    One indexed scan per batch rather than a lookup per chunk: a batch holds at most 100,000
    requests (the providers' limit), so this stays a few tens of MB. The driver's rows are
    the values, keyed by their first field in C: a dict comprehension over them cost another
    0.25 us a result."""
    cursor = conn.connection.cursor()  # plain tuples: no Row objects on the bulk path
    try:
        cursor.execute(
            f"SELECT custom_id, CASE WHEN status = '{AttemptStatus.SUBMITTED.value}' THEN id END,"
            f" item_id FROM attempt WHERE batch_id = {placeholder(conn)}",
            (batch_id,),
        )
        rows = cursor.fetchall()
    finally:
        cursor.close()
    return dict(zip(map(itemgetter(0), rows), rows, strict=True))


def open_of_batch(conn: Connection, batch_id: str) -> list[tuple[int, str]]:
    """(id, custom_id) of the batch's attempts without a result yet."""
    query = sa.select(ATTEMPT.c.id, ATTEMPT.c.custom_id).where(
        ATTEMPT.c.batch_id == batch_id,
        ATTEMPT.c.status.in_([AttemptStatus.PLANNED, AttemptStatus.SUBMITTED]),
    )
    return [tuple(row) for row in conn.execute(query)]


def followup_candidates(
    conn: Connection,
    run_id: int,
    after: int,
    limit: int,
    batch_ids: Sequence[str] | None = None,
) -> list[int]:
    """Open items of the run none of whose attempts is unfinished, by item id after `after`
    (an item of the agreement cascade has several attempts in flight at once); with
    `batch_ids`, only items with an attempt in one of those batches."""
    unfinished = ATTEMPT.alias("unfinished")
    busy = sa.exists().where(unfinished.c.item_id == ITEM.c.id, unfinished.c.status.not_in(_FINAL))
    if batch_ids is None:
        tried = sa.exists().where(ATTEMPT.c.item_id == ITEM.c.id)
    else:
        in_batches = sa.select(ATTEMPT.c.item_id).where(ATTEMPT.c.batch_id.in_(list(batch_ids)))
        tried = ITEM.c.id.in_(in_batches)
    query = (
        sa.select(ITEM.c.id)
        .where(
            ITEM.c.run_id == run_id,
            ITEM.c.id > after,
            ITEM.c.status.in_(_OPEN_ITEMS),
            tried,
            ~busy,
        )
        .order_by(ITEM.c.id)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


def chains(conn: Connection, item_ids: list[int]) -> dict[int, list[ChainStep]]:
    """item id -> its attempts, oldest first."""
    found: dict[int, list[ChainStep]] = {}
    rows = select_by_keys(
        conn,
        "SELECT item_id, id, seq, tier, provider, model, status, error_code, output, verdict,"
        " error_class, max_tokens, role, answer_key, stop_reason, input_tokens, output_tokens"
        " FROM attempt WHERE item_id",
        item_ids,
    )
    for item_id, *rest in rows:
        found.setdefault(item_id, []).append(ChainStep(*rest))
    for chain in found.values():
        chain.sort(key=lambda a: a.seq)
    return found


def reusable(
    conn: Connection, run_id: int, after: int, limit: int, batch_id: str | None = None
) -> list[tuple]:
    """(attempt id, item id, request_hash) of planned, unsent attempts (of the planned batch
    `batch_id` only, when given), in id order."""
    unsent = sa.or_(
        ATTEMPT.c.batch_id.is_(None),
        ATTEMPT.c.batch_id.in_(
            sa.select(BATCH.c.id).where(BATCH.c.run_id == run_id, BATCH.c.status == "planned")
        ),
    )
    if batch_id is not None:
        unsent = ATTEMPT.c.batch_id == batch_id
    query = (
        sa.select(ATTEMPT.c.id, ATTEMPT.c.item_id, ATTEMPT.c.request_hash)
        .where(
            ATTEMPT.c.run_id == run_id,
            ATTEMPT.c.status == AttemptStatus.PLANNED,
            ATTEMPT.c.id > after,
            unsent,
        )
        .order_by(ATTEMPT.c.id)
        .limit(limit)
    )
    return [tuple(row) for row in conn.execute(query)]


def earlier_answers(conn: Connection, run_id: int, hashes: list[str]) -> dict[str, tuple]:
    """request_hash -> (attempt id, output) of the latest succeeded attempt of an earlier run."""
    found: dict[str, tuple] = {}
    rows = select_by_keys(
        conn,
        "SELECT request_hash, id, output FROM attempt WHERE status = 'succeeded'"
        " AND run_id < {p} AND request_hash",
        hashes,
        (run_id,),
    )
    for hash_, attempt_id, output in rows:
        if hash_ not in found or attempt_id > found[hash_][0]:
            found[hash_] = (attempt_id, output)
    return found


def any_earlier_answer(conn: Connection, run_id: int) -> bool:
    """Whether an earlier run has a succeeded attempt, i.e. reuse may find something."""
    query = sa.select(ATTEMPT.c.id).where(
        ATTEMPT.c.status == AttemptStatus.SUCCEEDED, ATTEMPT.c.run_id < run_id
    )
    return conn.execute(query.limit(1)).first() is not None


# --- transitions --------------------------------------------------------------------------


def mark_all_submitted(conn: Connection, batch_id: str) -> None:
    """The batch reached the provider, so every attempt of it did (a crash may have kept the
    attempts `planned` while the batch was adopted)."""
    set_status(conn, ATTEMPT, AttemptStatus.SUBMITTED, ATTEMPT.c.batch_id == batch_id)


def record_results(conn: Connection, status: str, rows: Sequence[tuple[Any, ...]]) -> int:
    """Results of submitted attempts: each row is the values of `result_columns(status)` and
    the attempt id, or of only the first of those columns when the others are NULL (one
    statement per length sets them to NULL). An attempt stored before is left alone.
    Returns how many were stored."""
    columns = result_columns(status)
    moved = 0
    for length, same in groupby(sorted(rows, key=len), key=len):
        given = length - 1  # the attempt id is last
        moved += set_status_many(
            conn, ATTEMPT, status, columns[:given], list(same), nulls=columns[given:]
        )
    return moved


def result_columns(status: str) -> list[str]:
    """The columns a result moving its attempt to `status` sets: an answer's or an error's."""
    return ANSWER_COLUMNS if status in ANSWERED else ERRORED_COLUMNS


def mark_missing(conn: Connection, batch_id: str) -> int:
    """Submitted attempts of an ended batch that got no result line become errors."""
    values = {
        "error_code": MISSING_RESULT,
        "error_message": "the provider returned no result for this request",
        "finished_at": datetime.now(UTC),
    }
    return set_status(conn, ATTEMPT, AttemptStatus.ERRORED, ATTEMPT.c.batch_id == batch_id, values)


def record_errors(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> int:
    """Attempts refused with their batch: each row is (code, message, finished_at, id)."""
    return set_status_many(conn, ATTEMPT, AttemptStatus.ERRORED, ERROR_COLUMNS, list(rows))


def record_reused(
    conn: Connection, attempt_rows: Sequence[tuple[Any, ...]], item_rows: Sequence[tuple]
) -> int:
    """Planned attempts answered from earlier runs (rows of REUSED_COLUMNS and the id); their
    items succeed with that answer (rows of items.ENDS and the item id)."""
    moved = set_status_many(conn, ATTEMPT, AttemptStatus.REUSED, REUSED_COLUMNS, list(attempt_rows))
    items.finish(conn, ItemStatus.SUCCEEDED, item_rows)
    return moved


def plan_opinions(
    conn: Connection, run_id: int, first_tier: str, opinions: Sequence[tuple[str, str, str]]
) -> int:
    """Second-opinion attempts (role "opinion", planned, no batch yet) for every item of the
    run whose first attempt is on `first_tier`: one per (tier, provider, model) of
    `opinions`, numbered seq 2, 3, ... An item that has them already is skipped. The request
    hash is set when the attempt is laid out. Returns how many were made."""
    made = 0
    for offset, (tier, provider, model) in enumerate(opinions, 2):
        taken = ATTEMPT.alias("taken")
        has_seq = sa.exists().where(taken.c.item_id == ATTEMPT.c.item_id, taken.c.seq == offset)
        custom_id = (
            sa.literal("i") + sa.cast(ATTEMPT.c.item_id, sa.String) + sa.literal(f"-a{offset}")
        )
        rows = sa.select(
            ATTEMPT.c.run_id, ATTEMPT.c.item_id, sa.literal(offset), sa.literal(tier),
            sa.literal(provider), sa.literal(model), custom_id, sa.literal(""),
            sa.literal(AttemptStatus.PLANNED.value), sa.literal("opinion"),
        ).where(
            ATTEMPT.c.run_id == run_id, ATTEMPT.c.seq == 1, ATTEMPT.c.tier == first_tier,
            ~has_seq,
        )  # fmt: skip
        columns = [
            "run_id", "item_id", "seq", "tier", "provider", "model", "custom_id",
            "request_hash", "status", "role",
        ]  # fmt: skip
        made += conn.execute(ATTEMPT.insert().from_select(columns, rows)).rowcount
    return made


def calibration_candidates(conn: Connection, run_id: int, frontier: str) -> list[tuple]:
    """(item id, id in the input, route reason, highest seq) of the run's items whose first
    attempt is below the frontier tier and that have no calibration attempt yet."""
    other = ATTEMPT.alias("other")
    top = sa.select(sa.func.max(other.c.seq)).where(other.c.item_id == ATTEMPT.c.item_id)
    calibrated = sa.exists().where(
        other.c.item_id == ATTEMPT.c.item_id, other.c.role == CALIBRATION
    )
    query = (
        sa.select(ITEM.c.id, ITEM.c.custom_id, ITEM.c.route_reason, top.scalar_subquery())
        .select_from(ATTEMPT.join(ITEM, ITEM.c.id == ATTEMPT.c.item_id))
        .where(
            ATTEMPT.c.run_id == run_id, ATTEMPT.c.seq == 1, ATTEMPT.c.tier != frontier,
            ~calibrated,
        )
        .order_by(ITEM.c.id)
    )  # fmt: skip
    return [tuple(row) for row in conn.execute(query)]


def plan_calibration(
    conn: Connection,
    run_id: int,
    rows: Sequence[tuple[int, int]],
    tier: str,
    provider: str,
    model: str,
) -> int:
    """Calibration attempts (role "calibration", planned, no batch): rows of (item id, seq).
    The request hash is set when the attempt is laid out."""
    if not rows:
        return 0
    conn.execute(
        ATTEMPT.insert(),
        [
            {"run_id": run_id, "item_id": item_id, "seq": seq, "tier": tier,
             "provider": provider, "model": model, "custom_id": f"i{item_id}-a{seq}",
             "request_hash": "", "status": AttemptStatus.PLANNED.value, "role": CALIBRATION}
            for item_id, seq in rows
        ],
    )  # fmt: skip
    return len(rows)


def plan_next(conn: Connection, new: list[dict[str, Any]]) -> None:
    """New planned attempts without a batch (retries, escalations); their items are queued."""
    if not new:
        return
    conn.execute(ATTEMPT.insert(), [{**a, "status": AttemptStatus.PLANNED.value} for a in new])
    items.queue(conn, [a["item_id"] for a in new])


# --- laying out ---------------------------------------------------------------------------


def unbatched_queries(run_id: int) -> tuple[sa.Select, sa.Select, sa.Select]:
    """The planner's reads of the run's planned attempts without a batch: the rows (id, custom
    id, "provider:model", tier, system hash, request json, the attempt's own max_tokens or
    None) in cache-group order, the size of
    each group in the same order, and the count per (ref, tier)."""
    ref = ATTEMPT.c.provider + sa.literal(":") + ATTEMPT.c.model
    keys = (ref, ATTEMPT.c.tier, ITEM.c.system_hash)
    joined = ATTEMPT.join(ITEM, ITEM.c.id == ATTEMPT.c.item_id)
    todo = sa.and_(
        ATTEMPT.c.run_id == run_id,
        ATTEMPT.c.status == AttemptStatus.PLANNED.value,
        ATTEMPT.c.batch_id.is_(None),
    )
    rows = (
        sa.select(
            ATTEMPT.c.id, ATTEMPT.c.custom_id, *keys, ITEM.c.request_json, ATTEMPT.c.max_tokens
        )
        .select_from(joined)
        .where(todo)
        .order_by(*keys, ATTEMPT.c.id)
    )
    sizes = (
        sa.select(*keys, sa.func.count())
        .select_from(joined)
        .where(todo)
        .group_by(*keys)
        .order_by(*keys)
    )
    totals = (
        sa.select(ref, ATTEMPT.c.tier, sa.func.count()).where(todo).group_by(ref, ATTEMPT.c.tier)
    )
    return rows, sizes, totals


def assign_batch(conn: Connection, batch_id: str, rows: Sequence[tuple[str, int]]) -> int:
    """Put planned attempts into `batch_id`: rows of (request hash, attempt id). An attempt
    that already has a batch is left alone. Returns how many were placed."""
    sql = (
        "UPDATE attempt SET batch_id = {p}, request_hash = {p} WHERE id = {p} AND batch_id IS NULL"
    )
    return executemany(conn, sql, [(batch_id, *row) for row in rows])


def insert_first(conn: Connection, batch: FirstBatch, rows: Sequence[tuple[int, str, str]]) -> int:
    """First attempts (seq 1, `planned`) of one batch: rows of (item id, custom id, request
    hash). What the batch's rows share is written into the statement, so that each row binds
    three values rather than ten. Returns how many were stored: 0 when another process made
    some of them first (the unique (item_id, seq) index refuses the whole insert)."""
    shared = {
        "run_id": str(int(batch.run_id)),
        "seq": "1",
        "tier": _sql_string(batch.tier),
        "provider": _sql_string(batch.provider),
        "model": _sql_string(batch.model),
        "batch_id": _sql_string(batch.id),
        "status": _sql_string(AttemptStatus.PLANNED.value),
    }
    names = ", ".join([*shared, "item_id", "custom_id", "request_hash"])
    values = ", ".join([*shared.values(), "{p}", "{p}", "{p}"])
    sql = f"INSERT INTO attempt ({names}) VALUES ({values})"
    try:
        executemany(conn, sql, rows)
    except (conn.dialect.dbapi.IntegrityError, sa.exc.IntegrityError):
        return 0
    return len(rows)  # an INSERT stores every row or raises


class FirstBatch(Protocol):
    """What `insert_first` reads of the batch its attempts go into."""

    id: str
    run_id: int
    tier: str
    provider: str
    model: str


def _sql_string(value: str) -> str:
    """`value` as an SQL string literal: SQLite and PostgreSQL both read a doubled quote as
    one (and PostgreSQL, with its default standard_conforming_strings, a backslash as is)."""
    return "'" + value.replace("'", "''") + "'"


# --- estimating ---------------------------------------------------------------------------


PLANNED = (AttemptStatus.PLANNED.value,)


def _planned(run_id: int, statuses: tuple[str, ...] = PLANNED) -> sa.ColumnElement[bool]:
    """The run's attempts in `statuses`: planned ones, or also those sent but not billed."""
    return sa.and_(ATTEMPT.c.run_id == run_id, ATTEMPT.c.status.in_([str(s) for s in statuses]))


def _input_tokens() -> sa.ColumnElement[int]:
    return sa.func.coalesce(ITEM.c.est_input_tokens, 0)


def _short(run_id: int, threshold: int | None, statuses: tuple[str, ...]) -> sa.ColumnElement[bool]:
    """Attempts whose input is at most `threshold` tokens (all when None)."""
    if threshold is None:
        return _planned(run_id, statuses)
    return sa.and_(_planned(run_id, statuses), _input_tokens() <= threshold)


def _with_items() -> sa.Join:
    return ATTEMPT.join(ITEM, ITEM.c.id == ATTEMPT.c.item_id)


def planned_by_model(
    conn: Connection, run_id: int, statuses: tuple[str, ...] = PLANNED
) -> dict[tuple[str, str], int]:
    """(provider, model) -> planned attempts of the run (or attempts in `statuses`)."""
    query = (
        sa.select(ATTEMPT.c.provider, ATTEMPT.c.model, sa.func.count())
        .where(_planned(run_id, statuses))
        .group_by(ATTEMPT.c.provider, ATTEMPT.c.model)
    )
    return {(p, m): n for p, m, n in conn.execute(query)}


def planned_groups(
    conn: Connection, run_id: int, threshold: int | None, statuses: tuple[str, ...] = PLANNED
) -> sa.CursorResult:
    """(provider, model, tier, system hash, attempts, estimated input tokens, role) of the
    run's planned attempts of at most `threshold` input tokens, by cache group and role."""
    keys = (ATTEMPT.c.provider, ATTEMPT.c.model, ATTEMPT.c.tier, ITEM.c.system_hash)
    query = (
        sa.select(*keys, sa.func.count(), sa.func.sum(_input_tokens()), ATTEMPT.c.role)
        .select_from(_with_items())
        .where(_short(run_id, threshold, statuses))
        .group_by(*keys, ATTEMPT.c.role)
    )
    return conn.execute(query)


def planned_own_max_tokens(
    conn: Connection, run_id: int, threshold: int | None, statuses: tuple[str, ...] = PLANNED
) -> sa.Result:
    """(provider, model, tier, system hash, request json, attempt max_tokens) of the planned
    attempts (of at most `threshold` input tokens) whose request may set its own max_tokens,
    or that set their own (a truncated answer's larger retry)."""
    query = (
        sa.select(ATTEMPT.c.provider, ATTEMPT.c.model, ATTEMPT.c.tier, ITEM.c.system_hash)
        .add_columns(ITEM.c.request_json, ATTEMPT.c.max_tokens)
        .select_from(_with_items())
        .where(
            _short(run_id, threshold, statuses),
            sa.or_(ITEM.c.request_json.like('%"max_tokens"%'), ATTEMPT.c.max_tokens.isnot(None)),
        )
    )
    return conn.execution_options(yield_per=1000).execute(query)


def planned_long(
    conn: Connection, run_id: int, threshold: int, statuses: tuple[str, ...] = PLANNED
) -> sa.CursorResult:
    """(provider, model, tier, estimated input tokens, request json, role) of the planned
    attempts over `threshold` input tokens."""
    query = (
        sa.select(
            ATTEMPT.c.provider, ATTEMPT.c.model, ATTEMPT.c.tier, ITEM.c.est_input_tokens,
            ITEM.c.request_json, ATTEMPT.c.role,
        )
        .select_from(_with_items())
        .where(_planned(run_id, statuses), _input_tokens() > threshold)
    )  # fmt: skip
    return conn.execute(query)


def providers_of_run(conn: Connection, run_id: int) -> set[str]:
    """Providers the run's attempts were planned on (items may name their own model)."""
    query = sa.select(ATTEMPT.c.provider).where(ATTEMPT.c.run_id == run_id).distinct()
    return set(conn.execute(query).scalars())
