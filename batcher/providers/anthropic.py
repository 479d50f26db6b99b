"""Anthropic Message Batches, through the official SDK."""

from __future__ import annotations

from typing import Any

import orjson

from batcher.providers.base import Request

NAME = "anthropic"
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024


def render_params(request: Request) -> dict[str, Any]:
    """The Messages API params of `request`, with cache_control where the planner asked."""
    params: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": request.messages,
    }
    if request.system is not None:
        block: dict[str, Any] = {"type": "text", "text": request.system}
        if request.cache_ttl is not None:
            block["cache_control"] = {"type": "ephemeral", "ttl": request.cache_ttl}
        params["system"] = [block]
    if request.temperature is not None:
        params["temperature"] = request.temperature
    params.update(request.params)
    return params


def render_line(request: Request) -> bytes:
    """One line of the local batch file: a request of the Message Batches create call."""
    return orjson.dumps({"custom_id": request.custom_id, "params": render_params(request)}) + b"\n"
