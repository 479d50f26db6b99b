"""A job's outcome history: what `batcher tune` learns a routing policy from, and the item
signals a learned scorer reads while a run decides its follow-ups."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batcher.store.bulk import select_by_keys
from batcher.store.models import TABLES

RUN, ITEM, ATTEMPT = TABLES["run"], TABLES["item"], TABLES["attempt"]


class HistoryRow(NamedTuple):
    """One attempt of one item of one of the job's runs."""

    run_id: int
    custom_id: str  # the item's id in the input: the same item across runs
    route_reason: str | None
    metadata_json: str | None
    seq: int
    tier: str
    role: str
    status: str
    answer_key: str | None
    stop_reason: str | None
    input_tokens: int  # as billed (cached ones included)
    output_tokens: int
    cost_pusd: int  # billed; a reused answer costs what the attempt it reused cost


def job_history(conn: Connection, job_name: str, chunk: int = 5000) -> Iterator[HistoryRow]:
    """Every attempt of every run of `job_name`, by run, item and seq."""
    source = ATTEMPT.alias("source")  # the attempt a reused answer came from
    reused = ATTEMPT.c.reused_from.is_not(None)
    cost = sa.case((reused, sa.func.coalesce(source.c.cost_pusd, 0)), else_=ATTEMPT.c.cost_pusd)
    tokens = [
        sa.case((reused, sa.func.coalesce(getattr(source.c, c), 0)), else_=getattr(ATTEMPT.c, c))
        for c in ("input_tokens", "output_tokens")
    ]
    query = (
        sa.select(
            RUN.c.id, ITEM.c.custom_id, ITEM.c.route_reason, ITEM.c.metadata_json,
            ATTEMPT.c.seq, ATTEMPT.c.tier, ATTEMPT.c.role, ATTEMPT.c.status,
            ATTEMPT.c.answer_key, ATTEMPT.c.stop_reason, *tokens, cost,
        )
        .select_from(
            ATTEMPT.join(ITEM, ITEM.c.id == ATTEMPT.c.item_id)
            .join(RUN, RUN.c.id == ATTEMPT.c.run_id)
            .outerjoin(source, source.c.id == ATTEMPT.c.reused_from)
        )
        .where(RUN.c.job_name == job_name)
        .order_by(RUN.c.id, ITEM.c.id, ATTEMPT.c.seq)
    )  # fmt: skip
    for row in conn.execution_options(yield_per=chunk).execute(query):
        yield HistoryRow(*row)


def item_signals(
    conn: Connection, item_ids: Sequence[int]
) -> dict[int, tuple[str | None, str | None]]:
    """item id -> (route reason, metadata JSON)."""
    rows = select_by_keys(
        conn, "SELECT id, route_reason, metadata_json FROM item WHERE id", list(item_ids)
    )
    return {item_id: (reason, meta) for item_id, reason, meta in rows}
