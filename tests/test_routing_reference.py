"""Routing's classifier and annotator against straightforward reference implementations, on
generated prompts: mixed case, punctuation, underscores and digits before keywords, unicode
letters and spaces, tabs and newlines, keywords at the start, multi-word keywords with other
whitespace inside, word counts around the thresholds. The fast paths (keywords behind a
one-character test, the prompt read once for its tokens) must change no tier, reason or
token count."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batcher.plan.inputs import ParsedItem
from batcher.plan.routing import (
    MESSAGE_OVERHEAD_TOKENS,
    Router,
    Template,
    make_annotator,
    make_classifier,
)
from batcher.plan.tokens import count_tokens
from batcher.spec import parse_spec

TIERS = {"nano": "openai:gpt-5-nano", "mid": "openai:gpt-5-mini", "frontier": "openai:gpt-5.4"}
CUSTOM = {
    "high_keywords": ["C++", "x-ray", "Ünïcode", "İstanbul", "naïve", "_under", "2fa", "a b"],
    "low_keywords": ["tag", "ok?", "zap", "", "\u212aELVIN", "straße", "q"],
    "frontier_words": 6,
    "nano_words": 4,
}
ROUTINGS = [{}, {"frontier_words": 8, "nano_words": 5}, CUSTOM]


def spec_of(routing: dict):
    return parse_spec({"name": "t", "tiers": TIERS, "routing": routing}, "jobs/t.toml")


def starts_a_word(lowered: str, keyword: str) -> bool:
    """Every occurrence, overlapping ones too, found by a regex lookahead."""
    for match in re.finditer(f"(?={re.escape(keyword)})", lowered):
        i = match.start()
        if i == 0 or not (lowered[i - 1].isalnum() or lowered[i - 1] == "_"):
            return True
    return False


def reference_classify(text: str, spec) -> tuple[str, str]:
    """The heuristic as its docstring states it, with every keyword counted and every word
    split off."""
    routing, lowered = spec.routing, text.lower()
    high = {k.lower() for k in routing.high_keywords if starts_a_word(lowered, k.lower())}
    low = {k.lower() for k in routing.low_keywords if starts_a_word(lowered, k.lower())}
    words = len(text.split())
    ladder = routing.ladder or list(spec.tiers)
    top = "frontier" if "frontier" in spec.tiers else ladder[-1]
    middle = "mid" if "mid" in spec.tiers else ladder[len(ladder) // 2]
    bottom = "nano" if "nano" in spec.tiers else ladder[0]
    if len(high) >= 2:
        return top, "classifier: 2+ high keywords"
    if high and words > routing.frontier_words:
        return top, "classifier: long prompt with a high keyword"
    if words < routing.nano_words and low:
        return bottom, "classifier: low keyword in a short prompt"
    return middle, "classifier: default"


SPACES = [" ", " ", " ", "  ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\x85",
          "\xa0", "\u2003", "\u2028", "\u3000"]  # fmt: skip
BEFORE = ["", "", "", "(", "-", ".", "/", "'", '"', "«", "—", "_", "x", "re", "9", "é", "ß",
          "\u200b", "\u0301"]  # fmt: skip
AFTER = ["", "", "", "ing", "s", "d", ",", ":", "?", "_x", "-", "\u0301"]
FILLER = ["ticket", "refund", "the", "a", "data", "Résumé", "ΣΊΣΥΦΟΣ", "\u212aelvin",
          "straße", "ǅungla", "ﬁle", "42", "x_y", "über", "İzmir", "emoji🙂", "ok", "tag",
          "zapper"]  # fmt: skip


def keyword_pool(spec) -> list[str]:
    words = list(spec.routing.high_keywords) + list(spec.routing.low_keywords)
    words += ["explain  why", "explain\twhy", "explain\nwhy", "yes or\tno", "list\u00a0the",
              "trade off", "trade_off", "reasons", "treason", "redesign", "summarize"]  # fmt: skip
    return [w for w in words if w]


def recase(rng: random.Random, word: str) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return word.upper()
    if kind == 1:
        return word.title()
    if kind == 2:
        return "".join(c.upper() if rng.random() < 0.5 else c for c in word)
    return word


def generated_prompt(rng: random.Random, pool: list[str]) -> str:
    n_words = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 30, 48, 49, 50, 51, 199, 200, 201, 240])
    pieces = []
    for i in range(n_words + rng.randrange(3)):
        if rng.random() < 0.15:
            word = rng.choice(BEFORE) + recase(rng, rng.choice(pool)) + rng.choice(AFTER)
        else:
            word = rng.choice(FILLER)
        pieces.append(word if i == 0 else rng.choice(SPACES) + word)
    text = "".join(pieces)
    if rng.random() < 0.3:  # a keyword at the very start
        text = recase(rng, rng.choice(pool)) + rng.choice(SPACES + [""]) + text
    if rng.random() < 0.2:
        text = rng.choice(SPACES) + text + rng.choice(SPACES)
    return text


@pytest.mark.parametrize("routing", ROUTINGS, ids=["default", "small thresholds", "custom"])
def test_classifier_matches_the_reference_on_generated_prompts(routing):
    spec = spec_of(routing)
    classifier, pool = make_classifier(spec), keyword_pool(spec)
    rng = random.Random(16)
    reasons = set()
    for _ in range(6000):
        text = generated_prompt(rng, pool)
        expected = reference_classify(text, spec)
        assert classifier.classify(text) == expected, repr(text)
        reasons.add(expected[1])
    assert len(reasons) == 4  # every branch was taken


PIECES = ["analyze", "Design", "explain why", "EXPLAIN", "why", "trade-off", "reason",
          "classify", "yes or no", "list the", "parse", "z", "x", "-", "_", "é", "İ", "ß", "a",
          "1", " ", "\t", "\n", "\xa0", "\x1e", "\u2029", "(", "word ", "\u212a",
          "words " * 25]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40).map("".join))
def test_classifier_matches_the_reference_on_any_mix(text):
    for routing in ROUTINGS[:2]:
        spec = spec_of(routing)
        assert make_classifier(spec).classify(text) == reference_classify(text, spec)


def reference_tokens(messages: list[dict], system: str | None, sample_every: int, state: dict):
    """The input tokens as TokenCounter documents them: the system prompt exact, each message
    4 plus its tokens, exact for the first 256 texts and every Nth after, the others scaled
    by the characters-to-tokens ratio of the exact ones."""
    tokens = count_tokens(system) if system else 0
    for message in messages:
        content = message["content"]
        content = _text(content)
        state["n"] += 1
        n = state["n"]
        if sample_every > 1 and n > 256 and n % sample_every:
            chars = state["chars"]
            count = round(len(content) * state["tokens"] / chars) if chars else len(content) // 4
        else:
            count = count_tokens(content)
            state["chars"] += len(content)
            state["tokens"] += count
        tokens += MESSAGE_OVERHEAD_TOKENS + count
    return tokens


def generated_items(n: int) -> list[ParsedItem]:
    rng = random.Random(7)
    pool = keyword_pool(spec_of({}))
    found = []
    for line_no in range(1, n + 1):
        prompt = generated_prompt(rng, pool)
        shape = rng.randrange(4)
        if shape == 0:
            messages = [{"role": "user", "content": prompt}]
        elif shape == 1:  # the last user message is not the last message
            messages = [
                {"role": "user", "content": "Analyze and design the draft"},
                {"role": "assistant", "content": "draft"},
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": "Classify it"},
            ]
        elif shape == 2:  # text blocks
            half = len(prompt) // 2
            blocks = [
                {"type": "text", "text": prompt[:half]},
                {"type": "text", "text": prompt[half:]},
            ]
            messages = [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": blocks},
            ]
        else:  # no user message at all
            messages = [{"role": "assistant", "content": prompt}]
        found.append(ParsedItem(line_no, f"i{line_no}", messages))
    return found


@pytest.mark.parametrize("tokens, every", [("exact", 1), ("sampled", 64)])
def test_annotator_matches_the_reference(tokens, every):
    spec = spec_of({})
    items = generated_items(1500)
    annotate = make_annotator(spec, tokens=tokens)
    state = {"n": 0, "chars": 0, "tokens": 0}
    for item in items:
        system = "Label the ticket." if item.line_no % 3 else None
        expected = reference_classify(item.prompt_text(), spec)
        expected += (reference_tokens(item.messages, system, every, state),)
        assert annotate(item, system) == expected, item


def test_annotator_with_cheap_tokens_matches_the_reference():
    spec = spec_of({})
    annotate = make_annotator(spec, tokens="cheap")
    for item in generated_items(300):
        cheap = sum(MESSAGE_OVERHEAD_TOKENS + max(1, len(_text(m["content"])) // 4)
                    for m in item.messages)  # fmt: skip
        expected = reference_classify(item.prompt_text(), spec) + (cheap,)
        assert annotate(item, None) == expected


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if isinstance(b, dict))


@pytest.mark.parametrize("mode", ["varying", "prompt", "message", "metadata.note"])
def test_router_reads_the_text_its_mode_names(mode):
    spec = spec_of({"classifier_text": mode})
    template = Template(head=("Analyze and compare:",), tail=("Answer in JSON format.",))
    router = Router(spec, template=template if mode == "varying" else None)
    system = "Explain why and design."
    for item in generated_items(300):
        prompt = "Analyze and compare:\n" + item.prompt_text() + "\nAnswer in JSON format."
        messages = [{"role": "user", "content": prompt}]
        metadata = {"note": item.prompt_text()}
        text = router.reads.of(prompt, messages, metadata, system)
        if mode == "varying":
            assert text == template.strip(prompt)
        expected = reference_classify(text, spec)
        assert router.route(None, None, metadata, prompt, 0, messages, system) == expected
