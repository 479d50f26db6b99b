"""Reconciling a batch stores each result once: text, usage, exact cost, verdict, status."""

from __future__ import annotations

from datetime import datetime

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from reconcile_fixtures import (
    ATTEMPT,
    BATCH,
    ITEM,
    add_batch,
    ingest_items,
    item_ids,
    item_rows,
    make_spec,
    rows_of,
    snapshot,
)

from batcher.errors import StateError
from batcher.money.prices import attempt_costs
from batcher.money.rate_cache import Pricer
from batcher.providers.base import Result, Usage
from batcher.run.reconcile import fail_batch, reconcile_batch
from batcher.store.db import open_store
from batcher.store.states import BatchStatus

GOOD = '{"label": "billing"}'
USAGE = Usage(
    input_tokens=1300,
    cache_read_tokens=1024,
    cache_write_5m_tokens=0,
    output_tokens=40,
    reasoning_tokens=12,
)


@pytest.fixture
def db(db_url):
    engine = open_store(db_url)
    yield engine
    engine.dispose()


def one_batch(db, tmp_path, n, **kwargs):
    spec = make_spec()
    run_id = ingest_items(db, spec, tmp_path, n)
    items = item_ids(db, run_id)
    batch_id, attempts = add_batch(db, spec, run_id, items, **kwargs)
    return spec, run_id, items, batch_id, attempts


def by_id(rows):
    return {row["id"]: row for row in rows}


def test_every_outcome_is_stored(db, tmp_path):
    spec, run_id, items, batch_id, attempts = one_batch(db, tmp_path, 7)
    cid = {i: f"i{i}-a1" for i in items}
    results = [
        Result(cid[items[0]], "succeeded", GOOD, USAGE, stop_reason="end"),
        Result(cid[items[1]], "succeeded", '```json\n{"label": "technical"}\n```', USAGE),
        Result(cid[items[2]], "succeeded", '{"label": "sales"}', USAGE),  # invalid label
        Result(
            cid[items[3]],
            "errored",
            error_code="server_error",
            error_message="boom",
            error_class="transient",
        ),
        Result(cid[items[4]], "expired", error_code="batch_expired"),
        Result(cid[items[5]], "cancelled"),
        # items[6] gets no result line at all
    ]
    summary = reconcile_batch(db, batch_id, results, spec)

    assert summary.n_results == 6 and summary.n_missing == 1 and summary.n_skipped == 0
    assert summary.stored == {
        "succeeded": 2,
        "invalid": 1,
        "errored": 1,
        "expired": 1,
        "cancelled": 1,
    }
    costs = attempt_costs(spec, "openai", "gpt-5-nano", USAGE)
    assert summary.cost_pusd == 3 * costs.cost_pusd
    rows = by_id(rows_of(db, ATTEMPT, ATTEMPT.c.batch_id == batch_id))
    a = [rows[attempts[i]] for i in items]
    assert [r["status"] for r in a] == [
        "succeeded",
        "succeeded",
        "invalid",
        "errored",
        "expired",
        "cancelled",
        "errored",
    ]
    for row in a[:3]:  # answered: tokens and the four exact cost figures
        assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == (
            1300,
            1024,
            40,
        )
        assert row["reasoning_tokens"] == 12
        assert row["cost_pusd"] == costs.cost_pusd and row["standard_pusd"] == costs.standard_pusd
        assert row["uncached_pusd"] == costs.uncached_pusd
        assert row["baseline_pusd"] == costs.baseline_pusd
        assert isinstance(row["finished_at"], datetime)  # stored in the database's own format
    assert a[0]["verdict"] == "ok: json, label" and a[0]["output"] == GOOD
    assert a[2]["verdict"] == "label 'sales' is not one of the allowed labels"
    assert a[2]["output"] == '{"label": "sales"}'
    for row in a[3:]:  # nothing billed without usage
        assert row["cost_pusd"] == row["baseline_pusd"] == row["input_tokens"] == 0
    assert (a[0]["answer_key"], a[0]["stop_reason"]) == ("billing", "end")
    assert (a[3]["error_code"], a[3]["error_message"]) == ("server_error", "boom")
    assert a[3]["error_class"] == "transient"
    error_columns = ("error_code", "error_message", "error_class")
    answer_columns = ("output", "verdict", "answer_key", "stop_reason")
    assert all(row[c] is None for row in a[:3] for c in error_columns)
    assert all(row[c] is None for row in a[3:6] for c in answer_columns)
    assert a[4]["error_code"] == "batch_expired"
    assert a[6]["error_code"] == "missing_result"

    items_ = by_id(item_rows(db, ITEM.c.run_id == run_id))
    assert [items_[i]["status"] for i in items] == ["succeeded"] * 2 + ["in_flight"] * 5
    assert items_[items[0]]["output"] == GOOD
    assert items_[items[0]]["final_attempt_id"] == attempts[items[0]]
    assert items_[items[0]]["answer_attempt_id"] == attempts[items[0]]  # the answer, once
    assert items_[items[2]]["output"] is None  # an invalid answer is not the item's (yet)

    (batch,) = rows_of(db, BATCH, BATCH.c.id == batch_id)
    assert batch["status"] == BatchStatus.RECONCILED and batch["reconciled_at"] is not None
    assert (batch["n_succeeded"], batch["n_errored"], batch["n_expired"], batch["n_cancelled"]) == (
        3,
        2,
        1,
        1,
    )


def test_reconciling_twice_changes_nothing(db, tmp_path):
    spec, run_id, items, batch_id, _ = one_batch(db, tmp_path, 5)
    results = [Result(f"i{i}-a1", "succeeded", GOOD, USAGE) for i in items[:4]]
    first = reconcile_batch(db, batch_id, results, spec)
    before = snapshot(db, run_id)

    def never_read():
        raise AssertionError("a reconciled batch must not read its results again")
        yield

    again = reconcile_batch(db, batch_id, never_read(), spec)
    assert snapshot(db, run_id) == before
    assert again.already_reconciled and again.cost_pusd == 0 and not again.stored
    assert (again.n_succeeded, again.n_errored) == (first.n_succeeded, first.n_errored) == (4, 1)


def test_a_crash_halfway_then_a_full_pass_stores_each_result_once(db, tmp_path):
    spec, run_id, items, batch_id, attempts = one_batch(db, tmp_path, 10)
    results = [Result(f"i{i}-a1", "succeeded", GOOD, USAGE) for i in items]
    results[7] = Result(f"i{items[7]}-a1", "succeeded", "not json", USAGE)

    def dies_after(n):
        yield from results[:n]
        raise ConnectionError("stream cut")

    with pytest.raises(ConnectionError):
        reconcile_batch(db, batch_id, dies_after(6), spec, chunk=4)
    statuses = by_id(rows_of(db, ATTEMPT, ATTEMPT.c.batch_id == batch_id))
    done = [statuses[attempts[i]]["status"] for i in items]
    assert done == ["succeeded"] * 4 + ["submitted"] * 6  # the finished chunk was committed
    (batch,) = rows_of(db, BATCH, BATCH.c.id == batch_id)
    assert batch["status"] == "ended"

    summary = reconcile_batch(db, batch_id, results, spec, chunk=4)
    assert summary.n_skipped == 4 and summary.stored == {"succeeded": 5, "invalid": 1}
    cost = attempt_costs(spec, "openai", "gpt-5-nano", USAGE).cost_pusd
    assert summary.cost_pusd == 6 * cost
    with db.connect() as conn:
        total = conn.execute(
            sa.select(sa.func.sum(ATTEMPT.c.cost_pusd)).where(ATTEMPT.c.batch_id == batch_id)
        ).scalar()
    assert total == 10 * cost  # every result billed exactly once
    (batch,) = rows_of(db, BATCH, BATCH.c.id == batch_id)
    assert (batch["status"], batch["n_succeeded"], batch["n_errored"]) == ("reconciled", 10, 0)


def test_unknown_and_duplicate_lines_are_not_stored(db, tmp_path):
    spec, run_id, items, batch_id, attempts = one_batch(db, tmp_path, 2)
    results = [
        Result(f"i{items[0]}-a1", "succeeded", GOOD, USAGE),
        Result(f"i{items[0]}-a1", "succeeded", '{"label": "technical"}', USAGE),
        Result("i999999-a1", "succeeded", GOOD, USAGE),
        Result(f"i{items[1]}-a2", "succeeded", GOOD, USAGE),  # right item, wrong attempt
    ]
    summary = reconcile_batch(db, batch_id, results, spec)
    assert summary.n_unmatched == 2 and summary.unmatched == ["i999999-a1", f"i{items[1]}-a2"]
    assert summary.n_skipped == 1 and summary.stored == {"succeeded": 1}
    rows = by_id(rows_of(db, ATTEMPT, ATTEMPT.c.batch_id == batch_id))
    assert rows[attempts[items[0]]]["output"] == GOOD  # the first line wins
    assert rows[attempts[items[1]]]["error_code"] == "missing_result"


def test_only_an_ended_batch_is_reconciled(db, tmp_path):
    spec, _, items, batch_id, _ = one_batch(db, tmp_path, 2, end=False)
    with pytest.raises(StateError, match="is submitted: only an ended batch"):
        reconcile_batch(db, batch_id, [], spec)
    with pytest.raises(StateError, match="no batch 'nope'"):
        reconcile_batch(db, "nope", [], spec)
    rows = rows_of(db, ATTEMPT, ATTEMPT.c.batch_id == batch_id)
    assert {r["status"] for r in rows} == {"submitted"}  # nothing marked missing


def test_an_errored_request_with_usage_is_billed(db, tmp_path):
    spec, _, items, batch_id, attempts = one_batch(db, tmp_path, 1)
    usage = Usage(input_tokens=500, output_tokens=3)
    reconcile_batch(db, batch_id, [Result(f"i{items[0]}-a1", "errored", None, usage, "x")], spec)
    (row,) = rows_of(db, ATTEMPT, ATTEMPT.c.batch_id == batch_id)
    assert row["status"] == "errored" and row["input_tokens"] == 500
    assert row["cost_pusd"] == attempt_costs(spec, "openai", "gpt-5-nano", usage).cost_pusd > 0


def test_fail_batch_pins_line_errors_and_retries_the_rest_free(db, tmp_path, state_dir):
    spec, run_id, items, batch_id, attempts = one_batch(db, tmp_path, 4, state_dir=state_dir)
    errors = [{"code": "invalid_json_line", "message": "Line 2 is not valid JSON.", "line": 2}]
    assert fail_batch(db, batch_id, errors, spec) == 4
    rows = by_id(rows_of(db, ATTEMPT, ATTEMPT.c.batch_id == batch_id))
    got = [(rows[attempts[i]]["status"], rows[attempts[i]]["error_code"]) for i in items]
    assert got == [
        ("errored", "batch_failed"),
        ("errored", "invalid_json_line"),
        ("errored", "batch_failed"),
        ("errored", "batch_failed"),
    ]
    assert rows[attempts[items[1]]]["error_message"] == (
        "line 2: invalid_json_line: Line 2 is not valid JSON."
    )
    assert "first: line 2: invalid_json_line" in rows[attempts[items[0]]]["error_message"]
    (batch,) = rows_of(db, BATCH, BATCH.c.id == batch_id)
    assert (batch["status"], batch["n_errored"]) == ("reconciled", 4)
    assert batch["error"] == "line 2: invalid_json_line: Line 2 is not valid JSON."
    before = snapshot(db, run_id)
    assert fail_batch(db, batch_id, errors, spec) == 0
    assert snapshot(db, run_id) == before


def test_fail_batch_with_a_batch_level_error(db, tmp_path):
    spec, _, items, batch_id, _ = one_batch(db, tmp_path, 3, end=False)
    errors = [{"code": "token_limit_exceeded", "message": "Enqueued token limit", "line": None}]
    assert fail_batch(db, batch_id, errors, spec) == 3
    rows = rows_of(db, ATTEMPT, ATTEMPT.c.batch_id == batch_id)
    assert {(r["status"], r["error_code"]) for r in rows} == {("errored", "token_limit_exceeded")}
    (batch,) = rows_of(db, BATCH, BATCH.c.id == batch_id)
    assert batch["status"] == "reconciled" and batch["ended_at"] is not None


def test_fail_batch_before_the_provider_accepted_it_abandons_it(db, tmp_path):
    spec = make_spec()
    run_id = ingest_items(db, spec, tmp_path, 2)
    items = item_ids(db, run_id)
    batch_id, _ = add_batch(db, spec, run_id, items, end=False)
    with db.begin() as conn:  # back to submitting: the create was refused with a 400
        conn.execute(sa.update(BATCH).where(BATCH.c.id == batch_id).values(status="submitting"))
    fail_batch(db, batch_id, [{"code": "invalid_request_error", "message": "bad"}], spec)
    (batch,) = rows_of(db, BATCH, BATCH.c.id == batch_id)
    assert (batch["status"], batch["n_errored"]) == ("abandoned", 2)
    assert batch["error"] == "invalid_request_error: bad"
    rows = rows_of(db, ATTEMPT, ATTEMPT.c.batch_id == batch_id)
    assert {(r["status"], r["error_code"], r["error_message"]) for r in rows} == {
        ("errored", "invalid_request_error", "invalid_request_error: bad")
    }


MODELS = [
    ("openai", "gpt-5-nano"),
    ("anthropic", "claude-sonnet-4-6"),
    ("anthropic", "claude-haiku-4-5"),
    ("openai", "gpt-5.4"),  # has a long-context tier at 272k input tokens
]


@settings(max_examples=300, deadline=None)
@given(
    model=st.sampled_from(MODELS),
    total=st.integers(0, 400_000),
    shares=st.tuples(*[st.integers(0, 1000)] * 3),
    output=st.integers(0, 50_000),
    negotiated=st.booleans(),
)
def test_fast_pricing_equals_attempt_costs(model, total, shares, output, negotiated):
    pricing = {}
    if negotiated:  # one exact rate, one fractional: both paths must agree with attempt_costs
        pricing = {
            "openai:gpt-5-nano": {"input_mtok": 0.07, "output_mtok": 0.3},
            "anthropic:claude-haiku-4-5": {"input_mtok": 1, "output_mtok": 3, "batch_factor": 0.37},
        }
    spec = make_spec(pricing=pricing)
    read, w5, w1 = (total * s // 3000 for s in shares)
    usage = Usage(total, read, w5, w1, output, output // 2)
    assert Pricer(spec).costs(*model, usage) == attempt_costs(spec, *model, usage)


def test_the_exact_path_tells_usages_apart_by_their_reasoning_tokens():
    """Past a long-context tier start the exact prices are remembered by usage; the baseline
    leaves reasoning out, so two usages that differ only in it have different baselines."""
    spec = make_spec()
    pricer = Pricer(spec)
    model = ("openai", "gpt-5.4")  # its long-context tier starts at 272k input tokens
    plain, thinking = (
        Usage(300_000, output_tokens=500),
        Usage(300_000, output_tokens=500, reasoning_tokens=400),
    )
    assert pricer.costs(*model, plain) == attempt_costs(spec, *model, plain)
    assert pricer.costs(*model, thinking) == attempt_costs(spec, *model, thinking)
    assert pricer.costs(*model, thinking).baseline_pusd < pricer.costs(*model, plain).baseline_pusd


def test_a_chunk_larger_than_one_lookup(db, tmp_path):
    """6,000 results in one transaction: the attempt lookup goes in slices of 5,000 keys."""
    spec, run_id, items, batch_id, attempts = one_batch(db, tmp_path, 6000)
    results = [Result(f"i{i}-a1", "succeeded", GOOD, USAGE) for i in reversed(items)]
    summary = reconcile_batch(db, batch_id, results, spec, chunk=20_000)
    assert summary.stored == {"succeeded": 6000} and summary.n_missing == 0
    with db.connect() as conn:
        done = conn.execute(
            sa.select(sa.func.count()).where(
                ITEM.c.run_id == run_id,
                ITEM.c.status == "succeeded",
                ITEM.c.final_attempt_id.isnot(None),
            )
        ).scalar()
    assert done == 6000


@pytest.mark.parametrize(
    "size, read, stored",
    [
        (4, 4, 2),  # chunks [a0 a1] [e a2 a3] [a4]: a0 and a1 fill 10 chars
        (4, 5, 5),
        (2, 3, 2),  # chunks [a0 a1] [e a2] [a3 a4]
        (2, 4, 4),
    ],
)
def test_a_chunk_is_cut_by_answer_text_as_well_as_by_count(
    db, tmp_path, monkeypatch, size, read, stored
):
    """Long answers keep a transaction's memory bounded: answers of 5 chars fill 10 chars two
    at a time. A stream cut after `read` results keeps the chunks written before it."""
    import batcher.run.reconcile as reconcile

    monkeypatch.setattr(reconcile, "CHUNK_TEXT_CHARS", 10)
    spec, run_id, items, batch_id, attempts = one_batch(db, tmp_path, 6)
    results = [Result(f"i{i}-a1", "succeeded", "x" * 5) for i in items[:5]]
    results.insert(2, Result(f"i{items[5]}-a1", "errored"))  # no text: counts towards size

    def cut_after(n):
        yield from results[:n]
        raise ConnectionError("stream cut")

    with pytest.raises(ConnectionError):
        reconcile_batch(db, batch_id, cut_after(read), spec, chunk=size)
    rows = rows_of(db, ATTEMPT, ATTEMPT.c.batch_id == batch_id)
    assert sum(row["status"] != "submitted" for row in rows) == stored


def test_an_answer_cut_off_at_max_tokens_is_never_a_success(db, tmp_path):
    spec, run_id, items, batch_id, _ = one_batch(db, tmp_path, 2)
    cut = Result(f"i{items[0]}-a1", "succeeded", GOOD, USAGE, stop_reason="max_tokens")
    whole = Result(f"i{items[1]}-a1", "succeeded", GOOD, USAGE, stop_reason="end")
    summary = reconcile_batch(db, batch_id, [cut, whole], spec)
    assert summary.stored == {"truncated": 1, "succeeded": 1}
    with db.connect() as conn:
        verdict, stop = conn.execute(
            sa.text("SELECT verdict, stop_reason FROM attempt WHERE custom_id = :c"),
            {"c": cut.custom_id},
        ).one()
    assert verdict.startswith("truncated") and stop == "max_tokens"


def test_results_of_one_status_that_leave_different_columns_null(db, tmp_path):
    """Rows leave their trailing NULL columns out, so one status is written by a statement
    per shape: every shape stores its own values and NULL for the rest."""
    spec, run_id, items, batch_id, attempts = one_batch(db, tmp_path, 7)
    cid = {i: f"i{i}-a1" for i in items}
    results = [
        Result(cid[items[0]], "succeeded", '{"label": "sales"}', USAGE, stop_reason="end"),
        Result(cid[items[1]], "succeeded", '{"label": "sales"}', USAGE),
        Result(cid[items[2]], "succeeded", "not json", USAGE),  # no answer key
        Result(cid[items[3]], "succeeded", "not json", USAGE, stop_reason="end"),
        Result(cid[items[4]], "errored", error_code="e1", error_message="m", error_class="invalid"),
        Result(cid[items[5]], "errored", error_code="e2", error_class="transient"),
        Result(cid[items[6]], "errored", error_code="e3"),
    ]
    summary = reconcile_batch(db, batch_id, results, spec)
    assert summary.stored == {"invalid": 4, "errored": 3}
    rows = by_id(rows_of(db, ATTEMPT, ATTEMPT.c.batch_id == batch_id))
    a = [rows[attempts[i]] for i in items]
    answers = [(r["output"], r["answer_key"], r["stop_reason"], r["input_tokens"]) for r in a[:4]]
    assert answers == [
        ('{"label": "sales"}', "sales", "end", 1300),
        ('{"label": "sales"}', "sales", None, 1300),
        ("not json", None, None, 1300),
        ("not json", None, "end", 1300),
    ]
    assert all(r["verdict"] for r in a[:4]) and not any(r["verdict"] for r in a[4:])
    assert all(isinstance(r["finished_at"], datetime) for r in a)
    errors = [(r["error_code"], r["error_class"], r["error_message"], r["output"]) for r in a[4:]]
    assert errors == [
        ("e1", "invalid", "m", None),
        ("e2", "transient", None, None),
        ("e3", None, None, None),
    ]
