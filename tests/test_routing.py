"""Routing: the article's classifier examples, spec-tuned keywords, rule precedence, and the
ingest annotator."""

from __future__ import annotations

import orjson
import pytest
import sqlalchemy as sa

from batcher.errors import UsageError
from batcher.plan import routing
from batcher.plan.ingest import ingest
from batcher.plan.inputs import parse_line
from batcher.plan.routing import (
    HeuristicClassifier,
    Router,
    TokenCounter,
    estimate_input_tokens,
    make_annotator,
    make_classifier,
    route,
)
from batcher.plan.tokens import count_tokens
from batcher.spec import parse_spec
from batcher.store import open_store
from batcher.store.models import TABLES

TIERS = {
    "nano": "openai:gpt-5-nano",
    "mid": "openai:gpt-5-mini",
    "frontier": "anthropic:claude-sonnet-4-6",
}


def make_spec(**extra):
    return parse_spec({"name": "t", "tiers": TIERS, **extra}, "jobs/t.toml")


def item(line: dict, line_no: int = 1):
    return parse_line(orjson.dumps(line), line_no)


def classify(text: str, **routing) -> tuple[str, str]:
    return make_classifier(make_spec(routing=routing)).classify(text)


def test_article_examples():
    assert classify("Extract all email addresses from this text: bob@x.io, ann@y.org")[0] == "nano"
    tier, reason = classify(
        "Analyze the trade-offs between microservices and monolith and design an architecture "
        "for a payments platform"
    )
    assert (tier, reason) == ("frontier", "classifier: 2+ high keywords")
    assert classify("What is the customer asking for in this message?") == (
        "mid",
        "classifier: default",
    )


def test_heuristic_thresholds():
    filler = " word" * 210
    assert classify("Please analyze this." + filler) == (
        "frontier",
        "classifier: long prompt with a high keyword",
    )
    assert classify("Please analyze this.")[0] == "mid"  # one high keyword, short: mid
    assert classify("Classify this ticket." + " word" * 60)[0] == "mid"  # low but 50+ words
    assert classify("Classify this ticket.")[0] == "nano"
    # A repeated keyword counts once: "analyze ... analyze" is one high keyword.
    assert classify("analyze it, then analyze again")[0] == "mid"
    # Keywords match at the start of a word: "treason" holds no "reason".
    assert classify("treason and seasoning; designing it")[0] == "mid"


def test_keywords_and_thresholds_from_the_spec():
    assert classify("Tag the mood of this review", low_keywords=["tag"])[0] == "nano"
    assert classify("Tag the mood of this review")[0] == "mid"
    assert classify("Ponder and weigh this", high_keywords=["ponder", "weigh"])[0] == "frontier"
    assert classify("Classify this: a b c d e", nano_words=3)[0] == "mid"


def test_fixed_classifier():
    assert classify("Analyze and design everything", classifier="fixed:nano") == (
        "nano",
        "classifier: fixed:nano",
    )


def test_heuristic_maps_levels_onto_other_tier_names():
    spec = parse_spec(
        {
            "name": "t",
            "tiers": {"cheap": "openai:gpt-5-nano", "strong": "openai:gpt-5.4"},
            "routing": {"ladder": ["cheap", "strong"]},
        }
    )
    classifier = make_classifier(spec)
    assert isinstance(classifier, HeuristicClassifier)
    assert classifier.classify("extract the date")[0] == "cheap"
    assert classifier.classify("analyze and compare")[0] == "strong"


RULES = [
    {"tier": "frontier", "metadata": {"priority": "urgent"}},
    {"tier": "mid", "prompt_regex": "(?i)refund"},
    {"tier": "nano", "max_tokens": 20},
]


def test_precedence_model_then_tier_then_rules_then_classifier():
    spec = make_spec(routing={"rules": RULES})
    urgent = {"priority": "urgent"}
    cases = [
        # explicit model beats explicit tier, rules and classifier
        (
            {"prompt": "analyze and design", "model": "openai:gpt-5-mini", "tier": "nano"},
            ("mid", "explicit model"),
        ),
        # explicit tier beats the rules
        ({"prompt": "refund", "tier": "nano", "metadata": urgent}, ("nano", "explicit tier")),
        # the first matching rule wins
        ({"prompt": "refund please", "metadata": urgent}, ("frontier", "rule 1: metadata")),
        ({"prompt": "I want a refund"}, ("mid", "rule 2: prompt_regex")),
        ({"prompt": "extract the date"}, ("nano", "rule 3: max_tokens")),
        # no rule matches: the classifier decides
        (
            {"prompt": "analyze and compare these " + "words " * 30},
            ("frontier", "classifier: 2+ high keywords"),
        ),
    ]
    for line, expected in cases:
        assert route(item(line), spec, None) == expected, line


def test_rule_conditions_must_all_hold():
    spec = make_spec(
        routing={
            "rules": [{"tier": "nano", "metadata": {"queue": "billing"}, "prompt_regex": "^Tag"}]
        }
    )
    assert route(item({"prompt": "Tag it", "metadata": {"queue": "billing"}}), spec, None)[0] == (
        "nano"
    )
    assert route(item({"prompt": "Tag it", "metadata": {"queue": "tech"}}), spec, None)[0] == "mid"
    assert route(item({"prompt": "Tag it"}), spec, None)[0] == "mid"
    assert route(item({"prompt": "No", "metadata": {"queue": "billing"}}), spec, None)[0] == "mid"


def test_token_rule_counts_the_system_prompt():
    spec = make_spec(routing={"rules": [{"tier": "frontier", "min_tokens": 1000}]})
    long_system = "You label tickets carefully. " * 200
    assert route(item({"prompt": "hello"}), spec, long_system)[0] == "frontier"
    assert route(item({"prompt": "hello"}), spec, None)[0] == "mid"


def test_explicit_model_outside_the_tiers_gets_the_nearest_tier():
    spec = make_spec()
    # gpt-5.4 ($2.50 in + $15 out) is priced nearest to claude-sonnet-4-6 ($3 + $15)
    assert route(item({"prompt": "hi", "model": "openai:gpt-5.4"}), spec, None) == (
        "frontier",
        "explicit model (tier priced nearest)",
    )
    haiku = item({"prompt": "hi", "model": "anthropic:claude-haiku-4-5"})
    assert route(haiku, spec, None)[0] == "mid"  # $6 is nearer $2.25 than $18 (log scale)
    with pytest.raises(UsageError, match="openai:gpt-404"):
        route(item({"prompt": "hi", "model": "openai:gpt-404"}), spec, None)


def test_estimate_counts_system_and_messages():
    parsed = item({"prompt": "Hello there, world"})
    system = "You are terse."
    exact = estimate_input_tokens(parsed, system)
    assert exact == count_tokens(system) + count_tokens("Hello there, world") + 4
    cheap = estimate_input_tokens(parsed, system, exact=False)
    assert cheap == len(system) // 4 + len("Hello there, world") // 4 + 4


def test_router_accepts_any_classifier():
    class Learned:
        def classify(self, text):
            return ("frontier", "classifier: learned") if "?" in text else ("nano", "learned")

    router = Router(make_spec(), Learned())
    assert router.route(None, None, None, "why?", 3) == ("frontier", "classifier: learned")


def test_annotator_stores_tier_reason_and_tokens(tmp_path, sqlite_url):
    spec = make_spec(routing={"rules": RULES}, defaults={"system": "Label the ticket."})
    path = tmp_path / "in.jsonl"
    lines = [
        {"id": "a", "prompt": "Extract the invoice number from: INV-22"},
        {"id": "b", "prompt": "refund me " + "please " * 30},
        {"id": "c", "prompt": "x", "metadata": {"priority": "urgent"}},
    ]
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    db = open_store(sqlite_url)
    result = ingest(db, spec, path, annotate=make_annotator(spec))
    table = TABLES["item"]
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(
                table.c.custom_id, table.c.tier, table.c.route_reason, table.c.est_input_tokens
            )
            .where(table.c.run_id == result.run_id)
            .order_by(table.c.line_no)
        ).all()
    assert [(r.custom_id, r.tier, r.route_reason) for r in rows] == [
        ("a", "nano", "rule 3: max_tokens"),
        ("b", "mid", "rule 2: prompt_regex"),
        ("c", "frontier", "rule 1: metadata"),
    ]
    assert rows[0].est_input_tokens == (
        count_tokens("Label the ticket.") + count_tokens(lines[0]["prompt"]) + 4
    )


@pytest.mark.parametrize("every", [8, routing.SAMPLE_EVERY])
def test_sampled_token_counts_stay_close_to_exact(every):
    words = "refund invoice login crash 42 naïve café, timeout; ERROR".split()
    texts = [
        " ".join(words[(i * 7 + j) % len(words)] for j in range(5 + i % 90)) for i in range(3000)
    ]
    exact, sampled = TokenCounter(), TokenCounter(sample_every=every)
    exact_sum = sum(exact.text(t) for t in texts)
    sampled_counts = [sampled.text(t) for t in texts]
    assert sampled_counts[:256] == [exact.text(t) for t in texts[:256]]  # the seed is exact
    assert sampled.n_exact < 256 + len(texts) // every + 1  # the tokenizer ran that rarely
    assert abs(sum(sampled_counts) - exact_sum) / exact_sum < 0.02


def test_cheap_fallback_says_it_is_one(monkeypatch):
    def broken():
        raise OSError("no tokenizer data")

    monkeypatch.setattr(routing, "encoding", broken)
    monkeypatch.setattr(routing, "_ENCODE_FAILED", False)
    with pytest.warns(UserWarning, match="4 characters a token"):
        counter = TokenCounter()
    assert counter.text("x" * 40) == 10
    assert routing.token_basis().startswith("cheap estimate, 4 characters a token")
