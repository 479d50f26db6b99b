"""A reconciled database built by hand, row by row, for the report and export tests.

Rows go into the real tables with SQLAlchemy core, so the tests run on SQLite and PostgreSQL
alike; the attempts inserted are also returned, so a test can compute what a report must say
from them without going through the code under test.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batcher.store.models import TABLES

TIERS = {"nano": "openai:gpt-5-nano", "mid": "openai:gpt-5-mini", "frontier": "anthropic:claude"}
MODEL = {t: ref.split(":") for t, ref in TIERS.items()}
SYSTEM = {
    "billing": "You label billing tickets. Answer with one label: refund, invoice, other.",
    "tech": "You label technical tickets. Answer with one label: bug, outage, question.",
}


def prompt_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def add_run(
    db: Engine,
    *,
    job: str = "labels",
    status: str = "completed",
    created_at: datetime | None = None,
) -> int:
    run = TABLES["run"]
    with db.begin() as conn:
        return conn.execute(
            run.insert()
            .values(
                job_name=job,
                spec_path=f"jobs/{job}.toml",
                spec_json=orjson.dumps({"name": job, "tiers": TIERS}).decode(),
                input_path="/data/in.jsonl",
                input_sha256="0" * 64,
                status=status,
                created_at=created_at or datetime(2026, 11, 1, 2, 0, tzinfo=UTC),
            )
            .returning(run.c.id)
        ).scalar_one()


def attempt(tier: str, status: str, cost: int, **extra: Any) -> dict[str, Any]:
    """An attempt with consistent costs: cost <= standard <= uncached <= baseline."""
    provider, model = MODEL[tier]
    row = {
        "tier": tier,
        "provider": provider,
        "model": model,
        "status": status,
        "input_tokens": 1000,
        "cache_read_tokens": 0,
        "cache_write_5m_tokens": 0,
        "cache_write_1h_tokens": 0,
        "output_tokens": 20,
        "cost_pusd": cost,
        "standard_pusd": 2 * cost,
        "uncached_pusd": 2 * cost + 7_000_000,
        "baseline_pusd": 40 * cost + 13_000_000,
    }
    row.update(extra)
    return row


def add_item(
    db: Engine,
    run_id: int,
    line_no: int,
    status: str,
    attempts: list[dict[str, Any]],
    *,
    group: str | None = "billing",
    output: str | None = None,
    request: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> int:
    """Insert an item and its attempts (seq 1, 2, ...); the last attempt is its final one and
    holds `output`, the item's answer."""
    item_t, attempt_t, prompt_t = TABLES["item"], TABLES["attempt"], TABLES["prompt"]
    system = SYSTEM.get(group) if group else None
    with db.begin() as conn:
        key = None
        if system is not None:
            key = prompt_key(system)
            if not conn.execute(sa.select(prompt_t.c.hash).where(prompt_t.c.hash == key)).first():
                conn.execute(prompt_t.insert().values(hash=key, text=system))
        item_id = conn.execute(
            item_t.insert()
            .values(
                run_id=run_id,
                line_no=line_no,
                custom_id=f"t-{line_no}",
                system_hash=key,
                request_json=orjson.dumps(
                    request or {"messages": [{"role": "user", "content": f"ticket {line_no}"}]}
                ).decode(),
                metadata_json=orjson.dumps(metadata).decode() if metadata else None,
                tier=attempts[0]["tier"] if attempts else None,
                cache_group=group,
                status=status,
            )
            .returning(item_t.c.id)
        ).scalar_one()
        last = None
        for seq, row in enumerate(attempts, start=1):
            last = conn.execute(
                attempt_t.insert()
                .values(
                    run_id=run_id,
                    item_id=item_id,
                    seq=seq,
                    custom_id=f"i{item_id}-a{seq}",
                    request_hash=f"h{item_id}-{seq}",
                    **row,
                )
                .returning(attempt_t.c.id)
            ).scalar_one()
        if last is not None:
            values = {"final_attempt_id": last}
            if output is not None:  # answers are stored once, on their attempt (m013)
                values["answer_attempt_id"] = last
                conn.execute(
                    sa.update(attempt_t).where(attempt_t.c.id == last).values(output=output)
                )
            conn.execute(sa.update(item_t).where(item_t.c.id == item_id).values(**values))
    return item_id


def build_completed_run(db: Engine, **run_args: Any) -> tuple[int, list[dict[str, Any]]]:
    """A finished run of six items covering success, retry, escalation and failure.

    Returns the run id and every attempt inserted (with its item's line number).
    """
    run_id = add_run(db, **run_args)
    plan = [
        # (status, attempts, group, output)
        ("succeeded", [attempt("nano", "succeeded", 1_000_001)], "billing", "refund"),
        (
            "succeeded",
            [attempt("nano", "invalid", 1_200_000), attempt("mid", "succeeded", 5_000_003)],
            "billing",
            "invoice",
        ),
        (
            "succeeded",
            [
                attempt("nano", "errored", 0, input_tokens=0, output_tokens=0),
                attempt("nano", "succeeded", 999_999, cache_read_tokens=17),
            ],
            "tech",
            "bug",
        ),
        (
            "succeeded",
            [
                attempt(
                    "frontier",
                    "succeeded",
                    30_000_007,
                    cache_read_tokens=15,
                    cache_write_5m_tokens=3,
                )
            ],
            "tech",
            "outage",
        ),
        (
            "failed",
            [
                attempt("nano", "invalid", 1_100_000),
                attempt("mid", "invalid", 4_900_000),
                attempt(
                    "frontier",
                    "invalid",
                    29_000_000,
                    cache_write_1h_tokens=5,
                    verdict="label 'maybe' is not one of refund, invoice, other",
                ),
            ],
            None,
            None,
        ),
        ("succeeded", [attempt("mid", "succeeded", 5_100_000, output_tokens=33)], "billing", "x"),
    ]
    attempts = []
    for line_no, (status, rows, group, output) in enumerate(plan, start=1):
        add_item(db, run_id, line_no, status, rows, group=group, output=output)
        attempts += [{**r, "line_no": line_no} for r in rows]
    return run_id, attempts


def render_run_report(db: Engine, run_id: int, fmt: str = "table") -> str:
    """The report of one run as text in `fmt`, the way `batcher report RUN` builds it."""
    from batcher.report.build import build_report, select_runs
    from batcher.report.formats import render_report

    return render_report(build_report(db, select_runs(db, run_id)), fmt)
