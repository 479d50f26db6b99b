"""OpenAI Files + Batches (chat completions endpoint), through the official SDK."""

from __future__ import annotations

from typing import Any

import orjson

from batcher.providers.base import Request

NAME = "openai"
ENDPOINT = "/v1/chat/completions"
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024


def render_body(request: Request) -> dict[str, Any]:
    """The chat completions body of `request`."""
    messages = request.messages
    if request.system is not None:
        messages = [{"role": "system", "content": request.system}, *messages]
    # max_completion_tokens: reasoning models (gpt-5, o-series) refuse max_tokens.
    body: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "max_completion_tokens": request.max_tokens,
    }
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.cache_key is not None:
        body["prompt_cache_key"] = request.cache_key
    body.update(request.params)
    return body


def render_line(request: Request) -> bytes:
    """One line of an OpenAI batch input file."""
    line = {"custom_id": request.custom_id, "method": "POST", "url": ENDPOINT}
    line["body"] = render_body(request)
    return orjson.dumps(line) + b"\n"
