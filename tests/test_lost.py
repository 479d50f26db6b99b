"""Batches the provider no longer knows: lost after a grace period, their requests sent again,
the loss reported; and a cancel that ends every item even when the provider forgot them."""

from __future__ import annotations

import orjson
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
from report_db import render_run_report

from batcher.run import engine
from batcher.run.progress import QuietReporter
from batcher.spec import load_spec
from batcher.store import open_store


class Notes(QuietReporter):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)


def _start(db, tmp_path, n: int) -> int:
    spec = load_spec(write_job(tmp_path, n))
    return engine.start_run(db, spec, spec.input_file())


def test_a_forgotten_batch_is_lost_and_its_requests_sent_again(db_url, sandbox, clients, tmp_path):
    db = open_store(db_url)
    run_id = _start(db, tmp_path, 12)
    sandbox.configure(faults="slow:count=1:factor=20")  # the first batch is still running
    engine.drive_run(db, run_id, clients=clients, poll=POLL, submit_only=True)
    sandbox.configure(add_faults="forget:count=1")  # mid-run: the next poll finds it gone
    notes = Notes()
    outcome = engine.drive_run(db, run_id, clients=clients, poll=POLL, reporter=notes)

    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    assert items_by_status(db, run_id) == {"succeeded": 12}
    lost, again = batches(db, run_id)
    assert (lost["status"], again["status"]) == ("lost", "reconciled")
    assert again["round"] == 2 and again["tier"] == lost["tier"] and again["n_requests"] == 12
    chains: dict[int, list[tuple[str, str | None]]] = {}
    for a in attempts(db, run_id):
        chains.setdefault(a["item_id"], []).append((a["status"], a["error_code"]))
    assert set(map(tuple, chains.values())) == {(("errored", "batch_lost"), ("succeeded", None))}
    assert sandbox.stats()["batches_forgotten"]["openai"] == 1
    assert any("is lost" in n and "new batch" in n for n in notes.notes), notes.notes
    check_accounted(db, run_id, sandbox, 12)

    report = orjson.loads(render_run_report(db, run_id, "json"))
    (row,) = report["lost_batches"]
    assert row["batch"] == lost["id"] and row["unfinished"] == 12
    assert float(row["may_have_cost_usd"]) > 0
    assert any("was lost at openai" in w for w in report["warnings"])


def test_one_not_found_answer_is_not_enough_to_lose_a_batch(sandbox, clients, tmp_path):
    db = open_store(f"sqlite:///{tmp_path / 'one404.db'}")
    run_id = _start(db, tmp_path, 4)
    sandbox.configure(faults="http404:count=1:route=retrieve")  # a read that came too early
    outcome = engine.drive_run(db, run_id, clients=clients, poll=POLL)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    assert [b["status"] for b in batches(db, run_id)] == ["reconciled"]
    check_accounted(db, run_id, sandbox, 4)


def test_cancel_ends_every_item_when_the_provider_forgot_the_batch(
    pg_url, sandbox, clients, tmp_path
):
    db = open_store(pg_url)
    run_id = _start(db, tmp_path, 5)
    sandbox.configure(faults="slow:count=1:factor=50")
    engine.drive_run(db, run_id, clients=clients, poll=POLL, submit_only=True)
    sandbox.configure(faults="forget:count=1")
    outcome = engine.cancel_run(db, run_id, clients=clients, poll=POLL)
    assert outcome.status == "cancelled" and outcome.exit_code == 4, outcome.message
    assert items_by_status(db, run_id) == {"cancelled": 5}
    assert [b["status"] for b in batches(db, run_id)] == ["lost"]
