"""Helpers for the engine tests: a served sandbox, small job specs and inputs, and checks
that every input line is accounted for and every billed cent is in the database."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from batcher.money.amounts import to_pusd
from batcher.providers import Clients
from batcher.providers.calls import RetryPolicy
from batcher.sandbox import start_sandbox
from batcher.store import open_store
from batcher.store.models import TABLES

ITEM, ATTEMPT, BATCH, RUN = TABLES["item"], TABLES["attempt"], TABLES["batch"], TABLES["run"]
LABELS = ["billing", "technical", "account"]
FAST_RETRY = RetryPolicy(attempts=12, base_s=0.02, cap_s=0.5)
POLL = 0.03

SPEC = r"""
name = "engine-test"
[tiers]
nano = "openai:gpt-5-nano"
mid = "openai:gpt-5-mini"
frontier = "anthropic:claude-sonnet-4-6"
[defaults]
max_tokens = 512
system = "You label support tickets.\nAllowed labels: billing, technical, account"
[routing]
classifier = "{classifier}"
ladder = ["nano", "mid", "frontier"]
[validation]
labels = ["billing", "technical", "account"]
[retry]
max_attempts = 4
transient_retries = 2
"""


@pytest.fixture(scope="module", name="served")
def served_fixture():
    with start_sandbox() as sandbox:
        yield sandbox


@pytest.fixture(name="sandbox")
def sandbox_fixture(served):
    served.reset()
    return served


@pytest.fixture(name="clients")
def clients_fixture(sandbox) -> Clients:
    return Clients.for_sandbox(sandbox, FAST_RETRY)


@pytest.fixture(name="db")
def db_fixture(tmp_path):
    return open_store(f"sqlite:///{tmp_path / 'state' / 'engine.db'}")


# The same job on Gemini: nano and mid on google, frontier on anthropic.
GEMINI_SPEC = SPEC.replace('"openai:gpt-5-nano"', '"google:gemini-2.5-flash-lite"').replace(
    '"openai:gpt-5-mini"', '"google:gemini-2.5-flash"'
)


# The same job on xAI: nano on xai, the rest as in SPEC.
XAI_SPEC = SPEC.replace('"openai:gpt-5-nano"', '"xai:grok-4-1-fast"')
# Nano on DeepSeek, which has no batch API: direct mode.
DEEPSEEK_SPEC = SPEC.replace('"openai:gpt-5-nano"', '"deepseek:deepseek-chat"')

# Nano on a named OpenAI-compatible endpoint ([providers.gateway]) at negotiated prices. Its
# base_url is the sandbox's OpenAI routes (`compatible_spec`), so the sandbox bills it as
# "openai"; in-process clients point it there anyway (Clients.for_sandbox).
NEGOTIATED = {"llama-70b": (Decimal("0.5"), Decimal("1.5"))}  # $ per million in, out
GATEWAY = """
[providers.gateway]
kind = "openai-compatible"
base_url = "{base_url}"
api_key_env = "GATEWAY_KEY"
mode = "{mode}"
{extra}
[pricing."gateway:llama-70b"]
input_mtok = 0.5
output_mtok = 1.5
batch_factor = 0.5
"""


def compatible_spec(mode: str, base_url: str = "https://gateway.invalid/v1", extra: str = ""):
    """SPEC with nano on the named provider `gateway` in `mode`, `extra` lines in its table
    (a write_job template)."""
    provider = GATEWAY.replace("{mode}", mode).replace("{base_url}", base_url)
    provider = provider.replace("{extra}", extra)
    return SPEC.replace('"openai:gpt-5-nano"', '"gateway:llama-70b"') + provider.replace(
        "{", "{{"
    ).replace("}", "}}")


def write_job(
    tmp_path: Path, n: int, classifier: str = "fixed:nano", name: str = "job", spec: str = SPEC
) -> Path:
    """A spec and its input of `n` tickets; returns the spec path (input set in the spec)."""
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "input.jsonl", "wb") as f:
        for i in range(n):
            f.write(
                orjson.dumps({"id": f"t{i}", "prompt": f"Ticket {i}: I cannot log in."}) + b"\n"
            )
    path = folder / "job.toml"
    path.write_text('input = "input.jsonl"\n' + spec.format(classifier=classifier))
    return path


def items_by_status(db, run_id: int) -> Counter:
    with db.connect() as conn:
        return Counter(
            dict(
                conn.execute(
                    sa.select(ITEM.c.status, sa.func.count())
                    .where(ITEM.c.run_id == run_id)
                    .group_by(ITEM.c.status)
                ).all()
            )
        )


def attempts(db, run_id: int) -> list[dict]:
    with db.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                sa.select(ATTEMPT).where(ATTEMPT.c.run_id == run_id).order_by(ATTEMPT.c.id)
            )
        ]


def batches(db, run_id: int) -> list[dict]:
    with db.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                sa.select(BATCH).where(BATCH.c.run_id == run_id).order_by(BATCH.c.round, BATCH.c.id)
            )
        ]


def price_billed(rows: list[dict]) -> int:
    """The sandbox's billed requests priced here, with genai-prices at batch rates."""
    total = 0
    for row in rows:
        t = row["tokens"]
        if row["model"] in NEGOTIATED:  # a named provider's own prices, from the spec
            per_in, per_out = NEGOTIATED[row["model"]]
            usd = (t["input"] + t["cache_read"]) * per_in + t["output"] * per_out
            factor = Decimal(1) if row["batch_id"] == "direct" else Decimal("0.5")
            total += to_pusd(usd / 1_000_000 * factor)
            continue
        writes = t["cache_write_5m"] + t["cache_write_1h"]
        usage = PriceUsage(
            input_tokens=t["input"] + t["cache_read"] + writes,
            cache_read_tokens=t["cache_read"],
            cache_write_tokens=writes,
            cache_write_1h_tokens=t["cache_write_1h"],
            output_tokens=t["output"],
        )
        if row["batch_id"] == "direct":  # direct mode: standard rates
            price = calc_price(usage, row["model"], provider_id=row["provider"])
            total += to_pusd(Decimal(price.total_price))
            continue
        if row["provider"] == "xai":  # no batch prices in genai-prices: xAI's documented 50%
            price = calc_price(usage, row["model"], provider_id="x-ai")
            total += to_pusd(Decimal(price.total_price) * Decimal("0.5"))
            continue
        price = calc_price(
            usage, row["model"], provider_id=row["provider"], price_context={"processing": "batch"}
        )
        total += to_pusd(Decimal(price.total_price))
    return total


def check_accounted(db, run_id: int, sandbox, n_items: int) -> None:
    """Every line is an item in a terminal status; every billed request is stored once, on
    the attempt that was sent with its custom_id, with the cost the test prices itself; and
    no custom_id reached the provider twice."""
    status = items_by_status(db, run_id)
    assert sum(status.values()) == n_items
    assert set(status) <= {"succeeded", "failed", "cancelled"}
    stats = sandbox.stats()
    assert not any(stats["duplicates"].values()), stats["duplicates"]
    rows = sandbox.billed()
    billed = Counter((r["provider"], r["custom_id"]) for r in rows)
    assert max(billed.values(), default=1) == 1
    # The sandbox serves the named provider on its OpenAI routes, so bills it as "openai".
    stored = {
        ("openai" if a["provider"] == "gateway" else a["provider"], a["custom_id"]): a
        for a in attempts(db, run_id)
    }
    for row in rows:
        attempt = stored[(row["provider"], row["custom_id"])]
        assert attempt["output_tokens"] == row["tokens"]["output"]
        assert attempt["cache_read_tokens"] == row["tokens"]["cache_read"]
    paid = [a for a in stored.values() if a["cost_pusd"]]
    assert len(paid) == len(rows)
    assert sum(a["cost_pusd"] for a in paid) == price_billed(rows)
