"""Preflight on every command that sends: keys for every provider the plan needs (items may
name their own model) on run, submit, resume and scheduler; a base URL that does not answer
stops the command, or a running run, after polling.unreachable_after_s with what to check."""

from __future__ import annotations

import socket

import orjson
import pytest
import sqlalchemy as sa
from cli_helpers import (  # noqa: F401 - fixtures
    cli_db_url_fixture,
    env_sandbox_fixture,
    invoke,
)
from engine_helpers import (  # noqa: F401 - fixtures
    FAST_RETRY,
    sandbox_fixture,
    served_fixture,
    write_job,
)

from batcher.providers import Clients
from batcher.providers.calls import RetryPolicy
from batcher.run.engine import drive_run
from batcher.run.poll import PollSettings
from batcher.store import TABLES, open_store


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def n_runs(url: str) -> int:
    with open_store(url).connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(TABLES["run"])).scalar_one()


def test_resume_without_a_key_is_one_line_naming_it(tmp_path, db_url, env_sandbox, monkeypatch):
    spec = write_job(tmp_path, 2)
    assert invoke("submit", str(spec), "--db", db_url).exit_code == 3
    monkeypatch.delenv("OPENAI_API_KEY")
    result = invoke("resume", "1", "--db", db_url)
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: OPENAI_API_KEY is not set and tiers nano, mid of {spec} run on openai: "
        "export OPENAI_API_KEY, or add --sandbox; then `batcher resume 1` continues\n"
    )


# `run` lays its batches out as it submits them: the item's model is read from the items
@pytest.mark.parametrize("command", ["submit", "run"])
def test_an_items_own_model_needs_its_key_too(tmp_path, db_url, env_sandbox, monkeypatch, command):
    spec = write_job(tmp_path, 2)
    text = spec.read_text().replace('frontier = "anthropic:claude-sonnet-4-6"', "")
    spec.write_text(text.replace(', "frontier"]', "]"))
    line = {"id": "x", "prompt": "hi", "model": "anthropic:claude-sonnet-4-6"}
    with open(spec.parent / "input.jsonl", "ab") as f:
        f.write(orjson.dumps(line) + b"\n")
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    result = invoke(command, str(spec), "--db", db_url)
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: ANTHROPIC_API_KEY is not set and items of {spec} name anthropic models: "
        "export ANTHROPIC_API_KEY, or add --sandbox; nothing was stored or sent\n"
    )
    assert n_runs(db_url) == 0


def test_scheduler_refuses_to_start_without_a_key(tmp_path, db_url, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    spec = write_job(tmp_path, 1)
    added = invoke("schedule", "add", "nightly", "--job", str(spec), "--every", "1d",
                   "--db", db_url)  # fmt: skip
    assert added.exit_code == 0, added.output
    result = invoke("scheduler", "--db", db_url)
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: ANTHROPIC_API_KEY is not set and tier frontier of {spec} runs on anthropic: "
        "export ANTHROPIC_API_KEY, or add --sandbox; schedule nightly would fail at every "
        "firing\n"
    )


def test_an_unreachable_base_url_stops_before_anything_is_stored(
    tmp_path, db_url, env_sandbox, monkeypatch, closed_port
):
    spec = write_job(tmp_path, 2)
    spec.write_text(spec.read_text() + "[polling]\nunreachable_after_s = 0.5\n")
    url = f"http://127.0.0.1:{closed_port}/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    result = invoke("run", str(spec), "--db", db_url)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: openai did not answer at {url} for 0.5 s: check OPENAI_BASE_URL, the network "
        "and the provider's status page; nothing was stored or sent; run the same command "
        "again\n"
    )
    assert n_runs(db_url) == 0


def test_a_provider_gone_silent_mid_run_stops_it_resumably(
    tmp_path, db_url, env_sandbox, closed_port
):
    spec = write_job(tmp_path, 2)
    assert invoke("submit", str(spec), "--db", db_url).exit_code == 3
    url = f"http://127.0.0.1:{closed_port}/v1"
    dead = Clients(
        openai_base_url=url,
        openai_api_key="sk-test",
        policy=RetryPolicy(attempts=2, base_s=0.01, cap_s=0.01),
    )
    outcome = drive_run(
        open_store(db_url), 1, clients=dead, poll=PollSettings(0.01, 0.02, unreachable_s=0.2)
    )
    assert outcome.status == "failed"
    assert outcome.message.startswith(f"openai did not answer at {url} for 0.")
    assert outcome.message.endswith(
        " s: check OPENAI_BASE_URL, the network and the provider's status page; once it "
        "answers, `batcher resume 1` continues"
    )
    resumed = drive_run(
        open_store(db_url), 1, clients=Clients.for_sandbox(env_sandbox, FAST_RETRY), poll=0.03
    )
    assert resumed.status == "completed" and resumed.items == {"succeeded": 2}
