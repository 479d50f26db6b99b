"""How people see a cache group: the name of its system prompt and one short id.

Every table that shows a cache group (`batcher plan`, `batcher report`, exports) names it by
its prompt, the spec's `[prompts]` key, or the first words of an inline prompt, and by the
first eight hex digits of the prompt's hash (the `prompt` table's key), so the same group
reads the same everywhere. The provider-side key (OpenAI's prompt_cache_key, which also
depends on the model) stays in JSON.
"""

from __future__ import annotations

from collections.abc import Iterable

from batcher.spec import JobSpec
from batcher.store.prompts import prompt_hash

SHORT_ID = 8
FIRST_WORDS = 4
NO_PROMPT = "(no system prompt)"


def short_id(system_hash: str | None) -> str:
    return (system_hash or "")[:SHORT_ID]


def prompt_names(specs: Iterable[JobSpec]) -> dict[str, str]:
    """prompt hash -> its [prompts] key, over every spec given (first one wins)."""
    names: dict[str, str] = {}
    for spec in specs:
        for name, text in spec.prompts.items():
            names.setdefault(prompt_hash(text), name)
    return names


def first_words(text: str, n: int = FIRST_WORDS) -> str:
    words = text.split()
    return " ".join(words[:n]) + ("…" if len(words) > n else "")


def prompt_name(system_hash: str | None, text: str | None, names: dict[str, str]) -> str:
    """The prompt's [prompts] key, else the first words of its text."""
    if system_hash is None:
        return NO_PROMPT
    return names.get(system_hash) or first_words(text or "")


def group_label(system_hash: str | None, text: str | None, names: dict[str, str]) -> str:
    """'billing 34072c43': the prompt's name and the group's short id."""
    if system_hash is None:
        return NO_PROMPT
    return f"{prompt_name(system_hash, text, names)} {short_id(system_hash)}"
