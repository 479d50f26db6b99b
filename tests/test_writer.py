"""The writer process: reconciling through it stores exactly what the inline path stores, and
its failures reach the caller as StoreError with nothing half-written."""

from __future__ import annotations

import pytest
from engine_helpers import (  # noqa: F401 - fixtures
    POLL,
    batches,
    check_accounted,
    clients_fixture,
    sandbox_fixture,
    served_fixture,
)
from reconcile_fixtures import add_batch, ingest_items, item_ids, make_spec

from batcher.errors import StoreError
from batcher.providers.base import Result, Usage
from batcher.reconcile import _store_rows, reconcile_batch, reconcile_batches
from batcher.store.db import open_store
from batcher.writer import InlineWriter, ProcessWriter, open_writer

USAGE = Usage(input_tokens=1300, cache_read_tokens=1024, output_tokens=40, reasoning_tokens=12)


@pytest.fixture
def db(db_url):
    engine = open_store(db_url)
    yield engine
    engine.dispose()


def results_for(attempts: dict[int, int], items: list[int]) -> list[Result]:
    """Every outcome, in a shuffled order, one result missing."""
    out = []
    for n, item in enumerate(items[:-1]):
        cid = f"i{item}-a1"
        kind = n % 5
        if kind == 0:
            out.append(Result(cid, "errored", error_code="server_error", error_message="boom"))
        elif kind == 1:
            out.append(Result(cid, "succeeded", '{"label": "sales"}', USAGE))  # invalid label
        elif kind == 2:
            out.append(Result(cid, "expired", error_code="batch_expired"))
        else:
            out.append(Result(cid, "succeeded", '{"label": "billing"}', USAGE))
    return out[::-1]


def two_batches(db, tmp_path, n: int = 23):
    spec = make_spec()
    run_id = ingest_items(db, spec, tmp_path, 2 * n)
    items = item_ids(db, run_id)
    first, attempts_1 = add_batch(db, spec, run_id, items[:n])
    second, attempts_2 = add_batch(db, spec, run_id, items[n:])
    batches = [
        (first, results_for(attempts_1, items[:n])),
        (second, results_for(attempts_2, items[n:])),
    ]
    return spec, run_id, batches


def stored(db, run_id: int) -> list[tuple]:
    """What reconciling stored for the run, in line order, free of ids."""
    with db.connect() as conn:
        return [
            tuple(row)
            for row in conn.exec_driver_sql(
                "SELECT i.line_no, i.status, i.output, a.status, a.output, a.verdict,"
                " a.error_code, a.error_message, a.input_tokens, a.cache_read_tokens,"
                " a.output_tokens, a.reasoning_tokens, a.cost_pusd, a.standard_pusd,"
                " a.uncached_pusd, a.baseline_pusd, b.status, b.n_succeeded, b.n_errored,"
                " b.n_expired FROM item i JOIN attempt a ON a.item_id = i.id"
                " JOIN batch b ON b.id = a.batch_id"
                f" WHERE i.run_id = {int(run_id)} ORDER BY i.line_no"
            )
        ]


def test_the_writer_process_stores_what_the_inline_path_stores(db, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    spec, run_a, batches_a = two_batches(db, tmp_path / "a")
    spec, run_b, batches_b = two_batches(db, tmp_path / "b")

    parallel = reconcile_batches(db, batches_a, spec, chunk=4, parallel=True)
    inline = reconcile_batches(db, batches_b, spec, chunk=4, parallel=False)

    assert stored(db, run_a) == stored(db, run_b)
    assert len(stored(db, run_a)) == 46
    for got, want in zip(parallel, inline, strict=True):
        assert (got.n_results, got.n_missing, got.stored, got.cost_pusd) == (
            want.n_results,
            want.n_missing,
            want.stored,
            want.cost_pusd,
        )
        assert (got.n_succeeded, got.n_errored, got.n_expired) == (
            want.n_succeeded,
            want.n_errored,
            want.n_expired,
        )
    assert parallel[0].stored == {"errored": 5, "invalid": 5, "expired": 4, "succeeded": 8}
    assert parallel[0].n_missing == 1 and parallel[0].n_succeeded == 13


def test_a_failed_transaction_raises_and_the_writer_goes_on(db, tmp_path):
    spec = make_spec()
    run_id = ingest_items(db, spec, tmp_path, 3)
    items = item_ids(db, run_id)
    batch_id, attempts = add_batch(db, spec, run_id, items)
    writer = ProcessWriter(db)
    try:
        bad = {"no-such-status": [("x",) * 15 + (attempts[items[0]],)]}
        writer.submit([(_store_rows, (bad, []))])
        with pytest.raises(StoreError, match="writer process failed a transaction"):
            writer.wait()
        seen = []
        writer.submit([(_store_rows, ({}, []))], seen.append)
        writer.wait()
        assert seen == [[{"stored": {}}]]
    finally:
        writer.close()
    assert writer.child.returncode == 0
    summary = reconcile_batch(db, batch_id, [], spec)  # nothing was half-written
    assert summary.n_missing == 3


def test_a_writer_that_died_is_reported_and_a_second_pass_finishes(db, tmp_path):
    spec = make_spec()
    run_id = ingest_items(db, spec, tmp_path, 12)
    items = item_ids(db, run_id)
    batch_id, attempts = add_batch(db, spec, run_id, items)
    results = [Result(f"i{i}-a1", "succeeded", '{"label": "billing"}', USAGE) for i in items]
    writer = ProcessWriter(db)
    writer.child.kill()
    writer.child.wait()
    with pytest.raises(StoreError, match="writer process stopped"):
        writer.submit([(_store_rows, ({}, []))])
        writer.wait()
    writer.close()
    summary = reconcile_batch(db, batch_id, results, spec)
    assert summary.stored == {"succeeded": 12} and summary.n_missing == 0
    again = reconcile_batch(db, batch_id, results, spec)
    assert again.already_reconciled


def test_the_password_goes_over_stdin_not_the_command_line(db):
    writer = ProcessWriter(db)
    try:
        assert writer.child.args[1:] == ["-m", "batcher.writer"]
    finally:
        writer.close()


def test_an_in_memory_database_is_written_inline():
    db = open_store("sqlite://")
    try:
        assert isinstance(open_writer(db, parallel=True), InlineWriter)
    finally:
        db.dispose()


def test_only_batchers_own_functions_run_in_the_writer(db):
    writer = ProcessWriter(db)
    try:
        writer.submit([(print, ("hello",))])
        with pytest.raises(StoreError, match="refusing to run"):
            writer.wait()
    finally:
        writer.close()


def test_the_example_job_through_the_writer_process(tmp_path, monkeypatch, sandbox, clients):
    """The nightly path with every batch's writes in the second process (as a run of 100,000
    requests or more does): everything accounted for, each billed request stored once."""
    import batcher.reconcile
    from batcher import engine
    from batcher.spec import load_spec

    monkeypatch.setattr(batcher.reconcile, "PARALLEL_MIN", 1)
    db = open_store(f"sqlite:///{tmp_path / 'writer.db'}")
    try:
        spec = load_spec("jobs/example.toml")
        run_id = engine.start_run(db, spec, spec.input_file())
        outcome = engine.drive_run(db, run_id, clients=clients, poll=POLL)
        n_lines = sum(1 for _ in open(spec.input_file()))
        assert outcome.status == "completed" and outcome.n_items == n_lines
        check_accounted(db, run_id, sandbox, n_lines)
        assert {b["status"] for b in batches(db, run_id)} == {"reconciled"}
    finally:
        db.dispose()
