"""The sandbox clock and a batch's timeline; a batch's status is worked out from these.

Nothing runs in the background: each read asks the timeline where the clock stands, so a
batch moves through its statuses however fast the clock runs or jumps.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

DAY = 24 * 3600.0


class Clock:
    """Wall time scaled by `speed` plus manual advances (POST /_sandbox/clock)."""

    def __init__(self, speed: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._base = time.time()
        self._mono = time.monotonic()
        self._speed = speed

    def now(self) -> float:
        with self._lock:
            return self._base + (time.monotonic() - self._mono) * self._speed

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"the sandbox clock only moves forward, not by {seconds!r}")
        with self._lock:
            self._base += seconds
        return self.now()

    def set_speed(self, speed: float) -> None:
        # Rebase so time already passed keeps its old rate and the clock never jumps.
        now = self.now()
        with self._lock:
            self._base, self._mono, self._speed = now, time.monotonic(), speed


@dataclass
class Timeline:
    """When a batch's phases begin and end, in sandbox seconds since the epoch.

    Processing stops at the earliest of: all requests done, cancel, expiry deadline.
    Request i (0-based) of n finishes at `validated + (i+1)/n * (processed - validated)`.
    """

    created: float
    validated: float
    processed: float
    finalized: float
    expires: float
    cancelling_s: float
    forced_expiry: float | None = None
    cancel_requested: float | None = None

    @classmethod
    def plan(
        cls, created: float, n: int, cfg, factor: float = 1.0, expire_after: float | None = None
    ) -> Timeline:
        validated = created + cfg.validating_s * factor
        processed = validated + (cfg.in_progress_s + n * cfg.per_request_s) * factor
        forced = None
        if expire_after is not None:
            forced = validated + expire_after * (processed - validated)
        return cls(
            created,
            validated,
            processed,
            processed + cfg.finalizing_s * factor,
            created + DAY,
            cfg.cancelling_s * factor,
            forced,
        )

    @property
    def deadline(self) -> float:
        return min(self.expires, self.forced_expiry or self.expires)

    def outcome(self) -> str:
        """How processing stops: 'done', 'cancelled' or 'expired'."""
        stop = min(self.processed, self.deadline)
        if self.cancel_requested is not None and self.cancel_requested < stop:
            return "cancelled"
        return "expired" if self.deadline < self.processed else "done"

    def cutoff(self) -> float:
        """The moment processing stops; requests that finish later never run."""
        return {
            "done": self.processed,
            "expired": self.deadline,
            "cancelled": self.cancel_requested,
        }[self.outcome()]

    def ended(self) -> float:
        """When the batch reaches its terminal status."""
        outcome = self.outcome()
        if outcome == "cancelled":
            return self.cancel_requested + self.cancelling_s
        return self.deadline if outcome == "expired" else self.finalized

    def finish_time(self, index: int, total: int) -> float:
        span = self.processed - self.validated
        return self.validated + (index + 1) / max(total, 1) * span

    def finished_count(self, total: int) -> int:
        """How many requests finish before the cutoff (they keep their results)."""
        if self.outcome() == "done":
            return total
        span = self.processed - self.validated
        if span <= 0:
            return 0
        # tolerance: epoch-sized floats lose ~1e-7 s, which must not cost a request
        done = int((self.cutoff() - self.validated) / span * total + 1e-4)
        return max(0, min(total, done))

    def openai_status(self, now: float, failed: bool) -> str:
        outcome = self.outcome()
        if outcome == "cancelled" and now >= self.cancel_requested:
            return "cancelled" if now >= self.ended() else "cancelling"
        if now < self.validated:
            return "validating"
        if failed:
            return "failed"
        if outcome == "expired" and now >= self.deadline:
            return "expired"
        if now < self.processed:
            return "in_progress"
        return "finalizing" if now < self.finalized else "completed"

    def anthropic_status(self, now: float) -> str:
        if now >= self.ended():
            return "ended"
        if self.cancel_requested is not None and now >= self.cancel_requested:
            return "canceling"
        return "in_progress"
