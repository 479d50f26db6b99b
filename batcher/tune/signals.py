"""Per-item evidence and the scorer's features.

`ItemRecord` is one item of the job as its stored runs saw it: for each tier that answered it,
the `Outcome` (valid or not, answer key, stop reason, output tokens, exact cost), and the
truth it is judged by (a gold answer, or the frontier tier's answer key).

A scorer's features are named strings, so a policy file says what it reads and a run can
compute the same values (`compile_feature`):

- `agree:TIER` 1 when TIER's second opinion gives the first tier's answer key, `agree_all`
  when every opinion does;
- `key=K` 1 when the first tier answered K (labels that one model confuses more than others);
- `log_output_tokens`, `log_input_tokens`: log(1 + tokens) of the answer and of the prompt,
  as the provider billed the first tier's attempt (exact, and the same in every run, where
  the estimate made at ingest samples the tokenizer);
- `stop=R`, `route=R`: the answer's stop reason, the item's route reason;
- `meta:F` a numeric metadata field, `meta:F=V` a categorical one.

Token log-probabilities would be one more signal; no provider path stores them yet.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from batcher.plan.routing import AnswerSignals

MAX_KEYS = 20  # one-hot answer keys: the most frequent ones only
MIN_COUNT = 3  # a category seen fewer times says nothing a fold can learn
PREFIXES = ("agree:", "key=", "stop=", "route=", "meta:")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one tier did with one item (its attempts in one run, retries summed)."""

    valid: bool  # the last attempt succeeded (passed validation)
    key: str | None
    cost_pusd: int
    stop_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    unbiased: bool = True  # asked for every item alike, not only after an escalation


@dataclass
class ItemRecord:
    custom_id: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    route_reason: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    truth: str | None = None

    def signals(self, tier: str, opinions: Sequence[str]) -> AnswerSignals:
        """The signals a run would have seen after `tier` answered with `opinions` asked."""
        first = self.outcomes[tier]
        keys = {}
        for opinion in opinions:
            seen = self.outcomes[opinion]
            keys[opinion] = seen.key if seen.valid else None
        return AnswerSignals(
            tier=tier, answer_key=first.key, stop_reason=first.stop_reason,
            output_tokens=first.output_tokens, opinions=keys, input_tokens=first.input_tokens,
            route_reason=self.route_reason, metadata=self.metadata,
        )  # fmt: skip


def compile_feature(name: str) -> Callable[[AnswerSignals], float]:
    """The function computing feature `name` from an item's signals (ValueError: unknown)."""
    if name == "agree_all":
        return lambda s: float(bool(s.opinions) and all(
            k is not None and k == s.answer_key for k in s.opinions.values()))  # fmt: skip
    if name == "log_output_tokens":
        return lambda s: math.log1p(max(s.output_tokens, 0))
    if name == "log_input_tokens":
        return lambda s: math.log1p(max(s.input_tokens or 0, 0))
    prefix = next((p for p in PREFIXES if name.startswith(p)), None)
    if prefix is None:
        raise ValueError(f"unknown feature {name!r}")
    rest = name[len(prefix) :]
    if prefix == "agree:":
        return lambda s: float(s.answer_key is not None and s.opinions.get(rest) == s.answer_key)
    if prefix == "key=":
        return lambda s: float(s.answer_key == rest)
    if prefix == "stop=":
        return lambda s: float((s.stop_reason or "") == rest)
    if prefix == "route=":
        return lambda s: float((s.route_reason or "") == rest)
    field_name, is_category, value = rest.partition("=")
    if is_category:
        return lambda s: float(str(s.metadata.get(field_name)) == value)
    return lambda s: _number(s.metadata.get(field_name))


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def vocabulary(
    signals: Sequence[AnswerSignals], opinions: Sequence[str], metadata: Sequence[str]
) -> list[str]:
    """The features worth fitting on `signals`: every signal that varies across them."""
    names = [f"agree:{t}" for t in opinions]
    if len(opinions) > 1:
        names.append("agree_all")
    names += ["log_output_tokens", "log_input_tokens"]
    keys = Counter(s.answer_key for s in signals if s.answer_key is not None)
    names += [f"key={k}" for k, n in keys.most_common(MAX_KEYS) if n >= MIN_COUNT]
    names += _categories("stop", (s.stop_reason or "" for s in signals))
    names += _categories("route", (s.route_reason or "" for s in signals))
    for name in metadata:
        values = [s.metadata.get(name) for s in signals]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            names.append(f"meta:{name}")
        else:
            names += _categories(f"meta:{name}", (str(v) for v in values), sep="=")
    return [n for n in names if _varies(n, signals)]


def _categories(prefix: str, values: Iterable[str], sep: str = "=") -> list[str]:
    counts = Counter(values)
    return [f"{prefix}{sep}{v}" for v, n in counts.most_common(MAX_KEYS) if n >= MIN_COUNT]


def _varies(name: str, signals: Sequence[AnswerSignals]) -> bool:
    value = compile_feature(name)
    return len({value(s) for s in signals}) > 1


def matrix(names: Sequence[str], signals: Sequence[AnswerSignals]) -> list[list[float]]:
    """One row of feature values per item."""
    functions = [compile_feature(n) for n in names]
    return [[f(s) for f in functions] for s in signals]
