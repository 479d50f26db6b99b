"""`batcher export`: --columns picks and orders columns, metadata is a column per key
(`metadata.queue`), the parsed answer key is a column, and system prompts are named (their
text only with --with-prompts), so a CSV does not repeat a long prompt in every row."""

from __future__ import annotations

import csv
import io

import orjson
import pytest
from cli_helpers import invoke, own_state_dir
from engine_helpers import write_job


@pytest.fixture(scope="module")
def run_db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    spec = write_job(folder, 3)
    with open(spec.parent / "input.jsonl", "wb") as f:
        for i, queue in enumerate(["billing", "account", "billing"]):
            line = {"id": f"t{i}", "prompt": f"Ticket {i}", "metadata": {"queue": queue, "n": i}}
            f.write(orjson.dumps(line) + b"\n")
    db = f"sqlite:///{folder / 'state.db'}"
    with own_state_dir(folder):
        assert invoke("run", str(spec), "--sandbox", "--db", db).exit_code == 0
    return db


def test_csv_names_the_prompt_and_flattens_metadata(run_db):
    out = invoke("export", "1", "--format", "csv", "--db", run_db).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    header = out.splitlines()[0].split(",")
    assert "system" not in header and "metadata" not in header
    assert header[header.index("params") + 1 : header.index("params") + 3] == [
        "metadata.queue",
        "metadata.n",
    ]
    assert [r["metadata.queue"] for r in rows] == ["billing", "account", "billing"]
    assert {r["prompt"] for r in rows} == {"You label support tickets.…"}
    assert all(r["answer_key"] in {"billing", "technical", "account"} for r in rows)


def test_columns_pick_and_order(run_db):
    out = invoke("export", "1", "--format", "csv", "--db", run_db,
                 "--columns", "id,metadata.queue,status")  # fmt: skip
    assert out.stdout == (
        "id,metadata.queue,status\nt0,billing,succeeded\nt1,account,succeeded\n"
        "t2,billing,succeeded\n"
    )
    bad = invoke("export", "1", "--db", run_db, "--columns", "id,queue")
    assert bad.exit_code == 2
    assert bad.stderr.startswith("Error: --columns: no column 'queue': use id, line_no, prompt,")
    assert bad.stderr.rstrip().endswith("cost_usd, metadata.queue, metadata.n")


def test_with_prompts_includes_the_text(run_db):
    rows = invoke("export", "1", "--db", run_db, "--with-prompts").stdout.splitlines()
    first = orjson.loads(rows[0])
    assert first["system"].startswith("You label support tickets.\nAllowed labels:")
    assert first["metadata"] == {"queue": "billing", "n": 0}  # JSONL keeps the object
    assert "system" not in orjson.loads(invoke("export", "1", "--db", run_db).stdout.split("\n")[0])
