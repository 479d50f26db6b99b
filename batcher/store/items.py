"""The `item` table: one input line's route and final outcome.

An item's status follows its attempts: `queue` when a new attempt is planned for it, `finish`
when the follow-up policy or reuse decides its end (it keeps the answer and verdict of the
attempt named), `cancel_unfinished` when its run is cancelled. Moving items in flight is
`batcher.store.batches.adopt`'s job, because it happens with their batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batcher.store.bulk import select_by_keys
from batcher.store.models import TABLES
from batcher.store.states import ITEM_TERMINAL, ItemStatus, set_status, set_status_many

ITEM, ATTEMPT = TABLES["item"], TABLES["attempt"]
# What an item keeps of the attempt that ended it.
ENDS = ["output", "verdict", "final_attempt_id"]
_TERMINAL = [str(s) for s in ITEM_TERMINAL]


# --- reads --------------------------------------------------------------------------------


def counts_by_status(conn: Connection, run_id: int) -> dict[str, int]:
    query = (
        sa.select(ITEM.c.status, sa.func.count())
        .where(ITEM.c.run_id == run_id)
        .group_by(ITEM.c.status)
    )
    return dict(conn.execute(query).all())


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
    """End items with `status` (succeeded, failed, cancelled); each row is (output, verdict,
    final attempt id, item id). Returns how many moved."""
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
