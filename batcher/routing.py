"""Routing: every item gets a tier and a recorded reason.

Precedence, first that applies wins:
1. an explicit `model` on the item ("provider:model"): that model is used; the tier recorded
   is the tier with that model, else the ladder tier whose price is nearest (escalation climbs
   the ladder from there);
2. an explicit `tier` on the item;
3. the spec's rules, in order (every condition of a rule must hold): metadata fields equal,
   a regex search on the prompt, the estimated input tokens within [min_tokens, max_tokens];
4. the classifier: `fixed:TIER`, or the keyword and length heuristic of the article.

Reasons are short categorical strings ("rule 2: prompt_regex", "classifier: 2+ high
keywords"), so that a plan can count items by reason.

A classifier is anything with `classify(text) -> (tier, reason)` (see `Classifier`), so a
learned router can replace the heuristic without touching the rest.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Protocol

from batcher.errors import UsageError
from batcher.items import ParsedItem, content_text
from batcher.pricing import unit_prices
from batcher.spec import JobSpec, Routing, Rule, split_model_ref
from batcher.tokens import count_tokens, encoding, estimate_tokens_cheap

MESSAGE_OVERHEAD_TOKENS = 4  # role and separators the providers add around each message

# (item, system text) -> (tier, route reason, estimated input tokens); what ingest accepts
Annotator = Callable[[ParsedItem, str | None], tuple[str, str, int]]


class Classifier(Protocol):
    """Chooses a tier from the prompt text when no explicit choice or rule applies."""

    def classify(self, text: str) -> tuple[str, str]:
        """(tier, reason) for the text of the item's last user message."""
        ...


class FixedClassifier:
    """`fixed:TIER`: every item goes to one tier."""

    def __init__(self, tier: str):
        self.tier = tier

    def classify(self, text: str) -> tuple[str, str]:
        return self.tier, f"classifier: fixed:{self.tier}"


def _keyword_pattern(keywords: list[str]) -> re.Pattern[str]:
    # A keyword counts at the start of a word: "design" in "designing", not "reason" in
    # "treason". Longest first, so "explain why" wins over a shorter overlapping keyword.
    ordered = sorted({k.lower() for k in keywords}, key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(re.escape(k) for k in ordered) + ")")


class HeuristicClassifier:
    """The article's keyword and length heuristic.

    Two or more distinct high-complexity keywords, or more than `frontier_words` words with
    at least one, -> high; at least one low-complexity keyword and fewer than `nano_words`
    words -> low; otherwise mid. High, mid and low map to tiers `frontier`, `mid` and `nano`
    when the spec has them, else to the top, middle and bottom of the escalation ladder.
    """

    def __init__(self, routing: Routing, tiers: dict[str, str]):
        self.high = _keyword_pattern(routing.high_keywords)
        self.low = _keyword_pattern(routing.low_keywords)
        self.frontier_words, self.nano_words = routing.frontier_words, routing.nano_words
        ladder = routing.ladder or list(tiers)
        self.top = "frontier" if "frontier" in tiers else ladder[-1]
        self.middle = "mid" if "mid" in tiers else ladder[len(ladder) // 2]
        self.bottom = "nano" if "nano" in tiers else ladder[0]

    def classify(self, text: str) -> tuple[str, str]:
        lowered = text.lower()
        n_high = len(set(self.high.findall(lowered)))
        n_words = len(text.split())
        if n_high >= 2:
            return self.top, "classifier: 2+ high keywords"
        if n_high and n_words > self.frontier_words:
            return self.top, "classifier: long prompt with a high keyword"
        if n_words < self.nano_words and self.low.search(lowered):
            return self.bottom, "classifier: low keyword in a short prompt"
        return self.middle, "classifier: default"


def make_classifier(spec: JobSpec) -> Classifier:
    """The classifier named by `spec.routing.classifier`."""
    name = spec.routing.classifier
    if name.startswith("fixed:"):
        return FixedClassifier(name.removeprefix("fixed:"))
    return HeuristicClassifier(spec.routing, spec.tiers)


class _CompiledRule:
    def __init__(self, index: int, rule: Rule):
        self.index, self.tier = index, rule.tier
        self.metadata = rule.metadata
        self.regex = re.compile(rule.prompt_regex) if rule.prompt_regex else None
        self.min_tokens, self.max_tokens = rule.min_tokens, rule.max_tokens
        given = [
            name
            for name, value in (
                ("metadata", rule.metadata),
                ("prompt_regex", rule.prompt_regex),
                ("min_tokens", rule.min_tokens),
                ("max_tokens", rule.max_tokens),
            )
            if value is not None
        ]
        self.reason = f"rule {index + 1}: {', '.join(given) or 'always'}"

    def matches(self, metadata: dict[str, Any] | None, text: str, tokens: int) -> bool:
        if self.metadata is not None:
            if not metadata or any(metadata.get(k) != v for k, v in self.metadata.items()):
                return False
        if self.regex is not None and not self.regex.search(text):
            return False
        if self.min_tokens is not None and tokens < self.min_tokens:
            return False
        return self.max_tokens is None or tokens <= self.max_tokens


class Router:
    """Routing compiled once per spec: regexes, rules, classifier, tier models."""

    def __init__(self, spec: JobSpec, classifier: Classifier | None = None):
        self.spec = spec
        self.rules = [_CompiledRule(i, rule) for i, rule in enumerate(spec.routing.rules)]
        self.classifier = classifier or make_classifier(spec)
        self.tier_of_ref = {ref: tier for tier, ref in reversed(spec.tiers.items())}
        self._nearest: dict[str, str] = {}

    def tier_for_model(self, ref: str) -> tuple[str, str]:
        """(tier, reason) of an item that names its model."""
        if ref in self.tier_of_ref:
            return self.tier_of_ref[ref], "explicit model"
        if ref not in self._nearest:
            self._nearest[ref] = nearest_tier(self.spec, ref)
        return self._nearest[ref], "explicit model (tier priced nearest)"

    def route(
        self,
        explicit_model: str | None,
        explicit_tier: str | None,
        metadata: dict[str, Any] | None,
        text: str,
        tokens: int,
    ) -> tuple[str, str]:
        """(tier, reason) by the precedence in the module docstring."""
        if explicit_model is not None:
            return self.tier_for_model(explicit_model)
        if explicit_tier is not None:
            return explicit_tier, "explicit tier"
        for rule in self.rules:
            if rule.matches(metadata, text, tokens):
                return rule.tier, rule.reason
        return self.classifier.classify(text)


def nearest_tier(spec: JobSpec, ref: str) -> str:
    """The ladder tier whose model's price (1 input + 1 output token, standard) is nearest to
    that of `ref` on a log scale. Raises UsageError when `ref` cannot be priced."""
    try:
        provider, model = split_model_ref(ref)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    def price(p: str, m: str) -> float:
        units = unit_prices(p, m, batch=False, spec=spec)
        return float(units.input + units.output)

    target = price(provider, model)
    ladder = spec.routing.ladder or list(spec.tiers)
    return min(ladder, key=lambda t: abs(math.log(price(*spec.model_of(t)) / target)))


def estimate_input_tokens(item: ParsedItem, system: str | None, *, exact: bool = True) -> int:
    """Input tokens of `item`: the system prompt (counted once per distinct text) plus every
    message, with the real offline tokenizer, or 4 characters a token when `exact` is off."""
    tokens = count_tokens(system) if system and exact else 0
    if system and not exact:
        tokens = estimate_tokens_cheap(system)
    encode = encoding().encode_ordinary if exact else None
    for message in item.messages:
        text = content_text(message["content"])
        tokens += MESSAGE_OVERHEAD_TOKENS
        tokens += len(encode(text)) if encode else estimate_tokens_cheap(text)
    return tokens


_routers: dict[int, tuple[JobSpec, Router]] = {}


def _router(spec: JobSpec) -> Router:
    cached = _routers.get(id(spec))
    if cached is None or cached[0] is not spec:
        cached = _routers[id(spec)] = (spec, Router(spec))
    return cached[1]


def route(item: ParsedItem, spec: JobSpec, system_text: str | None) -> tuple[str, str]:
    """(tier, reason) of `item` under `spec`; see the module docstring for the precedence.

    Raises UsageError when the item names a model that cannot be priced.
    """
    router = _router(spec)
    tokens = estimate_input_tokens(item, system_text) if _needs_tokens(router) else 0
    return router.route(item.model, item.tier, item.metadata, item.prompt_text(), tokens)


def _needs_tokens(router: Router) -> bool:
    return any(r.min_tokens is not None or r.max_tokens is not None for r in router.rules)


def make_annotator(
    spec: JobSpec, *, classifier: Classifier | None = None, exact_tokens: bool = True
) -> Annotator:
    """An `ingest(annotate=...)` callback: (tier, reason, estimated input tokens) per item.

    `exact_tokens=False` uses the cheap 4-characters-a-token estimate instead of the
    tokenizer (several times faster on large inputs, and labelled so in the estimate).
    """
    router = Router(spec, classifier)

    def annotate(item: ParsedItem, system: str | None) -> tuple[str, str, int]:
        tokens = estimate_input_tokens(item, system, exact=exact_tokens)
        tier, reason = router.route(
            item.model, item.tier, item.metadata, item.prompt_text(), tokens
        )
        return tier, reason, tokens

    return annotate
