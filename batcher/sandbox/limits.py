"""Model context windows as the sandbox enforces them: the genai-prices data (which records
each model's window), overridden per model by the `context_windows` setting."""

from __future__ import annotations

from functools import lru_cache

from genai_prices import Usage, calc_price


def context_window(config, provider: str, model: str) -> int | None:
    """The context window the sandbox enforces for `model`; None when unknown (no limit)."""
    own = config.context_windows.get(model)
    return own if own is not None else _known_window(provider, model)


@lru_cache(maxsize=256)
def _known_window(provider: str, model: str) -> int | None:
    try:
        return calc_price(Usage(input_tokens=1), model, provider_id=provider).model.context_window
    except LookupError:
        return None
