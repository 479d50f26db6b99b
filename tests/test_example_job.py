"""The example job that `make demo` runs: its spec, its prompts and its generated input."""

from __future__ import annotations

import importlib.util
import re
import time
from collections import Counter
from pathlib import Path

import anthropic
import openai
import orjson
import pytest
import sqlalchemy as sa
from genai_prices import Usage, calc_price

from batcher.plan.ingest import ingest
from batcher.plan.tokens import count_tokens
from batcher.sandbox.responders import parse_labels
from batcher.spec import load_spec
from batcher.store import open_store
from batcher.store.models import TABLES

REPO = Path(__file__).resolve().parent.parent
SPEC_PATH = REPO / "jobs" / "example.toml"
INPUT_PATH = REPO / "jobs" / "example-input.jsonl"
CACHEABLE_MIN_TOKENS = 1024  # the smallest prompt either provider caches


def _generator():
    path = REPO / "scripts" / "make_example_input.py"
    spec = importlib.util.spec_from_file_location("make_example_input", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def spec():
    return load_spec(SPEC_PATH)


def test_committed_input_is_what_the_generator_writes(tmp_path):
    fresh = tmp_path / "tickets.jsonl"
    _generator().main(["--output", str(fresh)])
    assert fresh.read_bytes() == INPUT_PATH.read_bytes(), (
        "jobs/example-input.jsonl is stale: run .venv/bin/python scripts/make_example_input.py"
    )


def test_generator_is_seeded():
    gen = _generator()
    assert gen.generate(50, seed=7) == gen.generate(50, seed=7)
    assert gen.generate(50, seed=7) != gen.generate(50, seed=8)


def test_spec_names_the_three_tiers_and_queues(spec):
    assert Path(spec.input_file()).resolve() == INPUT_PATH
    assert spec.tiers == {
        "nano": "openai:gpt-5-nano",
        "mid": "openai:gpt-5-mini",
        "frontier": "anthropic:claude-sonnet-4-6",
    }
    assert spec.routing.ladder == ["nano", "mid", "frontier"]
    assert spec.frontier_tier == "frontier"
    assert set(spec.prompts) == {"billing", "technical", "account"}
    assert spec.max_usd is not None and spec.max_usd <= 10
    assert spec.validation.json_output and spec.validation.label_field == "label"


@pytest.mark.parametrize("tier", ["nano", "mid", "frontier"])
def test_tier_models_are_priced_offline(spec, tier):
    provider, model = spec.model_of(tier)
    price = calc_price(Usage(input_tokens=1000, output_tokens=100), model, provider_id=provider)
    assert price.total_price > 0


@pytest.mark.parametrize("name", ["billing", "technical", "account"])
def test_prompt_is_cacheable_and_names_the_label_set(spec, name):
    text = spec.prompts[name]
    assert CACHEABLE_MIN_TOKENS < count_tokens(text) <= 1500
    # The sandbox's responder (and a real model) answers within this exact list.
    assert list(parse_labels(text)) == spec.validation.labels
    assert '{"label": "<one of the labels>"}' in text
    assert len(re.findall(r"(?im)^allowed labels:", text)) == 1


def test_prompts_differ_by_queue(spec):
    assert len(set(spec.prompts.values())) == 3


def test_example_input_ingests_without_problems(spec, sqlite_url):
    engine = open_store(sqlite_url)
    result = ingest(engine, spec, spec.input_file())
    assert (result.n_items, result.n_rejected, result.rejects_path) == (400, 0, None)
    item = TABLES["item"]
    with engine.connect() as conn:
        per_prompt = conn.execute(
            sa.select(item.c.system_hash, sa.func.count()).group_by(item.c.system_hash)
        ).all()
    # Every ticket uses one of the three shared prompts, each shared by many tickets.
    assert len(per_prompt) == 3
    assert all(count >= 50 for _, count in per_prompt)


def test_input_mixes_queues_priorities_and_request_kinds():
    rows = _generator().generate()
    queues = Counter(row["metadata"]["queue"] for row in rows)
    assert set(queues) == {"billing", "technical", "account"}
    assert all(row["system_ref"] == row["metadata"]["queue"] for row in rows)
    priorities = Counter(row["metadata"]["priority"] for row in rows)
    assert priorities["urgent"] > 0 and priorities["normal"] > priorities["urgent"]
    starts = Counter(row["prompt"].split()[0] for row in rows)
    # simple (classify/extract), complex (analyze/debug) and ordinary instructions all occur
    assert starts["Classify"] + starts["Extract"] > 100
    assert starts["Analyze"] + starts["Debug"] > 30
    assert len(rows) - sum(starts[w] for w in ("Classify", "Extract", "Analyze", "Debug")) > 60


def test_routing_spreads_the_example_over_every_tier(spec):
    from batcher.plan.inputs import parse_lines
    from batcher.plan.routing import Router

    router = Router(spec)
    tiers, reasons = Counter(), Counter()
    with open(INPUT_PATH, "rb") as stream:
        for item in parse_lines(stream):
            tier, reason = router.route(
                item.model, item.tier, item.metadata, item.prompt_text(), tokens=0
            )
            tiers[tier] += 1
            reasons[reason.split(":")[0]] += 1
    assert sum(tiers.values()) == 400
    # Each tier gets a real share, so the demo shows routing, caching and escalation at work.
    assert all(tiers[t] >= 80 for t in ("nano", "mid", "frontier")), tiers
    assert reasons["rule 1"] > 0 and reasons["rule 2"] > 0 and reasons["classifier"] > 250


def _example_requests(spec, model: str, n: int, cache_ttl: str | None = None) -> list:
    """The first `n` example tickets as Requests for `model`, as the planner would build them."""
    from batcher.providers.base import Request

    rows = [orjson.loads(line) for line in INPUT_PATH.read_bytes().splitlines()[:n]]
    rows.sort(key=lambda row: row["system_ref"])  # cache groups stay contiguous
    return [
        Request(
            custom_id=row["id"],
            model=model,
            messages=[{"role": "user", "content": row["prompt"]}],
            max_tokens=spec.defaults.max_tokens,
            system=spec.prompts[row["system_ref"]],
            cache_key=f"example-{row['system_ref']}",
            cache_ttl=cache_ttl,
            params={"reasoning_effort": spec.defaults.reasoning_effort},
        )
        for row in rows
    ]


def _wait(poll, done, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while not done(state := poll()):
        assert time.monotonic() < deadline, f"batch not done in {timeout_s}s: {state}"
        time.sleep(0.1)
    return state


@pytest.fixture(scope="module")
def sandbox():
    from batcher.sandbox import start_sandbox

    with start_sandbox(speed=4.0) as served:
        yield served


@pytest.mark.parametrize("tier", ["nano", "mid"])
def test_openai_tiers_answer_the_example_within_its_labels(spec, sandbox, tier):
    from batcher.providers.openai import ENDPOINT, render_line

    _, model = spec.model_of(tier)
    requests = _example_requests(spec, model, 24)
    sandbox.configure(cold_requests={"openai": 0})  # cache mechanics, one after another
    client = openai.OpenAI(base_url=sandbox.openai_base_url, api_key="sk-test")
    upload = client.files.create(
        file=("example.jsonl", b"".join(render_line(r) for r in requests)), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h"
    )
    batch = _wait(lambda: client.batches.retrieve(batch.id), lambda b: b.status == "completed")
    lines = [
        orjson.loads(x) for x in client.files.content(batch.output_file_id).content.splitlines()
    ]
    assert len(lines) == len(requests)
    cached = 0
    for line in lines:
        body = line["response"]["body"]
        # max_tokens leaves room for the reasoning tokens gpt-5 models spend before answering
        assert body["choices"][0]["finish_reason"] == "stop"
        answer = orjson.loads(body["choices"][0]["message"]["content"])
        assert answer["label"] in spec.validation.labels
        cached += body["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached > 1024 * (len(requests) - 3)  # all but the first of each queue's group


def test_frontier_tier_answers_the_example_within_its_labels(spec, sandbox):
    from batcher.providers.anthropic import render_line

    _, model = spec.model_of("frontier")
    requests = _example_requests(spec, model, 24, cache_ttl="5m")
    client = anthropic.Anthropic(base_url=sandbox.anthropic_base_url, api_key="sk-ant-test")
    batch = client.messages.batches.create(
        requests=[orjson.loads(render_line(r)) for r in requests]
    )
    _wait(
        lambda: client.messages.batches.retrieve(batch.id),
        lambda b: b.processing_status == "ended",
    )
    results = list(client.messages.batches.results(batch.id))
    assert len(results) == len(requests)
    cache_reads = 0
    for row in results:
        assert row.result.type == "succeeded"
        message = row.result.message
        assert message.stop_reason == "end_turn"
        assert orjson.loads(message.content[0].text)["label"] in spec.validation.labels
        cache_reads += message.usage.cache_read_input_tokens or 0
    # ~1,400 tokens: under the 2,048 Sonnet 4.6 was measured to need, so nothing is cached
    # (which is why the planner sends these prompts without cache_control)
    assert cache_reads == 0


def test_mixed_example_spreads_over_four_providers_one_of_them_direct():
    from batcher.plan.inputs import parse_lines
    from batcher.plan.routing import Router

    mixed = load_spec(REPO / "jobs" / "example-mixed.toml")
    router = Router(mixed)
    providers = Counter()
    with open(INPUT_PATH, "rb") as stream:
        for item in parse_lines(stream):
            tier, _ = router.route(item.model, item.tier, item.metadata, item.prompt_text(), 0)
            providers[mixed.model_of(tier)[0]] += 1
    assert set(providers) == {"deepseek", "google", "openai", "anthropic"}, providers
    assert min(providers.values()) >= 40, providers  # `make demo-mixed` reports on each
    assert [p for p in providers if mixed.mode_of(p) == "direct"] == ["deepseek"]
