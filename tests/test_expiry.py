"""Expiries have their own budget (`[retry] expired_retries`), and a batch that expires again
is retried in smaller batches."""

from __future__ import annotations

from collections import Counter

from engine_helpers import (  # noqa: F401 - fixtures
    POLL,
    attempts,
    batches,
    check_accounted,
    clients_fixture,
    items_by_status,
    sandbox_fixture,
    served_fixture,
    write_job,
)

from batcher.run import engine
from batcher.spec import load_spec
from batcher.store import open_store


def run_job(db, clients, tmp_path, n: int, max_lines: int):
    path = write_job(tmp_path, n)
    with open(path, "a") as f:
        f.write(f"[batching]\nopenai_max_lines = {max_lines}\n")
    spec = load_spec(path)
    run_id = engine.start_run(db, spec, spec.input_file())
    return run_id, engine.drive_run(db, run_id, clients=clients, poll=POLL)


def expiries_by_item(db, run_id: int) -> Counter:
    return Counter(a["item_id"] for a in attempts(db, run_id) if a["status"] == "expired")


def test_every_second_batch_expiring_still_succeeds_every_item(pg_url, sandbox, clients, tmp_path):
    db = open_store(pg_url)
    sandbox.configure(faults="expire:every=2:after=0.2", speed=5)
    run_id, outcome = run_job(db, clients, tmp_path, 20, max_lines=5)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    assert items_by_status(db, run_id) == {"succeeded": 20}
    expired = [b for b in batches(db, run_id) if b["raw_status"] == "expired"]
    assert len(expired) >= 2
    assert max(expiries_by_item(db, run_id).values()) <= 5  # expired_retries
    check_accounted(db, run_id, sandbox, 20)


def test_repeated_expiries_split_the_retry_and_spare_the_error_budget(sandbox, clients, tmp_path):
    db = open_store(f"sqlite:///{tmp_path / 'split.db'}")
    sandbox.configure(faults="expire:count=3:after=0.25", speed=5)  # three in a row expire
    run_id, outcome = run_job(db, clients, tmp_path, 16, max_lines=50)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    assert items_by_status(db, run_id) == {"succeeded": 16}
    # 16 -> 12 expire -> 9 expire again: from then on at most half the batch that expired
    sizes = sorted((b["round"], b["n_requests"]) for b in batches(db, run_id))
    assert sizes[:4] == [(1, 16), (2, 12), (3, 3), (3, 6)]
    # The two round-3 batches go out together; the third expiry hits the one the sandbox
    # created first: what it did not finish goes again in batches of at most half its size.
    (again,) = [b for b in batches(db, run_id) if b["round"] == 3 and b["raw_status"] == "expired"]
    fourth = [n for round_, n in sizes if round_ == 4]
    assert max(fourth) <= max(1, again["n_requests"] // 2)
    assert sum(fourth) == again["n_expired"]
    # three expiries each, more than transient_retries = 2 allows: not counted there
    assert sorted(expiries_by_item(db, run_id).values())[-2:] == [3, 3]
    check_accounted(db, run_id, sandbox, 16)
