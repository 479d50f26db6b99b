"""Exports round-trip: every item comes back, in input order, with its fields, from JSONL, CSV
and Parquet files read with the standard readers."""

from __future__ import annotations

import csv
import sys
from decimal import Decimal

import orjson
import pyarrow.parquet as pq
import pytest
from report_db import SYSTEM, add_item, add_run, attempt, build_completed_run

from batcher.errors import UsageError
from batcher.money.amounts import to_usd
from batcher.report import exports
from batcher.report.exports import COLUMNS, export_run, iter_export_rows
from batcher.store import open_store


@pytest.fixture
def db(db_url):
    engine = open_store(db_url)
    yield engine
    engine.dispose()


def build_rich_run(db):
    """The standard run plus an item with every optional input, stored out of line order."""
    run_id, attempts = build_completed_run(db)
    request = {
        "messages": [
            {"role": "user", "content": 'Classify: "refund, please"\nThanks'},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "ünïcode ✓"},
        ],
        "max_tokens": 64,
        "temperature": 0.5,
        "params": {"top_p": 0.9, "stop": ["\n"]},
    }
    extra = [attempt("mid", "succeeded", 2_500_000, output_tokens=7)]
    add_item(
        db,
        run_id,
        0,
        "succeeded",
        extra,
        group="tech",
        output='{"label": "refund"}',
        request=request,
        metadata={"queue": "billing", "priority": 2},
    )
    return run_id, attempts + [{**extra[0], "line_no": 0}]


def expected_items(attempts):
    """What an export must say of each item, worked out from the attempts inserted."""
    items = {}
    for a in attempts:
        item = items.setdefault(a["line_no"], {"attempts": 0, "cost": 0, "input_tokens": 0})
        item["attempts"] += 1
        item["cost"] += a["cost_pusd"]
        item["input_tokens"] += a["input_tokens"]
        item["tier"], item["model"] = a["tier"], a["model"]  # the last one is the final one
    return items


# CSV and Parquet: metadata as a column per key, in order of first appearance
_AT = COLUMNS.index("metadata")
FLAT_COLUMNS = (*COLUMNS[:_AT], "metadata.queue", "metadata.priority", *COLUMNS[_AT + 1 :])


def check_rows(rows, attempts, *, parse=lambda value: value):
    """Common checks; `parse` turns JSON text back into values for CSV and Parquet."""
    expected = expected_items(attempts)
    assert [r["line_no"] for r in rows] == sorted(expected)  # every item, in input order
    for row in rows:
        want = expected[row["line_no"]]
        assert row["id"] == f"t-{row['line_no']}"
        assert (row["tier"], row["model"]) == (want["tier"], want["model"])
        assert row["attempts"] == want["attempts"]
        assert row["input_tokens"] == want["input_tokens"]
        assert Decimal(row["cost_usd"]) == to_usd(want["cost"])
    first = rows[0]
    assert first["system"] == SYSTEM["tech"]
    assert parse(first["messages"])[2] == {"role": "user", "content": "ünïcode ✓"}
    assert parse(first["params"]) == {"top_p": 0.9, "stop": ["\n"]}
    if "metadata" in first:  # JSONL: one object
        assert parse(first["metadata"]) == {"queue": "billing", "priority": 2}
    else:  # CSV, Parquet: a column per key
        assert (first["metadata.queue"], first["metadata.priority"]) == ("billing", "2")
    assert first["max_tokens"] == 64 and first["temperature"] == 0.5
    assert first["output"] == '{"label": "refund"}' and first["status"] == "succeeded"
    failed = next(r for r in rows if r["status"] == "failed")
    assert failed["output"] is None and failed["system"] is None
    assert failed["tier"] == "frontier"
    assert failed["error"] == "label 'maybe' is not one of refund, invoice, other"
    assert all(r["error"] is None for r in rows if r["status"] == "succeeded")


def test_jsonl_round_trips(db, tmp_path):
    run_id, attempts = build_rich_run(db)
    path = tmp_path / "out.jsonl"
    assert export_run(db, run_id, path, "jsonl", with_prompts=True) == 7

    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert all(list(r) == list(COLUMNS) for r in rows)
    check_rows(rows, attempts)
    assert rows[1]["cost_usd"] == "0.000001000001"  # exact dollars as a string


def test_csv_round_trips(db, tmp_path):
    run_id, attempts = build_rich_run(db)
    path = tmp_path / "out.csv"
    export_run(db, run_id, path, "csv", with_prompts=True)

    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == FLAT_COLUMNS
        rows = list(reader)
    numbers = ("line_no", "attempts", "input_tokens", "max_tokens")
    for row in rows:
        for key, value in row.items():
            row[key] = None if value == "" else int(value) if key in numbers else value
        row["temperature"] = None if row["temperature"] is None else float(row["temperature"])
    check_rows(rows, attempts, parse=orjson.loads)


def test_parquet_round_trips_in_row_groups(db, tmp_path, monkeypatch):
    monkeypatch.setattr(exports, "ROW_GROUP", 3)  # several row groups even for a small run
    run_id, attempts = build_rich_run(db)
    path = tmp_path / "out.parquet"
    export_run(db, run_id, path, "parquet", with_prompts=True)

    table = pq.read_table(path)
    assert tuple(table.column_names) == FLAT_COLUMNS
    assert str(table.schema.field("cost_usd").type) == "decimal128(24, 12)"
    assert pq.ParquetFile(path).num_row_groups == 3  # 7 rows in groups of 3, 3, 1
    check_rows(table.to_pylist(), attempts, parse=orjson.loads)


def test_rows_stream_in_chunks_ordered_by_line(db):
    run_id = add_run(db)
    for line_no in [9, 2, 7, 1, 12, 3, 5, 11, 4, 8, 10, 6]:  # stored out of order
        add_item(db, run_id, line_no, "succeeded", [attempt("nano", "succeeded", line_no)])
    chunks = list(iter_export_rows(db, run_id, chunk=5))
    assert [len(c) for c in chunks] == [5, 5, 2]
    assert [r["line_no"] for c in chunks for r in c] == list(range(1, 13))


def test_an_item_without_attempts_is_exported_with_zero_cost(db, tmp_path):
    run_id = add_run(db, status="running")
    add_item(db, run_id, 1, "pending", [], group=None)
    rows = [orjson.loads(x) for x in _jsonl(db, run_id, tmp_path).splitlines()]
    assert rows == [rows[0]] and rows[0]["status"] == "pending"
    assert (rows[0]["attempts"], rows[0]["cost_usd"], rows[0]["model"]) == (
        0,
        "0.000000000000",
        None,
    )


def _jsonl(db, run_id, tmp_path):
    path = tmp_path / "x.jsonl"
    export_run(db, run_id, path, "jsonl")
    return path.read_bytes()


def test_parquet_without_pyarrow_names_the_extra(db, tmp_path, monkeypatch):
    run_id, _ = build_completed_run(db)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what Python does when it is absent
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(UsageError, match=r"pip install 'batcher\[parquet\]'"):
        export_run(db, run_id, tmp_path / "out" / "x.parquet", "parquet")
    assert not (tmp_path / "out").exists()


def test_an_unknown_run_leaves_no_file(db, tmp_path):
    with pytest.raises(UsageError, match=r"run 404 not found"):
        export_run(db, 404, tmp_path / "out" / "x.jsonl", "jsonl")
    assert list((tmp_path / "out").iterdir()) == []  # neither the file nor its .partial
