"""Prompt-cache accounting: OpenAI and Gemini implicit prefix caching, Anthropic cache_control.

Entries live on the sandbox clock: each has the time it was written and the time it lapses;
a read refreshes it (both providers keep a used prefix warm). Requests are processed in order
at their finish times, so in a cache group the first request writes and the others read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import accumulate

from batcher.sandbox.prompts import CHUNK, Breakpoint, Part, chain, part_count

OPENAI_MIN = 1024
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
MAX_BREAKPOINTS = 4


class CacheControlError(ValueError):
    """A request's cache_control markers break the provider's rules (a per-request error)."""


class PromptCache:
    """Cache entries by key: (written, expires) on the sandbox clock."""

    def __init__(self) -> None:
        self._entries: dict[object, tuple[float, float]] = {}

    def alive(self, key: object, now: float, before: float | None = None) -> bool:
        """Whether `key` is cached at `now` (and, with `before`, was written before then)."""
        entry = self._entries.get(key)
        if entry is None or not entry[0] <= now < entry[1]:
            return False
        return before is None or entry[0] < before

    def put(self, key: object, now: float, ttl: float) -> None:
        old = self._entries.get(key)
        written = old[0] if old is not None and old[0] <= now < old[1] else now
        self._entries[key] = (written, now + ttl)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class ColdStart:
    """A batch's requests run concurrently: the first `n` requests of each cache group in
    the batch do not see the writes other requests of the batch made, only entries written
    before it started (an earlier batch, a warming request)."""

    def __init__(self, n: int, started: float) -> None:
        self.n, self.started = n, started
        self.seen: dict[object, int] = {}

    def before(self, group: object) -> float | None:
        """The time entries must predate for this request of `group` (None: any entry)."""
        count = self.seen.get(group, 0)
        self.seen[group] = count + 1
        return self.started if count < self.n else None


def cold_start(state, batch_id: str, provider: str, started: float) -> ColdStart:  # noqa: ANN001
    """The ColdStart of one batch (kept on the sandbox state)."""
    found = state.cold_starts.get(batch_id)
    if found is None:
        n = state.config.cold_requests.get(provider, 0)
        found = state.cold_starts[batch_id] = ColdStart(n, started)
    return found


def openai_cached_tokens(
    cache: PromptCache,
    model: str,
    cache_key: str | None,
    parts: tuple[Part, ...],
    now: float,
    ttl: float,
    miss: bool = False,
    cold: ColdStart | None = None,
) -> tuple[int, int]:
    """(prompt tokens, cached tokens: 0 or 1024 + k*128) of one request; writes its prefixes.

    `prompt_cache_key` namespaces the cache: requests only share prefixes under one key.
    `cold` makes the first requests of a group in a batch miss what the batch wrote.
    """
    links = chain(parts)
    first = OPENAI_MIN // CHUNK - 1  # index of the hash covering the first 1,024 tokens
    if len(links.hashes) <= first:
        return links.length, 0
    hit = 0
    before = cold.before((model, cache_key, links.hashes[first])) if cold else None
    if not miss:
        for index in range(len(links.hashes) - 1, first - 1, -1):
            if cache.alive((model, cache_key, links.hashes[index]), now, before):
                hit = (index + 1) * CHUNK
                break
    for index in range(first, len(links.hashes)):
        cache.put((model, cache_key, links.hashes[index]), now, ttl)
    return links.length, hit


def gemini_cached_tokens(
    cache: PromptCache,
    model: str,
    parts: tuple[Part, ...],
    now: float,
    ttl: float,
    minimum: int,
    miss: bool = False,
) -> tuple[int, int]:
    """(prompt tokens, cached tokens) of one Gemini request under implicit caching.

    Prompts shorter than the model's `minimum` are not cached. A hit reports the longest
    cached prefix, counted in whole 128-token chunks (the sandbox's unit of prefix identity).
    """
    links = chain(parts)
    if links.length < minimum:
        return links.length, 0
    hit = 0
    if not miss:
        for index in range(len(links.hashes) - 1, -1, -1):
            if cache.alive((model, links.hashes[index]), now):
                hit = (index + 1) * CHUNK
                break
    for key in links.hashes:
        cache.put((model, key), now, ttl)
    return links.length, hit


@dataclass(frozen=True)
class AnthropicCacheUsage:
    input_tokens: int
    read: int
    write_5m: int
    write_1h: int


def anthropic_min_tokens(model: str, overrides: dict[str, int] | None = None) -> int:
    """Smallest cacheable prompt for a model (shorter prompts are silently not cached).

    Documented: 4,096 for Opus 4.5 / 4.6 and Haiku 4.5, 2,048 for Haiku 3 / 3.5, 1,024 for
    the other Sonnet and Opus models; Sonnet 4.6 is documented at 1,024 but users measured
    caching only from 2,048 (anthropic-sdk-python#1194): the less convenient is modelled."""
    if overrides and model in overrides:
        return overrides[model]
    name = model.lower()
    if re.search(r"opus-4-[5-9]|haiku-4-5|-5\b|-5-", name):
        return 4096
    if re.search(r"haiku-3|3-5-haiku|3-haiku|sonnet-4-6", name):
        return 2048
    return 1024


def check_breakpoints(marks: list[Breakpoint]) -> None:
    """Raise CacheControlError for more than 4 markers, bad TTLs, or 1h after 5m."""
    if len(marks) > MAX_BREAKPOINTS:
        raise CacheControlError(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(marks)}."
        )
    seen_5m = False
    for mark in marks:
        if mark.ttl not in TTL_SECONDS:
            raise CacheControlError(f"cache_control.ttl must be '5m' or '1h', got {mark.ttl!r}")
        if mark.ttl == "1h" and seen_5m:
            raise CacheControlError(
                "a ttl='1h' cache_control block must not come after a ttl='5m' one"
            )
        seen_5m = seen_5m or mark.ttl == "5m"


def anthropic_usage(
    cache: PromptCache,
    model: str,
    parts: tuple[Part, ...],
    marks: list[Breakpoint],
    now: float,
    miss: bool = False,
    cold: ColdStart | None = None,
    minimums: dict[str, int] | None = None,
) -> AnthropicCacheUsage:
    """Input, cache read and cache write (5m/1h) tokens for one request, updating the cache.

    `cold` makes the first requests of a group in a batch miss what the batch wrote."""
    check_breakpoints(marks)
    sums = [0, *accumulate(part_count(p) for p in parts)]
    total = sums[-1]
    minimum = anthropic_min_tokens(model, minimums)
    marks = [m for m in marks if sums[m.end] >= minimum]
    if not marks:
        return AnthropicCacheUsage(total, 0, 0, 0)
    keys = [(model, hash(parts[: m.end])) for m in marks]
    before = cold.before(keys[0]) if cold else None
    hit = -1
    if not miss:
        hit = next(
            (i for i in range(len(marks) - 1, -1, -1) if cache.alive(keys[i], now, before)), -1
        )
    writes = {"5m": 0, "1h": 0}
    done = sums[marks[hit].end] if hit >= 0 else 0
    for i, mark in enumerate(marks):
        if i > hit:
            writes[mark.ttl] += sums[mark.end] - done
            done = sums[mark.end]
        cache.put(keys[i], now, TTL_SECONDS[mark.ttl])
    read = sums[marks[hit].end] if hit >= 0 else 0
    return AnthropicCacheUsage(total - sums[marks[-1].end], read, writes["5m"], writes["1h"])
