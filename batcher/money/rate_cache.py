"""Exact attempt costs at bulk speed: `Pricer.costs` returns what `attempt_costs` returns.

genai-prices takes ~0.3 ms a call; reconciling a million results cannot afford that. Below a
model's long-context tier a request's price is linear in its tokens, and per-token prices with
up to six decimals per million tokens are whole picodollars, so an integer dot product gives
exactly `attempt_costs`'s figures (tests/test_reconcile.py checks it on random usage). Anything
else (a request past a tier start, a fractional negotiated rate) goes to `attempt_costs`
itself, cached by usage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from batcher.money.amounts import PICO_PER_USD
from batcher.money.prices import AttemptCosts, attempt_costs, unit_prices
from batcher.providers.base import Usage
from batcher.spec import JobSpec


class Pricer:
    """`attempt_costs` for one spec, many results."""

    def __init__(self, spec: JobSpec):
        self.spec = spec
        self.cache: dict[tuple, AttemptCosts] = {}
        self.rates: dict[tuple[str, str], _Rates | None] = {}
        self.top = spec.model_of(spec.frontier_tier)

    def costs(self, provider: str, model: str, usage: Usage) -> AttemptCosts:
        """The same figures as `attempt_costs(spec, provider, model, usage)`."""
        return AttemptCosts(*self.billing(provider, model)(usage)[len(TOKENS) :])

    def billing(self, provider: str, model: str) -> Callable[[Usage], tuple[int, ...]]:
        """usage -> its billed figures: the TOKENS counts, then `costs`'s four picodollar
        figures (AttemptCosts' order). The per-result path of a batch, which holds one model:
        the rates are looked up here, once, and a result costs one call."""
        rates = self.rates.get((provider, model), False)
        if rates is False:
            rates = self.rates[(provider, model)] = _Rates.of(self.spec, provider, model, self.top)

        def slow(usage: Usage) -> tuple[int, ...]:
            return (*_tokens(usage), *self._slow(provider, model, usage))

        return slow if rates is None else rates.billing(slow)

    def _slow(self, provider: str, model: str, usage: Usage) -> AttemptCosts:
        key = (provider, model, *_tokens(usage))  # reasoning too: the baseline leaves it out
        found = self.cache.get(key)
        if found is None:
            if len(self.cache) >= 100_000:  # bounded memory on pathological usage spreads
                self.cache.clear()
            found = self.cache[key] = attempt_costs(self.spec, provider, model, usage)
        return found


# The token counts that lead a billed row, in Usage's (and the attempt table's) order.
TOKENS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
)


def _tokens(usage: Usage) -> tuple[int, ...]:
    return (
        usage.input_tokens,
        usage.cache_read_tokens,
        usage.cache_write_5m_tokens,
        usage.cache_write_1h_tokens,
        usage.output_tokens,
        usage.reasoning_tokens,
    )


def _whole_pusd(*usd_per_token: Decimal) -> tuple[int, ...] | None:
    pusd = [value * PICO_PER_USD for value in usd_per_token]
    if any(value != value.to_integral_value() for value in pusd):
        return None
    return tuple(int(value) for value in pusd)


@dataclass(frozen=True, slots=True)
class _Rates:
    """Whole-picodollar prices per token: (plain input, cache read, 5m write, 1h write, output)
    at batch and standard rates, and the frontier model's input and output at standard rates."""

    batch: tuple[int, ...]
    standard: tuple[int, ...]
    top: tuple[int, ...]
    limit: float  # requests with this many input tokens or more take the exact slow path

    @classmethod
    def of(cls, spec: JobSpec, provider: str, model: str, top: tuple[str, str]) -> _Rates | None:
        batch = unit_prices(provider, model, batch=True, spec=spec)
        standard = unit_prices(provider, model, batch=False, spec=spec)
        frontier = unit_prices(*top, batch=False, spec=spec)
        fields = ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output")
        batch_pusd = _whole_pusd(*(getattr(batch, f) for f in fields))
        standard_pusd = _whole_pusd(*(getattr(standard, f) for f in fields))
        top_pusd = _whole_pusd(frontier.input, frontier.output)
        if batch_pusd is None or standard_pusd is None or top_pusd is None:
            return None
        starts = [p.tier_start for p in (batch, standard, frontier) if p.tier_start is not None]
        return cls(batch_pusd, standard_pusd, top_pusd, min(starts, default=float("inf")))

    def billing(
        self, past_limit: Callable[[Usage], tuple[int, ...]]
    ) -> Callable[[Usage], tuple[int, ...]]:
        """usage -> its billed figures (see Pricer.billing) by integer dot products, or
        `past_limit(usage)` for a request that reaches a long-context tier."""
        (bi, br, b5, b1, bo), (si, sr, s5, s1, so), (ti, to) = self.batch, self.standard, self.top
        limit = self.limit

        def billed(usage: Usage) -> tuple[int, ...]:
            total, read = usage.input_tokens, usage.cache_read_tokens
            if total >= limit:
                return past_limit(usage)
            w5, w1 = usage.cache_write_5m_tokens, usage.cache_write_1h_tokens
            out, reasoning = usage.output_tokens, usage.reasoning_tokens
            plain, visible = total - read - w5 - w1, out - reasoning
            if plain < 0:
                raise ValueError(f"usage counts more cached than total input tokens: {usage}")
            if visible < 0:
                visible = 0
            cost = plain * bi + read * br + out * bo  # batch rates
            standard = plain * si + read * sr + out * so
            if w5 or w1:  # most results write no cache: their terms are 0
                cost += w5 * b5 + w1 * b1
                standard += w5 * s5 + w1 * s1
            return (
                total, read, w5, w1, out, reasoning, cost, standard,
                total * si + out * so,  # uncached
                total * ti + visible * to,  # baseline: visible output only (visible_output)
            )  # fmt: skip

        return billed
