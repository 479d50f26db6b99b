"""What a model accepts and how it caches: the record behind each provider module's table.

Each provider module (openai.py, anthropic.py, google.py) keeps a small table of its model
families as `ModelCaps` and answers `model_caps(model)`; the planner asks it before anything
is sent, so a spec whose parameters a model is known to reject is refused at plan time.

Provider-neutral settings in `params` (`NEUTRAL`) are rendered by each provider module into
its own fields; a table named after a provider (`params.openai = {...}`) goes to that
provider only, as written; any other key goes to every provider as written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

NEUTRAL = ("json_schema", "reasoning_effort", "temperature", "stop")
PROVIDER_KEYS = ("openai", "anthropic", "google", "xai", "deepseek")


@dataclass(frozen=True)
class ModelCaps:
    """One model family's known limits. Figures are from the providers' model pages (see
    docs/providers.md); an unknown model gets its provider's most common values."""

    context_tokens: int
    max_output_tokens: int
    # Spends hidden reasoning tokens inside max_tokens; `efforts` are the reasoning_effort
    # values it takes (empty: it takes none).
    reasoning: bool = False
    efforts: tuple[str, ...] = ()
    fixed_sampling: bool = False  # temperature / top_p only at their default (1)
    accepts_stop: bool = True
    accepts_temperature: bool = True  # False: the field itself is refused
    structured_output: str = "native"  # "native" or "tool" (a forced tool carries the schema)
    min_cache_tokens: int = 1024  # shortest prefix the provider caches
    encoding: str | None = None  # the model's own tokenizer when one loads offline
    known: bool = True


def lookup(table: Iterable[tuple[str, ModelCaps]], model: str, fallback: ModelCaps) -> ModelCaps:
    """The entry whose name prefix is the longest match for `model`, else `fallback`."""
    name = model.lower()
    best: tuple[int, ModelCaps] | None = None
    for prefix, caps in table:
        if name.startswith(prefix) and (best is None or len(prefix) > best[0]):
            best = (len(prefix), caps)
    return best[1] if best else fallback


def split_params(params: dict[str, Any], provider: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(neutral settings, fields to send as written) of resolved `params` for `provider`.

    The provider's own table wins over unkeyed keys; other providers' tables are dropped.
    The last split is remembered: a batch file's requests share one params dict (see
    requests.resolve), so the callers read the result and never change it."""
    global _last_split
    last = _last_split  # one tuple, read and replaced whole: safe between threads
    if last[0] is params and last[1] == provider:
        return last[2]
    found = _split(params, provider)
    _last_split = (params, provider, found)
    return found


_last_split: tuple[Any, Any, Any] = (None, None, None)  # params, provider, split


def _split(params: dict[str, Any], provider: str) -> tuple[dict[str, Any], dict[str, Any]]:
    neutral = {k: params[k] for k in NEUTRAL if params.get(k) is not None}
    raw = {k: v for k, v in params.items() if k not in NEUTRAL and k not in PROVIDER_KEYS}
    own = params.get(provider)
    if isinstance(own, dict):
        raw.update(own)
    return neutral, raw


def unkeyed(params: dict[str, Any]) -> list[str]:
    """The keys of `params` that go to every provider as written."""
    return [k for k in params if k not in NEUTRAL and k not in PROVIDER_KEYS]


def sampling_problems(
    caps: ModelCaps, temperature: float | None, raw: dict[str, Any], where: str
) -> list[str]:
    """Why `temperature` / `top_p` would be refused by a model with `caps`."""
    problems = []
    if temperature is not None and not caps.accepts_temperature:
        problems.append(
            f"temperature is refused by this model (400 'temperature is deprecated'): remove "
            f"it, or set it only for the tiers that take it under [{where}.params.PROVIDER]"
        )
    elif caps.fixed_sampling:
        for name, value in (("temperature", temperature), ("top_p", raw.get("top_p"))):
            if value is not None and value != 1:
                problems.append(
                    f"{name} = {value} is refused: this model takes only the default (1) "
                    f"(400 unsupported_value on every request); remove {name}, or set it "
                    f"for the other providers only under [{where}.params.PROVIDER]"
                )
    return problems


def output_cap_problems(caps: ModelCaps, max_tokens: int) -> list[str]:
    """Why `max_tokens` would be refused by a model with `caps`: over its output cap."""
    if max_tokens <= caps.max_output_tokens:
        return []
    return [
        f"max_tokens = {max_tokens:,} is over the model's {caps.max_output_tokens:,} "
        "output tokens: lower it"
    ]


def prefix_tokens(caps: ModelCaps, text: str) -> int:
    """Tokens of a shared prefix in the model's own encoding where one loads offline (o200k
    for gpt-5 / gpt-4o), else cl100k (an estimate: see `margin`).

    Where no cache decision depends on the exact count, the cl100k count is used instead,
    since loading the o200k tokenizer costs a second and 70 MB: a prefix under half the
    model's caching minimum by the cl100k count, and an ASCII prefix over one and a half
    times it (o200k's gains over cl100k are in other scripts, several-fold for some Indic
    ones; on ASCII text the two counts are a few percent apart). The estimate's cached
    tokens are then off by those few percent; bills come from reported usage."""
    from batcher.plan.tokens import count_tokens, count_tokens_with

    if caps.encoding is not None and caps.encoding != "cl100k_base":
        rough = count_tokens(text)
        if rough * 2 < caps.min_cache_tokens:
            return rough
        if rough * 2 >= caps.min_cache_tokens * 3 and text.isascii():
            return rough
    return count_tokens_with(caps.encoding, text)[0]


def min_cache_tokens(caps: ModelCaps, provider: str, model: str, spec: Any) -> int:
    """The shortest prefix the model caches: the spec's [caching] min_tokens, else the
    provider module's table."""
    caching = getattr(spec, "caching", None)
    override = caching.min_tokens.get(f"{provider}:{model}") if caching else None
    return override or caps.min_cache_tokens


def margin(caps: ModelCaps, spec: Any) -> float:
    """How far a prefix count may be off: 0 with the model's own encoding, else the spec's
    [caching] margin (cl100k is not Claude's or Gemini's tokenizer)."""
    if caps.encoding is not None:
        return 0.0
    caching = getattr(spec, "caching", None)
    return caching.margin if caching else 0.2


def cold_requests(spec: Any, provider: str, default: int) -> int:
    """Requests of a cache group in each batch that miss: the spec's, else `default`."""
    caching = getattr(spec, "caching", None)
    if caching is not None and provider in caching.cold_requests:
        return caching.cold_requests[provider]
    return default


def expected_misses(n: int, cold: int, batch_requests: int) -> int:
    """Requests of an `n`-request group that miss: the first `cold` of it in each batch (a
    batch's requests run concurrently and do not see each other's writes)."""
    batches = max(1, -(-n // max(1, batch_requests)))
    return min(n, cold * batches)


def writes_pay(units: Any, ttl: str, group_size: int, misses: int) -> bool:
    """Whether `misses` cache writes plus the other requests' reads cost less than
    `group_size` plain inputs, at the model's own unit prices."""
    if group_size < 2 or misses >= group_size:
        return False
    write = units.cache_write_1h if ttl == "1h" else units.cache_write_5m
    hits = group_size - misses
    return misses * write + hits * units.cache_read < group_size * units.input
