"""Synchronous chat completions, for direct mode: OpenAI's and xAI's `/v1/chat/completions`
and DeepSeek's `/deepseek/chat/completions` (DeepSeek's base URL has no `/v1`).

Each call is answered at once (after `chat_latency_s` of real time, for the direct-mode
bench) and billed in the ledger under the caller's `X-Client-Request-Id` header, which the
direct-mode client sets to the request's custom_id (OpenAI documents the header for tracing;
the others ignore it). `chat_rpm` limits requests per minute per provider on the sandbox
clock: over it, a 429 with `retry-after`. DeepSeek's usage reports its cache as
`prompt_cache_hit_tokens` / `prompt_cache_miss_tokens` (no `prompt_tokens_details`).
Faults: `http429`/`http500` on route `chat`, `request_error` (a 500, not billed),
`create_lost` (billed, then answered 500: the answer was lost). Sources: docs/providers.md.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from batcher.sandbox.errors import ApiError, retry_headers
from batcher.sandbox.http import json_body
from batcher.sandbox.openai_results import CHAT, kinds_of, run_request
from batcher.sandbox.state import SandboxState


@dataclass
class _Call:
    """What run_request needs of a batch: an id and an endpoint."""

    id: str
    endpoint: str = CHAT


def _check_rate(state: SandboxState, provider: str, now: float) -> None:
    limit = state.config.chat_rpm.get(provider)
    if not limit:
        return
    window = state.chat_windows.setdefault(provider, deque())
    while window and window[0] <= now - 60.0:
        window.popleft()
    if len(window) >= limit:
        state.ledger.rate_limited[provider] += 1
        wait = window[0] + 60.0 - now
        raise ApiError(
            429,
            f"Rate limit reached: {limit} requests per minute.",
            headers=retry_headers(wait / state.config.speed),  # in real seconds
            code="rate_limit_exceeded",
            retry_after=wait,
        )
    window.append(now)


def deepseek_usage(usage: dict) -> dict:
    """DeepSeek's usage object: the cache as hit and miss tokens of the prompt."""
    kinds = kinds_of(usage)
    out = {
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "total_tokens": usage["total_tokens"],
        "prompt_cache_hit_tokens": kinds["cache_read"],
        "prompt_cache_miss_tokens": kinds["input"],
    }
    if kinds["reasoning"]:
        out["completion_tokens_details"] = {"reasoning_tokens": kinds["reasoning"]}
    return out


def chat_route(provider: str):
    async def complete(request: Request, state: SandboxState) -> Response:
        body = await json_body(request)
        if state.config.chat_latency_s:
            await asyncio.sleep(state.config.chat_latency_s)
        custom_id = request.headers.get("x-client-request-id") or "untracked"
        with state.lock:
            now = state.now()
            _check_rate(state, provider, now)
            state.ledger.submitted_direct(provider, custom_id)
            line = {"custom_id": custom_id, "body": body}
            out, usage = run_request(state, _Call(f"chat-{provider}"), line, now, provider)
            status = (out.get("response") or {}).get("status_code", 500)
            if usage is None:
                error = (out["response"]["body"] or {}).get("error") or {}
                raise ApiError(status, error.get("message", "error"), code=error.get("code"))
            result = out["response"]["body"]
            if provider == "deepseek":
                result["usage"] = deepseek_usage(usage)
                result.pop("service_tier", None)
            model = str(body.get("model", ""))
            state.ledger.bill(provider, "direct", custom_id, model, usage, kinds_of(usage))
            lost = state.faults.fire("create_lost", provider)
        if lost:
            raise ApiError(500, "Internal error (the request was billed; injected by the sandbox).")
        return JSONResponse(result)

    return complete


ROUTES = {
    "openai": [("POST", "/v1/chat/completions", "chat", chat_route("openai"))],
    "xai": [("POST", "/xai/v1/chat/completions", "chat", chat_route("xai"))],
    "deepseek": [
        ("POST", "/deepseek/chat/completions", "chat", chat_route("deepseek")),
        ("POST", "/deepseek/v1/chat/completions", "chat", chat_route("deepseek")),
    ],
}
