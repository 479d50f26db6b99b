"""Benchmark: taking the next unit of work on PostgreSQL, batcher's claim vs procrastinate's.

Run: .venv/bin/python bench/claim.py [--n 1000]
procrastinate is not a dependency; to compare, install it outside the project's environment
and put it on the path, and both figures print:
    .venv/bin/pip install --target /tmp/pct --no-deps procrastinate asgiref croniter \
        psycopg-pool python-dateutil
    PYTHONPATH=/tmp/pct .venv/bin/python bench/claim.py See docs/workers.md for the decision.
Exits 1 when batcher's claim takes more than 20 ms (a batch takes minutes: any figure below
that is noise).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa

from batcher.store import open_store
from batcher.store.models import TABLES
from batcher.store.workers import claim_run

PG = os.environ.get("BATCHER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
LIMIT_MS = 20.0


def fresh_schema() -> tuple[str, sa.Engine]:
    schema = f"claim_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    return schema, admin


def drop(schema: str, admin: sa.Engine) -> None:
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def ours(n: int) -> float:
    schema, admin = fresh_schema()
    try:
        db = open_store(f"{PG}?options=-csearch_path%3D{schema}")
        row = {
            "job_name": "j",
            "spec_path": "s",
            "spec_json": "{}",
            "input_path": "i",
            "input_sha256": "0" * 64,
            "status": "planned",
            "created_at": datetime.now(UTC),
        }
        with db.begin() as conn:
            conn.execute(sa.insert(TABLES["run"]), [row] * n)
        start = time.perf_counter()
        got = 0
        while claim_run(db, "bench:1:x", ttl_s=60):
            got += 1
        assert got == n
        took = (time.perf_counter() - start) / n * 1000
        db.dispose()
        return took
    finally:
        drop(schema, admin)


async def theirs(n: int) -> tuple[float, float] | None:
    try:
        import procrastinate
    except ImportError:
        return None
    schema, admin = fresh_schema()
    try:
        base = PG.replace("postgresql+psycopg://", "postgresql://")
        connector = procrastinate.PsycopgConnector(
            conninfo=f"{base}?options=-csearch_path%3D{schema}"
        )
        app = procrastinate.App(connector=connector)

        @app.task(name="drive_run")
        def drive_run(run_id: int) -> None:  # the unit of work it would hold
            return None

        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            start = time.perf_counter()
            for i in range(n):
                await drive_run.defer_async(run_id=i)
            defer = (time.perf_counter() - start) / n * 1000
            worker_id = await app.job_manager.register_worker()
            start = time.perf_counter()
            got = 0
            while await app.job_manager.fetch_job(None, worker_id):
                got += 1
            assert got == n
            return defer, (time.perf_counter() - start) / n * 1000
    finally:
        drop(schema, admin)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    n = ap.parse_args().n
    mine = ours(n)
    print(
        f"batcher claim_run (FOR UPDATE SKIP LOCKED + lease UPDATE): {mine:.2f} ms each, {n} runs"
    )
    other = asyncio.run(theirs(n))
    if other is None:
        print("procrastinate: not installed here (see the docstring)")
    else:
        print(
            f"procrastinate defer_async: {other[0]:.2f} ms each; fetch_job: {other[1]:.2f} ms each"
        )
    sys.exit(0 if mine <= LIMIT_MS else 1)


if __name__ == "__main__":
    main()
