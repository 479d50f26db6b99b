"""`batcher plan`: the tier split, groups, batches and estimate; --json; the budget refusal
(exit 2, by how much); a plan is a dry run that leaves nothing in the database."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from batcher.cli import cli
from batcher.plan.planner import plan_input
from batcher.spec import load_spec
from batcher.store import TABLES, open_store

SPEC = """name = "labels"
input = "in.jsonl"
max_usd = 1.0

[tiers]
nano = "openai:gpt-5-nano"
frontier = "anthropic:claude-sonnet-4-6"

[routing]
ladder = ["nano", "frontier"]

[defaults]
system = "You label tickets."
max_tokens = 100
"""
LINES = [
    {"id": "a", "prompt": "Classify this ticket: refund please"},
    {"id": "b", "prompt": "Extract the order number: #123"},
    {"id": "c", "prompt": "Analyze the logs and design a fix"},
]


@pytest.fixture
def job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.toml").write_text(SPEC)
    (tmp_path / "in.jsonl").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in LINES))
    return tmp_path


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def run_count(url: str) -> int:
    with open_store(url).connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(TABLES["run"])).scalar_one()


def test_plan_shows_tiers_groups_batches_and_estimate(job, sqlite_url, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps cells to the terminal width
    result = run("plan", "job.toml", "--db", sqlite_url)
    assert result.exit_code == 0, result.output
    out = result.stdout
    titles = (
        "Tiers",
        "Cache groups: 2",
        "Batches: 2",
        "Estimate by model",
        "against the baselines",
    )
    for title in titles:
        assert title in out
    assert "classifier: low keyword in a short prompt" in out
    assert "classifier: 2+ high keywords" in out
    assert "all frontier, synchronous, no cache" in out and "(this plan)" in out
    assert "Expected cached share of input tokens: 0.0%" in out
    assert out.endswith(
        "Planned 3 items; nothing was stored or sent: `batcher run job.toml` plans the same "
        "and submits it.\n"
    )
    assert run_count(sqlite_url) == 0
    assert not list((job / "state").glob("batches/*/*"))  # the batch files went with it


def test_plan_json_matches_the_library(job, sqlite_url):
    result = run("plan", "job.toml", "--db", sqlite_url, "--json", "--output-tokens", "50")
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.stdout)
    assert (data["stored"], data["items"]) == (False, 3)
    assert sorted((b["model"], b["lines"]) for b in data["batches"]) == [
        ("claude-sonnet-4-6", 1),
        ("gpt-5-nano", 2),
    ]
    assert {t["tier"]: t["items"] for t in data["tiers"]} == {"nano": 2, "frontier": 1}
    engine = open_store(sqlite_url)
    report = plan_input(engine, load_spec(job / "job.toml"), "in.jsonl", output_tokens=50)
    est = report.estimate  # what `batcher run` plans and checks the budget against
    assert data["estimate"]["estimate_usd"] == str(est.cost_usd)
    assert data["estimate"]["output_tokens"] == 150
    scenarios = {k: Decimal(v) for k, v in data["estimate"]["scenarios_usd"].items()}
    assert scenarios["combined"] < scenarios["routing"] < scenarios["frontier_sync"]
    assert scenarios["batch"] * 2 == scenarios["frontier_sync"]


def test_over_budget_refuses_with_exit_2_and_stores_nothing(job, sqlite_url):
    result = run("plan", "job.toml", "--db", sqlite_url, "--max-usd", "0.000001")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: the estimate $")
    assert "over the budget of $0.000001 (--max-usd); nothing was submitted" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert run_count(sqlite_url) == 0


def test_spec_budget_applies_without_the_option(job, sqlite_url):
    (job / "job.toml").write_text(SPEC.replace("max_usd = 1.0", "max_usd = 0.0000001"))
    result = run("plan", "job.toml", "--db", sqlite_url)
    assert result.exit_code == 2
    assert "over the budget of $0.0000001 (job.toml: max_usd)" in result.stderr


def test_unknown_model_is_refused_before_ingest(job, sqlite_url):
    (job / "job.toml").write_text(SPEC.replace("gpt-5-nano", "gpt-5-nanoo"))
    result = run("plan", "job.toml", "--db", sqlite_url)
    assert result.exit_code == 2
    assert "tiers.nano = 'openai:gpt-5-nanoo'" in result.stderr
    engine = open_store(sqlite_url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(TABLES["run"])).scalar() == 0


def test_help_teaches():
    result = run("plan", "--help")
    assert result.exit_code == 0
    assert "Examples:" in result.stdout and "--max-usd" in result.stdout


def test_plan_shows_why_a_gemini_group_gets_no_explicit_cache(job, sqlite_url, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    prefix = "You label tickets. " + "Read the whole ticket first. " * 400  # ~2,400+ tokens
    spec = SPEC.replace('"openai:gpt-5-nano"', '"google:gemini-2.5-flash"').replace(
        'system = "You label tickets."', f'system = "{prefix}"'
    )
    (job / "job.toml").write_text(spec)
    result = run("plan", "job.toml", "--db", sqlite_url)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Gemini explicit context caching (cachedContents), per group:" in out
    (line,) = [x for x in out.splitlines() if "gemini-2.5-flash: explicit cache of" in x]
    # $1.00/M/h for 24 h plus creation at $0.30/M against $0.15 - $0.03 a missed request:
    # (24 + 0.30) / 0.12 = 202.5 misses, whatever the prefix.
    assert "($1.00/M/h)" in line and "break-even 203 misses of 2 requests: can never pay" in line
    assert "Not used: batch mode is not shown to accept cachedContent." in line
    assert "claude" not in line


def test_explicit_cache_break_even_is_storage_and_creation_over_the_saving_a_miss():
    from batcher.money.prices import unit_prices
    from batcher.providers import wire_format

    google = wire_format("google")

    def arithmetic(model: str, n: int):
        standard = unit_prices("google", model, batch=False)
        batch = unit_prices("google", model, batch=True)
        return google.explicit_cache_arithmetic(model, 10_000, n, standard, batch)

    flash = arithmetic("gemini-2.5-flash", 1_000)
    assert flash.storage_usd == Decimal("0.24")  # 10k tokens x $1.00/M/h x 24 h
    assert flash.create_usd == Decimal("0.003")  # 10k x $0.30/M
    assert flash.saved_per_miss_usd == Decimal("0.0012")  # 10k x ($0.15 - $0.03)/M
    assert flash.break_even_misses == 203 and flash.pays_at_most()
    assert arithmetic("gemini-2.5-flash-lite", 1_000).break_even_misses == 603  # 24.1 / 0.04
    pro = arithmetic("gemini-2.5-pro", 200)
    assert pro.break_even_misses == 219 and not pro.pays_at_most()  # 109.25 / 0.50
    prices = unit_prices("google", "gemini-2.5-flash", batch=True)
    assert google.explicit_cache_arithmetic("gemini-9", 10_000, 9, prices, prices) is None
