"""Polling: how long to wait between looks at the open batches, and settling a batch that
ended or was refused: the one route from the run loop into `batcher.run.reconcile`.

The wait starts at `interval_s`, grows by half each time a look finds nothing new, and falls
back to `interval_s` as soon as something moves, capped at `max_interval_s`. Real providers
take minutes to hours, so the spec's defaults are 30 s growing to 5 min; the sandbox finishes
in a second, so `--sandbox` polls every 0.05 s.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from batcher.providers.base import BatchState, Provider, Result
from batcher.providers.calls import ProviderError
from batcher.run.crash import CRASH_ENV, crash_point
from batcher.run.reconcile import fail_batch, reconcile_batch
from batcher.spec import JobSpec

TOKEN_LIMIT = "token_limit_exceeded"
SANDBOX_POLL_S = 0.05
SANDBOX_UNREACHABLE_S = 5.0  # the sandbox answers at once, or it is not running


@dataclass(frozen=True)
class PollSettings:
    interval_s: float = 30.0
    max_interval_s: float = 300.0
    unreachable_s: float = 900.0  # a provider silent this long stops the run

    @classmethod
    def of(
        cls, spec: JobSpec, interval_s: float | None = None, unreachable_s: float | None = None
    ) -> PollSettings:
        """The spec's polling, or a fixed `interval_s` (which also caps the growth)."""
        silent = unreachable_s or spec.polling.unreachable_after_s
        if interval_s is not None:
            return cls(interval_s, max(interval_s, interval_s * 4), silent)
        return cls(spec.polling.interval_s, spec.polling.max_interval_s, silent)


class Backoff:
    """The current wait; `moved()` resets it, `idle()` grows it."""

    def __init__(self, settings: PollSettings) -> None:
        self.settings = settings
        self.wait_s = settings.interval_s

    def moved(self) -> None:
        self.wait_s = self.settings.interval_s

    def idle(self) -> None:
        self.wait_s = min(self.settings.max_interval_s, self.wait_s * 1.5)


def _crash_halfway(results: Iterable[Result], n: int) -> Iterator[Result]:
    """The kill-test seam: die after half of the results were handed to the reconciler."""
    for index, result in enumerate(results):
        if index == n // 2:
            crash_point("mid_reconcile")
        yield result


def settle_refused(db: Engine, batch: Any, errors: list[dict[str, Any]], spec: JobSpec) -> None:
    """A batch whose create the provider refused: every request errored with its reason (the
    follow-up policy decides from the codes)."""
    fail_batch(db, batch.id, errors, spec)


def settle_ended(
    db: Engine, provider: Provider, batch: Any, state: BatchState, spec: JobSpec
) -> tuple[str, str | None]:
    """Store what an ended batch produced. Returns (kind, note):

    ("refused", code) for a batch the provider failed as a whole (validation errors,
    token_limit_exceeded), ("gone", message) when its result files are gone (every attempt
    then counts as missing and is retried), ("reconciled", None) otherwise.
    """
    if state.failed or state.raw_status == "failed":
        errors = state.errors or [
            {"code": "batch_failed", "message": "the provider failed the batch", "line": None}
        ]
        fail_batch(db, batch.id, errors, spec)
        codes = {e.get("code") for e in errors}
        return "refused", TOKEN_LIMIT if TOKEN_LIMIT in codes else sorted(map(str, codes))[0]
    results: Iterable[Result] = provider.results(state)
    chunk: dict[str, int] = {}
    if _armed("mid_reconcile"):
        results = _crash_halfway(results, batch.n_requests)
        chunk = {"chunk": max(1, batch.n_requests // 2)}  # so the kill lands between commits
    try:
        reconcile_batch(db, batch.id, results, spec, **chunk)
    except ProviderError as exc:
        if exc.status != 404:
            raise
        # The output files expired or were deleted: nothing more can be read. Every attempt
        # without a stored result is marked missing and retried.
        reconcile_batch(db, batch.id, [], spec)
        return "gone", f"results of batch {batch.id} are gone at {batch.provider}: {exc}"
    return "reconciled", None


def _armed(step: str) -> bool:
    return os.environ.get(CRASH_ENV) == step
