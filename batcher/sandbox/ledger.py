"""The audit trail: what was submitted (per custom_id) and what was billed (per request)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

PROVIDERS = ("openai", "anthropic", "google", "xai", "deepseek")
KINDS = ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output", "reasoning")


@dataclass
class Ledger:
    """Submission counts, batch counts and billed usage; read by GET /_sandbox/stats, /billed.

    Token kinds: `input` is uncached input (OpenAI prompt_tokens - cached_tokens; Anthropic
    input_tokens), `output` includes reasoning (as both providers bill it), `reasoning` is
    the reasoning share of output.
    """

    batches: Counter = field(default_factory=Counter)
    submissions: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    billed: list[dict] = field(default_factory=list)
    totals: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    forgotten: Counter = field(default_factory=Counter)  # batches dropped by the forget fault
    rate_limited: Counter = field(default_factory=Counter)  # 429s of the chat rate limit

    def submitted(self, provider: str, custom_ids: list[str]) -> None:
        self.batches[provider] += 1
        self.submissions[provider].update(custom_ids)

    def submitted_direct(self, provider: str, custom_id: str) -> None:
        """One request sent directly (no batch)."""
        self.submissions[provider][custom_id] += 1

    def bill(
        self,
        provider: str,
        batch_id: str,
        custom_id: str,
        model: str,
        usage: dict,
        kinds: dict[str, int],
    ) -> None:
        self.billed.append(
            {
                "provider": provider,
                "batch_id": batch_id,
                "custom_id": custom_id,
                "model": model,
                "usage": usage,
                "tokens": kinds,
            }
        )
        totals = self.totals[model]
        for kind, count in kinds.items():  # what Counter.update does, without its checks
            totals[kind] += count

    def stats(self) -> dict:
        subs = {p: dict(c) for p, c in self.submissions.items()}
        return {
            "batches_created": {p: self.batches.get(p, 0) for p in PROVIDERS},
            "submissions": {p: subs.get(p, {}) for p in PROVIDERS},
            "duplicates": {
                p: sorted(k for k, v in subs.get(p, {}).items() if v > 1) for p in PROVIDERS
            },
            "batches_forgotten": {p: self.forgotten.get(p, 0) for p in PROVIDERS},
            "requests_billed": len(self.billed),
            "rate_limited": dict(self.rate_limited),
            "billed_tokens": {
                m: {k: c.get(k, 0) for k in KINDS} for m, c in sorted(self.totals.items())
            },
        }


def openai_kinds(usage: dict) -> dict[str, int]:
    """Token kinds of an OpenAI chat/responses/embeddings usage object."""
    prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    out_details = usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
    cached = details.get("cached_tokens", 0)
    return {
        "input": prompt - cached,
        "cache_read": cached,
        "cache_write_5m": 0,
        "cache_write_1h": 0,
        "output": usage.get("completion_tokens", usage.get("output_tokens", 0)),
        "reasoning": out_details.get("reasoning_tokens", 0),
    }


def anthropic_kinds(usage: dict) -> dict[str, int]:
    creation = usage.get("cache_creation") or {}
    return {
        "input": usage["input_tokens"],
        "cache_read": usage["cache_read_input_tokens"],
        "cache_write_5m": creation.get("ephemeral_5m_input_tokens", 0),
        "cache_write_1h": creation.get("ephemeral_1h_input_tokens", 0),
        "output": usage["output_tokens"],
        "reasoning": 0,
    }
