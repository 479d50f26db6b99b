"""DeepSeek: no batch API, so its requests always go through direct mode
(batcher.providers.direct) to `https://api.deepseek.com/chat/completions` through the openai SDK.

This module is DeepSeek's wire format for the planner: OpenAI batch lines without
`prompt_cache_key` (DeepSeek caches repeated prefixes on its own and documents no such
field), and the limits of one direct-mode batch file.
"""

from __future__ import annotations

from typing import Any

from batcher.providers.base import NO_CACHE, CachePlan, Request
from batcher.providers.direct import MAX_BYTES, MAX_REQUESTS
from batcher.providers.openai import (
    MESSAGES_VERBATIM,
    cached_prefix,
    render_line_without_cache_key,
)

NAME = "deepseek"
__all__ = [
    "MAX_BYTES", "MAX_REQUESTS", "MESSAGES_VERBATIM", "NAME", "plan_cache", "render_line",
]  # fmt: skip


def render_line(request: Request) -> bytes:
    """One DeepSeek line: OpenAI's, without prompt_cache_key, with DeepSeek's own params."""
    return render_line_without_cache_key(request, NAME)


def plan_cache(
    model: str, prefix_tokens: int, group_size: int, batch_requests: int, spec: Any
) -> CachePlan:
    """DeepSeek caches a repeated, byte-identical prefix on its own ("implicit"); the cached
    share is counted as OpenAI's (1,024 tokens or more, in 128-token steps), as planned
    before this policy moved here."""
    read = cached_prefix(prefix_tokens)
    if group_size < 2 or not read:
        return NO_CACHE
    return CachePlan(mode="implicit", read_tokens=read)
