"""Read-only views of one run's items for people: the item list and one item's attempts."""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batcher.errors import UsageError
from batcher.money.amounts import to_usd
from batcher.store.items import shown_status
from batcher.store.models import TABLES

RUN, ITEM, ATTEMPT, BATCH = TABLES["run"], TABLES["item"], TABLES["attempt"], TABLES["batch"]


def _check_run(conn: sa.Connection, run_id: int) -> None:
    if conn.execute(sa.select(RUN.c.id).where(RUN.c.id == run_id)).first() is None:
        raise UsageError(f"no run {run_id} in the state database (see `batcher status`)")


def list_items(
    db: Engine, run_id: int, *, status: str | None = None, tier: str | None = None
) -> list[dict[str, Any]]:
    """The items of `run_id` in input order, optionally of one status and/or final tier:
    id, line, tier, status, attempts, cost_usd (exact, every attempt), output."""
    spent = (
        sa.select(
            ATTEMPT.c.item_id,
            sa.func.count().label("n"),
            sa.func.sum(ATTEMPT.c.cost_pusd).label("cost"),
            sa.func.max(ATTEMPT.c.seq).label("last_seq"),
        )
        .where(ATTEMPT.c.run_id == run_id)
        .group_by(ATTEMPT.c.item_id)
        .subquery()
    )
    last, answer = ATTEMPT.alias("last"), ATTEMPT.alias("answer")
    shown = shown_status()
    query = (
        sa.select(
            ITEM.c.custom_id, ITEM.c.line_no, ITEM.c.tier, shown.label("status"), answer.c.output,
            spent.c.n, spent.c.cost, last.c.tier.label("last_tier"),
        )
        .select_from(ITEM)
        .outerjoin(spent, spent.c.item_id == ITEM.c.id)
        .outerjoin(last, sa.and_(last.c.item_id == ITEM.c.id, last.c.seq == spent.c.last_seq))
        .outerjoin(answer, answer.c.id == ITEM.c.answer_attempt_id)
        .where(ITEM.c.run_id == run_id)
        .order_by(ITEM.c.line_no)
    )  # fmt: skip
    if status:
        query = query.where(shown == status)
    with db.connect() as conn:
        _check_run(conn, run_id)
        rows = conn.execute(query).all()
    items = [
        {
            "id": r.custom_id,
            "line": r.line_no,
            "tier": r.last_tier or r.tier,  # where it ended, after any escalation
            "status": r.status,
            "attempts": r.n or 0,
            "cost_usd": to_usd(int(r.cost or 0)),
            "output": r.output,
        }
        for r in rows
    ]
    return [i for i in items if tier is None or i["tier"] == tier]


def item_detail(db: Engine, run_id: int, custom_id: str) -> dict[str, Any]:
    """One item of `run_id` by its input id: request, routing, status, final output, and
    every attempt (tier, model, batch, provider batch id, status, verdict, error, tokens,
    exact cost, answer). UsageError naming the command that lists ids when it is unknown."""
    with db.connect() as conn:
        _check_run(conn, run_id)
        item = conn.execute(
            sa.select(ITEM, shown_status().label("shown")).where(
                ITEM.c.run_id == run_id, ITEM.c.custom_id == custom_id
            )
        ).first()
        if item is None:
            raise UsageError(
                f"run {run_id} has no item {custom_id!r}: `batcher items {run_id}` lists them"
            )
        attempts = conn.execute(
            sa.select(ATTEMPT, BATCH.c.provider_batch_id)
            .outerjoin(BATCH, BATCH.c.id == ATTEMPT.c.batch_id)
            .where(ATTEMPT.c.item_id == item.id)
            .order_by(ATTEMPT.c.seq)
        ).all()
    request = orjson.loads(item.request_json)
    return {
        "run": run_id,
        "id": item.custom_id,
        "line": item.line_no,
        "status": item.shown,
        "tier": item.tier,
        "route_reason": item.route_reason,
        "cache_group": item.cache_group,
        "metadata": orjson.loads(item.metadata_json) if item.metadata_json else None,
        "prompt": request["messages"][-1].get("content") if request.get("messages") else None,
        "output": next((a.output for a in attempts if a.id == item.answer_attempt_id), None),
        "attempts": [_attempt(a._mapping) for a in attempts],
    }


def _attempt(row: Any) -> dict[str, Any]:
    return {
        "seq": row["seq"],
        "tier": row["tier"],
        "model": f"{row['provider']}:{row['model']}",
        "batch": row["batch_id"],
        "provider_batch_id": row["provider_batch_id"],
        "status": row["status"],
        "stop_reason": row.get("stop_reason"),  # recorded by providers that report one
        "verdict": row["verdict"],
        "error": ": ".join(x for x in (row["error_code"], row["error_message"]) if x) or None,
        "error_class": row.get("error_class"),  # transient, too_long, invalid (m009)
        "max_tokens": row.get("max_tokens"),  # set on a truncated answer's larger retry
        "input_tokens": row["input_tokens"],
        "cache_read_tokens": row["cache_read_tokens"],
        "output_tokens": row["output_tokens"],
        "cost_usd": to_usd(int(row["cost_pusd"] or 0)),
        "reused_from": row["reused_from"],
        "output": row["output"],
    }
