"""The deterministic responder through the SDKs: stable answers, label and JSON-schema
constraints, and a per-model malformed rate."""

from __future__ import annotations

import json

import jsonschema
from sandbox_fixtures import (  # noqa: F401 - fixtures
    ant_fixture,
    ant_request,
    chat_line,
    oai_fixture,
    read_file,
    results,
    sandbox_fixture,
    served_fixture,
    submit,
    wait_anthropic,
    wait_openai,
)

SYSTEM = "Classify the ticket.\nAllowed labels: billing, bug, praise\nReply with the label."
JSON_SYSTEM = 'Classify.\nallowed labels: billing, bug, praise\nAnswer as {"label": "..."}'
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["label", "score", "tags"],
    "properties": {
        "label": {"type": "string", "enum": ["a", "b"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}
LABELS = {"billing", "bug", "praise"}


def _texts(oai, lines):
    batch = wait_openai(oai, submit(oai, lines).id)
    out = read_file(oai, batch.output_file_id)
    return {
        cid: r["response"]["body"]["choices"][0]["message"]["content"] for cid, r in out.items()
    }


def test_bare_labels_within_the_allowed_set(oai):
    texts = _texts(oai, [chat_line(f"t{i}", f"ticket {i}", system=SYSTEM) for i in range(40)])
    assert set(texts.values()) <= LABELS and len(set(texts.values())) > 1


def test_json_labels_when_the_prompt_asks_for_json(oai):
    texts = _texts(oai, [chat_line(f"t{i}", f"ticket {i}", system=JSON_SYSTEM) for i in range(20)])
    assert {json.loads(t)["label"] for t in texts.values()} <= LABELS


def test_json_schema_answers_validate(oai):
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA, "strict": True}}
    texts = _texts(oai, [chat_line(f"s{i}", f"item {i}", response_format=fmt) for i in range(10)])
    for text in texts.values():
        jsonschema.validate(json.loads(text), SCHEMA)


def test_malformed_rate_is_per_model_and_deterministic(sandbox, oai):
    sandbox.configure(faults="malformed:gpt-5-nano=0.5")
    lines = [chat_line(f"t{i}", f"ticket {i}", system=JSON_SYSTEM) for i in range(60)]

    def bad(texts):
        out = set()
        for cid, text in texts.items():
            try:
                if json.loads(text)["label"] in LABELS:
                    continue
            except ValueError:
                pass
            out.add(cid)
        return out

    first = bad(_texts(oai, lines))
    assert 10 < len(first) < 50
    assert bad(_texts(oai, lines)) == first  # same requests, same verdicts
    other = [
        chat_line(f"t{i}", f"ticket {i}", model="gpt-5-mini", system=JSON_SYSTEM) for i in range(60)
    ]
    assert bad(_texts(oai, other)) == set()


def test_malformed_rate_from_config_applies_to_anthropic(sandbox, ant):
    sandbox.configure(malformed={"claude-haiku-4-5": 1.0})
    batch = ant.messages.batches.create(
        requests=[
            ant_request(f"h-{i}", f"ticket {i}", model="claude-haiku-4-5", system=SYSTEM)
            for i in range(10)
        ]
    )
    wait_anthropic(ant, batch.id)
    texts = {r.message.content[0].text for r in results(ant, batch.id).values()}
    assert texts and not texts & LABELS


def test_stats_and_billing_ledger_add_up(sandbox, oai, ant):
    wait_openai(oai, submit(oai, [chat_line(f"r{i}", "x", system=SYSTEM) for i in range(3)]).id)
    batch = ant.messages.batches.create(requests=[ant_request("a-1", "x")])
    wait_anthropic(ant, batch.id)
    stats = sandbox.stats()
    assert {p: n for p, n in stats["batches_created"].items() if n} == {"openai": 1, "anthropic": 1}
    assert stats["submissions"]["openai"] == {"r0": 1, "r1": 1, "r2": 1}
    assert not any(stats["duplicates"].values())
    rows = sandbox.billed()
    assert stats["requests_billed"] == len(rows) == 4
    nano = [r for r in rows if r["model"] == "gpt-5-nano"]
    totals = stats["billed_tokens"]["gpt-5-nano"]
    assert totals["input"] == sum(r["usage"]["prompt_tokens"] for r in nano)
    assert totals["output"] == sum(r["usage"]["completion_tokens"] for r in nano)
    assert totals["reasoning"] > 0
    claude = sandbox.billed(provider="anthropic")[0]
    assert claude["batch_id"] == batch.id and claude["usage"]["service_tier"] == "batch"
