"""Anthropic Message Batches, through the official SDK."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson

from batcher.money.prices import unit_prices
from batcher.providers.base import (
    INVALID,
    NO_CACHE,
    TOO_LONG,
    TRANSIENT,
    BatchState,
    CachePlan,
    ErrorClass,
    Request,
    Result,
    Usage,
)
from batcher.providers.calls import (
    ProviderError,
    RetryPolicy,
    create_once,
    guarded_lines,
    open_client,
    with_retries,
)
from batcher.providers.capabilities import (
    ModelCaps,
    cold_requests,
    expected_misses,
    lookup,
    margin,
    min_cache_tokens,
    output_cap_problems,
    sampling_problems,
    split_params,
    unkeyed,
    writes_pay,
)

T = TypeVar("T")

NAME = "anthropic"
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
MESSAGES_VERBATIM = True  # render_params copies the messages as they are


# Model families (Anthropic models overview, structured outputs and prompt caching pages;
# docs/providers.md). min_cache_tokens is the less convenient of the documented and the
# measured minimum (Sonnet 4.6: 1,024 documented, 2,048 measured). Structured outputs
# (output_config.format) are generally available on the 4.5 / 4.6 models; older ones get
# the schema as a forced tool. Models after Opus 4.6 refuse temperature.
def _claude(output: int, structured: str, min_cache: int, temperature: bool = True) -> ModelCaps:
    return ModelCaps(200_000, output, structured_output=structured, min_cache_tokens=min_cache,
                     accepts_temperature=temperature)  # fmt: skip


MODELS = (
    ("claude-opus-4-7", _claude(128_000, "native", 4096, temperature=False)),
    ("claude-opus-4-6", _claude(128_000, "native", 4096)),
    ("claude-opus-4-5", _claude(64_000, "native", 4096)),
    ("claude-opus-4", _claude(32_000, "tool", 1024)),  # Opus 4 and 4.1
    ("claude-sonnet-4-6", _claude(64_000, "native", 2048)),
    ("claude-sonnet-4-5", _claude(64_000, "native", 1024)),
    ("claude-sonnet-4", _claude(64_000, "tool", 1024)),
    ("claude-haiku-4-5", _claude(64_000, "native", 4096)),
    ("claude-3-7-sonnet", _claude(64_000, "tool", 1024)),
    ("claude-3-5-haiku", _claude(8_192, "tool", 2048)),
    ("claude-3-haiku", _claude(4_096, "tool", 2048)),
    ("claude-opus-5", _claude(128_000, "native", 4096, temperature=False)),
    ("claude-sonnet-5", _claude(64_000, "native", 4096, temperature=False)),
    ("claude-haiku-5", _claude(64_000, "native", 4096, temperature=False)),
)
UNKNOWN = ModelCaps(200_000, 8_192, structured_output="tool", min_cache_tokens=4096, known=False)
# Top-level Messages fields (API reference, Create a Message); any other is refused with
# "Extra inputs are not permitted".
PARAM_FIELDS = frozenset(
    "model messages max_tokens system metadata stop_sequences stream temperature top_p top_k "
    "tools tool_choice thinking service_tier container mcp_servers output_config "
    "output_format context_management inference_geo cache_control".split()
)
ANSWER_TOOL = "answer"  # the forced tool that carries a JSON Schema on older models


# Requests of a cache group in each batch that miss the cache: requests of a batch run
# concurrently and none sees another's cache write: cold batches of 10 to 48 requests read
# 0% (Bike4Mind/bike4mind#2741); the docs quote 30-98% for large batches.
COLD_REQUESTS = 100


@lru_cache(maxsize=256)  # asked once a request when batch files are written
def model_caps(model: str) -> ModelCaps:
    """What `model` accepts (the table above; an unknown model gets cautious values)."""
    return lookup(MODELS, model, UNKNOWN)


def structured_output(model: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The params that make `model` answer with an instance of `schema`: output_config.format
    where structured outputs are available (the SDK's transform_schema moves what the
    feature does not take, such as minimum, into descriptions), else a forced tool."""
    if model_caps(model).structured_output == "native":
        from anthropic import transform_schema  # the SDK; this module is batcher.providers.*

        return {"output_config": {"format": {"type": "json_schema",
                                             "schema": transform_schema(schema)}}}  # fmt: skip
    tool = {"name": ANSWER_TOOL, "description": "Give the answer.", "input_schema": schema}
    return {"tools": [tool], "tool_choice": {"type": "tool", "name": ANSWER_TOOL}}


def render_params(request: Request) -> dict[str, Any]:
    """The Messages API params of `request`, with cache_control where the planner asked:
    neutral settings in Anthropic's fields, then the params written for Anthropic (or for
    every provider) as they are."""
    neutral, raw = split_params(request.params, NAME)
    params: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": request.messages,
    }
    if request.system is not None:
        block: dict[str, Any] = {"type": "text", "text": request.system}
        if request.cache_ttl is not None:
            block["cache_control"] = {"type": "ephemeral", "ttl": request.cache_ttl}
        params["system"] = [block]
    temperature = neutral.get("temperature", request.temperature)
    if temperature is not None:
        params["temperature"] = temperature
    if "stop" in neutral:
        stop = neutral["stop"]
        params["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if request.json_schema is not None:
        params.update(structured_output(request.model, request.json_schema))
    params.update(raw)
    return params


def param_problems(
    model: str, params: dict[str, Any], temperature: float | None, max_tokens: int, where: str
) -> list[str]:
    """What Anthropic would refuse in these settings for `model`, each with its fix."""
    caps = model_caps(model)
    neutral, raw = split_params(params, NAME)
    temperature = raw.get("temperature", neutral.get("temperature", temperature))
    problems = sampling_problems(caps, temperature, raw, where)
    problems += output_cap_problems(caps, max_tokens)
    for key in unkeyed(params):
        if key not in PARAM_FIELDS:
            problems.append(
                f"params.{key} is not a Messages field (Anthropic refuses it: 'Extra inputs "
                f"are not permitted'): move it under [{where}.params.openai] (or the table "
                "of the provider that takes it); [validation].json_schema gives structured "
                "output on every provider"
            )
    return problems


def render_line(request: Request) -> bytes:
    """One line of the local batch file: a request of the Message Batches create call."""
    return orjson.dumps({"custom_id": request.custom_id, "params": render_params(request)}) + b"\n"


# --- the batch client (engine side) -------------------------------------------------------

OUTCOMES = {"succeeded": "succeeded", "errored": "errored", "canceled": "cancelled",
            "expired": "expired"}  # fmt: skip
FIND_SLACK_S = 300  # clock skew allowed between us and the provider when matching by time
_INDEX_RE = re.compile(r"requests\.(\d+)")


def usage_of(raw: dict[str, Any] | None) -> Usage | None:
    """Provider-neutral usage of a Messages `usage` object; input counts every input token."""
    if not raw:
        return None
    read = raw.get("cache_read_input_tokens") or 0
    written = raw.get("cache_creation_input_tokens") or 0
    creation = raw.get("cache_creation") or {}
    w5m = creation.get("ephemeral_5m_input_tokens") or 0
    w1h = creation.get("ephemeral_1h_input_tokens") or 0
    if written and not (w5m or w1h):  # older answers give only the total: it is 5m writes
        w5m = written
    return Usage(
        input_tokens=(raw.get("input_tokens") or 0) + read + w5m + w1h,
        cache_read_tokens=read,
        cache_write_5m_tokens=w5m,
        cache_write_1h_tokens=w1h,
        output_tokens=raw.get("output_tokens") or 0,
    )


# Message.stop_reason -> the provider-neutral stop reason; other values pass as they are.
STOP_REASONS = {"end_turn": "end", "stop_sequence": "end", "max_tokens": "max_tokens"}


# error.type of an `errored` result that passes when sent again later (rate limits, server
# errors, overload); a type not known here is treated the same, bounded by the retry limits.
REFUSED_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "billing_error",
    }
)
# An invalid_request_error over the context window says "prompt is too long: N tokens > M
# maximum", or "input length and `max_tokens` exceed context limit: N + M > L" (the type is
# the same as for any other refused request).
TOO_LONG_RE = re.compile(r"prompt is too long|exceed context limit", re.I)


def error_class_of(kind: str | None, message: str | None) -> ErrorClass:
    """What an `errored` result says about sending the request again, from its error type and
    message (Anthropic gives no separate code)."""
    if kind == "invalid_request_error" and TOO_LONG_RE.search(message or ""):
        return TOO_LONG
    return INVALID if kind in REFUSED_TYPES else TRANSIENT


def answer_text(content: list[dict[str, Any]]) -> str | None:
    """The text blocks of a Message joined, or the input of the forced answer tool as JSON."""
    texts = [b.get("text", "") for b in content if b.get("type") == "text"]
    if texts:
        return "".join(texts)
    for block in content:
        if block.get("type") == "tool_use" and block.get("name") == ANSWER_TOOL:
            return orjson.dumps(block.get("input")).decode()
    return None


def parse_result(row: dict[str, Any]) -> Result:
    """One line of a batch's results as a Result."""
    custom_id = row["custom_id"]
    result = row.get("result") or {}
    kind = result.get("type")
    if kind == "succeeded":
        message = result.get("message") or {}
        text = answer_text(message.get("content") or [])
        result = Result(custom_id, "succeeded", text, usage_of(message.get("usage")))
        reason = message.get("stop_reason")
        forced = any(b.get("name") == ANSWER_TOOL for b in message.get("content") or [])
        # The forced answer tool ends with tool_use: that is its normal end.
        result.stop_reason = (
            "end" if reason == "tool_use" and forced else STOP_REASONS.get(reason, reason)
        )
        return result
    if kind == "errored":
        error = (result.get("error") or {}).get("error") or {}
        return Result(
            custom_id,
            "errored",
            error_code=error.get("type") or "errored",
            error_message=error.get("message"),
            error_class=error_class_of(error.get("type"), error.get("message")),
        )
    outcome = OUTCOMES.get(kind, "errored")
    code = None if outcome != "errored" else str(kind)
    return Result(custom_id, outcome, error_code=code, error_class=TRANSIENT)


def _parse_time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def state_of(batch: Any) -> BatchState:
    """A MessageBatch of the SDK as a BatchState."""
    c = batch.request_counts
    finished = c.succeeded + c.errored + c.canceled + c.expired
    return BatchState(
        provider_batch_id=batch.id,
        raw_status=batch.processing_status,
        ended=batch.processing_status == "ended",
        total=c.processing + finished,
        done=finished,
        created_at=_parse_time(batch.created_at),
    )


BODY_SLICE = 1 << 20  # bytes of the batch file read and sent at a time


def request_body(path: Path) -> tuple[int, Callable[[], Iterator[bytes]]]:
    """The create's JSON body, `{"requests": [...]}`, made from the batch file's lines (one
    `{"custom_id", "params"}` each) as it is sent: its length, and a function that starts
    streaming it. The file is never parsed or held whole, so a 200 MB batch costs a slice."""
    n_lines = n_bytes = 0
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                n_lines, n_bytes = n_lines + 1, n_bytes + len(line.strip())
    length = len(b'{"requests":[') + n_bytes + max(n_lines - 1, 0) + len(b"]}")

    def stream() -> Iterator[bytes]:
        part, size, separator = [b'{"requests":['], 0, b""
        with open(path, "rb") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                part += (separator, line)
                separator, size = b",", size + len(line)
                if size >= BODY_SLICE:  # a slice is full: send it, start the next
                    yield b"".join(part)
                    part, size = [], 0
        part.append(b"]}")
        yield b"".join(part)

    return length, stream


class AnthropicBatches:
    """Anthropic Message Batches through the official SDK."""

    name = NAME
    max_requests = MAX_REQUESTS
    max_bytes = MAX_BYTES

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        policy: RetryPolicy | None = None,
        timeout: float = 120.0,
    ) -> None:
        import anthropic as sdk  # the SDK; this module is batcher.providers.anthropic

        self._sdk = sdk
        self.policy = policy or RetryPolicy()
        self.client = open_client(
            sdk.Anthropic,
            sdk.AnthropicError,
            NAME,
            "ANTHROPIC_API_KEY",
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
        )

    def render_line(self, request: Request) -> bytes:
        return render_line(request)

    def _read(self, operation: str, call: Callable[[], T]) -> T:
        return with_retries(
            call,
            provider=NAME,
            operation=operation,
            policy=self.policy,
            connection_errors=(self._sdk.APIConnectionError,),
        )

    def submit(
        self,
        local_id: str,
        path: Path,
        model: str,
        *,
        input_file_id: str | None = None,
        on_uploaded: Callable[[str], None] | None = None,
    ) -> BatchState:
        """Create the message batch from the local file (there is no upload step).

        429 waits and asks again; other 4xx raise CreateRefused (with the request index as
        `line` when the message names one); 5xx and lost answers raise CreateUncertain.
        """
        length, stream = request_body(Path(path))
        headers = {"Content-Type": "application/json", "Content-Length": str(length)}
        batch = create_once(
            # The SDK's create would take the requests as dicts, all of them at once; its
            # `post` sends the body the file makes, slice by slice (a new stream each try).
            lambda: self.client.post(
                "/v1/messages/batches",
                cast_to=self._sdk.types.messages.MessageBatch,
                content=stream(),
                options={"headers": headers},
            ),
            provider=NAME,
            policy=self.policy,
            status_error=self._sdk.APIStatusError,
            connection_error=self._sdk.APIConnectionError,
            refusal=_create_error,
            local_id=local_id,
        )
        return state_of(batch)

    def find(self, local_id: str, *, created_after: datetime, n_requests: int) -> list[BatchState]:
        """Batches created since `created_after` (less clock slack) with `n_requests` requests.

        Message batches carry no metadata, so this matches on what the list offers; the
        caller must treat more than one candidate as undecidable.
        """
        since = created_after.timestamp() - FIND_SLACK_S
        found, cursor = [], None
        while True:
            kwargs = {"limit": 100} | ({"after_id": cursor} if cursor else {})
            page = self._read(
                "batch list", lambda kw=kwargs: self.client.messages.batches.list(**kw)
            )
            older = False
            for batch in page.data:
                state = state_of(batch)
                if state.created_at is not None and state.created_at.timestamp() < since:
                    older = True
                elif state.total == n_requests:
                    found.append(state)
            if not page.data or not page.has_more or older:
                return found
            cursor = page.data[-1].id

    def poll(self, provider_batch_id: str) -> BatchState:
        return state_of(
            self._read(
                "batch retrieve",
                lambda: self.client.messages.batches.retrieve(provider_batch_id),
            )
        )

    def results(self, state: BatchState) -> Iterator[Result]:
        """Stream the batch's results line by line (parsed with orjson, not the SDK models)."""
        decoder = self._read(
            "batch results",
            lambda: self.client.messages.batches.results(state.provider_batch_id),
        )
        response = decoder.http_response
        try:
            for line in guarded_lines(response.iter_lines(), NAME, "batch results"):
                if line.strip():
                    yield parse_result(orjson.loads(line))
        finally:
            response.close()

    def cancel(self, provider_batch_id: str) -> BatchState:
        try:
            batch = self._read(
                "batch cancel",
                lambda: self.client.messages.batches.cancel(provider_batch_id),
            )
        except ProviderError as exc:
            if exc.status != 400:  # 400: already ended, nothing to cancel
                raise
            return self.poll(provider_batch_id)
        return state_of(batch)


def _create_error(exc: Any) -> dict[str, Any]:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body) if isinstance(body, dict) else {}
    message = error.get("message") or str(exc)
    index = _INDEX_RE.search(message)
    return {
        "code": error.get("type") or f"http_{exc.status_code}",
        "message": message,
        "line": int(index.group(1)) + 1 if index else None,
    }


# --- prompt-cache policy ------------------------------------------------------------------


def min_cacheable_tokens(model: str, spec: Any = None) -> int:
    """The shortest prefix (tokens) that `model` caches (a shorter one is silently not
    cached): the spec's [caching] min_tokens, else the table (Sonnet 4.6: the measured
    2,048, not the documented 1,024)."""
    return min_cache_tokens(model_caps(model), NAME, model, spec)


def cache_ttl(
    model: str, prefix_tokens: int, group_size: int, batch_requests: int, spec: Any
) -> Literal["5m", "1h"] | None:
    """The cache_control TTL for a group's shared system prompt: the spec's (1h unless it
    says 5m, the batch guide's advice for shared context), or None when caching cannot pay:
    the prefix is surely too short, or the first COLD_REQUESTS of each batch, which miss and
    write, are not repaid by the others' reads."""
    caps = model_caps(model)
    if prefix_tokens * (1 + margin(caps, spec)) < min_cacheable_tokens(model, spec):
        return None
    caching = getattr(spec, "caching", None)
    ttl = caching.anthropic_ttl if caching else "1h"
    misses = expected_misses(group_size, cold_requests(spec, NAME, COLD_REQUESTS), batch_requests)
    units = unit_prices(NAME, model, batch=True, spec=spec)
    return ttl if writes_pay(units, ttl, group_size, misses) else None


def plan_cache(
    model: str, prefix_tokens: int, group_size: int, batch_requests: int, spec: Any
) -> CachePlan:
    """A marked prefix: the first requests of a group in each batch write it, the others
    read it. Counted in cl100k (Claude's tokenizer is not available offline), a prefix
    within the margin of the minimum is marked but "may not cache"."""
    ttl = cache_ttl(model, prefix_tokens, group_size, batch_requests, spec)
    if ttl is None:
        return NO_CACHE
    caps = model_caps(model)
    certain = prefix_tokens * (1 - margin(caps, spec)) >= min_cacheable_tokens(model, spec)
    mode = ttl if certain else f"{ttl}, may not cache"
    return CachePlan(mode=mode, read_tokens=prefix_tokens, write_ttl=ttl, certain=certain)
