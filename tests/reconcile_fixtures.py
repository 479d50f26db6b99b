"""Builders for reconcile and follow-up tests: a run ingested for real, batches whose attempts
went through the state machine the way the engine moves them (planned -> submitting ->
submitted -> ended; items queued -> in_flight)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import orjson
import sqlalchemy as sa

from batcher.plan.ingest import ingest
from batcher.spec import JobSpec, parse_spec
from batcher.store.models import TABLES
from batcher.store.states import AttemptStatus, BatchStatus, ItemStatus, set_status

ATTEMPT, ITEM, BATCH = TABLES["attempt"], TABLES["item"], TABLES["batch"]
TIERS = {
    "nano": "openai:gpt-5-nano",
    "mid": "openai:gpt-5-mini",
    "frontier": "anthropic:claude-sonnet-4-6",
}
_batch_numbers = itertools.count(1)


def make_spec(**overrides) -> JobSpec:
    data = {
        "name": "reconcile-test",
        "tiers": TIERS,
        "validation": {"labels": ["billing", "technical"], "label_field": "label"},
    }
    data.update(overrides)
    return parse_spec(data)


def ingest_items(db, spec: JobSpec, tmp_path, n: int, name: str = "input.jsonl") -> int:
    """A run of `n` items, stored by the real ingest; returns the run id."""
    path = tmp_path / name
    with open(path, "wb") as f:
        for i in range(n):
            f.write(orjson.dumps({"id": f"t{i}", "prompt": f"Classify ticket {i}"}) + b"\n")
    return ingest(db, spec, path).run_id


def item_ids(db, run_id: int) -> list[int]:
    with db.connect() as conn:
        return list(
            conn.execute(
                sa.select(ITEM.c.id).where(ITEM.c.run_id == run_id).order_by(ITEM.c.id)
            ).scalars()
        )


def add_batch(
    db,
    spec: JobSpec,
    run_id: int,
    items: list[int],
    tier: str = "nano",
    *,
    seq: int = 1,
    end: bool = True,
    state_dir=None,
) -> tuple[str, dict[int, int]]:
    """A batch of one new attempt per item, moved to ended (or left submitted).

    The batch file holds one line per attempt with its custom_id, as lay_out_batches writes.
    Returns the batch id and {item_id: attempt_id}.
    """
    provider, model = spec.model_of(tier)
    batch_id = f"b{run_id}-{next(_batch_numbers)}"
    folder = state_dir if state_dir is not None else "/nonexistent"
    path = f"{folder}/{batch_id}.jsonl"
    now = datetime.now(UTC)
    with db.begin() as conn:
        conn.execute(
            BATCH.insert().values(
                id=batch_id,
                run_id=run_id,
                round=seq,
                provider=provider,
                model=model,
                tier=tier,
                status=BatchStatus.PLANNED,
                path=path,
                n_requests=len(items),
                n_bytes=0,
                created_at=now,
            )
        )
        rows = [
            {
                "run_id": run_id,
                "item_id": item_id,
                "seq": seq,
                "tier": tier,
                "provider": provider,
                "model": model,
                "batch_id": batch_id,
                "custom_id": f"i{item_id}-a{seq}",
                "request_hash": f"hash-{item_id}-{model}",
                "status": AttemptStatus.PLANNED,
            }
            for item_id in items
        ]
        conn.execute(ATTEMPT.insert(), rows)
        set_status(conn, ITEM, ItemStatus.QUEUED, ITEM.c.id.in_(items))
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            for row in rows:
                f.write(orjson.dumps({"custom_id": row["custom_id"], "body": {}}) + b"\n")
    with db.begin() as conn:
        set_status(conn, BATCH, BatchStatus.SUBMITTING, BATCH.c.id == batch_id)
        set_status(conn, BATCH, BatchStatus.SUBMITTED, BATCH.c.id == batch_id)
        set_status(conn, ATTEMPT, AttemptStatus.SUBMITTED, ATTEMPT.c.batch_id == batch_id)
        set_status(conn, ITEM, ItemStatus.IN_FLIGHT, ITEM.c.id.in_(items))
        if end:
            set_status(conn, BATCH, BatchStatus.ENDED, BATCH.c.id == batch_id)
    with db.connect() as conn:
        attempts = dict(
            conn.execute(
                sa.select(ATTEMPT.c.item_id, ATTEMPT.c.id).where(ATTEMPT.c.batch_id == batch_id)
            ).all()
        )
    return batch_id, attempts


def rows_of(db, table, where) -> list[dict]:
    with db.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(sa.select(table).where(where).order_by(table.c.id))
        ]


def item_rows(db, where) -> list[dict]:
    """Item rows with their answer as `output`: the text of the attempt that holds it
    (answers are stored once, on their attempt)."""
    answer = ATTEMPT.alias("answer")
    query = (
        sa.select(ITEM, answer.c.output)
        .outerjoin(answer, answer.c.id == ITEM.c.answer_attempt_id)
        .where(where)
        .order_by(ITEM.c.id)
    )
    with db.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def snapshot(db, run_id: int) -> list[tuple]:
    """Every row of the run's items, attempts and batches (times left out), for comparisons."""
    out = []
    with db.connect() as conn:
        for table in (ITEM, ATTEMPT, BATCH):
            cols = [c for c in table.c if not c.name.endswith("_at")]
            out += [
                tuple(r)
                for r in conn.execute(
                    sa.select(*cols).where(table.c.run_id == run_id).order_by(table.c.id)
                )
            ]
    return out


def plan(db, spec: JobSpec, tmp_path, n: int, name: str = "input.jsonl") -> int:
    """A run of `n` items ingested and planned by the real planner; returns the run id."""
    from batcher.plan.planner import plan_run

    run_id = ingest_items(db, spec, tmp_path, n, name)
    plan_run(db, run_id, spec)
    return run_id


def send(db, run_id: int) -> list[str]:
    """Move every planned batch of the run as the engine does: submitting, submitted (its
    attempts submitted, its items in flight), ended. Returns their ids."""
    with db.connect() as conn:
        ids = list(
            conn.execute(
                sa.select(BATCH.c.id)
                .where(BATCH.c.run_id == run_id, BATCH.c.status == BatchStatus.PLANNED)
                .order_by(BATCH.c.id)
            ).scalars()
        )
    for batch_id in ids:
        with db.begin() as conn:
            set_status(conn, BATCH, BatchStatus.SUBMITTING, BATCH.c.id == batch_id)
            set_status(conn, BATCH, BatchStatus.SUBMITTED, BATCH.c.id == batch_id)
            set_status(conn, ATTEMPT, AttemptStatus.SUBMITTED, ATTEMPT.c.batch_id == batch_id)
            in_batch = sa.select(ATTEMPT.c.item_id).where(ATTEMPT.c.batch_id == batch_id)
            set_status(conn, ITEM, ItemStatus.IN_FLIGHT, ITEM.c.id.in_(in_batch))
            set_status(conn, BATCH, BatchStatus.ENDED, BATCH.c.id == batch_id)
    return ids
