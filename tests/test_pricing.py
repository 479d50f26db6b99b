"""Pricing: the article's arithmetic reproduced with genai-prices, cache writes by TTL,
long-context tiers per request, spec overrides, and the savings split."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from batcher.errors import UsageError
from batcher.money.amounts import to_pusd, to_usd
from batcher.money.prices import attempt_costs, check_models_known, price_usd, unit_prices
from batcher.providers.base import Usage
from batcher.spec import parse_spec

WHEN = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ARTICLE = [  # (provider, model, standard USD for 30,000 x (500 in, 300 out))
    ("openai", "gpt-5-nano", "4.35"),
    ("openai", "gpt-5-mini", "21.75"),
    ("google", "gemini-3.1-pro-preview", "138.00"),
    ("openai", "gpt-5.4", "172.50"),
    ("anthropic", "claude-sonnet-4-6", "180.00"),
    ("anthropic", "claude-opus-4-6", "300.00"),
]


def spec(**extra):
    data = {
        "name": "t",
        "tiers": {
            "nano": "openai:gpt-5-nano",
            "mid": "anthropic:claude-sonnet-4-6",
            "frontier": "anthropic:claude-opus-4-6",
        },
    }
    return parse_spec({**data, **extra}, "jobs/t.toml")


@pytest.mark.parametrize("provider,model,usd", ARTICLE)
def test_article_prices_standard_and_batch(provider, model, usd):
    one = Usage(input_tokens=500, output_tokens=300)
    standard = price_usd(provider, model, one, batch=False, when=WHEN) * 30_000
    batch = price_usd(provider, model, one, batch=True, when=WHEN) * 30_000
    assert standard == Decimal(usd)
    assert batch == Decimal(usd) / 2


@pytest.mark.parametrize("provider,model,usd", ARTICLE)
def test_unit_prices_sum_many_short_requests_exactly(provider, model, usd):
    total = Usage(input_tokens=500 * 30_000, output_tokens=300 * 30_000)
    for batch, factor in ((False, 1), (True, 2)):
        units = unit_prices(provider, model, batch=batch, when=WHEN)
        assert units.cost(total) * factor == Decimal(usd)


def test_long_context_tier_applies_to_each_request_not_to_the_sum():
    # 30,000 requests sum to 15M input tokens, far past gpt-5.4's 272k tier, yet each
    # request is short: base rate. One request past the tier pays the tier rate on all tokens.
    units = unit_prices("openai", "gpt-5.4", batch=False, when=WHEN)
    assert units.tier_start == 272_000
    below = price_usd("openai", "gpt-5.4", Usage(input_tokens=272_000), batch=False, when=WHEN)
    above = price_usd("openai", "gpt-5.4", Usage(input_tokens=300_000), batch=False, when=WHEN)
    assert below == Decimal("0.68")  # $2.50 / MTok
    assert above == Decimal("1.50")  # $5.00 / MTok on every token
    gemini = unit_prices("google", "gemini-3.1-pro-preview", batch=False, when=WHEN)
    assert gemini.tier_start is not None and gemini.tier_start >= 200_000


def test_caching_scenario_of_the_article_sonnet():
    # 10,000 requests a day, 2,000-token system prompt, 200 user tokens each.
    no_cache = price_usd(
        "anthropic", "claude-sonnet-4-6", Usage(input_tokens=22_000_000), batch=False, when=WHEN
    )
    assert no_cache == Decimal("66.00")
    # 95% hit rate: 500 misses write the prompt (1M tokens at $3.75), 9,500 hits read it
    # (19M at $0.30), every request pays its 200 user tokens (2M at $3).
    cached = Usage(input_tokens=22_000_000, cache_read_tokens=19_000_000)
    cached.cache_write_5m_tokens = 1_000_000
    assert price_usd("anthropic", "claude-sonnet-4-6", cached, batch=False, when=WHEN) == Decimal(
        "15.45"
    )
    units = unit_prices("anthropic", "claude-sonnet-4-6", batch=False, when=WHEN)
    assert units.cost(cached) == Decimal("15.45")


def test_cache_write_ttls_cost_125_and_200_percent_of_input():
    write_5m = Usage(input_tokens=1_000_000, cache_write_5m_tokens=1_000_000)
    write_1h = Usage(input_tokens=1_000_000, cache_write_1h_tokens=1_000_000)
    both = Usage(
        input_tokens=2_000_000, cache_write_5m_tokens=1_000_000, cache_write_1h_tokens=1_000_000
    )
    sonnet = ("anthropic", "claude-sonnet-4-6")
    assert price_usd(*sonnet, write_5m, batch=False, when=WHEN) == Decimal("3.75")
    assert price_usd(*sonnet, write_1h, batch=False, when=WHEN) == Decimal("6.00")
    assert price_usd(*sonnet, both, batch=False, when=WHEN) == Decimal("9.75")
    assert price_usd(*sonnet, both, batch=True, when=WHEN) == Decimal("4.875")


def test_attempt_costs_split_savings_exactly():
    usage = Usage(
        input_tokens=2_200, cache_read_tokens=1_500, cache_write_5m_tokens=500, output_tokens=300
    )
    costs = attempt_costs(spec(), "anthropic", "claude-sonnet-4-6", usage, when=WHEN)
    # Sonnet batch: 200*1.5 + 1500*0.15 + 500*1.875 + 300*7.5 per MTok
    assert costs.cost_pusd == to_pusd(Decimal("0.0037125"))
    assert costs.standard_pusd == 2 * costs.cost_pusd
    assert costs.uncached_pusd == to_pusd(Decimal("0.0111"))  # 2200*3 + 300*15
    assert costs.baseline_pusd == to_pusd(Decimal("0.0185"))  # Opus: 2200*5 + 300*25
    routing = costs.baseline_pusd - costs.uncached_pusd
    caching = costs.uncached_pusd - costs.standard_pusd
    batch = costs.standard_pusd - costs.cost_pusd
    assert routing + caching + batch == costs.baseline_pusd - costs.cost_pusd
    assert routing > 0 and caching > 0 and batch > 0


def test_overrides_replace_genai_prices_with_batch_factor():
    negotiated = spec(
        pricing={
            "anthropic:claude-sonnet-4-6": {
                "input_mtok": 2.0,
                "output_mtok": 10.0,
                "cache_read_mtok": 0.2,
                "batch_factor": 0.4,
            }
        }
    )
    usage = Usage(
        input_tokens=1_000_000,
        cache_read_tokens=400_000,
        cache_write_5m_tokens=100_000,
        cache_write_1h_tokens=100_000,
        output_tokens=100_000,
    )
    standard = price_usd("anthropic", "claude-sonnet-4-6", usage, batch=False, spec=negotiated)
    # 400k*2 + 400k*0.2 + 100k*2.5 (1.25x) + 100k*4 (2x) + 100k*10, per MTok
    assert standard == Decimal("2.53")
    assert price_usd("anthropic", "claude-sonnet-4-6", usage, batch=True, spec=negotiated) == (
        Decimal("2.53") * Decimal("0.4")
    )
    costs = attempt_costs(negotiated, "anthropic", "claude-sonnet-4-6", usage, when=WHEN)
    assert to_usd(costs.standard_pusd) == Decimal("2.53")


def test_override_makes_an_unknown_model_priceable():
    private = spec(
        tiers={"mid": "openai:my-finetune", "frontier": "openai:gpt-5.4"},
        routing={"ladder": ["mid", "frontier"]},
        pricing={"openai:my-finetune": {"input_mtok": 1, "output_mtok": 4}},
    )
    check_models_known(private)
    costs = attempt_costs(
        private, "openai", "my-finetune", Usage(input_tokens=1000, output_tokens=1000), when=WHEN
    )
    assert costs.standard_pusd == to_pusd(Decimal("0.005"))
    assert costs.cost_pusd == to_pusd(Decimal("0.0025"))


def test_unknown_model_names_tier_and_model():
    bad = spec(
        tiers={"nano": "openai:gpt-9-nano", "frontier": "anthropic:claude-opus-4-6"},
        routing={"ladder": ["nano", "frontier"]},
    )
    with pytest.raises(UsageError) as info:
        check_models_known(bad)
    message = str(info.value)
    assert "tiers.nano" in message and "openai:gpt-9-nano" in message
    assert "[pricing." in message  # names the fix
    with pytest.raises(UsageError, match="gpt-9-nano"):
        attempt_costs(bad, "openai", "gpt-9-nano", Usage(input_tokens=1), when=WHEN)


def test_known_models_pass():
    check_models_known(spec())


def test_inconsistent_usage_is_refused():
    with pytest.raises(ValueError, match="more cached"):
        unit_prices("openai", "gpt-5-nano", batch=True, when=WHEN).cost(
            Usage(input_tokens=10, cache_read_tokens=20)
        )


def test_gemini_batch_halves_input_and_output_but_not_cache_reads():
    usage = Usage(input_tokens=1_000_000, cache_read_tokens=400_000, output_tokens=100_000)
    standard = price_usd("google", "gemini-2.5-flash", usage, batch=False, when=WHEN)
    batch = price_usd("google", "gemini-2.5-flash", usage, batch=True, when=WHEN)
    # 600k plain input at $0.30/M, 400k cached at $0.03/M, 100k output at $2.50/M; batch
    # halves input and output, and cached tokens cost what they cost outside batches.
    assert standard == Decimal("0.18") + Decimal("0.012") + Decimal("0.25")
    assert batch == Decimal("0.09") + Decimal("0.012") + Decimal("0.125")
    units = unit_prices("google", "gemini-2.5-flash", batch=True, when=WHEN)
    assert units.cost(usage) == batch


def test_a_model_without_batch_prices_gets_its_providers_factor_from_the_spec():
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    standard = price_usd("x-ai", "grok-4-1-fast", usage, batch=False, when=WHEN)
    # No documented factor for this provider here: no discount rather than a guessed one.
    assert price_usd("x-ai", "grok-4-1-fast", usage, batch=True, when=WHEN) == standard
    half = spec(batching={"batch_factors": {"x-ai": 0.5}})
    assert price_usd("x-ai", "grok-4-1-fast", usage, batch=True, when=WHEN, spec=half) == (
        standard / 2
    )
    units = unit_prices("x-ai", "grok-4-1-fast", batch=True, when=WHEN, spec=half)
    assert units.cost(usage) == standard / 2
