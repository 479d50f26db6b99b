"""`batcher items` and `batcher show`: a run's items and one item's attempts, read from the
database after a real run on the sandbox."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from cli_helpers import invoke
from click.testing import CliRunner
from engine_helpers import write_job

from batcher.cli import cli
from batcher.money.amounts import fmt_money


@pytest.fixture
def ran(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    result = invoke("run", str(write_job(tmp_path, 3)), "--sandbox", "--db", db, "--json")
    assert result.exit_code == 0, result.output
    return db


def test_items_lists_every_item_in_input_order(ran):
    result = invoke("items", "1", "--db", ran)
    assert result.exit_code == 0
    data = json.loads(invoke("items", "1", "--db", ran, "--json").stdout)
    costs = [fmt_money(Decimal(i["cost_usd"])) for i in data]  # exact in JSON, short here
    answers = [i["output"] for i in data]
    width = max(len(c) for c in costs)
    answer_width = max(len("answer"), *(len(a) for a in answers))
    rows = [
        f"│ t{n} │    {n + 1} │ nano │ succeeded │        1 │ {cost:>{width}} │ "
        f"{answer:<{answer_width}} │"
        for n, (cost, answer) in enumerate(zip(costs, answers, strict=True))
    ]
    lines = result.stdout.splitlines()
    assert lines[0].strip() == "Run 1: 3 items"
    assert lines[2].split("┃")[1:-1] == [
        " id ",
        " line ",
        " tier ",
        " status    ",
        " attempts ",
        " cost".ljust(width + 2),
        " answer".ljust(answer_width + 2),
    ]
    assert lines[4:7] == rows and all(len(line) <= 100 for line in lines)
    assert [(i["id"], i["line"], i["status"], i["attempts"]) for i in data] == [
        ("t0", 1, "succeeded", 1), ("t1", 2, "succeeded", 1), ("t2", 3, "succeeded", 1)
    ]  # fmt: skip
    assert invoke("items", "1", "--status", "failed", "--db", ran, "--json").stdout == "[]\n"
    assert (
        len(json.loads(invoke("items", "1", "--tier", "nano", "--db", ran, "--json").stdout)) == 3
    )


def test_show_gives_every_attempt_with_its_answer(ran):
    result = invoke("show", "1", "t1", "--db", ran)
    assert result.exit_code == 0
    detail = json.loads(invoke("show", "1", "t1", "--db", ran, "--json").stdout)
    (attempt,) = detail["attempts"]
    assert attempt["provider_batch_id"].startswith("batch_")
    assert (attempt["model"], attempt["status"], attempt["verdict"]) == (
        "openai:gpt-5-nano", "succeeded", "ok: label"
    )  # fmt: skip
    lines = result.stdout.splitlines()
    assert "│ route_reason │ classifier: fixed:nano " in result.stdout
    assert f"│ 1 │ openai:gpt-5-nano │ {attempt['batch']} │ succeeded │" in result.stdout
    assert lines[-1] == f"attempt 1 (nano) answered: {detail['output']}"
    assert detail["output"] in ("billing", "technical", "account")


def test_show_of_an_unknown_item_names_the_listing_command(ran):
    result = CliRunner().invoke(cli, ["show", "1", "nope", "--db", ran])
    assert result.exit_code == 2
    assert result.stderr == "Error: run 1 has no item 'nope': `batcher items 1` lists them\n"
