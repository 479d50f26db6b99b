"""Calling a provider: bounded retries for reads, none for creates, and typed errors.

The SDK clients are built with `max_retries=0`: their automatic retries would repeat a batch
create whose answer was lost and bill it twice. Reads (retrieve, list, file content) are safe
to repeat, so they go through `with_retries`, which waits through 429, 408, 409, 5xx and
connection errors, honouring the server's `retry-after-ms` / `retry-after` headers (or, from
Google, the RetryInfo detail of the error body).

Those waits can add up to minutes during an outage, so they watch the stop event the caller
installed with `stopping_on` (Ctrl-C, SIGTERM): a stop ends the wait at once with `Interrupted`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from batcher.errors import BatcherError

T = TypeVar("T")
RETRYABLE = {408, 409, 429, 500, 502, 503, 504, 529}
MAX_RETRY_AFTER_S = 300.0  # the server's retry-after is obeyed, up to this much
KEY_ENVS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY",
            "google": "GEMINI_API_KEY", "xai": "XAI_API_KEY",
            "deepseek": "DEEPSEEK_API_KEY"}  # fmt: skip


# The current driver's stop event; a context variable, so drivers in threads each see theirs.
_STOP: ContextVar[threading.Event | None] = ContextVar("batcher_stop", default=None)


class Interrupted(BatcherError):
    """A stop was asked for while waiting to call a provider again. The call was not made,
    so nothing is half-done; the run stays resumable (exit code 3)."""

    exit_code = 3


@contextmanager
def stopping_on(stop: threading.Event) -> Iterator[None]:
    """Make the retry waits of provider calls in this block end when `stop` is set."""
    token = _STOP.set(stop)
    try:
        yield
    finally:
        _STOP.reset(token)


def wait_or_stop(seconds: float) -> None:
    """Sleep `seconds`, or raise Interrupted as soon as the installed stop event is set."""
    stop = _STOP.get()
    if stop is None:
        time.sleep(seconds)
    elif stop.wait(seconds):
        raise Interrupted("stopped while waiting to call the provider again")


class ProviderError(BatcherError):
    """A provider call failed for good (after retries, or with an error retrying cannot fix)."""

    def __init__(
        self, message: str, status: int | None = None, *, unreachable_since: float | None = None
    ):
        super().__init__(message)
        self.status = status
        # time.monotonic() of the first failed connection, when the provider never answered
        self.unreachable_since = unreachable_since

    @property
    def unreachable(self) -> bool:
        """The provider did not answer at all (no HTTP status): a network or base URL issue."""
        return self.unreachable_since is not None


class CreateRefused(ProviderError):
    """The provider answered a batch create with a client error: no batch was made.

    `errors` are [{"code", "message", "line"}] as for a batch that failed validation.
    """

    def __init__(self, message: str, status: int | None, errors: list[dict[str, Any]]):
        super().__init__(message, status)
        self.errors = errors


class CreateUncertain(ProviderError):
    """A batch create got no clear answer (5xx, timeout, lost connection): the batch may
    exist. Look it up with `find` before creating again."""


@dataclass(frozen=True)
class RetryPolicy:
    """How long reads keep trying: `attempts` calls, backoff from `base_s` doubling to `cap_s`."""

    attempts: int = 8
    base_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER_S)
        backoff = min(self.cap_s, self.base_s * 2**attempt)
        return backoff * (0.75 + random.random() / 2)  # jitter: clients do not retry in step


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of an SDK error, None for connection errors and others."""
    status = getattr(exc, "status_code", None)
    if status is None and hasattr(exc, "details"):  # google-genai's APIError calls it `code`
        status = getattr(exc, "code", None)
    return status if isinstance(status, int) else None


def retry_after_of(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait, from `retry-after-ms` or `retry-after`."""
    delay = _retry_info(getattr(exc, "details", None))
    if delay is not None:
        return delay
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
        if headers.get("retry-after"):
            return float(headers["retry-after"])
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None
    return None


def _retry_info(details: Any) -> float | None:
    """Seconds from a Google error's RetryInfo detail (`"retryDelay": "1.5s"`), if any."""
    error = details.get("error", details) if isinstance(details, dict) else None
    for detail in (error or {}).get("details") or []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return float(delay[:-1])
            except ValueError:
                return None
    return None


def is_transient(exc: BaseException, connection_errors: tuple[type[BaseException], ...]) -> bool:
    """True for errors a repeat may cure: rate limits, server errors, lost connections."""
    if isinstance(exc, connection_errors):
        return True
    return status_of(exc) in RETRYABLE


def describe(provider: str, operation: str, exc: BaseException) -> str:
    status = status_of(exc)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    where = f"HTTP {status}" if status else type(exc).__name__
    hint = ""
    if status in (401, 403):
        hint = f" (check {KEY_ENVS.get(provider, 'the API key')})"
    return f"{provider} {operation} failed: {where}: {message}{hint}"


def open_client(
    make: Callable[..., T],
    error: type[Exception],
    provider: str,
    key_env: str,
    *,
    base_url: str | None,
    api_key: str | None,
    timeout: float,
) -> T:
    """An SDK client (`make` is the SDK's client class) that never retries on its own:
    a retried create would make a second, billed batch. A missing key is a ProviderError
    that names the variable to set."""
    try:
        return make(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout)
    except error as exc:
        raise ProviderError(f"{provider}: {exc} (set {key_env})") from exc


def with_retries(
    call: Callable[[], T],
    *,
    provider: str,
    operation: str,
    policy: RetryPolicy,
    connection_errors: tuple[type[BaseException], ...],
    sleep: Callable[[float], None] = wait_or_stop,
) -> T:
    """`call()`, repeated through transient errors; ProviderError when it cannot succeed
    (`unreachable` when no try got an answer at all)."""
    silent_since: float | None = time.monotonic()
    for attempt in range(policy.attempts):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - classified below, re-raised typed
            if not isinstance(exc, connection_errors):
                silent_since = None  # it answered, with an error
            if not is_transient(exc, connection_errors):
                raise ProviderError(describe(provider, operation, exc), status_of(exc)) from exc
            if attempt + 1 >= policy.attempts:
                raise ProviderError(
                    describe(provider, operation, exc) + f" (gave up after {attempt + 1} tries)",
                    status_of(exc),
                    unreachable_since=silent_since,
                ) from exc
            sleep(policy.delay(attempt, retry_after_of(exc)))
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def create_once(
    call: Callable[[], T],
    *,
    provider: str,
    policy: RetryPolicy,
    status_error: type[BaseException],
    connection_error: type[BaseException],
    refusal: Callable[[Any], dict[str, Any]],
    local_id: str,
    sleep: Callable[[float], None] = wait_or_stop,
) -> T:
    """`call()`, the batch create of `local_id`, made once: never repeated after an unclear answer.

    A 429 means the service did nothing, so it waits and asks again. Other 4xx raise
    CreateRefused carrying `refusal(exc)` as its error; 5xx, 408, 409 and lost connections
    raise CreateUncertain (the batch may exist: look it up before creating again).
    """
    for attempt in range(policy.attempts):
        try:
            return call()
        except status_error as exc:
            status = status_of(exc)
            if status == 429 and attempt + 1 < policy.attempts:
                sleep(policy.delay(attempt, retry_after_of(exc)))
                continue
            message = describe(provider, "batch create", exc)
            if status is not None and 400 <= status < 500 and status not in (408, 409):
                raise CreateRefused(message, status, [refusal(exc)]) from exc
            raise CreateUncertain(message, status) from exc
        except connection_error as exc:
            message = describe(provider, "batch create", exc)
            if never_connected(exc):  # the request never left: it is safe to send it again
                raise ProviderError(message, unreachable_since=time.monotonic()) from exc
            raise CreateUncertain(message) from exc
    raise CreateUncertain(f"{provider} batch create for {local_id}: rate limited throughout")


def delete_once(call: Callable[[], Any]) -> None:
    """A delete through `call`; the thing already gone (404) is as good as deleted."""
    try:
        call()
    except ProviderError as exc:
        if exc.status != 404:
            raise


def never_connected(exc: BaseException) -> bool:
    """True when `exc` (or what caused it) is httpx's ConnectError: no connection was made,
    so no request reached the server (refused, unknown host, no route)."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ == "ConnectError" and type(seen).__module__.startswith("httpx"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def guarded_lines(lines: Iterable[Any], provider: str, operation: str) -> Iterator[Any]:
    """`lines` of a streamed download; a connection that breaks off midway becomes a
    ProviderError without a status (transient: reading again later is safe, since storing
    results is idempotent)."""
    iterator = iter(lines)
    while True:
        try:
            line = next(iterator)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - the SDKs' transport errors vary
            raise ProviderError(f"{provider} {operation}: the download broke off: {exc}") from exc
        yield line
