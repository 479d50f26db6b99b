"""A named OpenAI-compatible provider ([providers.NAME] kind = "openai-compatible") as a tier,
in batch and in direct mode, through the openai SDK against the sandbox; its key comes only
from the variable it names."""

from __future__ import annotations

from decimal import Decimal

import pytest
from engine_helpers import (  # noqa: F401 - fixtures
    POLL,
    SPEC,
    attempts,
    batches,
    clients_fixture,
    db_fixture,
    items_by_status,
    sandbox_fixture,
    served_fixture,
    write_job,
)

from batcher.money.amounts import to_pusd
from batcher.providers import Clients, connect
from batcher.providers.calls import ProviderError
from batcher.run import engine
from batcher.spec import load_spec

GATEWAY = """
[providers.gateway]
kind = "openai-compatible"
base_url = "https://gateway.invalid/v1"
api_key_env = "GATEWAY_KEY"
mode = "{mode}"

[pricing."gateway:llama-70b"]
input_mtok = 0.5
output_mtok = 1.5
batch_factor = 0.5
"""
GATEWAY_SPEC = SPEC.replace('"openai:gpt-5-nano"', '"gateway:llama-70b"')


def run_job(db, clients, tmp_path, mode: str, n: int = 4):
    spec = GATEWAY_SPEC + GATEWAY.replace("{mode}", mode).replace("{", "{{").replace("}", "}}")
    job = load_spec(write_job(tmp_path, n, "fixed:nano", spec=spec))
    run_id = engine.start_run(db, job, job.input_file())
    return run_id, engine.drive_run(db, run_id, clients=clients, poll=POLL)


def priced(rows: list[dict], factor: Decimal) -> int:
    """The spec's negotiated prices applied here to what the sandbox billed."""
    total = 0
    for row in rows:
        t = row["tokens"]
        usd = Decimal(t["input"] + t["cache_read"]) * Decimal("0.5") + t["output"] * Decimal("1.5")
        total += to_pusd(usd / 1_000_000 * factor)
    return total


@pytest.mark.parametrize("mode,factor", [("batch", Decimal("0.5")), ("direct", Decimal(1))])
def test_named_provider_runs_and_costs_its_negotiated_prices(
    db, sandbox, clients, tmp_path, mode, factor
):
    run_id, outcome = run_job(db, clients, tmp_path, mode)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    assert items_by_status(db, run_id) == {"succeeded": 4}
    (batch,) = batches(db, run_id)
    assert batch["provider"] == "gateway"
    assert batch["provider_batch_id"].startswith("direct-" if mode == "direct" else "batch_")
    rows = sandbox.billed()
    assert {r["model"] for r in rows} == {"llama-70b"} and len(rows) == 4
    assert sum(a["cost_pusd"] for a in attempts(db, run_id)) == priced(rows, factor)


def test_named_provider_key_comes_only_from_its_variable(tmp_path, monkeypatch):
    spec = load_spec(write_job(tmp_path, 1, "fixed:nano", spec=GATEWAY_SPEC + GATEWAY.replace(
        "{mode}", "direct").replace("{", "{{").replace("}", "}}")))  # fmt: skip
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-the-gateway")
    monkeypatch.delenv("GATEWAY_KEY", raising=False)
    with pytest.raises(ProviderError, match="GATEWAY_KEY"):
        connect("gateway", Clients(), spec)
    monkeypatch.setenv("GATEWAY_KEY", "gw-key")
    provider = connect("gateway", Clients(), spec)
    assert (provider.api_key, provider.base_url) == ("gw-key", "https://gateway.invalid/v1")
