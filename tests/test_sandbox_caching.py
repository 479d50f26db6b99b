"""Prompt-cache accounting through the SDKs: OpenAI prefix caching and Anthropic cache_control."""

from __future__ import annotations

import pytest
from sandbox_fixtures import (  # noqa: F401 - fixtures
    ant_fixture,
    ant_request,
    chat_line,
    oai_fixture,
    read_file,
    results,
    sandbox_fixture,
    served_fixture,
    submit,
    wait_anthropic,
    wait_openai,
)

from batcher.plan.tokens import count_tokens

LONG = " ".join(f"Rule {i}: answer carefully and cite clause {i * 7}." for i in range(180))


@pytest.fixture(autouse=True)
def _no_cold_requests(request, sandbox):
    """These tests look at cache mechanics one request after another; the concurrency of a
    batch (its first requests of a group miss) has tests of its own below."""
    if "cold" not in request.node.name:
        sandbox.configure(cold_requests={"openai": 0, "anthropic": 0})


def _usage(oai, lines, **kwargs):
    batch = wait_openai(oai, submit(oai, lines, **kwargs).id)
    out = read_file(oai, batch.output_file_id)
    return {cid: row["response"]["body"]["usage"] for cid, row in out.items()}


def test_openai_first_writes_others_read_in_128_steps(oai):
    assert 2100 < count_tokens(LONG) < 4000
    usage = _usage(oai, [chat_line(f"r{i}", f"item {i}", system=LONG) for i in range(6)])
    cached = {cid: u["prompt_tokens_details"]["cached_tokens"] for cid, u in usage.items()}
    assert cached["r0"] == 0
    hits = {cached[f"r{i}"] for i in range(1, 6)}
    assert len(hits) == 1
    hit = hits.pop()
    assert hit >= 1024 and hit % 128 == 0 and hit <= usage["r1"]["prompt_tokens"]
    assert usage["r1"]["prompt_tokens"] - hit < 128 + 20  # all the shared prefix is cached


def test_openai_short_prompts_are_never_cached(oai):
    usage = _usage(oai, [chat_line(f"r{i}", "short", system="brief") for i in range(3)])
    assert all(u["prompt_tokens_details"]["cached_tokens"] == 0 for u in usage.values())


def test_openai_prompt_cache_key_separates_caches(oai):
    lines = [
        chat_line("a0", "x", system=LONG, prompt_cache_key="A"),
        chat_line("a1", "y", system=LONG, prompt_cache_key="A"),
        chat_line("b0", "z", system=LONG, prompt_cache_key="B"),
    ]
    usage = _usage(oai, lines)
    cached = {cid: u["prompt_tokens_details"]["cached_tokens"] for cid, u in usage.items()}
    assert cached["a0"] == 0 and cached["a1"] > 0 and cached["b0"] == 0


def test_openai_cache_spans_batches_and_expires_on_the_clock(sandbox, oai):
    _usage(oai, [chat_line("w", "first", system=LONG)])
    warm = _usage(oai, [chat_line("r", "second", system=LONG)])
    assert warm["r"]["prompt_tokens_details"]["cached_tokens"] > 0
    sandbox.advance_clock(3600)  # longer than the 10 minute inactivity TTL
    cold = _usage(oai, [chat_line("c", "third", system=LONG)])
    assert cold["c"]["prompt_tokens_details"]["cached_tokens"] == 0


def _system(ttl: str | None = "5m", text: str = LONG) -> list[dict]:
    block = {"type": "text", "text": text}
    if ttl:
        block["cache_control"] = {"type": "ephemeral", "ttl": ttl}
    return [block]


def _ant_usage(ant, requests):
    batch = ant.messages.batches.create(requests=requests)
    wait_anthropic(ant, batch.id)
    return {
        cid: r.message.usage if r.type == "succeeded" else r
        for cid, r in results(ant, batch.id).items()
    }


def test_anthropic_write_then_read_with_5m_ttl(ant):
    usage = _ant_usage(
        ant, [ant_request(f"a-{i}", f"item {i}", system=_system("5m")) for i in range(4)]
    )
    first = usage["a-0"]
    prefix = first.cache_creation_input_tokens
    assert prefix >= count_tokens(LONG)
    assert first.cache_read_input_tokens == 0
    assert first.cache_creation.ephemeral_5m_input_tokens == prefix
    assert first.cache_creation.ephemeral_1h_input_tokens == 0
    for i in range(1, 4):
        u = usage[f"a-{i}"]
        assert u.cache_read_input_tokens == prefix and u.cache_creation_input_tokens == 0
        assert 0 < u.input_tokens < 20  # only the tokens after the breakpoint


def test_anthropic_1h_and_5m_split(ant):
    second = " ".join(f"Extra guidance {i}." for i in range(300))
    system = _system("1h") + _system("5m", second)
    usage = _ant_usage(
        ant, [ant_request("a-0", "q", system=system), ant_request("a-1", "r", system=system)]
    )
    first = usage["a-0"].cache_creation
    assert first.ephemeral_1h_input_tokens >= count_tokens(LONG)
    assert first.ephemeral_5m_input_tokens >= count_tokens(second)
    assert usage["a-1"].cache_read_input_tokens == (
        first.ephemeral_1h_input_tokens + first.ephemeral_5m_input_tokens
    )


def test_anthropic_ttl_expiry_on_the_sandbox_clock(sandbox, ant):
    _ant_usage(ant, [ant_request("w-1", "x", system=_system("5m"))])
    sandbox.advance_clock(400)  # past 5 minutes
    again = _ant_usage(ant, [ant_request("w-2", "y", system=_system("5m"))])["w-2"]
    assert again.cache_read_input_tokens == 0 and again.cache_creation_input_tokens > 0
    _ant_usage(ant, [ant_request("h-1", "x", system=_system("1h"))])
    sandbox.advance_clock(400)  # well within the hour
    warm = _ant_usage(ant, [ant_request("h-2", "y", system=_system("1h"))])["h-2"]
    assert warm.cache_read_input_tokens > 0


def test_anthropic_model_minimum_is_silently_not_cached(ant):
    # ~2,300 tokens: enough for Sonnet 4.6 (2,048 measured) but below Haiku 4.5's 4,096
    usage = _ant_usage(
        ant,
        [
            ant_request("s-0", "x", system=_system("5m")),
            ant_request("h-0", "x", model="claude-haiku-4-5", system=_system("5m")),
            ant_request("h-1", "y", model="claude-haiku-4-5", system=_system("5m")),
        ],
    )
    assert usage["s-0"].cache_creation_input_tokens > 0
    for cid in ("h-0", "h-1"):
        u = usage[cid]
        assert u.cache_creation_input_tokens == 0 and u.cache_read_input_tokens == 0
        assert u.input_tokens > count_tokens(LONG)


def test_anthropic_bad_breakpoints_are_per_request_errors(ant):
    wrong_order = _system("5m", "a " * 10) + _system("1h", "b " * 10)
    too_many = [b for i in range(5) for b in _system("5m", f"part {i}")]
    usage = _ant_usage(
        ant,
        [
            ant_request("o-1", "x", system=wrong_order),
            ant_request("m-1", "x", system=too_many),
            ant_request("g-1", "x", system=_system("5m")),
        ],
    )
    assert usage["o-1"].type == "errored" and "1h" in usage["o-1"].error.error.message
    assert usage["m-1"].type == "errored"
    assert usage["m-1"].error.error.type == "invalid_request_error"
    assert usage["g-1"].cache_creation_input_tokens > 0


def test_cold_batch_first_requests_of_a_group_miss(sandbox, oai, ant):
    # Defaults: the first 16 OpenAI requests of a group in a batch miss, 100 on Anthropic
    usage = _usage(oai, [chat_line(f"r{i:02}", f"item {i}", system=LONG) for i in range(20)])
    cached = [usage[f"r{i:02}"]["prompt_tokens_details"]["cached_tokens"] for i in range(20)]
    assert cached[:16] == [0] * 16 and all(c >= 1024 for c in cached[16:])
    cold = _ant_usage(ant, [ant_request(f"a{i}", "x", system=_system("1h")) for i in range(5)])
    assert all(u.cache_read_input_tokens == 0 for u in cold.values())
    assert all(u.cache_creation.ephemeral_1h_input_tokens > 0 for u in cold.values())
    # A later batch reads what the earlier one wrote (users measured 100% then)
    warm = _ant_usage(ant, [ant_request(f"b{i}", "x", system=_system("1h")) for i in range(5)])
    assert all(u.cache_read_input_tokens > 2000 for u in warm.values())


def test_cold_sonnet_46_caches_from_the_measured_2048_tokens(sandbox, ant):
    sandbox.configure(cold_requests={"anthropic": 0})
    mid = " ".join(LONG.split()[: len(LONG.split()) * 6 // 10])  # ~1,400 tokens
    assert 1024 < count_tokens(mid) < 2048
    short = _ant_usage(
        ant, [ant_request(f"s{i}", "x", system=_system("5m", mid)) for i in range(2)]
    )
    assert all(
        u.cache_creation_input_tokens == u.cache_read_input_tokens == 0 for u in short.values()
    )
    sandbox.configure(anthropic_min_cache_tokens={"claude-sonnet-4-6": 1024})  # settable
    again = _ant_usage(
        ant, [ant_request(f"t{i}", "x", system=_system("5m", mid)) for i in range(2)]
    )
    assert again["t1"].cache_read_input_tokens > 1024
