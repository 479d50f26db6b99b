"""Per-model size limits: the context window and the most output one request may ask for.

Follow-ups use them: a request refused as too long for one model's context goes to the next
tier whose window is larger, and a truncated answer is retried with a larger max_tokens no
higher than the model's output limit. Context windows come from the genai-prices data (it
records them per model); output limits from the providers' model pages (see
docs/providers.md), by model family, longest prefix first.
"""

from __future__ import annotations

from functools import lru_cache

from genai_prices import Usage, calc_price

# provider -> (model name prefix, max output tokens), most specific first.
MAX_OUTPUT: dict[str, list[tuple[str, int]]] = {
    "openai": [("gpt-5", 128_000), ("gpt-4.1", 32_768), ("gpt-4o", 16_384), ("o", 100_000)],
    "anthropic": [
        ("claude-opus-4-6", 128_000),
        ("claude-opus-4-5", 64_000),
        ("claude-opus-4", 32_000),
        ("claude-sonnet-4", 64_000),
        ("claude-haiku-4-5", 64_000),
        ("claude-3-5-haiku", 8_192),
    ],
    "google": [("gemini-2.5", 65_536), ("gemini-2.0", 8_192)],
}


@lru_cache(maxsize=256)
def context_window(provider: str, model: str) -> int | None:
    """The model's context window in tokens, None when the price data does not know it."""
    try:
        found = calc_price(Usage(input_tokens=1, output_tokens=1), model, provider_id=provider)
    except LookupError:
        return None
    return found.model.context_window


def max_output_tokens(provider: str, model: str) -> int | None:
    """The most output tokens one request to the model may ask for; None when unknown."""
    for prefix, limit in MAX_OUTPUT.get(provider, []):
        if model.startswith(prefix):
            return limit
    return None
