"""Costs from usage: genai-prices (offline data) at batch and standard rates, or the spec's
negotiated prices; the baselines that savings are measured against.

Every price is a whole number of picodollars (see batcher.money.amounts). Long-context price tiers
apply per request (genai-prices switches every token of a request to the tier rate once the
request's input passes the tier start), so a request is always priced on its own usage and
never on a sum of requests; `unit_prices` gives exact per-token prices for summing many
requests that all stay below the first tier.

The baseline of an attempt is its input tokens and its visible output tokens (reasoning
excluded: a cheap model's hidden reasoning is not what the frontier model would have
written) on the job's frontier model at standard rates, no cache. The four figures of an
attempt split its savings exactly:
routing = baseline - uncached, caching = uncached - standard, batch = standard - cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import NamedTuple

from genai_prices import Usage as PriceUsage
from genai_prices import calc_price, data_snapshot
from genai_prices.types import TieredPrices

from batcher.errors import UsageError
from batcher.money.amounts import to_pusd
from batcher.providers.base import Usage
from batcher.spec import JobSpec, PriceOverride

MTOK = Decimal(1_000_000)
BATCH_CONTEXT = {"processing": "batch"}
# Cache write prices relative to the input price, used when a spec override leaves them out
# (Anthropic's published ratios; OpenAI bills cache writes at the plain input price).
DEFAULT_WRITE_RATIO = {
    "anthropic": (Decimal("1.25"), Decimal(2)),
    "openai": (Decimal(1), Decimal(1)),
    "google": (Decimal(1), Decimal(1)),  # implicit caching: no write price, no storage
    "xai": (Decimal(1), Decimal(1)),  # automatic caching: no write price
    "deepseek": (Decimal(1), Decimal(1)),  # cache misses are the plain input price
}
# Our provider names that genai-prices spells differently.
PRICES_IDS = {"xai": "x-ai"}


def prices_id(provider: str) -> str:
    """The genai-prices provider id of one of our provider names."""
    return PRICES_IDS.get(provider, provider)


# Batch price / standard price by provider, for models whose genai-prices entry has no batch
# prices: the providers' documented batch discounts (OpenAI, Anthropic, Gemini and xAI batch
# docs: 50%). A provider not listed gets no discount (1), which never understates a cost; the spec's
# [batching] batch_factors override these.
BATCH_FACTOR = {"openai": Decimal("0.5"), "anthropic": Decimal("0.5"), "google": Decimal("0.5"),
                "xai": Decimal("0.5")}  # fmt: skip


def runs_direct(provider: str, spec: JobSpec | None) -> bool:
    """Whether `provider`'s requests go one by one (direct mode): billed at standard rates."""
    return spec.mode_of(provider) == "direct" if spec is not None else provider == "deepseek"


def batch_factor(provider: str, spec: JobSpec | None = None) -> Decimal:
    """The factor applied to standard prices for a batch request when the table lacks batch
    prices: the spec's `[batching] batch_factors`, else BATCH_FACTOR, else 1."""
    given = spec.batching.batch_factors.get(provider) if spec is not None else None
    if given is not None:
        return Decimal(str(given))
    return BATCH_FACTOR.get(provider, Decimal(1))


@lru_cache(maxsize=4096)
def has_batch_prices(provider: str, model: str, when: datetime) -> bool:
    """Whether genai-prices gives `provider:model` batch prices of its own at `when`."""
    snapshot = data_snapshot.get_snapshot()
    try:
        _, info = snapshot.find_provider_model(model, None, prices_id(provider), None)
    except LookupError:
        raise unknown_model_error(provider, model) from None
    return info.get_prices(when, BATCH_CONTEXT) != info.get_prices(when, None)


class AttemptCosts(NamedTuple):
    """What one attempt cost and what it would have cost otherwise, in picodollars.

    A NamedTuple: reconciling makes one per result, and a tuple is cheap to build."""

    cost_pusd: int  # batch rates, with cache prices: what the provider bills
    standard_pusd: int  # same model and tokens at standard (non-batch) rates, with cache
    uncached_pusd: int  # same model, standard rates, every input token at the input price
    baseline_pusd: int  # the spec's frontier model, standard rates, no cache: same input
    # tokens and the answer's visible output tokens (reasoning excluded)


@dataclass(frozen=True, slots=True)
class UnitPrices:
    """Exact USD per token of one model at one rate, valid below `tier_start` input tokens."""

    input: Decimal
    cache_read: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    output: Decimal
    tier_start: int | None  # requests with more input tokens than this need `price_usd`

    def cost(self, usage: Usage) -> Decimal:
        """USD of `usage`, which may be a sum over requests that each stay below tier_start."""
        plain = _plain_input(usage)
        return (
            plain * self.input
            + usage.cache_read_tokens * self.cache_read
            + usage.cache_write_5m_tokens * self.cache_write_5m
            + usage.cache_write_1h_tokens * self.cache_write_1h
            + usage.output_tokens * self.output
        )


def _plain_input(usage: Usage) -> int:
    plain = (
        usage.input_tokens
        - usage.cache_read_tokens
        - usage.cache_write_5m_tokens
        - usage.cache_write_1h_tokens
    )
    if plain < 0:
        raise ValueError(f"usage counts more cached than total input tokens: {usage}")
    return plain


def _key(usage: Usage) -> tuple[int, int, int, int, int]:
    return (
        usage.input_tokens,
        usage.cache_read_tokens,
        usage.cache_write_5m_tokens,
        usage.cache_write_1h_tokens,
        usage.output_tokens,
    )


def _minute(when: datetime | None) -> datetime:
    """Prices change by date (and for some providers by time of day), never within a minute;
    rounding makes repeated prices hit the cache."""
    when = when or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.replace(second=0, microsecond=0)


def unknown_model_error(provider: str, model: str, where: str = "") -> UsageError:
    ref = f"{provider}:{model}"
    prefix = f"{where}: " if where else ""
    return UsageError(
        f"{prefix}model {ref!r} is not in the installed genai-prices data: check the name, or "
        f'add negotiated prices to the spec: [pricing."{ref}"] input_mtok = ..., output_mtok = ...'
    )


@lru_cache(maxsize=65536)
def _genai_usd(
    provider: str, model: str, tokens: tuple[int, int, int, int, int], batch: bool, when: datetime
) -> Decimal:
    total, read, write_5m, write_1h, output = tokens
    usage = PriceUsage(
        input_tokens=total,
        cache_read_tokens=read,
        # genai-prices wants the sum of both TTLs and the 1h share, which it prices at 2x.
        cache_write_tokens=write_5m + write_1h,
        cache_write_1h_tokens=write_1h,
        output_tokens=output,
    )
    try:
        result = calc_price(
            usage,
            model,
            provider_id=prices_id(provider),
            genai_request_timestamp=when,
            price_context=BATCH_CONTEXT if batch else None,
        )
    except LookupError:
        raise unknown_model_error(provider, model) from None
    return result.total_price


def _override_usd(override: PriceOverride, provider: str, usage: Usage, batch: bool) -> Decimal:
    base_in = Decimal(str(override.input_mtok))
    ratio_5m, ratio_1h = DEFAULT_WRITE_RATIO.get(provider, (Decimal(1), Decimal(1)))

    def given(value: float | None, default: Decimal) -> Decimal:
        return default if value is None else Decimal(str(value))

    usd = (
        _plain_input(usage) * base_in
        # No negotiated read price: assume none (the input price), which never understates.
        + usage.cache_read_tokens * given(override.cache_read_mtok, base_in)
        + usage.cache_write_5m_tokens * given(override.cache_write_mtok, base_in * ratio_5m)
        + usage.cache_write_1h_tokens * given(override.cache_write_1h_mtok, base_in * ratio_1h)
        + usage.output_tokens * Decimal(str(override.output_mtok))
    ) / MTOK
    return usd * Decimal(str(override.batch_factor)) if batch else usd


def price_usd(
    provider: str,
    model: str,
    usage: Usage,
    *,
    batch: bool,
    when: datetime | None = None,
    spec: JobSpec | None = None,
) -> Decimal:
    """Exact USD of one request's `usage` on `provider:model` (spec overrides first).

    Raises UsageError when the model is neither overridden nor known to genai-prices.
    """
    batch = batch and not runs_direct(provider, spec)
    override = spec.pricing.get(f"{provider}:{model}") if spec is not None else None
    if override is not None:
        return _override_usd(override, provider, usage, batch)
    minute = _minute(when)
    if batch and not has_batch_prices(provider, model, minute):
        standard = _genai_usd(provider, model, _key(usage), False, minute)
        return standard * batch_factor(provider, spec)
    return _genai_usd(provider, model, _key(usage), batch, minute)


def attempt_costs(
    spec: JobSpec, provider: str, model: str, usage: Usage, *, when: datetime | None = None
) -> AttemptCosts:
    """The cost of one attempt and its three comparison figures, in picodollars.

    `usage` is what the provider reported for this one request; `when` is when it ran (default
    now), which selects the prices in force. Raises UsageError for an unknown model.
    """
    uncached = Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
    top_provider, top_model = spec.model_of(spec.frontier_tier)
    answer = Usage(input_tokens=usage.input_tokens, output_tokens=visible_output(usage))
    return AttemptCosts(
        cost_pusd=to_pusd(price_usd(provider, model, usage, batch=True, when=when, spec=spec)),
        standard_pusd=to_pusd(price_usd(provider, model, usage, batch=False, when=when, spec=spec)),
        uncached_pusd=to_pusd(
            price_usd(provider, model, uncached, batch=False, when=when, spec=spec)
        ),
        baseline_pusd=to_pusd(
            price_usd(top_provider, top_model, answer, batch=False, when=when, spec=spec)
        ),
    )


def visible_output(usage: Usage) -> int:
    """The answer's own output tokens: hidden reasoning is how the cheap model got there, not
    something the frontier model would have had to write, so the baseline leaves it out."""
    return max(0, usage.output_tokens - usage.reasoning_tokens)


def _tier_start(provider: str, model: str, batch: bool, when: datetime) -> int | None:
    """The lowest long-context tier start of the model's prices in force, if any."""
    snapshot = data_snapshot.get_snapshot()
    try:
        _, info = snapshot.find_provider_model(model, None, prices_id(provider), None)
    except LookupError:
        raise unknown_model_error(provider, model) from None
    prices = info.get_prices(when, BATCH_CONTEXT if batch else None)
    starts = [
        tier.start
        for value in vars(prices).values()
        if isinstance(value, TieredPrices)
        for tier in value.tiers
    ]
    return min(starts) if starts else None


@lru_cache(maxsize=1024)
def _genai_unit_prices(provider: str, model: str, batch: bool, when: datetime) -> UnitPrices:
    def one(**tokens: int) -> Decimal:
        usage = Usage(**tokens)
        return _genai_usd(provider, model, _key(usage), batch, when)

    # A one-token request never reaches a long-context tier, so these are the base rates.
    return UnitPrices(
        input=one(input_tokens=1),
        cache_read=one(input_tokens=1, cache_read_tokens=1),
        cache_write_5m=one(input_tokens=1, cache_write_5m_tokens=1),
        cache_write_1h=one(input_tokens=1, cache_write_1h_tokens=1),
        output=one(output_tokens=1),
        tier_start=_tier_start(provider, model, batch, when),
    )


def unit_prices(
    provider: str,
    model: str,
    *,
    batch: bool,
    when: datetime | None = None,
    spec: JobSpec | None = None,
) -> UnitPrices:
    """Per-token prices of `provider:model` for summing many short requests exactly.

    Raises UsageError when the model is neither overridden nor known to genai-prices.
    """
    batch = batch and not runs_direct(provider, spec)
    override = spec.pricing.get(f"{provider}:{model}") if spec is not None else None
    if override is None:
        minute = _minute(when)
        if batch and not has_batch_prices(provider, model, minute):
            return _scaled(_genai_unit_prices(provider, model, False, minute),
                           batch_factor(provider, spec))  # fmt: skip
        return _genai_unit_prices(provider, model, batch, minute)

    def one(**tokens: int) -> Decimal:
        return _override_usd(override, provider, Usage(**tokens), batch)

    return UnitPrices(
        input=one(input_tokens=1),
        cache_read=one(input_tokens=1, cache_read_tokens=1),
        cache_write_5m=one(input_tokens=1, cache_write_5m_tokens=1),
        cache_write_1h=one(input_tokens=1, cache_write_1h_tokens=1),
        output=one(output_tokens=1),
        tier_start=None,
    )


def _scaled(units: UnitPrices, factor: Decimal) -> UnitPrices:
    return UnitPrices(
        input=units.input * factor,
        cache_read=units.cache_read * factor,
        cache_write_5m=units.cache_write_5m * factor,
        cache_write_1h=units.cache_write_1h * factor,
        output=units.output * factor,
        tier_start=units.tier_start,
    )


def check_model_known(spec: JobSpec, provider: str, model: str, where: str = "") -> None:
    """Raise UsageError (naming `where`) unless `provider:model` can be priced."""
    if f"{provider}:{model}" in spec.pricing:
        return
    try:
        data_snapshot.get_snapshot().find_provider_model(model, None, prices_id(provider), None)
    except LookupError:
        raise unknown_model_error(provider, model, where) from None


def check_models_known(spec: JobSpec) -> None:
    """Raise UsageError naming the tier and model when a tier's model cannot be priced.

    Called at plan time, so an unknown model is refused before anything is sent rather than
    failing when its results are reconciled.
    """
    for tier, ref in spec.tiers.items():
        provider, model = spec.model_of(tier)
        check_model_known(spec, provider, model, f"{spec.path}: tiers.{tier} = {ref!r}")


def cache_write_pays(units: UnitPrices, ttl: str, group_size: int) -> bool:
    """Whether one cache write at `ttl` plus (size - 1) reads cost less than `group_size`
    plain inputs at these prices: 5m writes (1.25x) pay from 2 requests, 1h writes (2x)
    from 3."""
    if group_size < 2:
        return False
    write = units.cache_write_1h if ttl == "1h" else units.cache_write_5m
    return write + (group_size - 1) * units.cache_read < group_size * units.input
