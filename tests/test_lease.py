"""The run lease: one driver per run, and a loser that is told who won."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from engine_helpers import (  # noqa: F401 - fixtures
    sandbox_fixture,
    served_fixture,
    write_job,
)

from batcher.cli import cli
from batcher.errors import LeaseHeld
from batcher.run.lease import acquire, release, renew
from batcher.store import open_store
from batcher.store.models import TABLES

RUN = TABLES["run"]
TRIALS = 50
RACERS = 3


def _new_run(db) -> int:
    with db.begin() as conn:
        return conn.execute(
            sa.insert(RUN)
            .values(
                job_name="race",
                spec_path="job.toml",
                spec_json="{}",
                input_path="in.jsonl",
                input_sha256="0" * 64,
                status="running",
                created_at=datetime.now(UTC),
            )
            .returning(RUN.c.id)
        ).scalar_one()


def _race(db, run_id: int, owners: list[str]) -> tuple[list[str], list[Exception]]:
    """Every owner calls acquire at the same moment; returns the winners and the errors."""
    gate = threading.Barrier(len(owners))
    won: list[str] = []
    errors: list[Exception] = []

    def racer(owner: str) -> None:
        gate.wait()
        try:
            acquire(db, run_id, owner)
            won.append(owner)
        except Exception as exc:  # noqa: BLE001 - the test inspects what was raised
            errors.append(exc)

    threads = [threading.Thread(target=racer, args=(o,)) for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, errors


def test_fifty_races_have_one_winner_and_losers_told_its_name(db_url):
    db = open_store(db_url)
    run_id = _new_run(db)
    for trial in range(TRIALS):
        owners = [f"host-{i}:{100 + i}:t{trial}" for i in range(RACERS)]
        won, errors = _race(db, run_id, owners)
        assert len(won) == 1, (trial, won, errors)
        assert len(errors) == RACERS - 1
        for exc in errors:
            assert isinstance(exc, LeaseHeld), repr(exc)
            assert f"run {run_id} is being driven by {won[0]}" in str(exc)
        release(db, run_id, won[0])


def test_an_expired_lease_is_taken_and_the_old_holder_cannot_renew(db_url):
    db = open_store(db_url)
    run_id = _new_run(db)
    acquire(db, run_id, "old:1:a", ttl_s=-1)  # already expired
    acquire(db, run_id, "new:2:b")
    assert not renew(db, run_id, "old:1:a")
    assert renew(db, run_id, "new:2:b")
    with pytest.raises(LeaseHeld, match="driven by new:2:b"):
        acquire(db, run_id, "old:1:a")


def test_a_run_that_does_not_exist_is_named(db_url):
    with pytest.raises(LeaseHeld, match="run 404 does not exist"):
        acquire(open_store(db_url), 404, "me:1:a")


def test_a_dead_holder_on_this_host_is_taken_over_at_once(db_url):
    import socket

    db = open_store(db_url)
    run_id = _new_run(db)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    acquire(db, run_id, f"{socket.gethostname()}:{gone}:dead")
    acquire(db, run_id, "me:1:a")  # no LeaseHeld: its pid no longer exists
    with db.connect() as conn:
        assert conn.execute(sa.select(RUN.c.lease_owner)).scalar() == "me:1:a"


def test_two_resumes_at_once_on_postgresql_one_drives_the_other_exits_3(tmp_path, pg_url, sandbox):
    """The race as a user meets it: `batcher resume N & batcher resume N`."""
    import os

    env = {**os.environ, **sandbox.env(), "BATCHER_DB": pg_url}
    sandbox.configure(faults="slow:factor=3")  # the batch runs ~1.8 s: the two overlap
    spec = write_job(tmp_path, 3)
    batcher = [str(Path(sys.executable).parent / "batcher")]
    submitted = CliRunner().invoke(cli, ["submit", str(spec), "--db", pg_url], env=sandbox.env())
    assert submitted.exit_code == 3, submitted.output
    resumes = [
        subprocess.Popen(
            [*batcher, "resume", "1", "--poll-interval", "0.05"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    done = sorted((p.wait(timeout=60), p.stderr.read()) for p in resumes)
    assert [code for code, _ in done] == [0, 3], done
    loser = done[1][1]
    assert "Traceback" not in loser
    assert "run 1 is being driven by " in loser
    assert sandbox.stats()["batches_created"]["openai"] == 1
