"""xAI Batch API, through the official `openai` SDK pointed at xAI's base URL.

The input side is OpenAI's: a JSONL file of `{"custom_id", "method", "url", "body"}` lines
(chat completions bodies), uploaded through the OpenAI-compatible Files API, so the lines are
rendered by batcher.providers.openai. The batch side is xAI's own (docs/providers.md, xAI):

- create: `POST /v1/batches {"name", "input_file_id"}`; the name carries the local batch id,
  so `find` can look a batch up after a crash.
- a batch has request counters (`state.num_requests`, `num_pending`, `num_success`,
  `num_error`, `num_cancelled`), `create_time`, `expire_time`, `cancel_time`, and no status
  word; it is over when nothing is pending, when it was cancelled, or past its expire_time.
- results are pages of `GET /v1/batches/{id}/results` (`pagination_token`), each result
  `{"batch_request_id", "batch_result": {"response": {"chat_get_completion": BODY}} | {"error"}}`.
- cancel: `POST /v1/batches/{id}:cancel`.

Those calls go through the SDK's generic `get`/`post`, so auth, timeouts and error types are
the SDK's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from batcher.providers import openai as openai_format
from batcher.providers.base import NO_CACHE, BatchState, CachePlan, Request, Result
from batcher.providers.calls import (
    ProviderError,
    RetryPolicy,
    create_once,
    open_client,
    with_retries,
)

T = TypeVar("T")

NAME = "xai"
KEY_ENV = "XAI_API_KEY"
BASE_URL = "https://api.x.ai/v1"
BASE_URL_ENV = "XAI_BASE_URL"
# xAI documents no per-batch request limit (batches over 100,000 requests "may be
# throttled"); these are ours, the same as OpenAI's, to keep one batch's retries manageable.
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
MESSAGES_VERBATIM = openai_format.MESSAGES_VERBATIM  # OpenAI's lines
PAGE = 100
FIND_SLACK_S = 300  # clock skew allowed between us and the provider when matching by time


def render_line(request: Request) -> bytes:
    """One line of an xAI batch input file: OpenAI's line, without `prompt_cache_key` (xAI
    caches prefixes on its own and documents no such field for chat completions)."""
    return openai_format.render_line_without_cache_key(request, NAME)


def parse_time(value: str | None) -> datetime | None:
    """An xAI timestamp: RFC 3339, or (as users report of the REST API) a bare date."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _expired(expire_time: str | None, now: datetime) -> bool:
    when = parse_time(expire_time)
    if when is None:
        return False
    if len(expire_time or "") <= 10:  # a bare date: the batch may last until that day ends
        when += timedelta(days=1)
    return now >= when


def raw_status(batch: dict[str, Any], now: datetime | None = None) -> str:
    """A status word for an xAI batch, which has counters instead of one."""
    counts = batch.get("state") or {}
    if batch.get("cancel_time"):
        return "failed" if batch.get("cancel_by_xai_message") else "cancelled"
    if counts.get("num_requests", 0) and not counts.get("num_pending", 0):
        return "completed"
    if _expired(batch.get("expire_time"), now or datetime.now(UTC)):
        return "expired"
    return "validating" if not counts.get("num_requests", 0) else "in_progress"


def state_of(batch: dict[str, Any], now: datetime | None = None) -> BatchState:
    """An xAI batch object as a BatchState."""
    counts = batch.get("state") or {}
    status = raw_status(batch, now)
    errors = []
    if batch.get("cancel_by_xai_message"):
        errors = [{"code": "cancelled_by_xai", "message": batch["cancel_by_xai_message"],
                   "line": None}]  # fmt: skip
    done = sum(counts.get(k, 0) for k in ("num_success", "num_error", "num_cancelled"))
    return BatchState(
        provider_batch_id=batch["batch_id"],
        raw_status=status,
        ended=status in ("completed", "cancelled", "failed", "expired"),
        input_file_id=batch.get("input_file_id"),
        total=counts.get("num_requests", 0),
        done=done,
        errors=errors,
        created_at=parse_time(batch.get("create_time")),
        failed=status == "failed",
    )


def parse_result(row: dict[str, Any]) -> Result:
    """One entry of a results page as a Result."""
    custom_id = row["batch_request_id"]
    outcome = row.get("batch_result") or {}
    response = outcome.get("response") or {}
    body = next(iter(response.values()), None) if response else None
    if isinstance(body, dict):
        return openai_format.parse_result(
            {"custom_id": custom_id, "response": {"status_code": 200, "body": body}}
        )
    error = outcome.get("error") or {}
    code = error.get("code")
    return Result(
        custom_id,
        "errored",
        error_code=str(code) if code is not None else "request_failed",
        error_message=error.get("message") or "xAI returned no response for this request",
    )


class XAIBatches:
    """xAI Files + Batch API through the `openai` SDK."""

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
        import os

        import openai as sdk

        self._sdk = sdk
        self.policy = policy or RetryPolicy()
        # The SDK reads OPENAI_API_KEY by default; xAI's key must come from XAI_API_KEY only.
        self.client = open_client(
            sdk.OpenAI,
            sdk.OpenAIError,
            NAME,
            KEY_ENV,
            base_url=base_url or os.environ.get(BASE_URL_ENV) or BASE_URL,
            api_key=api_key or os.environ.get(KEY_ENV) or _missing_key(),
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
        """Upload a batch input file; returns its file id. Repeating it costs nothing."""

        def call() -> str:
            with open(path, "rb") as f:
                return self.client.files.create(file=(path.name, f), purpose="batch").id

        return self._read("file upload", call)

    def create(self, local_id: str, input_file_id: str) -> BatchState:
        """Create the batch once (429 waits; other 4xx refuse; 5xx and lost answers are
        uncertain: the batch may exist, `find` looks it up by name)."""
        batch = create_once(
            lambda: self.client.post(
                "/batches",
                body={"name": local_id, "input_file_id": input_file_id},
                cast_to=object,
            ),
            provider=NAME,
            policy=self.policy,
            status_error=self._sdk.APIStatusError,
            connection_error=self._sdk.APIConnectionError,
            refusal=openai_format._create_error,
            local_id=local_id,
        )
        state = state_of(batch)
        state.input_file_id = state.input_file_id or input_file_id
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
        """Upload `path` (unless `input_file_id` is already there) and create the batch."""
        if input_file_id is None:
            input_file_id = self.upload(Path(path))
            if on_uploaded is not None:
                on_uploaded(input_file_id)
        return self.create(local_id, input_file_id)

    def _get(self, operation: str, path: str, params: dict[str, Any] | None = None) -> Any:
        options = {"params": params} if params else {}
        return self._read(operation, lambda: self.client.get(path, cast_to=object, options=options))

    def find(self, local_id: str, *, created_after: datetime, n_requests: int) -> list[BatchState]:
        """Batches named `local_id`, created since `created_after` (a day's slack when xAI
        gives only the date)."""
        since = created_after.astimezone(UTC) - timedelta(seconds=FIND_SLACK_S)
        found, token = [], None
        while True:
            params = {"limit": PAGE} | ({"pagination_token": token} if token else {})
            page = self._get("batch list", "/batches", params)
            for batch in page.get("batches") or []:
                created = parse_time(batch.get("create_time"))
                if len(batch.get("create_time") or "") <= 10 and created is not None:
                    created += timedelta(days=1)
                if batch.get("name") == local_id and (created is None or created >= since):
                    found.append(state_of(batch))
            token = page.get("pagination_token")
            if not token or not page.get("batches"):
                return found

    def poll(self, provider_batch_id: str) -> BatchState:
        return state_of(self._get("batch retrieve", f"/batches/{provider_batch_id}"))

    def results(self, state: BatchState) -> Iterator[Result]:
        """Every result, page by page (one page in memory at a time)."""
        token = None
        while True:
            params = {"limit": PAGE} | ({"pagination_token": token} if token else {})
            path = f"/batches/{state.provider_batch_id}/results"
            page = self._get("batch results", path, params)
            for row in page.get("results") or []:
                yield parse_result(row)
            token = page.get("pagination_token")
            if not token or not page.get("results"):
                return

    def cancel(self, provider_batch_id: str) -> BatchState:
        try:
            batch = self._read(
                "batch cancel",
                lambda: self.client.post(f"/batches/{provider_batch_id}:cancel", cast_to=object),
            )
        except ProviderError as exc:
            if exc.status != 400:  # 400: already over, nothing to cancel
                raise
            return self.poll(provider_batch_id)
        return state_of(batch)


def _missing_key() -> str:
    raise ProviderError(f"{NAME}: no API key (set {KEY_ENV})")


def plan_cache(
    model: str, prefix_tokens: int, group_size: int, batch_requests: int, spec: Any
) -> CachePlan:
    """xAI caches a repeated prompt prefix on its own, with no key of ours ("implicit"); the
    cached share is counted as OpenAI's (1,024 tokens or more, in 128-token steps)."""
    read = openai_format.cached_prefix(prefix_tokens)
    if group_size < 2 or not read:
        return NO_CACHE
    return CachePlan(mode="implicit", read_tokens=read)
