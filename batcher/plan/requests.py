"""Provider-neutral requests from stored items, and the id of their cache group.

`build_request` resolves an item's stored request against the spec's defaults;
`cache_group_id` names the group of requests sharing a prefix. Whether and how a group is
cached is each provider's policy (`plan_cache` in batcher/providers/<name>.py); the provider
modules turn `Request.cache_key` / `Request.cache_ttl` into `prompt_cache_key` /
`cache_control`.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import orjson

from batcher.providers.base import Request
from batcher.spec import JobSpec


def cache_group_id(provider: str, model: str, system_hash: str | None) -> str | None:
    """The id of the cache group of requests to `provider:model` sharing a system prompt
    (None without one). It travels as OpenAI's prompt_cache_key."""
    if system_hash is None:
        return None
    digest = hashlib.sha256(f"{provider}:{model}:{system_hash}".encode()).hexdigest()
    return "g" + digest[:16]


def defaults_fingerprint(spec: JobSpec) -> bytes:
    """The spec defaults that shape a request, as bytes for `request_hash`."""
    d = spec.defaults
    return orjson.dumps(
        [d.max_tokens, d.temperature, d.params, d.reasoning_effort, spec.validation.json_schema],
        option=orjson.OPT_SORT_KEYS,
    )


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


def _with_effort(spec: JobSpec, params: dict[str, Any]) -> dict[str, Any]:
    effort = spec.defaults.reasoning_effort
    if effort is not None and "reasoning_effort" not in params:
        return {**params, "reasoning_effort": effort}
    return params


# id(spec) -> (spec, its default params resolved): most requests set no params of their own,
# and sharing one dict (read only) lets the provider modules split it once (split_params).
_default_params: dict[int, tuple[JobSpec, dict[str, Any]]] = {}


def _defaults_of(spec: JobSpec) -> dict[str, Any]:
    entry = _default_params.get(id(spec))
    if entry is None or entry[0] is not spec:
        if len(_default_params) > 64:  # specs are few; a long-lived scheduler must not grow this
            _default_params.clear()
        entry = _default_params[id(spec)] = (spec, _with_effort(spec, spec.defaults.params))
    return entry[1]


def resolve(request: dict[str, Any], spec: JobSpec) -> tuple[int, float | None, dict[str, Any]]:
    """(max_tokens, temperature, params) of a stored request with the spec's defaults; the
    spec's reasoning_effort joins the params unless they set their own. The params are
    shared between requests: read them, never change them."""
    defaults = spec.defaults
    params = request.get("params")
    if params:
        merged = _with_effort(spec, {**defaults.params, **params})
    else:
        merged = _defaults_of(spec)
    return (
        request.get("max_tokens", defaults.max_tokens),
        request.get("temperature", defaults.temperature),
        merged,
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
        json_schema=params.get("json_schema") or spec.validation.json_schema,
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
