"""A named OpenAI-compatible provider ([providers.NAME] kind = "openai-compatible") as a tier,
in batch and in direct mode, through the openai SDK against the sandbox; its key comes only
from the variable it names."""

from __future__ import annotations

import pytest
from engine_helpers import (  # noqa: F401 - fixtures
    POLL,
    attempts,
    batches,
    clients_fixture,
    compatible_spec,
    db_fixture,
    items_by_status,
    price_billed,
    sandbox_fixture,
    served_fixture,
    write_job,
)

from batcher.providers import Clients, connect
from batcher.providers.calls import ProviderError
from batcher.run import engine
from batcher.spec import load_spec


def run_job(db, clients, tmp_path, mode: str, n: int = 4):
    job = load_spec(write_job(tmp_path, n, "fixed:nano", spec=compatible_spec(mode)))
    run_id = engine.start_run(db, job, job.input_file())
    return run_id, engine.drive_run(db, run_id, clients=clients, poll=POLL)


@pytest.mark.parametrize("mode", ["batch", "direct"])
def test_named_provider_runs_and_costs_its_negotiated_prices(db, sandbox, clients, tmp_path, mode):
    run_id, outcome = run_job(db, clients, tmp_path, mode)
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    assert items_by_status(db, run_id) == {"succeeded": 4}
    (batch,) = batches(db, run_id)
    assert batch["provider"] == "gateway"
    assert batch["provider_batch_id"].startswith("direct-" if mode == "direct" else "batch_")
    rows = sandbox.billed()
    assert {r["model"] for r in rows} == {"llama-70b"} and len(rows) == 4
    assert sum(a["cost_pusd"] for a in attempts(db, run_id)) == price_billed(rows)  # spec's prices


def test_named_provider_key_comes_only_from_its_variable(tmp_path, monkeypatch):
    spec = load_spec(write_job(tmp_path, 1, "fixed:nano", spec=compatible_spec("direct")))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-the-gateway")
    monkeypatch.delenv("GATEWAY_KEY", raising=False)
    with pytest.raises(ProviderError, match="GATEWAY_KEY"):
        connect("gateway", Clients(), spec)
    monkeypatch.setenv("GATEWAY_KEY", "gw-key")
    provider = connect("gateway", Clients(), spec)
    assert (provider.api_key, provider.base_url) == ("gw-key", "https://gateway.invalid/v1")
