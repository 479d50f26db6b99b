"""DeepSeek: no batch API, so its requests always go through direct mode
(batcher.providers.direct) to `https://api.deepseek.com/chat/completions` through the openai SDK.

This module is DeepSeek's wire format for the planner: OpenAI batch lines without
`prompt_cache_key` (DeepSeek caches repeated prefixes on its own and documents no such
field), and the limits of one direct-mode batch file.
"""

from __future__ import annotations

from batcher.providers.direct import MAX_BYTES, MAX_REQUESTS
from batcher.providers.openai import render_line_without_cache_key as render_line

NAME = "deepseek"
__all__ = ["MAX_BYTES", "MAX_REQUESTS", "NAME", "render_line"]
