"""The worker pool on PostgreSQL: three `batcher worker` processes drain runs left for them;
one is SIGKILLed while it drives a run with a batch at the provider, and a live worker takes
that run over within the lease TTL plus one poll interval, submitting nothing twice.

The suite drains 6 runs of 50 items (a few seconds); bench/fleet.py drains 20 runs of
2,000 items with 1, 2 and 3 workers."""

from __future__ import annotations

import signal
import time
from collections import Counter

import sqlalchemy as sa
from click.testing import CliRunner
from engine_helpers import check_accounted, sandbox_fixture, served_fixture  # noqa: F401
from fleet_helpers import (
    SPEC,
    holders,
    leave_runs,
    sent_attempts,
    start_workers,
    statuses,
    stop_workers,
    submitted_runs,
    wait_for,
)

from batcher.cli import cli
from batcher.store import open_store

TTL, POLL = 1.5, 0.2
RUNS, ITEMS = 6, 50


def test_three_workers_drain_the_runs_and_a_killed_workers_run_is_taken_over(
    pg_url, sandbox, tmp_path
):
    db = open_store(pg_url)
    run_ids = leave_runs(db, tmp_path, RUNS, ITEMS)
    sandbox.configure(faults="slow:rate=1:factor=1.5")  # each batch takes about 0.9 s
    workers = start_workers(3, {**sandbox.env(), "BATCHER_DB": pg_url}, TTL, POLL)
    try:
        # Halfway: a worker holds a run whose batch is at the provider; kill it there.
        def victim():
            held = holders(db, run_ids)
            for run_id in submitted_runs(db, run_ids):
                for w in workers:
                    if held.get(run_id) and f":{w.pid}:" in held[run_id]:
                        return w, run_id, held[run_id]
            return None

        dead, orphan, dead_owner = wait_for(victim, timeout=30)
        dead.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        dead.wait(timeout=10)

        def taken() -> str | None:
            owner = holders(db, [orphan])[orphan]
            return owner if owner and owner != dead_owner else None

        new_owner = wait_for(taken, timeout=10, step=0.02)
        took = time.monotonic() - killed_at
        assert took <= TTL + POLL + 0.3, took  # 0.3 s: this loop's own look and a commit
        assert f":{dead.pid}:" not in new_owner

        shown = CliRunner().invoke(cli, ["workers", "--db", pg_url, "--json"])
        assert shown.exit_code == 0, shown.output
        assert any(r["run"] == orphan and r["owner"] == new_owner for r in eval_json(shown))

        wait_for(lambda: set(statuses(db, run_ids).values()) == {"completed"}, timeout=60)
    finally:
        codes = stop_workers(workers)
    live = [w for w in workers if w is not dead]
    assert [w.returncode for w in live] == [0, 0], [w.stderr.read() for w in live]
    assert codes[workers.index(dead)] == -signal.SIGKILL

    # The audit: every request reached the provider once per attempt, and every attempt
    # that was sent is in the database (the taken-over run adopted, never resubmitted).
    submissions = Counter()
    for provider_submissions in sandbox.stats()["submissions"].values():
        submissions.update(provider_submissions)
    assert max(submissions.values()) == 1
    assert Counter(sent_attempts(db, run_ids)) == Counter(submissions)
    for run_id in run_ids:
        check_accounted(db, run_id, _only(sandbox, run_id, db), ITEMS)
    # The live workers left the pool; the killed one is shown without a heartbeat.
    (left,) = eval_json(CliRunner().invoke(cli, ["workers", "--db", pg_url, "--json"]))
    assert left["owner"] == dead_owner and left["kind"] == "worker (no heartbeat)"


def eval_json(result) -> list[dict]:  # noqa: ANN001 - a click Result
    import orjson

    return orjson.loads(result.output)


def _only(sandbox, run_id: int, db):  # noqa: ANN001, ANN202
    """The sandbox's audit narrowed to one run's requests (check_accounted reads one run)."""
    import sqlalchemy as sa

    from batcher.store.models import TABLES

    attempt = TABLES["attempt"]
    with db.connect() as conn:
        mine = set(
            conn.execute(sa.select(attempt.c.custom_id).where(attempt.c.run_id == run_id)).scalars()
        )

    class OneRun:
        def stats(self):
            stats = sandbox.stats()
            stats["duplicates"] = {p: [c for c in d if c in mine]
                                   for p, d in stats["duplicates"].items()}  # fmt: skip
            return stats

        def billed(self):
            return [r for r in sandbox.billed() if r["custom_id"] in mine]

    return OneRun()


def test_pool_schedulers_fire_each_slot_once_and_a_worker_drives_the_run(pg_url, sandbox, tmp_path):
    """Two `batcher scheduler --pool` on one database: one firing per fire time, its run left
    planned for the pool; a worker (here in this process) drives it to completion."""
    import threading

    from engine_helpers import FAST_RETRY
    from schedule_fixtures import Clock, utc

    from batcher.providers import Clients
    from batcher.run.worker import Worker, WorkerSettings
    from batcher.schedule.daemon import Scheduler
    from batcher.schedule.firing import PoolDriver
    from batcher.store.models import TABLES

    folder = tmp_path / "nightly"
    folder.mkdir()
    (folder / "in.jsonl").write_text(
        "".join(f'{{"id": "t{i}", "prompt": "Ticket {i}: I cannot log in."}}\n' for i in range(5))
    )
    spec = folder / "job.toml"
    spec.write_text(SPEC.format(name="pooled"))
    clock = Clock(utc(2026, 3, 1, 0, 0))
    one, two = (Scheduler(open_store(pg_url), driver=PoolDriver(), clock=clock) for _ in range(2))
    one.schedules.add("nightly", job=str(spec), input=str(folder / "*.jsonl"), cron="0 2 * * *")
    for scheduler in (one, two):
        scheduler.tick(utc(2026, 3, 1, 2, 0))
    for scheduler in (one, two):
        scheduler.wait_idle(timeout=30)
        scheduler.close()
    db = open_store(pg_url)
    with db.connect() as conn:
        firings = conn.execute(sa.select(TABLES["schedule_firing"])).all()
    assert [(f.outcome, f.run_id) for f in firings] == [("queued", 1)]
    assert statuses(db, [1]) == {1: "planned"}
    assert sandbox.stats()["batches_created"]["openai"] == 0  # nothing sent by a scheduler
    with db.connect() as conn:  # laid out in full: the worker may not see this state folder
        assert conn.execute(sa.select(sa.func.count()).select_from(TABLES["batch"])).scalar() == 1

    settings = WorkerSettings(ttl_s=1.5, poll_s=0.05, run_poll_s=0.03)
    pool = Worker(db, settings, clients=Clients.for_sandbox(sandbox, FAST_RETRY))
    working = threading.Thread(target=pool.run)
    working.start()
    try:
        wait_for(lambda: statuses(db, [1]) == {1: "completed"}, timeout=30)
    finally:
        pool.stop.set()
        working.join(timeout=10)
    assert sandbox.stats()["batches_created"]["openai"] == 1


def test_claims_at_once_take_different_runs_and_an_expired_lease_is_claimable(db_url, tmp_path):
    import threading

    from batcher.run.lease import acquire, release
    from batcher.store.workers import claim_run

    db = open_store(db_url)
    run_ids = leave_runs(db, tmp_path, 3, 2)
    gate = threading.Barrier(4)
    got: list = []

    def claimer(n: int) -> None:
        gate.wait()
        got.append(claim_run(db, f"w{n}:1:x", ttl_s=60))

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = sorted(c.run_id for c in got if c is not None)
    assert claimed == run_ids and got.count(None) == 1  # three runs, four claimers
    assert claim_run(db, "late:1:x", ttl_s=60) is None

    release(db, run_ids[0], holders(db, run_ids)[run_ids[0]])
    acquire(db, run_ids[0], "gone:1:x", ttl_s=-1)  # its holder stopped renewing
    taken = claim_run(db, "rescuer:1:x", ttl_s=60, orphans_only=True)
    assert (taken.run_id, taken.taken_from) == (run_ids[0], "gone:1:x")
    assert holders(db, run_ids)[run_ids[0]] == "rescuer:1:x"


def test_run_detach_plans_and_leaves_the_run_for_the_workers(sqlite_url, sandbox, tmp_path):
    folder = tmp_path / "detached"
    folder.mkdir()
    (folder / "input.jsonl").write_text('{"id": "t0", "prompt": "Ticket: I cannot log in."}\n')
    (folder / "job.toml").write_text(SPEC.format(name="detached"))
    result = CliRunner().invoke(
        cli, ["run", str(folder / "job.toml"), "--detach", "--db", sqlite_url], env=sandbox.env()
    )
    assert result.exit_code == 3, result.output
    assert "left for the workers" in result.output
    db = open_store(sqlite_url)
    assert statuses(db, [1]) == {1: "planned"} and holders(db, [1]) == {1: None}
    assert sandbox.stats()["batches_created"]["openai"] == 0
    shown = CliRunner().invoke(cli, ["workers", "--db", sqlite_url])
    assert shown.exit_code == 0
