"""The reads a cost report is built from: sums of attempts by tier, by run and by cache
group, and item counts, over a set of runs (see batcher.report.build)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batcher.store.models import TABLES
from batcher.store.runs import was_submitted
from batcher.store.states import AttemptStatus, ItemStatus

RUN, ITEM, ATTEMPT, PROMPT = TABLES["run"], TABLES["item"], TABLES["attempt"], TABLES["prompt"]
OPINION = "opinion"  # attempt.role of a cascade's second opinion
CALIBRATION = "calibration"  # attempt.role of a calibration sample's frontier answer
TIER_KEYS = (ATTEMPT.c.tier, ATTEMPT.c.provider, ATTEMPT.c.model)


@contextmanager
def snapshot(db: Engine) -> Iterator[Connection]:
    """A connection whose reads all see one snapshot, even while the engine is reconciling
    (SQLite WAL / PostgreSQL repeatable read), so a report's parts match its totals."""
    with db.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN")  # pysqlite defers BEGIN to the first write
            yield conn


def run_ids(
    conn: Connection,
    run_id: int | None = None,
    *,
    job: str | None = None,
    since: datetime | None = None,
) -> list[int]:
    """RUN itself if it exists; else the submitted runs of `job` and/or created at or after
    `since`, oldest first; else the latest submitted run."""
    if run_id is not None:
        query = sa.select(RUN.c.id).where(RUN.c.id == run_id)
    elif job is not None or since is not None:
        query = sa.select(RUN.c.id).where(was_submitted()).order_by(RUN.c.created_at, RUN.c.id)
        if job is not None:
            query = query.where(RUN.c.job_name == job)
        if since is not None:
            query = query.where(RUN.c.created_at >= since)
    else:
        query = sa.select(RUN.c.id).where(was_submitted()).order_by(RUN.c.id.desc()).limit(1)
    return list(conn.execute(query).scalars())


def _sums() -> list[sa.ColumnElement]:
    a, total = ATTEMPT, sa.func.coalesce
    opinion, calibration = a.c.role == OPINION, a.c.role == CALIBRATION
    extra = a.c.role != "primary"  # asked on top of the answer: no baseline of its own
    return [
        sa.func.count().label("attempts"),
        total(
            sa.func.sum(sa.case((a.c.status == AttemptStatus.REUSED.value, 1), else_=0)), 0
        ).label("reused"),
        total(sa.func.sum(a.c.input_tokens), 0).label("input_tokens"),
        total(sa.func.sum(a.c.cache_read_tokens), 0).label("cache_read_tokens"),
        total(sa.func.sum(a.c.cache_write_5m_tokens + a.c.cache_write_1h_tokens), 0).label(
            "cache_write_tokens"
        ),
        total(sa.func.sum(a.c.output_tokens), 0).label("output_tokens"),
        total(sa.func.sum(a.c.cost_pusd), 0).label("cost"),
        total(sa.func.sum(a.c.standard_pusd), 0).label("standard"),
        total(sa.func.sum(a.c.uncached_pusd), 0).label("uncached"),
        # A second opinion has no counterpart in the all-frontier baseline (it would ask the
        # frontier model once); what it cost shows as its own part of the savings split.
        total(sa.func.sum(sa.case((extra, 0), else_=a.c.baseline_pusd)), 0).label("baseline"),
        total(sa.func.sum(sa.case((opinion, a.c.uncached_pusd), else_=0)), 0).label("opinions"),
        total(sa.func.sum(sa.case((calibration, a.c.uncached_pusd), else_=0)), 0).label(
            "calibration"
        ),
    ]


def calibration_pairs(conn: Connection, run_ids: list[int]) -> sa.Result:
    """(first tier, its answer key and status, the frontier's answer key and status) of every
    item with a calibration attempt."""
    first, frontier = ATTEMPT.alias("first"), ATTEMPT.alias("frontier")
    query = (
        sa.select(
            first.c.tier, first.c.answer_key, first.c.status, frontier.c.answer_key.label("key"),
            frontier.c.status.label("frontier_status"),
        )
        .select_from(first.join(frontier, frontier.c.item_id == first.c.item_id))
        .where(
            first.c.run_id.in_(run_ids), first.c.seq == 1, frontier.c.role == CALIBRATION
        )
    )  # fmt: skip
    return conn.execute(query)


def cascade_chains(conn: Connection, run_ids: list[int]) -> sa.Result:
    """(item id, tier, role, status, answer key) of every attempt of the items that had a
    second opinion, by item and seq."""
    opinion = ATTEMPT.alias("opinion")
    has_opinion = sa.exists().where(
        opinion.c.item_id == ATTEMPT.c.item_id, opinion.c.role == OPINION
    )
    query = (
        sa.select(
            ATTEMPT.c.item_id, ATTEMPT.c.tier, ATTEMPT.c.role, ATTEMPT.c.status,
            ATTEMPT.c.answer_key,
        )
        .where(ATTEMPT.c.run_id.in_(run_ids), has_opinion)
        .order_by(ATTEMPT.c.item_id, ATTEMPT.c.seq)
    )  # fmt: skip
    return conn.execution_options(yield_per=5000).execute(query)


def spec_snapshot(conn: Connection, run_id: int) -> str:
    return conn.execute(sa.select(RUN.c.spec_json).where(RUN.c.id == run_id)).scalar_one()


def by_tier(conn: Connection, run_ids: list[int]) -> sa.Result:
    """Per (tier, provider, model): items, and the attempt sums."""
    items = sa.func.count(sa.distinct(ATTEMPT.c.item_id)).label("items")
    query = (
        sa.select(*TIER_KEYS, items, *_sums())
        .where(ATTEMPT.c.run_id.in_(run_ids))
        .group_by(*TIER_KEYS)
    )
    return conn.execute(query)


def wins_by_tier(conn: Connection, run_ids: list[int]) -> sa.Result:
    """Per (tier, provider, model): succeeded items whose final answer came from it (n)."""
    query = (
        sa.select(*TIER_KEYS, sa.func.count().label("n"))
        .select_from(ITEM.join(ATTEMPT, ATTEMPT.c.id == ITEM.c.final_attempt_id))
        .where(ITEM.c.run_id.in_(run_ids), ITEM.c.status == ItemStatus.SUCCEEDED.value)
        .group_by(*TIER_KEYS)
    )
    return conn.execute(query)


def totals(conn: Connection, run_ids: list[int]) -> sa.Row:
    """The attempt sums over every run."""
    return conn.execute(sa.select(*_sums()).where(ATTEMPT.c.run_id.in_(run_ids))).one()


def item_totals(conn: Connection, run_ids: list[int]) -> sa.Row:
    """(items, succeeded) over every run."""
    succeeded = sa.case((ITEM.c.status == ItemStatus.SUCCEEDED.value, 1), else_=0)
    query = sa.select(
        sa.func.count().label("items"),
        sa.func.coalesce(sa.func.sum(succeeded), 0).label("succeeded"),
    ).where(ITEM.c.run_id.in_(run_ids))
    return conn.execute(query).one()


def items_by_run(conn: Connection, run_ids: list[int]) -> sa.Result:
    """(run_id, status, n) of the items."""
    query = (
        sa.select(ITEM.c.run_id, ITEM.c.status, sa.func.count().label("n"))
        .where(ITEM.c.run_id.in_(run_ids))
        .group_by(ITEM.c.run_id, ITEM.c.status)
    )
    return conn.execute(query)


def sums_by_run(conn: Connection, run_ids: list[int]) -> sa.Result:
    """(run_id, attempt sums) of each run."""
    query = (
        sa.select(ATTEMPT.c.run_id, *_sums())
        .where(ATTEMPT.c.run_id.in_(run_ids))
        .group_by(ATTEMPT.c.run_id)
    )
    return conn.execute(query)


def runs(conn: Connection, run_ids: list[int]) -> sa.Result:
    """The run rows, oldest first."""
    query = sa.select(RUN).where(RUN.c.id.in_(run_ids)).order_by(RUN.c.created_at, RUN.c.id)
    return conn.execute(query)


def batches_with_id_prefix(conn: Connection, run_ids: list[int], prefix: str) -> sa.Result:
    """(id, provider, model, n attempts) of the batches whose provider batch id starts with
    `prefix` (direct-mode batches are named so)."""
    batch = TABLES["batch"]
    query = (
        sa.select(
            batch.c.id, batch.c.provider, batch.c.model, sa.func.count(ATTEMPT.c.id).label("n")
        )
        .select_from(batch.join(ATTEMPT, ATTEMPT.c.batch_id == batch.c.id))
        .where(batch.c.run_id.in_(run_ids), batch.c.provider_batch_id.like(prefix + "%"))
        .group_by(batch.c.id, batch.c.provider, batch.c.model)
    )
    return conn.execute(query)


def cache_groups(conn: Connection, run_ids: list[int]) -> list[sa.Row]:
    """(cache group, provider, model, system hash, attempts, cache read tokens, batches) of answered
    attempts (an error that never ran had no chance to read the cache)."""
    keys = (ITEM.c.cache_group, ATTEMPT.c.provider, ATTEMPT.c.model, ITEM.c.system_hash)
    query = (
        sa.select(
            *keys,
            sa.func.count().label("attempts"),
            sa.func.coalesce(sa.func.sum(ATTEMPT.c.cache_read_tokens), 0).label("read"),
            sa.func.count(sa.distinct(ATTEMPT.c.batch_id)).label("batches"),
        )
        .select_from(ATTEMPT.join(ITEM, ITEM.c.id == ATTEMPT.c.item_id))
        .where(
            ATTEMPT.c.run_id.in_(run_ids),
            ITEM.c.cache_group.is_not(None),
            ITEM.c.system_hash.is_not(None),
            ATTEMPT.c.input_tokens > 0,
        )
        .group_by(*keys)
    )
    return list(conn.execute(query))


def spec_snapshots(conn: Connection, run_ids: list[int]) -> list[str]:
    """The spec snapshots of the runs, newest run first."""
    query = sa.select(RUN.c.spec_json).where(RUN.c.id.in_(run_ids)).order_by(RUN.c.id.desc())
    return list(conn.execute(query).scalars())


def failure_reasons(conn: Connection, run_ids: list[int]) -> list[tuple[str, int]]:
    """Failed items by why: the final attempt's error code, else "invalid answer" when a
    check refused it, else the attempt's status; most frequent first."""
    reason = sa.func.coalesce(
        ATTEMPT.c.error_code,
        sa.case((ITEM.c.verdict.is_not(None), "invalid answer"), else_=None),
        ATTEMPT.c.status,
        "unknown",
    ).label("reason")
    query = (
        sa.select(reason, sa.func.count().label("n"))
        .select_from(ITEM.outerjoin(ATTEMPT, ATTEMPT.c.id == ITEM.c.final_attempt_id))
        .where(ITEM.c.run_id.in_(run_ids), ITEM.c.status == ItemStatus.FAILED.value)
        .group_by(reason)
    )
    rows = [(str(r.reason), int(r.n)) for r in conn.execute(query)]
    return sorted(rows, key=lambda r: (-r[1], r[0]))
