"""Gemini API batch mode (Files + batchGenerateContent), through the official google-genai SDK.

A batch file holds one `{"key", "request": GenerateContentRequest}` line a request; it is
uploaded with the Files API and named in `models/{model}:batchGenerateContent`. The job's
display name carries the local batch id, so `find` can look a job up after a crash. Results
come back as a JSONL file of `{"key", "response" | "error"}` lines.

The SDK is an optional extra (`pip install 'batcher[google]'`); it is imported only when a
Gemini client is built.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import orjson

from batcher.errors import UsageError
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
    with_retries,
)
from batcher.providers.capabilities import ModelCaps, lookup, output_cap_problems, split_params

T = TypeVar("T")

NAME = "google"
KEY_ENV = "GEMINI_API_KEY"  # the SDK also reads GOOGLE_API_KEY, which wins when both are set
BASE_URL_ENV = "GOOGLE_GEMINI_BASE_URL"
# No request-count limit is documented; this one is ours, to keep a job's results file and
# its retries a manageable size. The 2 GB is the documented input file limit.
MAX_REQUESTS = 100_000
MAX_BYTES = 2 * 1024**3
MESSAGES_VERBATIM = False  # messages become `contents` with `parts`
ENDED = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED",
         "JOB_STATE_PARTIALLY_SUCCEEDED"}  # fmt: skip
FAILED = "JOB_STATE_FAILED"
JOB_FAILED = "job_failed"
# How the requests without a result line ended, by the job's final state.
UNFINISHED = {"JOB_STATE_EXPIRED": "expired", "JOB_STATE_CANCELLED": "cancelled"}
FIND_SLACK_S = 300  # clock skew allowed between us and the provider when matching by time
# Request fields that sit beside `contents`; any other param goes into generationConfig.
TOP_LEVEL = {"tools", "toolConfig", "safetySettings", "cachedContent", "labels"}
FINISH_REASONS = {"STOP": "end", "MAX_TOKENS": "max_tokens"}


# Explicit context caching (cachedContents) is not used; `explicit_cache_arithmetic` shows
# why for each Gemini group in `batcher plan` (docs/providers.md, Gemini, Caching).
# Storage of an explicit cache, USD per million tokens per hour (Gemini API pricing page;
# genai-prices does not carry it). Longest matching model prefix wins.
CACHE_STORAGE_USD_MTOK_HOUR = {
    "gemini-2.5-pro": Decimal("4.50"),
    "gemini-2.5-flash": Decimal("1.00"),  # and gemini-2.5-flash-lite
}
# A cache referenced by a batch must outlive it: the batch docs' target turnaround.
EXPECTED_BATCH_HOURS = 24


@dataclass(frozen=True, slots=True)
class ExplicitCacheArithmetic:
    """What an explicit cache of one group's shared prefix would cost against what it could
    save over implicit caching, which reads a hit at the same price for free."""

    model: str
    prefix_tokens: int
    n_requests: int
    storage_usd: Decimal  # prefix x storage rate x EXPECTED_BATCH_HOURS
    create_usd: Decimal  # the prefix billed once at the standard input price
    saved_per_miss_usd: Decimal  # prefix x (batch input - cache read), a request implicit missed
    break_even_misses: int  # requests implicit caching must miss before the cache pays

    def pays_at_most(self) -> bool:
        """Whether the cache could pay even if implicit caching missed every request."""
        return self.n_requests >= self.break_even_misses

    def text(self) -> str:
        per_m = Decimal(1_000_000) / self.prefix_tokens
        rate = self.storage_usd * per_m / EXPECTED_BATCH_HOURS
        could = (
            "could pay only if implicit caching missed that many"
            if self.pays_at_most()
            else "can never pay"
        )
        return (
            f"{self.model}: explicit cache of {self.prefix_tokens:,} tokens for "
            f"{EXPECTED_BATCH_HOURS} h costs ${self.storage_usd:.6f} storage "
            f"(${rate:.2f}/M/h) + ${self.create_usd:.6f} to create; each request implicit "
            f"caching misses would save ${self.saved_per_miss_usd:.6f}; break-even "
            f"{self.break_even_misses:,} misses of {self.n_requests:,} requests: {could}. "
            "Not used: batch mode is not shown to accept cachedContent."
        )


def explicit_cache_arithmetic(
    model: str, prefix_tokens: int, n_requests: int, standard: Any, batch: Any
) -> ExplicitCacheArithmetic | None:
    """The arithmetic of an explicit cache for a group of `n_requests` sharing
    `prefix_tokens`, with `standard` and `batch` per-token prices (`.input`, `.cache_read`).
    None without a prefix or a known storage price."""
    rates = [v for k, v in CACHE_STORAGE_USD_MTOK_HOUR.items() if model.startswith(k)]
    saved_per_token = batch.input - batch.cache_read
    if not prefix_tokens or not rates or saved_per_token <= 0:
        return None
    storage = rates[0] * prefix_tokens / 1_000_000 * EXPECTED_BATCH_HOURS
    create = standard.input * prefix_tokens
    saved = saved_per_token * prefix_tokens
    return ExplicitCacheArithmetic(
        model=model,
        prefix_tokens=prefix_tokens,
        n_requests=n_requests,
        storage_usd=storage,
        create_usd=create,
        saved_per_miss_usd=saved,
        break_even_misses=math.ceil((storage + create) / saved),
    )


# Model families (Gemini models and caching pages; docs/providers.md). Versions of the
# caching page give 1,024 or 2,048 (2.5 Flash) and 2,048 or 4,096 (the others) as the
# shortest prompt implicit caching considers: the larger is assumed.
MODELS = (
    ("gemini-2.5-flash", ModelCaps(1_048_576, 65_536, reasoning=True, min_cache_tokens=2048)),
    ("gemini-2.5-pro", ModelCaps(1_048_576, 65_536, reasoning=True, min_cache_tokens=4096)),
    ("gemini-3", ModelCaps(1_048_576, 65_536, reasoning=True, min_cache_tokens=4096)),
)
UNKNOWN = ModelCaps(1_048_576, 8_192, min_cache_tokens=4096, known=False)


# Requests of a cache group in each batch that miss the cache: Gemini batches run
# concurrently too; implicit caching has no documented figure, so OpenAI's is assumed.
COLD_REQUESTS = 16


@lru_cache(maxsize=256)  # asked once a request when batch files are written
def model_caps(model: str) -> ModelCaps:
    """What `model` accepts and how it caches (the table above)."""
    return lookup(MODELS, model, UNKNOWN)


def param_problems(
    model: str, params: dict[str, Any], temperature: float | None, max_tokens: int, where: str
) -> list[str]:
    """What Gemini would refuse in these settings for `model`, each with its fix."""
    return output_cap_problems(model_caps(model), max_tokens)


def _text_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    return [{"text": block.get("text", "")} for block in content or [] if isinstance(block, dict)]


def render_request(request: Request) -> dict[str, Any]:
    """The GenerateContentRequest of `request` (REST field names)."""
    system = [request.system] if request.system is not None else []
    contents = []
    for message in request.messages:
        role = message.get("role")
        if role in ("system", "developer"):  # Gemini has one system instruction, not turns
            system.extend(part["text"] for part in _text_parts(message.get("content")))
            continue
        contents.append(
            {"role": "model" if role == "assistant" else "user",
             "parts": _text_parts(message.get("content"))}
        )  # fmt: skip
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    neutral, raw = split_params(request.params, NAME)
    config: dict[str, Any] = {"maxOutputTokens": request.max_tokens}
    temperature = neutral.get("temperature", request.temperature)
    if temperature is not None:
        config["temperature"] = temperature
    if "stop" in neutral:
        stop = neutral["stop"]
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if request.json_schema is not None:
        config["responseMimeType"] = "application/json"
        config["responseJsonSchema"] = request.json_schema
    for key, value in raw.items():
        if key == "response_format":
            config.update(_schema_config(value))
        elif key in TOP_LEVEL:
            body[key] = value
        else:
            config[key] = value
    body["generationConfig"] = config
    return body


def _schema_config(response_format: Any) -> dict[str, Any]:
    """OpenAI's response_format as Gemini JSON mode. The spec's JSON Schema goes to
    `responseJsonSchema`, which takes JSON Schema as written (the older `responseSchema` is
    an OpenAPI subset that refuses keywords such as additionalProperties)."""
    if not isinstance(response_format, dict):
        return {}
    config: dict[str, Any] = {"responseMimeType": "application/json"}
    schema = (response_format.get("json_schema") or {}).get("schema")
    if response_format.get("type") == "json_schema" and schema:
        config["responseJsonSchema"] = schema
    return config


def render_line(request: Request) -> bytes:
    """One line of a Gemini batch input file."""
    return orjson.dumps({"key": request.custom_id, "request": render_request(request)}) + b"\n"


# --- results ------------------------------------------------------------------------------


def usage_of(raw: dict[str, Any] | None) -> Usage | None:
    """Provider-neutral usage of a usageMetadata. promptTokenCount includes the cached tokens;
    thinking tokens are billed as output."""
    if not raw:
        return None
    thoughts = raw.get("thoughtsTokenCount") or 0
    return Usage(
        input_tokens=(raw.get("promptTokenCount") or 0) + (raw.get("toolUsePromptTokenCount") or 0),
        cache_read_tokens=raw.get("cachedContentTokenCount") or 0,
        output_tokens=(raw.get("candidatesTokenCount") or 0) + thoughts,
        reasoning_tokens=thoughts,
    )


def text_of(response: dict[str, Any]) -> tuple[str | None, str | None]:
    """(answer text, normalised stop reason) of a GenerateContentResponse."""
    candidates = response.get("candidates") or []
    if not candidates:
        return None, None
    first = candidates[0]
    parts = (first.get("content") or {}).get("parts") or []
    texts = [p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought")]
    reason = first.get("finishReason")
    return ("".join(texts) if texts else None), FINISH_REASONS.get(reason, reason)


def parse_result(row: dict[str, Any]) -> Result:
    """One line of a responses file as a Result."""
    key = str(row.get("key"))
    response = row.get("response")
    if isinstance(response, dict):
        text, stop = text_of(response)
        result = Result(key, "succeeded", text, usage_of(response.get("usageMetadata")))
        result.stop_reason = stop
        return result
    error = row.get("error") or row.get("status") or {}
    code = error.get("status") or (f"http_{error['code']}" if error.get("code") else "error")
    message = error.get("message")
    return Result(
        key, "errored", error_code=code, error_message=message,
        error_class=error_class_of(error.get("code"), error.get("status"), message),
    )  # fmt: skip


# google.rpc statuses of a refused request; RESOURCE_EXHAUSTED (429), INTERNAL, UNAVAILABLE
# and DEADLINE_EXCEEDED pass when sent again later.
REFUSED_STATUSES = frozenset(
    {"INVALID_ARGUMENT", "FAILED_PRECONDITION", "PERMISSION_DENIED", "NOT_FOUND",
     "UNAUTHENTICATED", "OUT_OF_RANGE"}
)  # fmt: skip
# An INVALID_ARGUMENT over the context window says "The input token count (N) exceeds the
# maximum number of tokens allowed (M)".
TOO_LONG_RE = re.compile(r"input token count .* exceeds the maximum", re.I)


def error_class_of(code: Any, status: str | None, message: str | None) -> ErrorClass:
    """What a per-request error says about sending it again (google.rpc status and code)."""
    if TOO_LONG_RE.search(message or ""):
        return TOO_LONG
    if status in REFUSED_STATUSES or (isinstance(code, int) and 400 <= code < 500 and code != 429):
        return INVALID
    return TRANSIENT


def state_of(job: Any) -> BatchState:
    """A BatchJob of the SDK as a BatchState."""
    state = job.state.value if job.state is not None else "JOB_STATE_UNSPECIFIED"
    errors = []
    if state == FAILED:
        # The SDK does not pass the Operation's error on, so the reason is unknown: a
        # transient code, retried within the tier's budget rather than for free.
        message = getattr(job.error, "message", None) or "the provider failed the job"
        errors = [{"code": JOB_FAILED, "message": message, "line": None}]
    output = job.dest.file_name if job.dest is not None else None
    return BatchState(
        provider_batch_id=job.name,
        raw_status=state,
        ended=state in ENDED,
        output_file_id=output,
        errors=errors,
        created_at=job.create_time,
        failed=state == FAILED,
    )


# --- the batch client (engine side) -------------------------------------------------------


class GeminiBatches:
    """Gemini batch mode through google-genai (any base URL, e.g. the sandbox's)."""

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
        try:
            from google import genai
            from google.genai import errors, types
        except ImportError as exc:
            raise UsageError(
                "the google provider needs the google-genai SDK: pip install 'batcher[google]'"
            ) from exc
        self._errors = errors
        self._types = types
        self.policy = policy or RetryPolicy()
        self._connection_errors = _transport_errors()
        # No retry_options: the SDK then sends each call once, so a create is never repeated
        # behind our back (its retries would bill a second job).
        options = types.HttpOptions(
            base_url=base_url or os.environ.get(BASE_URL_ENV), timeout=int(timeout * 1000)
        )
        try:
            self.client = genai.Client(api_key=api_key, http_options=options)
        except ValueError as exc:  # no key anywhere
            raise ProviderError(f"{NAME}: {exc} (set {KEY_ENV})") from exc

    def render_line(self, request: Request) -> bytes:
        return render_line(request)

    def _read(self, operation: str, call: Callable[[], T]) -> T:
        return with_retries(
            call,
            provider=NAME,
            operation=operation,
            policy=self.policy,
            connection_errors=self._connection_errors,
        )

    def upload(self, local_id: str, path: Path) -> str:
        """Upload a batch input file (resumable upload); returns its name ("files/...")."""
        config = self._types.UploadFileConfig(display_name=local_id, mime_type="jsonl")
        return self._read(
            "file upload", lambda: self.client.files.upload(file=str(path), config=config).name
        )

    def create(self, local_id: str, model: str, file_name: str) -> BatchState:
        """Create the job once. 429 waits and asks again; other 4xx raise CreateRefused; 5xx
        and lost answers raise CreateUncertain (the docs: a create is not idempotent)."""
        job = create_once(
            lambda: self.client.batches.create(
                model=model, src=file_name, config={"display_name": local_id}
            ),
            provider=NAME,
            policy=self.policy,
            status_error=self._errors.APIError,
            connection_error=self._connection_errors,
            refusal=_create_error,
            local_id=local_id,
        )
        state = state_of(job)
        state.input_file_id = file_name
        return state

    def submit(
        self,
        local_id: str,
        path: Path,
        model: str,
        *,
        input_file_id: str | None = None,
        on_uploaded: Callable[[str], None] | None = None,
    ) -> BatchState:
        """Upload `path` (unless `input_file_id` is already there) and create the job."""
        if input_file_id is None:
            input_file_id = self.upload(local_id, Path(path))
            if on_uploaded is not None:
                on_uploaded(input_file_id)
        return self.create(local_id, model, input_file_id)

    def find(self, local_id: str, *, created_after: datetime, n_requests: int) -> list[BatchState]:
        """Jobs whose display name is `local_id`, created since `created_after`."""
        since = created_after.timestamp() - FIND_SLACK_S

        def listed() -> list[Any]:
            pager = self.client.batches.list(config={"page_size": 100})
            return [job for job in pager if job.display_name == local_id]

        found = self._read("batch list", listed)
        return [
            state_of(job)
            for job in found
            if job.create_time is None or job.create_time.timestamp() >= since
        ]

    def poll(self, provider_batch_id: str) -> BatchState:
        return state_of(
            self._read("batch get", lambda: self.client.batches.get(name=provider_batch_id))
        )

    def results(self, state: BatchState) -> Iterator[Result]:
        """Stream the responses file line by line (downloaded to a temporary file first, so
        memory stays flat whatever its size)."""
        if not state.output_file_id:
            return
        with tempfile.TemporaryDirectory(prefix="batcher-gemini-") as folder:
            target = Path(folder) / "responses.jsonl"
            self._read(
                "file download",
                lambda: self.client.files.download(
                    file=state.output_file_id, destination=str(target)
                ),
            )
            with open(target, "rb") as f:
                for line in f:
                    if line.strip():
                        yield parse_result(orjson.loads(line))

    def delete_files(self, state: BatchState, input_file_id: str | None) -> list[str]:
        """Delete the input file this client uploaded for a reconciled job (files.delete;
        already gone counts as deleted). The job's results file belongs to the job."""
        if not input_file_id:
            return []
        delete_once(
            lambda: self._read("file delete", lambda: self.client.files.delete(name=input_file_id))
        )
        return [input_file_id]

    def cancel(self, provider_batch_id: str) -> BatchState:
        try:
            self._read("batch cancel", lambda: self.client.batches.cancel(name=provider_batch_id))
        except ProviderError as exc:
            if exc.status != 400:  # 400: the job is no longer pending or running
                raise
        return self.poll(provider_batch_id)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client errors of a lost connection or timeout (the SDK uses httpx2 where it is
    installed, httpx otherwise)."""
    found: list[type[BaseException]] = []
    for module in ("httpx", "httpx2"):
        try:
            found.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


_LINE_RE = re.compile(r"[Ll]ine (\d+)")


def _create_error(exc: Any) -> dict[str, Any]:
    message = getattr(exc, "message", None) or str(exc)
    line = _LINE_RE.search(message)
    return {
        "code": getattr(exc, "status", None) or f"http_{exc.code}",
        "message": message,
        "line": int(line.group(1)) if line else None,
    }


# --- prompt-cache policy ------------------------------------------------------------------

FLASH_MIN_CACHE = 2048  # Gemini 2.5 Flash (and Flash-Lite)
MIN_CACHE = 4096  # 2.5 Pro and the 3.x models


def min_cacheable_tokens(model: str) -> int:
    """The shortest prompt Gemini's implicit caching considers. Versions of the docs give
    1,024 or 2,048 for 2.5 Flash and 2,048 or 4,096 for the others: the larger is assumed."""
    return model_caps(model).min_cache_tokens


def cached_prefix(model: str, prefix_tokens: int) -> int:
    """Tokens a Gemini request can read from the implicit cache when its prefix is cached."""
    return prefix_tokens if prefix_tokens >= min_cacheable_tokens(model) else 0


def plan_cache(
    model: str, prefix_tokens: int, group_size: int, batch_requests: int, spec: Any
) -> CachePlan:
    """Gemini 2.5+ caches a shared prefix on its own (implicit caching); no write price."""
    read = cached_prefix(model, prefix_tokens)
    if group_size < 2 or not read:
        return NO_CACHE
    return CachePlan(mode="implicit", read_tokens=read)
