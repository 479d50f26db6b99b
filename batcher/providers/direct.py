"""Direct mode: a batch file's requests sent one by one to the provider's ordinary chat
completions endpoint, behind the same Provider protocol as a batch API.

`submit` starts a worker thread that runs an asyncio loop with the SDK's async client: at most
`concurrency` requests in flight, client-side limits on requests and (estimated) tokens per
minute, 429s waited out for as long as the server's retry-after says. Each request's intent is
appended to a journal before it is sent and its result right after, so:

- `poll` and `results` read the journal (and the worker's counters while it runs);
- after a crash, `find` or `poll` in the next process starts the worker again: requests with a
  result are never sent again, requests with an intent but no result were in flight and are
  sent again (at most `concurrency` of them a crash; the journal counts them and the report
  shows them as "possibly billed twice").

The journal is `<state dir>/direct/<local batch id>.jsonl`; the provider batch id is
`direct-<local batch id>`. Only OpenAI-format providers run direct (the batch file's lines
are OpenAI batch lines; each line's body is the chat completions body).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from batcher.providers import openai as openai_format
from batcher.providers.base import BatchState, Request, Result, Usage
from batcher.providers.calls import RETRYABLE, ProviderError, RetryPolicy, retry_after_of

PREFIX = "direct-"  # also batcher.providers.DIRECT_PREFIX
MAX_REQUESTS = 10_000  # a journal a batch: small enough to reread on every poll after a crash
MAX_BYTES = 100 * 1024 * 1024
CHAT_PATH = "/chat/completions"


@dataclass(frozen=True)
class DirectSettings:
    """How hard direct mode may push one provider (the spec's [providers.NAME])."""

    concurrency: int = 16
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    # Hold requests while this says the provider is in a dearer window (DeepSeek peak hours):
    # it returns when the window ends, None when requests may go now.
    hold_until: Callable[[datetime], datetime | None] | None = None


def journal_dir() -> Path:
    from batcher.store.db import state_dir

    return Path(state_dir()) / "direct"


def usage_of(raw: dict[str, Any] | None) -> Usage | None:
    """OpenAI-format usage, with DeepSeek's cache fields where they are given:
    `prompt_cache_hit_tokens` are the cached share of `prompt_tokens`."""
    usage = openai_format.usage_of(raw)
    if usage is not None and raw and "prompt_cache_hit_tokens" in raw:
        usage.cache_read_tokens = raw["prompt_cache_hit_tokens"] or 0
    return usage


def result_of(custom_id: str, row: dict[str, Any]) -> Result:
    """A journal's result entry as a Result."""
    body = row.get("body")
    if body is not None:
        result = Result(custom_id, "succeeded", openai_format.text_of(body))
        result.usage = usage_of(body.get("usage"))
        result.stop_reason = openai_format.stop_reason_of(body)
        return result
    code, message = row.get("code"), row.get("message")
    return Result(custom_id, "errored", error_code=code, error_message=message)


class Journal:
    """One batch's append-only record: a header, then `sent`, `done` and `resent` entries."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return self.path.exists()

    def start(self, batch_file: Path, model: str, n: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self.append({"batch_file": str(batch_file), "model": model, "n": n,
                         "created_at": time.time()})  # fmt: skip

    def append(self, entry: dict[str, Any]) -> None:
        # One write a line on an O_APPEND file: a SIGKILL leaves whole lines behind.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, orjson.dumps(entry) + b"\n")
        finally:
            os.close(fd)

    def read(self) -> JournalView:
        view = JournalView()
        with open(self.path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # a line cut off by a crash: as if never written
                entry = orjson.loads(line)
                if "batch_file" in entry:
                    view.header = entry
                elif "sent" in entry:
                    view.sent.add(entry["sent"])
                elif "done" in entry:
                    view.done[entry["done"]] = entry
                elif "resent" in entry:
                    view.resent += 1
                elif "cancelled" in entry:
                    view.cancelled = True
        return view


@dataclass
class JournalView:
    header: dict[str, Any] | None = None
    sent: set[str] = None  # type: ignore[assignment]
    done: dict[str, dict[str, Any]] = None  # type: ignore[assignment]
    resent: int = 0
    cancelled: bool = False

    def __post_init__(self) -> None:
        self.sent = set() if self.sent is None else self.sent
        self.done = {} if self.done is None else self.done

    @property
    def in_flight(self) -> set[str]:
        return self.sent - set(self.done)


class RateLimiter:
    """A per-minute limit as a token bucket holding one second's worth: a steady rate with
    small bursts (providers meter their per-minute limits over shorter windows too)."""

    def __init__(self, per_minute: int | None) -> None:
        self.rate = per_minute / 60.0 if per_minute else None
        self.capacity = max(1.0, self.rate or 0.0)
        self.level = self.capacity
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self, amount: float) -> None:
        if self.rate is None:
            return
        amount = min(amount, self.capacity)  # one request larger than a minute's worth waits
        async with self.lock:
            while True:
                now = time.monotonic()
                self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.level >= amount:
                    self.level -= amount
                    return
                await asyncio.sleep((amount - self.level) / self.rate)


def estimated_tokens(body: dict[str, Any]) -> int:
    """What a request may count against a tokens-per-minute limit: its input at ~4 characters a
    token plus the most it may write."""
    size = len(orjson.dumps(body.get("messages") or []))
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return size // 4 + int(limit)


class _Worker:
    """Sends one batch's outstanding requests; lives on its own thread."""

    def __init__(self, provider: DirectProvider, local_id: str) -> None:
        self.provider, self.local_id = provider, local_id
        self.journal = provider.journal(local_id)
        self.header = self.journal.read().header or {}
        self.done = 0
        self.held = False
        self.cancel = threading.Event()
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name=f"direct-{local_id}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def _run(self) -> None:
        try:
            asyncio.run(self._send_all())
        except Exception as exc:  # noqa: BLE001 - kept for poll to report
            self.error = f"{type(exc).__name__}: {exc}"

    async def _send_all(self) -> None:
        view = self.journal.read()
        self.done = len(view.done)
        for custom_id in sorted(view.in_flight):  # in flight at a crash: sent again, counted
            self.journal.append({"resent": custom_id})
        settings = self.provider.settings
        requests = RateLimiter(settings.requests_per_minute)
        tokens = RateLimiter(settings.tokens_per_minute)
        client = self.provider.async_client()
        queue: asyncio.Queue = asyncio.Queue(maxsize=settings.concurrency * 2)

        async def work() -> None:
            while (item := await queue.get()) is not None:
                custom_id, body = item
                await self._wait_for_window()
                await requests.take(1)
                await tokens.take(estimated_tokens(body))
                if self.cancel.is_set():
                    continue
                self.journal.append({"sent": custom_id})
                entry = await self._call(client, custom_id, body)
                self.journal.append({"done": custom_id, **entry})
                self.done += 1

        workers = [asyncio.create_task(work()) for _ in range(settings.concurrency)]
        try:
            with open(view.header["batch_file"], "rb") as f:
                for raw in f:
                    if self.cancel.is_set():
                        break
                    line = orjson.loads(raw)
                    if line["custom_id"] not in view.done:
                        await queue.put((line["custom_id"], line["body"]))
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        finally:
            await client.close()
        if self.cancel.is_set():
            self.journal.append({"cancelled": True})

    async def _wait_for_window(self) -> None:
        hold = self.provider.settings.hold_until
        while hold is not None and not self.cancel.is_set():
            until = hold(datetime.now(UTC))
            if until is None:
                self.held = False
                return
            self.held = True
            # short naps, so a cancel during a long hold takes effect at once
            await asyncio.sleep(min(0.2, max(0.05, (until - datetime.now(UTC)).total_seconds())))

    async def _call(self, client: Any, custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """One request to the end: 429s waited out (nothing was done), other transient errors
        tried again up to the policy's attempts (each repeat after an unclear answer counts
        as possibly billed twice), anything else an error. The custom_id travels as
        `X-Client-Request-Id` (a tracing header OpenAI documents), so bills can be matched."""
        sdk, policy = self.provider.sdk, self.provider.policy
        options = {"headers": {"X-Client-Request-Id": custom_id}}
        failures, unclear = 0, False
        while True:
            if unclear:  # the last try may have been done and billed: this one is a repeat
                self.journal.append({"resent": custom_id})
                unclear = False
            try:
                body_out = await client.post(CHAT_PATH, body=body, cast_to=object, options=options)
                return {"body": body_out}
            except sdk.APIStatusError as exc:
                status = exc.status_code
                if status == 429:
                    await asyncio.sleep(policy.delay(min(failures, 6), retry_after_of(exc)))
                    continue
                if status not in RETRYABLE:
                    return _error_entry(exc, f"http_{status}")
                failures += 1
                if failures >= policy.attempts:
                    return _error_entry(exc, f"http_{status}")
            except sdk.APIConnectionError as exc:
                failures += 1
                if failures >= policy.attempts:
                    return {"code": "connection_error", "message": str(exc)}
            unclear = True
            await asyncio.sleep(policy.delay(failures, None))


def _error_entry(exc: Any, fallback: str) -> dict[str, Any]:
    body = exc.body if isinstance(exc.body, dict) else {}
    body = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
    return {"code": body.get("code") or body.get("type") or fallback,
            "message": body.get("message") or str(exc)}  # fmt: skip


# The workers of this process by journal path: one a batch, whichever client started it.
_WORKERS: dict[str, _Worker] = {}
_LOCK = threading.Lock()


class DirectProvider:
    """A provider's ordinary chat completions endpoint behind the batch Provider protocol."""

    max_requests = MAX_REQUESTS
    max_bytes = MAX_BYTES
    direct = True

    def __init__(
        self,
        name: str,
        *,
        base_url: str | None,
        api_key: str,
        settings: DirectSettings | None = None,
        policy: RetryPolicy | None = None,
        render: Callable[[Request], bytes] = openai_format.render_line,
        timeout: float = 600.0,
    ) -> None:
        import openai as sdk

        self.name = name
        self.sdk = sdk
        self.base_url, self.api_key, self.timeout = base_url, api_key, timeout
        self.settings = settings or DirectSettings()
        self.policy = policy or RetryPolicy()
        self._render = render

    def async_client(self) -> Any:
        # No SDK retries: a retried request is a second bill; 429s and errors are handled here.
        return self.sdk.AsyncOpenAI(
            base_url=self.base_url, api_key=self.api_key, max_retries=0, timeout=self.timeout
        )

    def journal(self, local_id: str) -> Journal:
        return Journal(journal_dir() / f"{local_id}.jsonl")

    def render_line(self, request: Request) -> bytes:
        return self._render(request)

    def submit(
        self,
        local_id: str,
        path: Path,
        model: str,
        *,
        input_file_id: str | None = None,
        on_uploaded: Callable[[str], None] | None = None,
    ) -> BatchState:
        """Start sending the batch file's requests; the batch is "created" at once."""
        with open(path, "rb") as f:
            n = sum(1 for line in f if line.strip())
        self.journal(local_id).start(Path(path), model, n)
        self._ensure_worker(local_id)
        return self.poll(PREFIX + local_id)

    def find(self, local_id: str, *, created_after: datetime, n_requests: int) -> list[BatchState]:
        """The batch, when its journal exists (then it was submitted)."""
        if not self.journal(local_id).exists():
            return []
        return [self.poll(PREFIX + local_id)]

    def _ensure_worker(self, local_id: str) -> _Worker | None:
        """The worker sending `local_id`, started when there is something left to send."""
        key = str(self.journal(local_id).path)
        with _LOCK:
            worker = _WORKERS.get(key)
            if worker is not None and (worker.alive() or worker.error is None):
                return worker
            view = self.journal(local_id).read()
            if view.cancelled or len(view.done) >= view.header["n"]:
                return None
            worker = _WORKERS[key] = _Worker(self, local_id)
            worker.start()
            return worker

    def poll(self, provider_batch_id: str) -> BatchState:
        local_id = provider_batch_id.removeprefix(PREFIX)
        journal = self.journal(local_id)
        if not journal.exists():
            raise ProviderError(f"{self.name}: no journal for direct batch {provider_batch_id}")
        worker = self._ensure_worker(local_id)
        if worker is not None and worker.alive():  # the counters, not a reread of the journal
            return BatchState(
                provider_batch_id=provider_batch_id,
                raw_status="held" if worker.held else "in_progress",
                ended=False,
                total=worker.header["n"],
                done=worker.done,
                created_at=datetime.fromtimestamp(worker.header["created_at"], UTC),
            )
        if worker is not None and worker.error is not None:
            raise ProviderError(f"{self.name} direct batch {local_id}: {worker.error}")
        view = journal.read()
        total = view.header["n"]
        ended = view.cancelled or len(view.done) >= total
        status = "cancelled" if view.cancelled else "completed" if ended else "in_progress"
        return BatchState(
            provider_batch_id=provider_batch_id,
            raw_status=status,
            ended=ended,
            total=total,
            done=len(view.done),
            created_at=datetime.fromtimestamp(view.header["created_at"], UTC),
        )

    def results(self, state: BatchState) -> Iterator[Result]:
        view = self.journal(state.provider_batch_id.removeprefix(PREFIX)).read()
        for custom_id, row in view.done.items():
            yield result_of(custom_id, row)

    def cancel(self, provider_batch_id: str) -> BatchState:
        """Stop sending; the requests in flight finish and keep their answers."""
        local_id = provider_batch_id.removeprefix(PREFIX)
        with _LOCK:
            worker = _WORKERS.get(str(self.journal(local_id).path))
        if worker is not None and worker.alive():
            worker.cancel.set()
            worker.thread.join(timeout=self.timeout)
        else:
            view = self.journal(local_id).read()
            if not view.cancelled and len(view.done) < view.header["n"]:
                self.journal(local_id).append({"cancelled": True})
        return self.poll(provider_batch_id)


def resent_count(local_id: str) -> int:
    """Requests of a direct batch sent again after a crash (possibly billed twice)."""
    journal = Journal(journal_dir() / f"{local_id}.jsonl")
    return journal.read().resent if journal.exists() else 0


# DeepSeek bills half price outside its peak hours: 01:00-04:00 and 06:00-10:00 UTC, Monday
# to Friday (docs/providers.md, DeepSeek).
PEAK_HOURS = ((1, 4), (6, 10))


def deepseek_peak_ends(now: datetime) -> datetime | None:
    """When the DeepSeek peak window `now` falls in ends; None outside peak hours."""
    now = now.astimezone(UTC)
    if now.weekday() >= 5:
        return None
    for start, end in PEAK_HOURS:
        if start <= now.hour < end:
            return now.replace(hour=end, minute=0, second=0, microsecond=0)
    return None
