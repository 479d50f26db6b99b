"""Provider-neutral requests from stored items, and the prompt-cache decisions for them.

`build_request` resolves an item's stored request against the spec's defaults. The cache
decisions (`cache_group_id`, `anthropic_cache_ttl`) need only counts and prices, never a wire
format: the provider modules turn `Request.cache_key` / `Request.cache_ttl` into
`prompt_cache_key` / `cache_control`.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import orjson

from batcher.money.prices import unit_prices
from batcher.providers.base import Request
from batcher.spec import JobSpec

# Anthropic's minimum cacheable prefix by model family (provider-contracts.md); a shorter
# prefix is silently not cached, so marking it would only cost bytes.
_ANTHROPIC_MIN_CACHE = (
    (("opus-4-5", "opus-4-6", "haiku-4-5"), 4096),
    (("haiku-3-5", "3-5-haiku", "haiku-3", "3-haiku"), 2048),
)
ANTHROPIC_DEFAULT_MIN_CACHE = 1024  # Sonnet 4.x, Opus 4 and 4.1
OPENAI_MIN_CACHE = 1024  # OpenAI caches prompts of 1,024 tokens or more, in 128-token steps
OPENAI_CACHE_STEP = 128
GEMINI_FLASH_MIN_CACHE = 2048  # Gemini 2.5 Flash (and Flash-Lite)
GEMINI_MIN_CACHE = 4096  # 2.5 Pro and the 3.x models
# Assumed processing rate of a batch, to guess its duration: a batch expected to run longer
# than the 5-minute TTL gets the 1-hour one so that late requests still find the prefix.
EXPECTED_REQUESTS_PER_MINUTE = 1_000
FIVE_MINUTES = 5


def anthropic_min_cacheable_tokens(model: str) -> int:
    """The shortest prefix (tokens) that `model` caches."""
    name = model.lower()
    for needles, minimum in _ANTHROPIC_MIN_CACHE:
        if any(n in name for n in needles):
            return minimum
    return ANTHROPIC_DEFAULT_MIN_CACHE


def openai_cached_prefix(prefix_tokens: int) -> int:
    """Tokens OpenAI reports as cached when a request hits a cached prefix of this length."""
    if prefix_tokens < OPENAI_MIN_CACHE:
        return 0
    return prefix_tokens // OPENAI_CACHE_STEP * OPENAI_CACHE_STEP


def gemini_min_cacheable_tokens(model: str) -> int:
    """The shortest prompt Gemini's implicit caching considers. Versions of the docs give
    1,024 or 2,048 for 2.5 Flash and 2,048 or 4,096 for the others: the larger is assumed."""
    return GEMINI_FLASH_MIN_CACHE if model.startswith("gemini-2.5-flash") else GEMINI_MIN_CACHE


def gemini_cached_prefix(model: str, prefix_tokens: int) -> int:
    """Tokens a Gemini request can read from the implicit cache when its prefix is cached."""
    return prefix_tokens if prefix_tokens >= gemini_min_cacheable_tokens(model) else 0


def cache_group_id(provider: str, model: str, system_hash: str | None) -> str | None:
    """The id of the cache group of requests to `provider:model` sharing a system prompt
    (None without one). It travels as OpenAI's prompt_cache_key."""
    if system_hash is None:
        return None
    digest = hashlib.sha256(f"{provider}:{model}:{system_hash}".encode()).hexdigest()
    return "g" + digest[:16]


def expected_ttl(batch_requests: int) -> Literal["5m", "1h"]:
    """'1h' when a batch of this many requests is expected to run longer than 5 minutes."""
    minutes = batch_requests / EXPECTED_REQUESTS_PER_MINUTE
    return "1h" if minutes > FIVE_MINUTES else "5m"


def caching_pays(
    provider: str, model: str, ttl: Literal["5m", "1h"], group_size: int, spec: JobSpec
) -> bool:
    """Whether one cache write plus (size - 1) reads cost less than `group_size` plain
    inputs, at the model's own prices: 5m writes (1.25x) pay from 2 requests, 1h writes (2x)
    from 3."""
    if group_size < 2:
        return False
    units = unit_prices(provider, model, batch=True, spec=spec)
    write = units.cache_write_1h if ttl == "1h" else units.cache_write_5m
    return write + (group_size - 1) * units.cache_read < group_size * units.input


def anthropic_cache_ttl(
    model: str,
    prefix_tokens: int,
    group_size: int,
    batch_requests: int,
    spec: JobSpec,
) -> Literal["5m", "1h"] | None:
    """The cache_control TTL for a group's shared system prompt, or None when caching it
    cannot pay (prefix below the model's minimum, or too few requests to repay the write)."""
    if prefix_tokens < anthropic_min_cacheable_tokens(model):
        return None
    ttl = expected_ttl(batch_requests)
    return ttl if caching_pays("anthropic", model, ttl, group_size, spec) else None


def defaults_fingerprint(spec: JobSpec) -> bytes:
    """The spec defaults that shape a request, as bytes for `request_hash`."""
    d = spec.defaults
    return orjson.dumps([d.max_tokens, d.temperature, d.params], option=orjson.OPT_SORT_KEYS)


def request_hasher(ref: str, system_hash: str | None, fingerprint: bytes) -> Any:
    """A sha256 fed with what a cache group's requests share; `request_hash` adds the rest.
    (Copying it per request is cheaper than hashing the shared part again.)"""
    return hashlib.sha256(f"{ref}\n{system_hash or ''}\n".encode() + fingerprint + b"\n")


def request_hash(
    provider: str, model: str, system_hash: str | None, request_json: str, fingerprint: bytes
) -> str:
    """sha256 (128 bits) of everything that decides a request's answer: model, system prompt,
    the item's stored request and the spec defaults (see `defaults_fingerprint`). Attempts
    get it when they are laid out; equal hashes mean an answer can be reused."""
    digest = request_hasher(f"{provider}:{model}", system_hash, fingerprint)
    digest.update(request_json.encode())
    return digest.hexdigest()[:32]


def resolve(request: dict[str, Any], spec: JobSpec) -> tuple[int, float | None, dict[str, Any]]:
    """(max_tokens, temperature, params) of a stored request with the spec's defaults."""
    defaults = spec.defaults
    params = request.get("params")
    return (
        request.get("max_tokens", defaults.max_tokens),
        request.get("temperature", defaults.temperature),
        {**defaults.params, **params} if params else defaults.params,
    )


def request_from(
    request: dict[str, Any],
    spec: JobSpec,
    custom_id: str,
    model: str,
    *,
    system: str | None = None,
    cache_key: str | None = None,
    cache_ttl: Literal["5m", "1h"] | None = None,
) -> Request:
    """The Request for a stored request dict (see `build_request`)."""
    max_tokens, temperature, params = resolve(request, spec)
    return Request(
        custom_id=custom_id,
        model=model,
        messages=request["messages"],
        max_tokens=max_tokens,
        system=system,
        temperature=temperature,
        params=params,
        cache_key=cache_key,
        cache_ttl=cache_ttl,
        json_schema=spec.validation.json_schema,
    )


def build_request(
    item: Any,
    spec: JobSpec,
    attempt: Any,
    *,
    system: str | None = None,
    cache_key: str | None = None,
    cache_ttl: Literal["5m", "1h"] | None = None,
) -> Request:
    """The Request of one attempt: the item's stored request (`item.request_json`, text or
    dict) with the spec defaults, the system prompt text, and the attempt's `custom_id` and
    `model`. `cache_key` is the cache group id; `cache_ttl` only for Anthropic groups whose
    caching pays."""
    stored = item.request_json
    request = orjson.loads(stored) if isinstance(stored, str | bytes) else stored
    return request_from(
        request, spec, attempt.custom_id, attempt.model,
        system=system, cache_key=cache_key, cache_ttl=cache_ttl,
    )  # fmt: skip
