"""Before anything is stored or sent: a missing API key is one line naming the variable,
exit 2, no run left behind. And a cancel with nothing left to cancel says so, exit 0."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from cli_helpers import (  # noqa: F401 - fixtures
    cli_db_url_fixture,
    invoke,
)
from engine_helpers import (  # noqa: F401 - fixtures
    sandbox_fixture,
    served_fixture,
    write_job,
)

from batcher.store import TABLES, open_store


def n_runs(url: str) -> int:
    with open_store(url).connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(TABLES["run"])).scalar_one()


@pytest.mark.parametrize("command", ["run", "submit"])
def test_a_missing_key_stops_before_anything_is_stored(tmp_path, db_url, monkeypatch, command):
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    spec = write_job(tmp_path, 2)
    result = invoke(command, str(spec), "--db", db_url)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0].startswith("Error: ")
    assert len(result.stderr.splitlines()) == 1
    assert "_API_KEY is not set and tier" in result.stderr
    assert result.stderr.endswith(", or add --sandbox; nothing was stored or sent\n")
    assert n_runs(db_url) == 0


def test_the_missing_key_named_is_the_one_missing(tmp_path, db_url, monkeypatch, sandbox):
    for key, value in sandbox.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    text = write_job(tmp_path, 2).read_text()
    spec = tmp_path / "job" / "two.toml"
    spec.write_text(
        text.split("[tiers]")[0]
        + '[tiers]\nsmall = "openai:gpt-5-nano"\nbig = "anthropic:claude-sonnet-4-6"\n'
    )
    result = invoke("submit", str(spec), "--db", db_url)
    assert result.stderr == (
        f"Error: ANTHROPIC_API_KEY is not set and tier big of {spec} runs on anthropic: "
        "export ANTHROPIC_API_KEY, or add --sandbox; nothing was stored or sent\n"
    )
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-sandbox")
    assert invoke("submit", str(spec), "--db", db_url).exit_code == 3  # keys set: it goes


def test_cancel_of_a_finished_run_says_so_and_exits_0(tmp_path, db_url):
    spec = write_job(tmp_path, 3)
    assert invoke("run", str(spec), "--sandbox", "--db", db_url, "--json").exit_code == 0
    result = invoke("cancel", "1", "--db", db_url, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["succeeded"] == 3
    assert result.stderr == (
        "Note: run 1 has nothing left to cancel: its items had all ended (3 succeeded)\n"
    )
    status = json.loads(invoke("status", "1", "--db", db_url, "--json").stdout)
    assert status["status"] == "completed"
