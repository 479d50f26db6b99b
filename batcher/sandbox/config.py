"""Sandbox settings: one dataclass, built from options at start and patched at run time."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MB = 1024 * 1024


@dataclass
class SandboxConfig:
    """Everything that shapes the sandbox's behaviour; every field can be changed at run time.

    Lifecycle phase lengths are in sandbox seconds; `speed` makes the sandbox clock run faster
    (2.0 = twice real time), so a batch's phases and cache TTLs pass that much sooner.
    """

    speed: float = 1.0
    faults: str = ""
    seed: int = 0
    replay: str | None = None
    model_map: dict[str, str] = field(default_factory=dict)
    # Per-model rate (0..1) of malformed or wrong answers from the deterministic responder.
    malformed: dict[str, float] = field(default_factory=dict)
    validating_s: float = 0.15
    in_progress_s: float = 0.3
    per_request_s: float = 0.00002
    finalizing_s: float = 0.15
    cancelling_s: float = 0.2
    # Provider limits, configurable so tests can reach them with small inputs.
    openai_max_lines: int = 50_000
    openai_max_bytes: int = 200 * MB
    openai_token_limit: dict[str, int] = field(default_factory=dict)
    anthropic_max_requests: int = 100_000
    anthropic_max_bytes: int = 256 * MB
    openai_cache_ttl_s: float = 600.0
    # Gemini implicit caching: how long a prefix stays cached (undocumented), and per-model
    # minimum prompt sizes overriding the documented table (see gemini_batches).
    gemini_cache_ttl_s: float = 300.0
    gemini_min_cache_tokens: dict[str, int] = field(default_factory=dict)
    # The docs say an expired job has no results; True keeps what expired and cancelled
    # jobs finished (and bills it).
    gemini_partial_results: bool = False
    # Direct mode (synchronous chat completions): requests per minute per provider before a
    # 429 (sandbox clock), and a fixed real-time latency per call (the direct-mode bench).
    chat_rpm: dict[str, int] = field(default_factory=dict)
    chat_latency_s: float = 0.0
    require_auth: bool = True
    # A batch's requests run concurrently: the first N of a cache group in each batch do not
    # see the group's writes made in that batch (they read only what an earlier batch or
    # request left). Anthropic: cold batches of up to 48 requests read 0% (user reports).
    cold_requests: dict[str, int] = field(
        default_factory=lambda: {"openai": 16, "anthropic": 100, "google": 16, "xai": 16}
    )
    # Anthropic's shortest cacheable prompt by model, over the sandbox's table (which takes
    # the measured 2,048 for Sonnet 4.6 rather than the documented 1,024).
    anthropic_min_cache_tokens: dict[str, int] = field(default_factory=dict)
    # Per-model context windows (tokens) overriding the price data's, so tests can refuse a
    # request as too long with small inputs.
    context_windows: dict[str, int] = field(default_factory=dict)
    # Hidden reasoning tokens a gpt-5 / o-series request spends, [low, high] by
    # reasoning_effort (medium when none is sent, the service's default). They count against
    # max_completion_tokens; the figures are the sandbox's assumption (docs give none).
    reasoning_tokens: dict[str, list[int]] = field(
        default_factory=lambda: {
            "none": [0, 0],
            "minimal": [0, 32],
            "low": [64, 256],
            "medium": [384, 1024],
            "high": [1024, 4096],
            "xhigh": [2048, 8192],
        }
    )

    def updated(self, changes: dict[str, Any]) -> SandboxConfig:
        """A copy with `changes` applied; raises ValueError naming an unknown or bad field."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown sandbox config field(s): {', '.join(unknown)}")
        new = dataclasses.replace(self, **changes)
        if new.speed <= 0:
            raise ValueError(f"speed must be > 0, got {new.speed!r}")
        return new

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_model_map(text: str | None) -> dict[str, str]:
    """`--model-map` value: inline JSON object, or a path to a JSON file."""
    if not text:
        return {}
    path = Path(text)
    raw = path.read_text() if not text.lstrip().startswith("{") and path.exists() else text
    value = json.loads(raw)
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f"model map must be a JSON object of model -> recorded model: {text!r}")
    return value
