"""Runs without leftovers: the README quick start leaves exactly one run, `batcher runs
prune` removes runs that never sent anything (or old ones), and job reports skip them."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime

import orjson
import sqlalchemy as sa
from cli_helpers import invoke
from click.testing import CliRunner
from conftest import REPO
from report_db import add_run

from batcher.cli import cli
from batcher.report.build import select_runs
from batcher.store import TABLES, open_store

SPEC = """name = "labels"
input = "in.jsonl"

[tiers]
nano = "openai:gpt-5-nano"

[defaults]
system = "You label tickets."
max_tokens = 100
"""


def quick_start_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text().split("## Quick start", 1)[1]
    block = text.split("```", 2)[1]
    lines = [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith(".venv/bin/batcher ")]


def test_readme_quick_start_leaves_exactly_one_run(monkeypatch, sqlite_url):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("BATCHER_DB", sqlite_url)
    commands = quick_start_commands()
    assert [c[0] for c in commands] == ["plan", "run", "status"]
    for args in commands[:-1]:
        result = invoke(*args, "--json")
        assert result.exit_code == 0, result.output
    result = invoke("status", "--json")
    runs = orjson.loads(result.stdout)
    assert [(r["run"], r["status"], r["succeeded"]) for r in runs] == [(1, "completed", 400)]


def test_prune_removes_never_sent_runs_and_keeps_the_rest(tmp_path, monkeypatch, sqlite_url):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.toml").write_text(SPEC)
    (tmp_path / "in.jsonl").write_text('{"id": "a", "prompt": "Classify: refund"}\n')
    db = open_store(sqlite_url)
    done = add_run(db, created_at=datetime(2026, 11, 1, tzinfo=UTC))
    assert invoke("ingest", "job.toml", "--db", sqlite_url).exit_code == 0  # run 2, created
    assert (tmp_path / "state" / "batches").exists() is False

    result = invoke("runs", "prune", "--dry-run", "--db", sqlite_url, "--json")
    assert [r["run"] for r in orjson.loads(result.stdout)["would_remove"]] == [2]
    assert run_ids(sqlite_url) == [done, 2]
    assert select_runs(db, job="labels") == [done]  # the ingested run is no result

    result = invoke("runs", "prune", "--db", sqlite_url)
    assert result.exit_code == 0
    assert "Removed" in result.stdout and "created" in result.stdout
    assert run_ids(sqlite_url) == [done]

    result = invoke("runs", "prune", "--status", "completed", "--older-than", "9999d",
                    "--db", sqlite_url)  # fmt: skip
    assert result.stdout == "Removed: nothing to show\n"
    invoke("runs", "prune", "--status", "completed", "--older-than", "1d", "--db", sqlite_url)
    assert run_ids(sqlite_url) == []


def test_prune_age_must_have_a_unit(sqlite_url):
    result = CliRunner().invoke(cli, ["runs", "prune", "--older-than", "30", "--db", sqlite_url])
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: --older-than '30': write a number and a unit, e.g. 30d, 12h, 90m, 2w\n"
    )


def run_ids(url: str) -> list[int]:
    with open_store(url).connect() as conn:
        return list(conn.execute(sa.select(TABLES["run"].c.id).order_by("id")).scalars())
