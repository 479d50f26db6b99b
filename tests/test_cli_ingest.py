"""`batcher ingest`: exact output, exit codes (0 ok, 2 bad input) and --json."""

from __future__ import annotations

import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from batcher.cli import cli
from batcher.store import TABLES, open_store

SPEC = """name = "labels"
input = "in.jsonl"

[tiers]
nano = "openai:gpt-5-nano"
frontier = "anthropic:claude-sonnet-4-5"

[routing]
ladder = ["nano", "frontier"]

[defaults]
system = "You label tickets."
"""


@pytest.fixture
def job(tmp_path, monkeypatch):
    """A job folder as the working directory, so that paths in messages are short."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.toml").write_text(SPEC)
    return tmp_path


def write_input(folder, lines: list[bytes], name: str = "in.jsonl") -> None:
    (folder / name).write_bytes(b"".join(line + b"\n" for line in lines))


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def stored_items(url: str) -> list[tuple[str, int]]:
    engine = open_store(url)
    with engine.connect() as conn:
        item = TABLES["item"]
        rows = conn.execute(sa.select(item.c.custom_id, item.c.line_no).order_by(item.c.id)).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def test_ingest_prints_a_table(job, state_dir):
    write_input(job, [b'{"id": "a", "prompt": "x"}', b'{"id": "b", "prompt": "y"}'])
    result = run("ingest", "job.toml")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert result.stdout == (
        "    Ingested in.jsonl     \n"
        "┏━━━━━┳━━━━━━━┳━━━━━━━━━━┓\n"
        "┃ run ┃ items ┃ rejected ┃\n"
        "┡━━━━━╇━━━━━━━╇━━━━━━━━━━┩\n"
        "│   1 │     2 │        0 │\n"
        "└─────┴───────┴──────────┘\n"
    )
    assert stored_items(f"sqlite:///{state_dir / 'batcher.db'}") == [("a", 1), ("b", 2)]


def test_ingest_json_output_and_db_option(job, tmp_path):
    write_input(job, [b'{"id": "a", "prompt": "x"}'], name="other.jsonl")
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    result = run("ingest", "job.toml", "--input", "other.jsonl", "--db", url, "--json")
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.stdout)
    assert data == {
        "run": 1,
        "items": 1,
        "rejected": 0,
        "rejects_file": None,
        "input": "other.jsonl",
        "input_sha256": data["input_sha256"],
    }
    assert len(data["input_sha256"]) == 64
    assert stored_items(url) == [("a", 1)]


def test_bad_input_exits_2_listing_each_line(job, state_dir):
    write_input(
        job,
        [
            b'{"id": "a", "prompt": "x"}',
            b"{oops",
            b'{"id": "a", "prompt": "again"}',
            b'{"prompt": "x", "tier": "mid"}',
        ],
    )
    result = run("ingest", "job.toml")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "Error: in.jsonl: 3 invalid lines; nothing was stored or submitted. Fix them, or pass "
        "--skip-invalid to set them aside in a rejects file and go on:\n"
        "  in.jsonl:2: invalid JSON at column 2: unexpected character, expected a string key\n"
        "  in.jsonl:3: duplicate id 'a' (first used on line 1): give every item its own id\n"
        "  in.jsonl:4: \"tier\" 'mid' is not a tier of the job: use one of nano, frontier\n"
    )
    assert stored_items(f"sqlite:///{state_dir / 'batcher.db'}") == []


def test_skip_invalid_writes_rejects_and_says_where(job, state_dir):
    write_input(job, [b'{"id": "a", "prompt": "x"}', b"[]"])
    result = run("ingest", "job.toml", "--skip-invalid", "--rejects", "bad.jsonl")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(
        "│   1 │     1 │        1 │\n"
        "└─────┴───────┴──────────┘\n"
        "Rejected lines and their reasons: bad.jsonl\n"
    )
    [record] = [orjson.loads(line) for line in (job / "bad.jsonl").read_bytes().splitlines()]
    assert record == {
        "file": "in.jsonl",
        "line": 2,
        "reason": "expected a JSON object, got an array",
        "text": "[]\n",
    }


def test_skip_invalid_json_names_the_default_rejects_file(job, state_dir):
    write_input(job, [b'{"prompt": "x"}', b"nope"])
    result = run("ingest", "job.toml", "--skip-invalid", "--json")
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.stdout)
    assert (data["items"], data["rejected"]) == (1, 1)
    assert data["rejects_file"] == str(state_dir / "rejects" / "run-1-rejects.jsonl")


def test_empty_input_exits_2(job):
    write_input(job, [])
    result = run("ingest", "job.toml")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: in.jsonl: the file has no items (it is empty or blank); nothing was stored. "
        'Give one JSON object a line, e.g. {"id": "1", "prompt": "..."}.\n'
    )


def test_missing_input_exits_2(job):
    result = run("ingest", "job.toml", "--input", "nope.jsonl")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: nope.jsonl: cannot read the input: No such file or directory\n"
    )


def test_bad_spec_exits_2_naming_file_and_key(job):
    (job / "job.toml").write_text(SPEC.replace('ladder = ["nano", "frontier"]', 'ladder = ["x"]'))
    result = run("ingest", "job.toml")
    assert result.exit_code == 2
    assert (
        result.stderr
        == "Error: job.toml: routing.ladder[0]: 'x' is not a tier: use nano, frontier\n"
    )


def test_no_input_anywhere_exits_2(job):
    (job / "job.toml").write_text(SPEC.replace('input = "in.jsonl"\n', ""))
    result = run("ingest", "job.toml")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: job.toml: no input given: pass --input FILE or set `input` in the spec\n"
    )


def test_unreachable_database_exits_1(job):
    write_input(job, [b'{"prompt": "x"}'])
    result = run("ingest", "job.toml", "--db", "postgresql+psycopg://postgres@127.0.0.1:1/test")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: cannot open the state database postgresql+psycopg://postgres@127.0.0.1:1/test: "
    )
    assert result.stderr.endswith(" (check --db or BATCHER_DB)\n")
    assert result.stderr.count("\n") == 1


def test_help_teaches_with_examples():
    result = run("ingest", "--help")
    assert result.exit_code == 0
    assert "Check an input file against JOB and store its items as a new run." in result.stdout
    assert "batcher ingest jobs/example.toml --input nightly.jsonl --skip-invalid" in result.stdout
    for option in ("--input", "--skip-invalid", "--rejects", "--db", "--json"):
        assert option in result.stdout
