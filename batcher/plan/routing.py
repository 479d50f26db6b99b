"""Routing: every item gets a tier and a recorded reason.

Precedence, first that applies wins:
1. an explicit `model` on the item ("provider:model"): that model is used; the tier recorded
   is the tier with that model, else the ladder tier whose price is nearest (escalation climbs
   the ladder from there);
2. an explicit `tier` on the item;
3. the spec's rules, in order (every condition of a rule must hold): metadata fields equal,
   a regex search on the prompt, the estimated input tokens within [min_tokens, max_tokens];
4. the classifier: `fixed:TIER`, or the keyword and length heuristic of the article. It reads
   the text `routing.classifier_text` names (see `ClassifierText`): by default the part of the
   item's prompt that differs between items, so an instruction line shared by every prompt
   ("explain your reasoning", "answer in JSON format") does not route every item alike.

Reasons are short categorical strings ("rule 2: prompt_regex", "classifier: 2+ high
keywords"), so that a plan can count items by reason.

A classifier is anything with `classify(text) -> (tier, reason)` (see `Classifier`), so a
learned router can replace the heuristic without touching the rest. After the first tier has
answered, an `Acceptor` may decide whether its valid answer stands or escalates (the scorer
`batcher tune` learns is one, see batcher.tune.policies).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from batcher.errors import UsageError
from batcher.money.prices import unit_prices
from batcher.plan.inputs import ParsedItem, content_text, parse_lines
from batcher.plan.tokens import count_tokens, encoding, estimate_tokens_cheap
from batcher.spec import JobSpec, Routing, Rule, split_model_ref

MESSAGE_OVERHEAD_TOKENS = 4  # role and separators the providers add around each message

# (item, system text) -> (tier, route reason, estimated input tokens); what ingest accepts
Annotator = Callable[[ParsedItem, str | None], tuple[str, str, int]]


class Classifier(Protocol):
    """Chooses a tier from the prompt text when no explicit choice or rule applies."""

    def classify(self, text: str) -> tuple[str, str]:
        """(tier, reason) for the text of the item's last user message."""
        ...


@dataclass(frozen=True, slots=True)
class AnswerSignals:
    """What is known about an item once its first tier has answered validly."""

    tier: str
    answer_key: str | None
    stop_reason: str | None = None
    output_tokens: int = 0
    opinions: dict[str, str | None] = field(default_factory=dict)  # tier -> key (None: none)
    input_tokens: int | None = None  # of the prompt, as billed for the answer
    route_reason: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class Acceptor(Protocol):
    """Decides whether a first tier's valid answer stands or the item escalates."""

    reads_items: bool  # whether `accept` reads the item's route reason or metadata

    def accept(self, signals: AnswerSignals) -> tuple[bool, str]:
        """(whether the answer stands, a short reason)."""
        ...


class FixedClassifier:
    """`fixed:TIER`: every item goes to one tier."""

    def __init__(self, tier: str):
        self.tier = tier

    def classify(self, text: str) -> tuple[str, str]:
        return self.tier, f"classifier: fixed:{self.tier}"


# Letters and the space that nearly every prompt of a few hundred characters holds. A keyword
# with a character outside them ("z" of analyze, "x" of explain, "-" of trade-off) is searched
# for only when that character is in the text: `in` with one character is a memchr, about a
# tenth of the cost of searching for the keyword itself.
COMMON_CHARACTERS = frozenset("etaoinsrhldcumfpgwybvk ")


class Keywords:
    """Keywords looked for at the start of a word of lowercased text ("design" in
    "designing", not "reason" in "treason"), each behind its cheap test (see
    COMMON_CHARACTERS). A find per keyword beats one alternation regex about threefold on
    prompts of 100 to 2,000 characters, even a regex that stops at its first match
    (bench/routing.py --speed)."""

    def __init__(self, keywords: tuple[str, ...]):
        gated, plain = [], []
        for keyword in keywords:
            rare = [c for c in keyword if c not in COMMON_CHARACTERS]
            if rare:
                gated.append((keyword, rare[0]))
            else:
                plain.append(keyword)
        self.gated, self.plain = tuple(gated), tuple(plain)

    def count(self, text: str, stop_at: int) -> int:
        """How many distinct keywords occur in `text` (lowercased), counting up to `stop_at`
        (at least 1): the same number whatever order they are looked for in."""
        found = 0
        for keyword, gate in self.gated:
            if gate in text and keyword in text and starts_a_word(text, keyword):
                found += 1
                if found >= stop_at:
                    return found
        for keyword in self.plain:
            if keyword in text and starts_a_word(text, keyword):
                found += 1
                if found >= stop_at:
                    return found
        return found


def starts_a_word(text: str, keyword: str) -> bool:
    """Whether `keyword` occurs in `text` where no letter, digit or underscore precedes it."""
    i = text.find(keyword)
    while i != -1:
        if i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_"):
            return True
        i = text.find(keyword, i + 1)
    return False


class HeuristicClassifier:
    """The article's keyword and length heuristic.

    Two or more distinct high-complexity keywords, or more than `frontier_words` words with
    at least one, -> high; at least one low-complexity keyword and fewer than `nano_words`
    words -> low; otherwise mid. High, mid and low map to tiers `frontier`, `mid` and `nano`
    when the spec has them, else to the top, middle and bottom of the escalation ladder.
    """

    def __init__(self, routing: Routing, tiers: dict[str, str]):
        self.high = Keywords(tuple(dict.fromkeys(k.lower() for k in routing.high_keywords)))
        self.low = Keywords(tuple(dict.fromkeys(k.lower() for k in routing.low_keywords)))
        self.frontier_words, self.nano_words = routing.frontier_words, routing.nano_words
        ladder = routing.ladder or list(tiers)
        self.top = "frontier" if "frontier" in tiers else ladder[-1]
        self.middle = "mid" if "mid" in tiers else ladder[len(ladder) // 2]
        self.bottom = "nano" if "nano" in tiers else ladder[0]

    def classify(self, text: str) -> tuple[str, str]:
        lowered = text.lower()
        n_high = self.high.count(lowered, 2)
        if n_high >= 2:
            return self.top, "classifier: 2+ high keywords"
        if n_high and more_words_than(text, self.frontier_words):
            return self.top, "classifier: long prompt with a high keyword"
        if not more_words_than(text, self.nano_words - 1) and self.low.count(lowered, 1):
            return self.bottom, "classifier: low keyword in a short prompt"
        return self.middle, "classifier: default"


def more_words_than(text: str, n: int) -> bool:
    """Whether `text` has more than `n` whitespace-separated words. It splits off at most
    n + 1 of them: a long prompt is not split whole only to be compared with a threshold."""
    return len(text.split(None, n)) > n


def make_classifier(spec: JobSpec) -> Classifier:
    """The classifier named by `spec.routing.classifier`."""
    name = spec.routing.classifier
    if name.startswith("fixed:"):
        return FixedClassifier(name.removeprefix("fixed:"))
    return HeuristicClassifier(spec.routing, spec.tiers)


TEMPLATE_SAMPLE = 200  # prompts read from the head of the input to find the shared lines


@dataclass(frozen=True, slots=True)
class Template:
    """Lines every sampled prompt starts (`head`) and ends (`tail`) with: the job's prompt
    template around each item's own text."""

    head: tuple[str, ...] = ()
    tail: tuple[str, ...] = ()

    @classmethod
    def learn(cls, prompts: list[str]) -> Template:
        """The leading and trailing lines all of `prompts` share (nothing from fewer than 2)."""
        if len(prompts) < 2:
            return cls()
        lines = [p.splitlines() for p in prompts]
        shortest = min(len(ls) for ls in lines)
        head = 0
        while head < shortest and all(ls[head] == lines[0][head] for ls in lines):
            head += 1
        tail = 0
        while tail < shortest - head and all(ls[-1 - tail] == lines[0][-1 - tail] for ls in lines):
            tail += 1
        return cls(tuple(lines[0][:head]), tuple(lines[0][len(lines[0]) - tail :]))

    def strip(self, text: str) -> str:
        """`text` without the template's lines where it has them."""
        if not self.head and not self.tail:
            return text
        lines = text.splitlines()
        if self.head and tuple(lines[: len(self.head)]) == self.head:
            lines = lines[len(self.head) :]
        if self.tail and tuple(lines[len(lines) - len(self.tail) :]) == self.tail:
            lines = lines[: len(lines) - len(self.tail)]
        return "\n".join(lines)


class ClassifierText:
    """Which text of an item the classifier reads (`routing.classifier_text`):

    - "varying" (default): the last user message without the template lines every prompt
      shares (learned from a sample of the input, see `Template`);
    - "prompt": the last user message, whole;
    - "message": the system prompt and every message;
    - "metadata.FIELD": the item's metadata field FIELD (empty when the item has none).
    """

    def __init__(self, mode: str, template: Template | None = None):
        self.mode, self.template = mode, template or Template()
        self.field = mode.removeprefix("metadata.") if mode.startswith("metadata.") else None
        # whether `of` is the prompt as it is (checked once, not per item)
        template_empty = not self.template.head and not self.template.tail
        self.whole_prompt = mode == "prompt" or (mode == "varying" and template_empty)

    def of(
        self,
        prompt: str,
        messages: list[dict[str, Any]],
        metadata: dict[str, Any] | None,
        system: str | None,
    ) -> str:
        if self.field is not None:
            value = (metadata or {}).get(self.field)
            return "" if value is None else str(value)
        if self.mode == "message":
            texts = [system or ""] + [content_text(m["content"]) for m in messages]
            return "\n".join(t for t in texts if t)
        if self.mode == "prompt":
            return prompt
        return self.template.strip(prompt)


def sample_prompts(input_path: str | Path, n: int = TEMPLATE_SAMPLE) -> list[str]:
    """The prompts (last user messages) of the first `n` good lines of the input file."""
    found: list[str] = []
    try:
        with open(input_path, "rb") as stream:
            for parsed in parse_lines(stream):
                if isinstance(parsed, ParsedItem):
                    found.append(parsed.prompt_text())
                    if len(found) >= n:
                        break
    except OSError:
        return []  # ingest reports the unreadable file
    return found


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

    def __init__(
        self, spec: JobSpec, classifier: Classifier | None = None, template: Template | None = None
    ):
        self.spec = spec
        self.rules = [_CompiledRule(i, rule) for i, rule in enumerate(spec.routing.rules)]
        self.classifier = classifier or make_classifier(spec)
        self.reads = ClassifierText(spec.routing.classifier_text, template)
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
        messages: list[dict[str, Any]] | None = None,
        system: str | None = None,
    ) -> tuple[str, str]:
        """(tier, reason) by the precedence in the module docstring. `text` is the item's
        prompt (rules match it whole); the classifier reads what `classifier_text` says."""
        if explicit_model is not None:
            return self.tier_for_model(explicit_model)
        if explicit_tier is not None:
            return explicit_tier, "explicit tier"
        for rule in self.rules:
            if rule.matches(metadata, text, tokens):
                return rule.tier, rule.reason
        if self.reads.whole_prompt:
            return self.classifier.classify(text)
        return self.classifier.classify(self.reads.of(text, messages or [], metadata, system))


def nearest_tier(spec: JobSpec, ref: str) -> str:
    """The ladder tier whose model's price (1 input + 1 output token, standard) is nearest to
    that of `ref` on a log scale. Raises UsageError when `ref` cannot be priced."""
    try:
        provider, model = split_model_ref(ref)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    def price(p: str, m: str) -> float:
        units = unit_prices(p, m, batch=False, spec=spec)
        return max(float(units.input + units.output), 1e-15)  # a free override stays finite

    target = price(provider, model)
    ladder = spec.routing.ladder or list(spec.tiers)
    return min(ladder, key=lambda t: abs(math.log(price(*spec.model_of(t)) / target)))


def _encoder() -> Callable[[str], list[int]] | None:
    """The offline tokenizer's encode, or None (with a warning) when it cannot load."""
    global _ENCODE_FAILED
    if _ENCODE_FAILED:
        return None
    try:
        return encoding().encode_ordinary
    except Exception as exc:  # noqa: BLE001 - any failure to load means: fall back
        _ENCODE_FAILED = True
        warnings.warn(f"tokenizer unavailable ({exc}); using 4 characters a token", stacklevel=2)
        return None


_ENCODE_FAILED = False


def token_basis() -> str:
    """How token counts are made, for showing next to an estimate."""
    if _encoder() is None:
        return "cheap estimate, 4 characters a token (the cl100k tokenizer did not load)"
    return "cl100k tokenizer (offline)"


class TokenCounter:
    """Input tokens of items: the system prompt exact (once per distinct text), messages
    exact, or, with `sample_every` N > 1, exact for the first 256 texts and every Nth after,
    the others scaled by characters with the ratio measured on the exact ones. Sampling
    keeps sums within a fraction of a percent at a fraction of the tokenizer's cost."""

    SEED = 256

    def __init__(self, sample_every: int = 1):
        self.encode = _encoder()
        self.sample_every = sample_every
        self.n = self.chars = self.tokens = self.n_exact = 0

    def text(self, text: str) -> int:
        if self.encode is None:
            return estimate_tokens_cheap(text)
        self.n += 1
        if self.sample_every > 1 and self.n > self.SEED and self.n % self.sample_every:
            return round(len(text) * self.tokens / self.chars) if self.chars else len(text) // 4
        self.n_exact += 1
        tokens = len(self.encode(text))
        self.chars += len(text)
        self.tokens += tokens
        return tokens

    def item(self, item: ParsedItem, system: str | None) -> int:
        """Input tokens of `item` with `system` as its system prompt."""
        return self.prompt_and_tokens(item.messages, system)[1]

    def prompt_and_tokens(
        self, messages: list[dict[str, Any]], system: str | None
    ) -> tuple[str, int]:
        """The text of the last user message (ParsedItem.prompt_text) and the input tokens of
        `messages` with `system`, from one pass over the messages."""
        tokens = 0
        if system:
            tokens = count_tokens(system) if self.encode else estimate_tokens_cheap(system)
        prompt = ""
        for message in messages:
            text = message["content"]
            if not isinstance(text, str):
                text = content_text(text)
            tokens += MESSAGE_OVERHEAD_TOKENS + self.text(text)
            if message["role"] == "user":
                prompt = text
        return prompt, tokens


def estimate_input_tokens(item: ParsedItem, system: str | None, *, exact: bool = True) -> int:
    """Input tokens of `item`: the system prompt (counted once per distinct text) plus every
    message, with the real offline tokenizer, or 4 characters a token when `exact` is off."""
    if not exact:
        tokens = estimate_tokens_cheap(system) if system else 0
        for message in item.messages:
            text = content_text(message["content"])
            tokens += MESSAGE_OVERHEAD_TOKENS + estimate_tokens_cheap(text)
        return tokens
    return TokenCounter().item(item, system)


def _prompt_and_cheap_tokens(messages: list[dict[str, Any]], system: str | None) -> tuple[str, int]:
    """TokenCounter.prompt_and_tokens at 4 characters a token."""
    tokens = estimate_tokens_cheap(system) if system else 0
    prompt = ""
    for message in messages:
        text = content_text(message["content"])
        tokens += MESSAGE_OVERHEAD_TOKENS + estimate_tokens_cheap(text)
        if message["role"] == "user":
            prompt = text
    return prompt, tokens


_routers: dict[int, tuple[JobSpec, Router]] = {}


def _router(spec: JobSpec) -> Router:
    cached = _routers.get(id(spec))
    if cached is None or cached[0] is not spec:
        if len(_routers) >= 16:
            _routers.clear()
        cached = _routers[id(spec)] = (spec, Router(spec))
    return cached[1]


def route(item: ParsedItem, spec: JobSpec, system_text: str | None) -> tuple[str, str]:
    """(tier, reason) of `item` under `spec`; see the module docstring for the precedence.

    Raises UsageError when the item names a model that cannot be priced.
    """
    router = _router(spec)
    tokens = estimate_input_tokens(item, system_text) if _needs_tokens(router) else 0
    return router.route(
        item.model, item.tier, item.metadata, item.prompt_text(), tokens,
        item.messages, system_text,
    )  # fmt: skip


def _needs_tokens(router: Router) -> bool:
    return any(r.min_tokens is not None or r.max_tokens is not None for r in router.rules)


# 1 in 64 after the first 256: a million items run the tokenizer 16,000 times, and the sums
# stay within a fraction of a percent (tests/test_routing.py); 1 in 8 was 8% of a plan.
SAMPLE_EVERY = 64


def make_annotator(
    spec: JobSpec,
    *,
    classifier: Classifier | None = None,
    tokens: Literal["auto", "exact", "sampled", "cheap"] = "auto",
    input_path: str | Path | None = None,
) -> Annotator:
    """An `ingest(annotate=...)` callback: (tier, reason, estimated input tokens) per item.

    `input_path`: the input about to be ingested; its first prompts teach the classifier the
    template lines every prompt shares (see `ClassifierText`).

    `tokens`: "exact" runs the tokenizer on every message; "sampled" on 1 in 64 (see
    TokenCounter); "cheap" counts 4 characters a token; "auto" is exact when a routing rule
    tests token counts and sampled otherwise (the tokenizer would cost more than the rest of
    planning together).
    """
    template = None
    if input_path is not None and spec.routing.classifier_text == "varying":
        template = Template.learn(sample_prompts(input_path))
    router = Router(spec, classifier, template)
    if tokens == "auto":
        tokens = "exact" if _needs_tokens(router) else "sampled"
    counter = TokenCounter(SAMPLE_EVERY if tokens == "sampled" else 1)
    prompt_and_tokens = _prompt_and_cheap_tokens if tokens == "cheap" else counter.prompt_and_tokens

    def annotate(item: ParsedItem, system: str | None) -> tuple[str, str, int]:
        prompt, n_tokens = prompt_and_tokens(item.messages, system)
        try:
            tier, reason = router.route(
                item.model, item.tier, item.metadata, prompt, n_tokens, item.messages, system
            )
        except UsageError as exc:  # an item's model that cannot be priced: name the line
            raise UsageError(f"input line {item.line_no}: {exc}") from None
        return tier, reason, n_tokens

    return annotate
