"""The provider protocol and the provider-neutral records that cross it.

Nothing outside `batcher.providers` knows a provider's wire format: the planner hands a
`Request` to `render_line`, the engine hands a batch file to `submit`, and results come back
as `Result` records with a provider-neutral `Usage`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

Outcome = Literal["succeeded", "errored", "expired", "cancelled"]
# What an errored request says about sending it again, read by each provider module from the
# provider's own error type and code (see docs/providers.md):
TRANSIENT = "transient"  # 429, 5xx, overloaded, expired: the same request may pass later
TOO_LONG = "too_long"  # over this model's context window: only a larger window helps
INVALID = "invalid"  # the request itself is refused (bad or unsupported parameter): never
ErrorClass = Literal["transient", "too_long", "invalid"]


@dataclass(frozen=True, slots=True)
class Request:
    """One fully resolved request, before any provider's wire format."""

    custom_id: str  # unique within its batch; [A-Za-z0-9_-]{1,64} so both providers accept it
    model: str  # the provider's model name, without the "provider:" prefix
    messages: list[dict[str, Any]]  # user/assistant turns; content is a string or text blocks
    max_tokens: int
    system: str | None = None
    temperature: float | None = None
    params: dict[str, Any] = field(default_factory=dict)  # passed through (response_format...)
    cache_key: str | None = None  # the cache group: OpenAI prompt_cache_key
    cache_ttl: Literal["5m", "1h"] | None = None  # Anthropic: cache_control on the system block
    json_schema: dict[str, Any] | None = None  # the spec's [validation].json_schema


@dataclass(slots=True)
class Usage:
    """Tokens as billed. `input_tokens` counts every input token, cached ones included."""

    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0  # part of output_tokens, shown separately


@dataclass(slots=True)
class Result:
    """The outcome of one request of a batch."""

    custom_id: str
    outcome: Outcome
    text: str | None = None
    usage: Usage | None = None  # None when nothing was billed
    error_code: str | None = None
    error_message: str | None = None
    # Why the answer ended: "end", "max_tokens" (cut off), or the provider's own word.
    stop_reason: str | None = None
    error_class: ErrorClass | None = None  # for an errored request: what retrying can do


@dataclass(slots=True)
class BatchState:
    """Where a batch is at the provider, in provider-neutral terms."""

    provider_batch_id: str
    raw_status: str  # the provider's own status word
    ended: bool  # terminal at the provider: results (if any) can be read
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    done: int = 0  # requests finished so far (succeeded + failed), for progress
    # validation errors of a batch the provider refused: [{"code", "message", "line"}]
    errors: list[dict[str, Any]] = field(default_factory=list)
    created_at: datetime | None = None
    failed: bool = False  # the provider failed the batch as a whole (OpenAI says "failed")


@dataclass(frozen=True, slots=True)
class CachePlan:
    """What the provider's prompt cache will do for a group of requests sharing a prefix.

    `mode` is what the plan shows and the layout marks: a TTL ("5m", "1h") for a prefix
    marked with cache_control (Anthropic), "key" for a group sent with a cache key (OpenAI),
    "implicit" for a prefix the provider caches on its own (Gemini), None when it will not be
    cached. `read_tokens` is what a request that hits the cache reads from it; `write_ttl` the
    TTL whose write price a miss pays (None: misses cost plain input)."""

    mode: str | None = None
    read_tokens: int = 0
    write_ttl: Literal["5m", "1h"] | None = None
    # False when the prefix was counted without the model's own tokenizer and lies within
    # the margin of its minimum: it "may not cache", so the estimate assumes no cache use.
    certain: bool = True


NO_CACHE = CachePlan()


class WireFormat(Protocol):
    """A provider module's planning side: the hard limits of one batch, its batch file's line
    format, and its prompt-cache policy. Every module in batcher/providers/ named in `NAMES`
    provides it."""

    MAX_REQUESTS: int
    MAX_BYTES: int
    # Whether render_line copies a request's messages into the line as they are, whatever
    # they hold: the planner then joins a cache group's lines from bytes (batcher.plan.lines).
    MESSAGES_VERBATIM: bool

    def render_line(self, request: Request) -> bytes:
        """One line (with its newline) of this provider's batch file for `request`."""
        ...

    def plan_cache(
        self, model: str, prefix_tokens: int, group_size: int, batch_requests: int, spec: Any
    ) -> CachePlan:
        """The cache plan of `group_size` requests to `model` sharing a `prefix_tokens`-token
        system prompt, sent in batches of up to `batch_requests` (`spec`: the JobSpec, for
        prices and overrides)."""
        ...


class Provider(Protocol):
    """One provider's batch API. Implementations live in batcher/providers/<name>.py."""

    name: str
    max_requests: int  # hard limits of one batch
    max_bytes: int

    def render_line(self, request: Request) -> bytes:
        """One line (with its newline) of this provider's batch file for `request`."""
        ...

    def submit(
        self,
        local_id: str,
        path: Path,
        model: str,
        *,
        input_file_id: str | None = None,
        on_uploaded: Callable[[str], None] | None = None,
    ) -> BatchState:
        """Upload the batch file at `path` and create the batch, tagged with `local_id`.

        `input_file_id` is a file uploaded by an earlier try (not uploaded again);
        `on_uploaded(file_id)` is called once an upload is done, before the create, so the
        caller can commit the id. Never retried blindly by the implementation: a lost answer
        must be settled with `find` before trying again.
        """
        ...

    def find(self, local_id: str, *, created_after: datetime, n_requests: int) -> list[BatchState]:
        """Batches at the provider that may be the one created for `local_id`."""
        ...

    def poll(self, provider_batch_id: str) -> BatchState:
        """The current state of a batch."""
        ...

    def results(self, state: BatchState) -> Iterator[Result]:
        """Stream every result of an ended batch, in any order."""
        ...

    def cancel(self, provider_batch_id: str) -> BatchState:
        """Ask the provider to cancel; finished requests are kept."""
        ...
