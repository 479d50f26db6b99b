"""Benchmark: how long 1, 2 and 3 `batcher worker` processes take to drain 20 runs.

Run: .venv/bin/python bench/fleet.py [--runs 20] [--items 2000] [--turnaround 2.0]
Needs PostgreSQL at 127.0.0.1:5432 (trust auth, database `test`; BATCHER_TEST_PG overrides).

Each configuration gets a fresh schema with `--runs` planned runs of `--items` items (as
`batcher run --detach` leaves them) and a sandbox whose batches take a fixed `--turnaround`
seconds, so the provider is the bottleneck. Workers drive one run at a time (`--runs 1`).
The time is from starting the workers to every run `completed`. The reference is a minimal
hand-written loop that submits the same number of batches through the OpenAI SDK at once and
waits for all of them: the provider's floor. Exits 1 unless 3 workers take at most half the
time of 1 worker.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import openai
import orjson
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fleet_helpers import leave_runs, start_workers, statuses, stop_workers  # noqa: E402

from batcher.sandbox import start_sandbox  # noqa: E402
from batcher.store import open_store  # noqa: E402

PG = os.environ.get("BATCHER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TARGET = 0.5  # 3 workers' time / 1 worker's time
CHAT = "/v1/chat/completions"


def turnaround(box, seconds: float) -> None:
    """Every batch takes `seconds`: a quarter validating, half running, a quarter finalizing."""
    box.configure(
        validating_s=seconds / 4, in_progress_s=seconds / 2, finalizing_s=seconds / 4,
        per_request_s=0.0,
    )  # fmt: skip


def reference(box, n_batches: int, n_items: int) -> float:
    """The minimal loop: create every batch at once, poll them all until they end, read the
    outputs."""
    client = openai.OpenAI(base_url=box.openai_base_url, api_key="sk-sandbox", max_retries=0)
    start = time.perf_counter()
    ids = []
    for b in range(n_batches):
        lines = b"".join(
            orjson.dumps(
                {
                    "custom_id": f"b{b}-{i}",
                    "method": "POST",
                    "url": CHAT,
                    "body": {
                        "model": "gpt-5-nano",
                        "max_completion_tokens": 512,
                        "messages": [{"role": "user", "content": f"Ticket {i}: I cannot log in."}],
                    },
                }
            )
            + b"\n"
            for i in range(n_items)
        )
        upload = client.files.create(file=("ref.jsonl", lines), purpose="batch")
        batch = client.batches.create(
            input_file_id=upload.id, endpoint=CHAT, completion_window="24h"
        )
        ids.append(batch.id)
    open_ids = set(ids)
    while open_ids:
        for batch_id in list(open_ids):
            batch = client.batches.retrieve(batch_id)
            if batch.status in ("completed", "failed", "expired", "cancelled"):
                client.files.content(batch.output_file_id).read()
                open_ids.discard(batch_id)
        time.sleep(0.2)
    return time.perf_counter() - start


def drain(box, n_workers: int, n_runs: int, n_items: int, folder: Path) -> float:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG}?options=-csearch_path%3D{schema}"
    try:
        db = open_store(url)
        run_ids = leave_runs(db, folder / schema, n_runs, n_items)
        box.reset()
        turnaround(box, ARGS.turnaround)
        env = {**box.env(), "BATCHER_DB": url}
        start = time.perf_counter()
        workers = start_workers(n_workers, env, ttl=10.0, poll=0.2, poll_interval=0.2)
        try:
            while set(statuses(db, run_ids).values()) != {"completed"}:
                if any(w.poll() is not None for w in workers):
                    raise SystemExit(f"a worker died: {[w.stderr.read() for w in workers]}")
                time.sleep(0.1)
            took = time.perf_counter() - start
        finally:
            stop_workers(workers)
        duplicates = box.stats()["duplicates"]
        if any(duplicates.values()):
            raise SystemExit(f"requests submitted twice: {duplicates}")
        db.dispose()
        return took
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, start_sandbox() as box:
        os.environ["BATCHER_STATE_DIR"] = str(Path(tmp) / "state")
        turnaround(box, ARGS.turnaround)
        floor = reference(box, ARGS.runs, ARGS.items)
        print(
            f"reference loop: {ARGS.runs} batches of {ARGS.items} at once: {floor:.1f} s "
            f"(batch turnaround {ARGS.turnaround:.1f} s)"
        )
        times = {}
        for n in (1, 2, 3):
            times[n] = drain(box, n, ARGS.runs, ARGS.items, Path(tmp))
            print(f"{n} worker(s): {ARGS.runs} runs of {ARGS.items} items: {times[n]:.1f} s")
    ratio = times[3] / times[1]
    verdict = "ok" if ratio <= TARGET else "MISS"
    print(f"3 workers / 1 worker = {ratio:.2f} (target <= {TARGET}): {verdict}")
    sys.exit(0 if ratio <= TARGET else 1)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--turnaround", type=float, default=2.0, help="seconds a batch takes")
    ARGS = ap.parse_args()
    main()
