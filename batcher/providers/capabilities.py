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

    The provider's own table wins over unkeyed keys; other providers' tables are dropped."""
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
