"""Injected faults: a small grammar, and a thread-safe set that fires and counts them down.

Grammar (whitespace ignored)::

    SPEC   := FAULT ("," FAULT)*
    FAULT  := KIND (":" OPTION)*
    OPTION := KEY "=" VALUE

Every fault takes `count=N` (fires N times, then is spent), `rate=P` (fires with probability
P; with both, at most N times) and/or `every=K` (fires on every K-th call it matches: the
2nd, 4th, ... for K=2). None of them means `count=1`.
`provider=openai|anthropic|google|xai|deepseek` limits a fault to one provider. Kinds:

- `http429`, `http500`, `http529`: answer the HTTP call with that status instead of serving it.
- `http404`: answer "not found" for a batch that exists (Anthropic users measured this for
  seconds after a create, then in between good polls); only `retrieve` and `results` unless
  `route=` says otherwise.
  `route=create|retrieve|list|cancel|delete|results|files|upload` (several joined by `|`;
  default all non-admin routes; `upload` is a chunk of a Gemini resumable upload; `chat` a
  synchronous chat completion of direct mode).
  `retry_after=SECONDS` (429 only, default 0.1) sets `retry-after(-ms)`.
- `create_lost`: the batch is created, but the create call answers 500 (a timed-out request).
  The SDKs retry 5xx, so a blind client creates the batch twice. On a chat completion: the
  request is billed, then answered 500.
- `request_error`: a request in a batch fails (OpenAI error file, Anthropic `errored`).
  `model=NAME` limits it to one model. Rates are decided per (batch, custom_id), so stable.
- `invalid_batch`: OpenAI batch goes `failed` (code `invalid_request`); Anthropic create
  answers 400; a Gemini job goes `BATCH_STATE_FAILED`.
- `token_limit`: OpenAI batch goes `failed` with `token_limit_exceeded`.
- `expire`: the batch expires once fraction `after=F` (default 0.5) of its requests finished.
- `forget`: the provider forgets the batch a `retrieve` asks about, for good (archived past its
  retention, or deleted): it and its unproduced results are gone and every later call about it
  answers 404. A forgotten batch that had not produced its results bills nothing.
- `slow`: the batch's phases take `factor=X` (default 20) times longer.
- `cache_miss`: a cache lookup misses (the providers' caches in batches are best effort).
- `malformed`: `MODEL=RATE` options (or `rate=R` for every model) set the deterministic
  responder's rate of malformed or wrong answers. It never counts down.

Example: `http429:count=3:route=create,create_lost:count=1,request_error:rate=0.1,
expire:count=1:after=0.5,malformed:gpt-5-nano=0.3`.
"""

from __future__ import annotations

import hashlib
import random
import threading
from dataclasses import dataclass, field

from batcher.errors import UsageError

KINDS = {
    "http429",
    "http500",
    "http529",
    "http404",
    "create_lost",
    "forget",
    "request_error",
    "invalid_batch",
    "token_limit",
    "expire",
    "slow",
    "cache_miss",
    "malformed",
}
ROUTES = {"create", "retrieve", "list", "cancel", "delete", "results", "files", "upload", "chat"}
PROVIDERS = {"openai", "anthropic", "google", "xai", "deepseek"}
_COMMON = {"count", "rate", "provider", "every"}
_EXTRA = {
    "http429": {"route", "retry_after"},
    "http500": {"route"},
    "http529": {"route"},
    "http404": {"route"},
    "request_error": {"model"},
    "expire": {"after"},
    "slow": {"factor"},
}


class FaultSpecError(UsageError, ValueError):
    """A --faults spec that does not parse; the message quotes the bad part."""


@dataclass
class Fault:
    kind: str
    count: int | None = None
    rate: float | None = None
    provider: str | None = None
    routes: frozenset[str] = frozenset()
    model: str | None = None
    retry_after: float = 0.1
    after: float = 0.5
    factor: float = 20.0
    models: dict[str, float] = field(default_factory=dict)
    every: int | None = None
    seen: int = 0  # matching calls so far (for `every`)
    fired: int = 0

    def describe(self) -> dict:
        out = {"kind": self.kind, "fired": self.fired, "count_left": self.count, "rate": self.rate}
        if self.provider:
            out["provider"] = self.provider
        if self.routes:
            out["routes"] = sorted(self.routes)
        if self.models:
            out["models"] = dict(self.models)
        return out


def parse_faults(spec: str) -> list[Fault]:
    """Parse a fault spec into Faults; raises FaultSpecError quoting the offending part."""
    return [_parse_one(part.strip()) for part in spec.replace("\n", "").split(",") if part.strip()]


def _parse_one(text: str) -> Fault:
    kind, *options = [p.strip() for p in text.split(":")]
    if kind not in KINDS:
        raise FaultSpecError(
            f"unknown fault {kind!r} in {text!r}; known: {', '.join(sorted(KINDS))}"
        )
    fault = Fault(kind=kind)
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key or not value:
            raise FaultSpecError(f"option {option!r} in {text!r} is not KEY=VALUE")
        try:
            _apply_option(fault, key.strip(), value.strip())
        except ValueError as exc:
            raise FaultSpecError(f"bad option {option!r} in {text!r}: {exc}") from None
    if kind != "malformed" and fault.count is None and fault.rate is None and not fault.every:
        fault.count = 1
    return fault


def _apply_option(fault: Fault, key: str, value: str) -> None:
    if fault.kind == "malformed":
        fault.models["*" if key == "rate" else key] = _fraction(value)
        return
    if key not in _COMMON | _EXTRA.get(fault.kind, set()):
        raise ValueError(f"{fault.kind} takes no option {key!r}")
    if key == "count":
        fault.count = int(value)
    elif key == "every":
        fault.every = int(value)
        if fault.every < 1:
            raise ValueError("every must be at least 1")
    elif key == "rate":
        fault.rate = _fraction(value)
    elif key == "provider":
        if value not in PROVIDERS:
            raise ValueError(
                f"provider must be one of {', '.join(sorted(PROVIDERS))}, not {value!r}"
            )
        fault.provider = value
    elif key == "route":
        routes = frozenset(value.split("|"))
        if not routes <= ROUTES | {"any"}:
            raise ValueError(f"routes must be among {', '.join(sorted(ROUTES))}")
        fault.routes = frozenset() if "any" in routes else routes
    elif key == "model":
        fault.model = value
    else:
        setattr(fault, key, float(value))


def _fraction(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{value!r} is not between 0 and 1")
    return number


def _unit(*parts: object) -> float:
    """A stable number in [0, 1) from `parts`: same inputs, same decision, on every run."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class FaultSet:
    """The active faults. `fire` decides and counts down under a lock (routes run in threads)."""

    def __init__(self, spec: str = "", seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._seed = seed
        self._rng = random.Random(seed)
        self.faults: list[Fault] = parse_faults(spec)

    def replace(self, spec: str) -> None:
        faults = parse_faults(spec)
        with self._lock:
            self.faults = faults

    def add(self, spec: str) -> None:
        faults = parse_faults(spec)
        with self._lock:
            self.faults.extend(faults)

    def fire(
        self,
        kind: str,
        provider: str,
        route: str | None = None,
        model: str | None = None,
        key: object = None,
    ) -> Fault | None:
        """The first live matching fault that fires now (counted down), or None.

        `key` makes a rate decision deterministic (per-request faults); without it the
        seeded generator decides.
        """
        if not self.faults:  # most calls: nothing injected (a list swapped whole, or extended)
            return None
        with self._lock:
            for fault in self.faults:
                if self._matches(fault, kind, provider, route, model) and self._roll(fault, key):
                    fault.fired += 1
                    if fault.count is not None:
                        fault.count -= 1
                    return fault
        return None

    def malformed_rate(self, model: str) -> float | None:
        if not self.faults:
            return None
        with self._lock:
            for fault in self.faults:
                if fault.kind == "malformed":
                    rate = fault.models.get(model, fault.models.get("*"))
                    if rate is not None:
                        return rate
        return None

    def describe(self) -> list[dict]:
        with self._lock:
            return [f.describe() for f in self.faults]

    @staticmethod
    def _matches(
        fault: Fault, kind: str, provider: str, route: str | None, model: str | None
    ) -> bool:
        if fault.kind != kind or (fault.count is not None and fault.count <= 0):
            return False
        if fault.provider and fault.provider != provider:
            return False
        if fault.routes and route not in fault.routes:
            return False
        return not (fault.model and model != fault.model)

    def _roll(self, fault: Fault, key: object) -> bool:
        if fault.every:
            fault.seen += 1
            if fault.seen % fault.every:
                return False
        if fault.rate is None:
            return True
        if key is None:
            return self._rng.random() < fault.rate
        return _unit(self._seed, fault.kind, key) < fault.rate
