"""The worker pool from outside: `batcher worker` processes on one PostgreSQL database, runs
left for them, and what the sandbox's audit says afterwards. Shared by tests/test_fleet.py
and bench/fleet.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import sqlalchemy as sa

from batcher.run import engine
from batcher.spec import load_spec
from batcher.store.models import TABLES

RUN, ATTEMPT, BATCH = TABLES["run"], TABLES["attempt"], TABLES["batch"]
BATCHER = str(Path(sys.executable).parent / "batcher")

SPEC = """input = "input.jsonl"
name = "{name}"
[tiers]
nano = "openai:gpt-5-nano"
frontier = "anthropic:claude-sonnet-4-6"
[defaults]
max_tokens = 512
system = "You label support tickets.\\nAllowed labels: billing, technical, account"
[routing]
classifier = "fixed:nano"
ladder = ["nano", "frontier"]
[validation]
labels = ["billing", "technical", "account"]
"""


def leave_runs(db, folder: Path, n_runs: int, n_items: int) -> list[int]:
    """`n_runs` planned runs of `n_items` tickets each, left for the workers (as `batcher run
    --detach` leaves them)."""
    ids = []
    for r in range(n_runs):
        job = folder / f"job{r}"
        job.mkdir(parents=True, exist_ok=True)
        with open(job / "input.jsonl", "wb") as f:
            for i in range(n_items):
                line = {"id": f"r{r}t{i}", "prompt": f"Run {r} ticket {i}: I cannot log in."}
                f.write(orjson.dumps(line) + b"\n")
        (job / "job.toml").write_text(SPEC.format(name=f"fleet-{r}"))
        spec = load_spec(job / "job.toml")
        ids.append(engine.start_run(db, spec, spec.input_file()))
    return ids


def start_workers(
    n: int, env: dict, ttl: float, poll: float, poll_interval: float = 0.05
) -> list[subprocess.Popen]:
    command = [BATCHER, "worker", "--ttl", str(ttl), "--poll", str(poll)]
    command += ["--poll-interval", str(poll_interval)]
    return [
        subprocess.Popen(
            command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]  # fmt: skip


def holders(db, run_ids: list[int]) -> dict[int, str | None]:
    with db.connect() as conn:
        return dict(
            conn.execute(sa.select(RUN.c.id, RUN.c.lease_owner).where(RUN.c.id.in_(run_ids))).all()
        )


def statuses(db, run_ids: list[int]) -> dict[int, str]:
    with db.connect() as conn:
        return dict(
            conn.execute(sa.select(RUN.c.id, RUN.c.status).where(RUN.c.id.in_(run_ids))).all()
        )


def submitted_runs(db, run_ids: list[int]) -> set[int]:
    """Runs with a batch at the provider now."""
    with db.connect() as conn:
        return set(
            conn.execute(
                sa.select(BATCH.c.run_id)
                .where(BATCH.c.run_id.in_(run_ids), BATCH.c.status == "submitted")
                .distinct()
            ).scalars()
        )


def wait_for(condition, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(step)


def sent_attempts(db, run_ids: list[int]) -> list[str]:
    """custom_ids of every attempt of the runs that was put in a batch that reached the
    provider."""
    with db.connect() as conn:
        return list(
            conn.execute(
                sa.select(ATTEMPT.c.custom_id)
                .join(BATCH, BATCH.c.id == ATTEMPT.c.batch_id)
                .where(
                    ATTEMPT.c.run_id.in_(run_ids),
                    BATCH.c.provider_batch_id.is_not(None),
                )
            ).scalars()
        )


def stop_workers(workers: list[subprocess.Popen], timeout: float = 30.0) -> list[int]:
    for w in workers:
        if w.poll() is None:
            w.terminate()
    return [w.wait(timeout=timeout) for w in workers]
