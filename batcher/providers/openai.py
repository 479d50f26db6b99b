"""OpenAI Files + Batches (chat completions endpoint), through the official SDK."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import orjson

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
    delete_once,
    guarded_lines,
    open_client,
    with_retries,
)
from batcher.providers.capabilities import (
    ModelCaps,
    lookup,
    output_cap_problems,
    sampling_problems,
    split_params,
    unkeyed,
)

T = TypeVar("T")

NAME = "openai"
ENDPOINT = "/v1/chat/completions"
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
MESSAGES_VERBATIM = True  # render_body copies the messages as they are, after the system one


# Model families (OpenAI model pages; docs/providers.md). gpt-5 and the o-series reason
# inside max_completion_tokens and take only the default temperature and top_p.
_GPT5 = ModelCaps(400_000, 128_000, reasoning=True, efforts=("minimal", "low", "medium", "high"),
                  fixed_sampling=True, accepts_stop=False, encoding="o200k_base")  # fmt: skip
_GPT5X = ModelCaps(400_000, 128_000, reasoning=True, efforts=("none", "low", "medium", "high"),
                   fixed_sampling=True, accepts_stop=False, encoding="o200k_base")  # fmt: skip
_O_SERIES = ModelCaps(200_000, 100_000, reasoning=True, efforts=("low", "medium", "high"),
                      fixed_sampling=True, accepts_stop=False, encoding="o200k_base")  # fmt: skip
MODELS = (
    ("gpt-5", _GPT5),
    ("gpt-5.", _GPT5X),  # gpt-5.1 and later: "none" replaces "minimal"
    ("o1", _O_SERIES),
    ("o3", _O_SERIES),
    ("o4", _O_SERIES),
    ("gpt-4.1", ModelCaps(1_047_576, 32_768, encoding="o200k_base")),
    ("gpt-4o", ModelCaps(128_000, 16_384, encoding="o200k_base")),
)
UNKNOWN = ModelCaps(128_000, 16_384, known=False)
# Chat completions body fields (API reference, Create chat completion): an unkeyed param
# outside this list would be refused, so plan names it.
BODY_FIELDS = frozenset(
    "messages model audio frequency_penalty function_call functions logit_bias logprobs "
    "max_completion_tokens max_tokens metadata modalities n parallel_tool_calls prediction "
    "presence_penalty prompt_cache_key prompt_cache_retention reasoning_effort "
    "response_format safety_identifier seed service_tier stop store stream stream_options "
    "temperature tool_choice tools top_logprobs top_p user verbosity web_search_options".split()
)


# Requests of a cache group in each batch that miss the cache: OpenAI routes one prefix and
# prompt_cache_key to one machine up to about 15 requests a minute, then overflows (prompt
# caching guide); a batch runs its requests concurrently, so the first ones of a group miss.
COLD_REQUESTS = 16


@lru_cache(maxsize=256)  # asked once a request when batch files are written
def model_caps(model: str) -> ModelCaps:
    """What `model` accepts (the table above; an unknown model gets common values)."""
    return lookup(MODELS, model, UNKNOWN)


def strict_compatible(schema: Any) -> bool:
    """Whether Structured Outputs' strict mode takes `schema` as written: every object lists
    all its properties as required and sets additionalProperties to false."""
    if isinstance(schema, list):
        return all(strict_compatible(s) for s in schema)
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False:
            return False
        if set(schema.get("required") or []) != set(props):
            return False
    subs = [*(schema.get("properties") or {}).values(), *(schema.get("$defs") or {}).values()]
    for key in ("items", "anyOf", "allOf", "oneOf"):
        if key in schema:
            subs.append(schema[key])
    return all(strict_compatible(s) for s in subs)


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """Structured Outputs for `schema`: strict when the schema allows it (strict mode refuses
    a schema with optional properties or open objects; without strict it is best effort)."""
    title = str(schema.get("title") or "answer")
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in title)[:64] or "answer"
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": schema, "strict": strict_compatible(schema)},
    }


def render_body(request: Request, provider: str = NAME) -> dict[str, Any]:
    """The chat completions body of `request`: neutral settings in OpenAI's fields, then
    the params written for `provider` (or for every provider) as they are. xAI and DeepSeek
    speak this format and pass their own name."""
    caps = model_caps(request.model)
    neutral, raw = split_params(request.params, provider)
    messages = request.messages
    if request.system is not None:
        messages = [{"role": "system", "content": request.system}, *messages]
    # max_completion_tokens: reasoning models (gpt-5, o-series) refuse max_tokens; it bounds
    # the hidden reasoning and the visible answer together.
    body: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "max_completion_tokens": request.max_tokens,
    }
    temperature = neutral.get("temperature", request.temperature)
    if temperature is not None:
        body["temperature"] = temperature
    if caps.reasoning and "reasoning_effort" in neutral:
        body["reasoning_effort"] = neutral["reasoning_effort"]
    if "stop" in neutral:
        body["stop"] = neutral["stop"]
    if request.json_schema is not None:
        body["response_format"] = response_format(request.json_schema)
    if request.cache_key is not None:
        body["prompt_cache_key"] = request.cache_key
    body.update(raw)
    return body


def param_problems(
    model: str, params: dict[str, Any], temperature: float | None, max_tokens: int, where: str
) -> list[str]:
    """What OpenAI would refuse in these settings for `model`, each with its fix."""
    caps = model_caps(model)
    neutral, raw = split_params(params, NAME)
    temperature = raw.get("temperature", neutral.get("temperature", temperature))
    problems = sampling_problems(caps, temperature, raw, where)
    effort = neutral.get("reasoning_effort")
    if caps.reasoning and effort is not None and effort not in caps.efforts:
        problems.append(
            f"reasoning_effort = {effort!r} is not taken by this model: use one of "
            f"{', '.join(caps.efforts)}"
        )
    if "stop" in neutral and not caps.accepts_stop:
        problems.append(
            "stop is refused by reasoning models (400 unsupported_parameter): remove it, or "
            f"set it for the other providers only under [{where}.params.PROVIDER]"
        )
    if caps.reasoning and "max_tokens" in raw:
        problems.append("max_tokens is refused by reasoning models: use the spec's max_tokens")
    problems += output_cap_problems(caps, max_tokens)
    for key in unkeyed(params):
        if key not in BODY_FIELDS:
            problems.append(
                f"params.{key} is not a chat completions field: move it under the table of "
                f"the provider that takes it ([{where}.params.PROVIDER])"
            )
    return problems


def render_line(request: Request, provider: str = NAME) -> bytes:
    """One line of an OpenAI batch input file."""
    line = {"custom_id": request.custom_id, "method": "POST", "url": ENDPOINT}
    line["body"] = render_body(request, provider)
    return orjson.dumps(line) + b"\n"


def render_line_without_cache_key(request: Request, provider: str = NAME) -> bytes:
    """An OpenAI batch line without `prompt_cache_key`, for OpenAI-format providers that
    document no such field (xAI and DeepSeek chat completions cache prefixes on their own)."""
    if request.cache_key is None:
        return render_line(request, provider)
    return render_line(dataclasses.replace(request, cache_key=None), provider)


# --- the batch client (engine side) -------------------------------------------------------

OPENAI_ENDED = {"completed", "failed", "expired", "cancelled"}
METADATA_KEY = "batcher_batch_id"  # carries the local batch id, so `find` can match it
UNFINISHED = {"batch_expired": "expired", "batch_cancelled": "cancelled"}
FIND_SLACK_S = 300  # clock skew allowed between us and the provider when matching by time


def usage_of(raw: dict[str, Any] | None) -> Usage | None:
    """Provider-neutral usage of a chat completions (or Responses) `usage` object."""
    if not raw:
        return None
    details = raw.get("prompt_tokens_details") or raw.get("input_tokens_details") or {}
    out_details = raw.get("completion_tokens_details") or raw.get("output_tokens_details") or {}
    return Usage(
        input_tokens=raw.get("prompt_tokens", raw.get("input_tokens", 0)) or 0,
        cache_read_tokens=details.get("cached_tokens") or 0,
        cache_write_5m_tokens=details.get("cache_write_tokens") or 0,
        output_tokens=raw.get("completion_tokens", raw.get("output_tokens", 0)) or 0,
        reasoning_tokens=out_details.get("reasoning_tokens") or 0,
    )


def text_of(body: dict[str, Any]) -> str | None:
    """The answer text of a chat completion (or Responses) body; None when there is none."""
    choices = body.get("choices")
    if choices:
        return (choices[0].get("message") or {}).get("content")
    parts = [
        block.get("text", "")
        for item in body.get("output") or []
        for block in item.get("content") or []
        if block.get("type") == "output_text"
    ]
    return "".join(parts) if parts else None


# choices[0].finish_reason -> the provider-neutral stop reason; other values pass as they are.
FINISH_REASONS = {"stop": "end", "length": "max_tokens"}


def stop_reason_of(body: dict[str, Any]) -> str | None:
    """The normalised stop reason of a chat completion (or Responses) body."""
    choices = body.get("choices")
    if choices:
        reason = choices[0].get("finish_reason")
        return FINISH_REASONS.get(reason, reason)
    if body.get("status") == "incomplete":  # Responses API: cut off when max_output_tokens
        reason = (body.get("incomplete_details") or {}).get("reason")
        return "max_tokens" if reason == "max_output_tokens" else reason
    return "end" if body.get("status") == "completed" else None


# Per-line error codes meaning the prompt (plus max_completion_tokens) is over the model's
# context window: the same request can only pass on a model with a larger one.
TOO_LONG_CODES = frozenset({"context_length_exceeded"})
TRANSIENT_TYPES = frozenset({"server_error", "rate_limit_error", "rate_limit_exceeded"})


def error_class_of(status: int | None, kind: str | None, code: str | None) -> ErrorClass:
    """What a per-line error says about sending the request again, from its HTTP status and
    the body's `error.type` / `error.code`: 429 and 5xx pass later, a context overflow needs a
    larger model, any other 4xx (invalid_request_error: unsupported_value,
    unsupported_parameter, ...) is refused every time."""
    if code in TOO_LONG_CODES:
        return TOO_LONG
    if status is None or status == 429 or status >= 500 or kind in TRANSIENT_TYPES:
        return TRANSIENT
    return INVALID


def parse_result(row: dict[str, Any]) -> Result:
    """One line of an output or error file as a Result."""
    custom_id = row["custom_id"]
    response = row.get("response") or {}
    status = response.get("status_code")
    if status == 200:
        body = response.get("body") or {}
        result = Result(custom_id, "succeeded", text_of(body), usage_of(body.get("usage")))
        result.stop_reason = stop_reason_of(body)
        return result
    error = row.get("error")
    if error:
        code = error.get("code")
        outcome = UNFINISHED.get(code, "errored")
        return Result(
            custom_id,
            outcome,
            error_code=code,
            error_message=error.get("message"),
            error_class=TRANSIENT,  # not the request's fault: expired, cancelled, or lost
        )
    body_error = (response.get("body") or {}).get("error") or {}
    kind, raw_code = body_error.get("type"), body_error.get("code")
    return Result(
        custom_id,
        "errored",
        error_code=raw_code or kind or f"http_{status}",
        error_message=body_error.get("message"),
        error_class=error_class_of(status, kind, raw_code),
    )


def state_of(batch: Any) -> BatchState:
    """A Batch object of the SDK as a BatchState."""
    counts = batch.request_counts
    errors = []
    if batch.errors and batch.errors.data:
        errors = [{"code": e.code, "message": e.message, "line": e.line} for e in batch.errors.data]
    return BatchState(
        provider_batch_id=batch.id,
        raw_status=batch.status,
        ended=batch.status in OPENAI_ENDED,
        input_file_id=batch.input_file_id,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        total=counts.total if counts else 0,
        done=(counts.completed + counts.failed) if counts else 0,
        errors=errors,
        created_at=datetime.fromtimestamp(batch.created_at, UTC),
    )


class OpenAIBatches:
    """OpenAI Files + Batches through the official SDK (any OpenAI-compatible base URL)."""

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
        expires_after_s: int | None = None,
    ) -> None:
        import openai as sdk  # the SDK; this module is batcher.providers.openai

        self._sdk = sdk
        self.expires_after_s = expires_after_s
        self.policy = policy or RetryPolicy()
        self.client = open_client(
            sdk.OpenAI,
            sdk.OpenAIError,
            NAME,
            "OPENAI_API_KEY",
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

    def upload(self, path: Path) -> str:
        """Upload a batch input file; returns its file id. Repeating it costs nothing. With
        `expires_after_s` the file is given that expiry (anchor created_at)."""
        expiry = (
            {"expires_after": {"anchor": "created_at", "seconds": self.expires_after_s}}
            if self.expires_after_s
            else {}
        )

        def call() -> str:
            with open(path, "rb") as f:
                return self.client.files.create(file=(path.name, f), purpose="batch", **expiry).id

        return self._read("file upload", call)

    def create(self, local_id: str, input_file_id: str) -> BatchState:
        """Create the batch once. 429 waits and asks again (the service did nothing);
        other 4xx raise CreateRefused; 5xx and lost answers raise CreateUncertain."""
        batch = create_once(
            lambda: self.client.batches.create(
                input_file_id=input_file_id,
                endpoint=ENDPOINT,
                completion_window="24h",
                metadata={METADATA_KEY: local_id},
            ),
            provider=NAME,
            policy=self.policy,
            status_error=self._sdk.APIStatusError,
            connection_error=self._sdk.APIConnectionError,
            refusal=_create_error,
            local_id=local_id,
        )
        return state_of(batch)

    def submit(
        self,
        local_id: str,
        path: Path,
        model: str,
        *,
        input_file_id: str | None = None,
        on_uploaded: Callable[[str], None] | None = None,
    ) -> BatchState:
        """Upload `path` (unless `input_file_id` is already there) and create the batch."""
        if input_file_id is None:
            input_file_id = self.upload(Path(path))
            if on_uploaded is not None:
                on_uploaded(input_file_id)
        return self.create(local_id, input_file_id)

    def find(self, local_id: str, *, created_after: datetime, n_requests: int) -> list[BatchState]:
        """Batches whose metadata carries `local_id`, created since `created_after`."""
        since = created_after.timestamp() - FIND_SLACK_S
        found, cursor = [], None
        while True:
            kwargs = {"limit": 100} | ({"after": cursor} if cursor else {})
            page = self._read("batch list", lambda kw=kwargs: self.client.batches.list(**kw))
            for batch in page.data:
                if (batch.metadata or {}).get(METADATA_KEY) == local_id:
                    found.append(state_of(batch))
            if not page.data or not page.has_more or page.data[-1].created_at < since:
                return found
            cursor = page.data[-1].id

    def poll(self, provider_batch_id: str) -> BatchState:
        return state_of(
            self._read("batch retrieve", lambda: self.client.batches.retrieve(provider_batch_id))
        )

    def delete_files(self, state: BatchState, input_file_id: str | None) -> list[str]:
        """Delete a reconciled batch's input, output and error files (files.delete); one
        already gone (404) counts as deleted. Returns the ids deleted."""
        ids = [i for i in (input_file_id or state.input_file_id, state.output_file_id,
                           state.error_file_id) if i]  # fmt: skip
        for file_id in ids:
            delete_once(
                lambda f=file_id: self._read("file delete", lambda: self.client.files.delete(f))
            )
        return ids

    def results(self, state: BatchState) -> Iterator[Result]:
        """Stream the output file, then the error file, line by line."""
        for file_id in (state.output_file_id, state.error_file_id):
            if file_id:
                yield from self._stream(file_id)

    def _stream(self, file_id: str) -> Iterator[Result]:
        opened = self._read(
            "file content",
            lambda: self.client.files.with_streaming_response.content(file_id).__enter__(),
        )
        try:
            for line in guarded_lines(opened.iter_lines(), NAME, "file content"):
                if line.strip():
                    yield parse_result(orjson.loads(line))
        finally:
            opened.close()

    def cancel(self, provider_batch_id: str) -> BatchState:
        try:
            batch = self._read(
                "batch cancel", lambda: self.client.batches.cancel(provider_batch_id)
            )
        except ProviderError as exc:
            if exc.status != 400:  # 400: already ended, nothing to cancel
                raise
            return self.poll(provider_batch_id)
        return state_of(batch)


def _create_error(exc: Any) -> dict[str, Any]:
    body = exc.body if isinstance(exc.body, dict) else {}
    body = body.get("error", body) if isinstance(body, dict) else {}
    return {
        "code": body.get("code") or body.get("type") or f"http_{exc.status_code}",
        "message": body.get("message") or str(exc),
        "line": None,
    }


# --- prompt-cache policy ------------------------------------------------------------------

MIN_CACHE = 1024  # OpenAI caches prompts of 1,024 tokens or more, in 128-token steps
CACHE_STEP = 128


def cached_prefix(prefix_tokens: int) -> int:
    """Tokens OpenAI reports as cached when a request hits a cached prefix of this length."""
    if prefix_tokens < MIN_CACHE:
        return 0
    return prefix_tokens // CACHE_STEP * CACHE_STEP


def plan_cache(
    model: str, prefix_tokens: int, group_size: int, batch_requests: int, spec: Any
) -> CachePlan:
    """Automatic caching of a long prefix, steered by prompt_cache_key; no write price."""
    read = cached_prefix(prefix_tokens)
    if group_size < 2 or not read:
        return NO_CACHE
    return CachePlan(mode="key", read_tokens=read)
