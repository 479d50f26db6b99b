"""Everything the sandbox holds, behind one lock: clock, faults, caches, files, batches, ledger.

Routes run on uvicorn's event loop while tests call `Sandbox.configure` from their own thread,
so every read and change goes through `state.lock`.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from batcher.sandbox.caching import ColdStart, PromptCache
from batcher.sandbox.config import SandboxConfig
from batcher.sandbox.faults import FaultSet
from batcher.sandbox.gc_pause import paused_collection
from batcher.sandbox.ledger import Ledger
from batcher.sandbox.lifecycle import Clock
from batcher.sandbox.responders import DeterministicResponder, ReplayResponder

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    """Unique, and sorting in creation order (a counter ahead of the random part)."""
    return f"{prefix}{next(_ids):08d}{secrets.token_hex(6)}"


@dataclass
class FileRecord:
    id: str
    data: bytes
    filename: str
    purpose: str
    created_at: float
    expires_at: float | None = None


class Pending(Protocol):
    """A batch whose results are not produced yet."""

    def due(self, now: float) -> bool: ...

    def materialize(self, state: SandboxState) -> None: ...


class SandboxState:
    def __init__(self, config: SandboxConfig) -> None:
        self.initial = config
        self.lock = threading.RLock()
        self._setup(config)

    def _setup(self, config: SandboxConfig) -> None:
        self.config = config
        self.clock = Clock(config.speed)
        self.faults = FaultSet(config.faults, config.seed)
        self.openai_cache = PromptCache()
        self.anthropic_cache = PromptCache()
        self.gemini_cache = PromptCache()
        self.xai_cache = PromptCache()
        self.deepseek_cache = PromptCache()
        self.cold_starts: dict[str, ColdStart] = {}  # by batch id: who has seen the group
        self.chat_windows: dict[str, Any] = {}  # provider -> times of recent chat calls
        self.ledger = Ledger()
        self.files: dict[str, FileRecord] = {}
        self.openai_batches: dict[str, Any] = {}
        self.anthropic_batches: dict[str, Any] = {}
        self.gemini_batches: dict[str, Any] = {}
        self.xai_batches: dict[str, Any] = {}
        self.gemini_files: dict[str, Any] = {}
        self.gemini_uploads: dict[str, Any] = {}  # resumable upload sessions by token
        self.pending: list[Pending] = []
        self.responder = self._responder(config)

    def prompt_cache(self, provider: str) -> PromptCache:
        """The prompt cache of an OpenAI-format provider (each provider caches on its own)."""
        caches = {"openai": self.openai_cache, "xai": self.xai_cache}
        return caches.get(provider) or self.deepseek_cache

    def _responder(self, config: SandboxConfig) -> DeterministicResponder | ReplayResponder:
        if config.replay:
            return ReplayResponder.from_file(config.replay, config.model_map)
        return DeterministicResponder(self.malformed_rate)

    def malformed_rate(self, model: str) -> float:
        rate = self.faults.malformed_rate(model)
        if rate is not None:
            return rate
        return self.config.malformed.get(model, self.config.malformed.get("*", 0.0))

    def now(self) -> float:
        return self.clock.now()

    def tick(self) -> float:
        """Produce the results of every batch whose processing has stopped, oldest first.

        Oldest first keeps cache accounting in submission order across batches.
        """
        now = self.clock.now()
        with self.lock, paused_collection():
            while self.pending and any(b.due(now) for b in self.pending):
                batch = next(b for b in self.pending if b.due(now))
                self.pending.remove(batch)
                batch.materialize(self)
        return now

    def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply run-time changes (see server.Sandbox.configure); returns the new settings."""
        changes = dict(changes)
        with self.lock:
            if changes.pop("clear_faults", False):
                self.faults.replace("")
            if "faults" in changes:
                self.faults.replace(changes["faults"] or "")
            if changes.get("add_faults"):
                self.faults.add(changes.pop("add_faults"))
            changes.pop("add_faults", None)
            self.config = self.config.updated(changes)
            if "speed" in changes:
                self.clock.set_speed(self.config.speed)
            if {"replay", "model_map"} & set(changes):
                self.responder = self._responder(self.config)
            return self.describe()

    def describe(self) -> dict[str, Any]:
        with self.lock:
            return {
                "config": self.config.as_dict(),
                "faults": self.faults.describe(),
                "now": self.clock.now(),
            }

    def reset(self) -> None:
        """Forget all files, batches, caches and counts; back to the start-up settings."""
        with self.lock:
            self._setup(self.initial)

    def forget_batch(self, provider: str, batch_id: str) -> bool:
        """Drop a batch as a provider does past its retention: later calls about it answer
        404, and results it had not produced are never produced (nor billed)."""
        batches = {
            "openai": self.openai_batches,
            "anthropic": self.anthropic_batches,
            "google": self.gemini_batches,
            "xai": self.xai_batches,
        }.get(provider, {})  # direct-mode providers keep no batches
        with self.lock:
            batch = batches.pop(batch_id, None)
            if batch is None:
                return False
            self.pending = [b for b in self.pending if b is not batch]
            self.ledger.forgotten[provider] += 1
            return True

    def store_file(
        self, data: bytes, filename: str, purpose: str, expires_after: float | None = None
    ) -> FileRecord:
        now = self.clock.now()
        record = FileRecord(
            new_id("file-"),
            data,
            filename,
            purpose,
            now,
            now + expires_after if expires_after else None,
        )
        with self.lock:
            self.files[record.id] = record
        return record
