"""The spec's output checks decide success; each failure names what was wrong."""

from __future__ import annotations

import pytest

from batcher.run.validation import Verdict, strip_fences, validate, validator_for
from batcher.spec import parse_spec

TIERS = {"nano": "openai:gpt-5-nano", "mid": "openai:gpt-5-mini", "frontier": "openai:gpt-5"}
SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string"}, "confidence": {"type": "number"}},
    "required": ["label", "confidence"],
}


def spec_with(**validation):
    return parse_spec({"name": "t", "tiers": TIERS, "validation": validation})


def test_no_checks_accepts_any_non_empty_answer():
    spec = spec_with()
    assert validate(spec, "anything") == Verdict(True, "ok: no checks")
    assert validate(spec, "   \n") == Verdict(False, "empty answer")
    assert validate(spec, None) == Verdict(False, "empty answer")


def test_json_output():
    spec = spec_with(json=True)
    assert validate(spec, '{"a": 1}').ok
    verdict = validate(spec, '{"a": 1')
    assert not verdict.ok and verdict.reason.startswith("not valid JSON")


@pytest.mark.parametrize(
    "text",
    ['```json\n{"a": 1}\n```', '```\n{"a": 1}\n```', '  ```json\n{"a": 1}```  ', '```{"a": 1}```'],
)
def test_json_fences_are_stripped(text):
    assert strip_fences(text) == '{"a": 1}'
    assert validate(spec_with(json=True), text).ok


def test_json_schema_names_the_failing_place():
    spec = spec_with(json_schema=SCHEMA)
    assert validate(spec, '{"label": "billing", "confidence": 0.9}') == Verdict(
        True, "ok: json, schema"
    )
    verdict = validate(spec, '{"label": "billing", "confidence": "high"}')
    assert not verdict.ok
    assert verdict.reason == "schema: at confidence: 'high' is not of type 'number'"
    missing = validate(spec, '{"label": "billing"}')
    assert missing.reason == "schema: at (root): 'confidence' is a required property"
    assert not validate(spec, "not json").ok


def test_labels_on_bare_answers():
    spec = spec_with(labels=["billing", "technical", "other"])
    assert validate(spec, "  billing\n") == Verdict(True, "ok: label")
    verdict = validate(spec, "Billing")
    assert verdict == Verdict(False, "label 'Billing' is not one of the allowed labels")


def test_labels_in_a_json_field():
    spec = spec_with(labels=["billing", "technical"], label_field="label")
    assert validate(spec, '```json\n{"label": "technical"}\n```') == Verdict(
        True, "ok: json, label"
    )
    assert validate(spec, '{"label": "sales"}').reason == (
        "label 'sales' is not one of the allowed labels"
    )
    assert validate(spec, '{"category": "billing"}').reason == (
        "no 'label' field in the JSON answer"
    )
    assert validate(spec, '["billing"]').reason == "no 'label' field in the JSON answer"
    assert validate(spec, '{"label": 3}').reason == "label 3 is not one of the allowed labels"
    assert validate(spec, "billing").reason.startswith("not valid JSON")


def test_labels_on_a_json_string_answer():
    spec = spec_with(json=True, labels=["billing"])
    assert validate(spec, '"billing"').ok
    assert not validate(spec, '"sales"').ok


def test_regex_searches_the_stripped_answer():
    spec = spec_with(regex=r"^\d{3}-\d{4}$")
    assert validate(spec, " 555-1234 \n") == Verdict(True, "ok: regex")
    verdict = validate(spec, "call 555-1234")
    assert verdict == Verdict(False, "does not match regex '^\\\\d{3}-\\\\d{4}$'")


def test_checks_run_in_order_and_the_first_failure_wins():
    spec = spec_with(json_schema=SCHEMA, labels=["billing"], label_field="label", regex="zzz")
    assert validate(spec, "{").reason.startswith("not valid JSON")
    assert validate(spec, '{"label": "x"}').reason.startswith("schema:")
    assert validate(spec, '{"label": "x", "confidence": 1}').reason.startswith("label 'x'")
    assert validate(spec, '{"label": "billing", "confidence": 1}').reason.startswith(
        "does not match regex"
    )
    assert validate(spec, '{"label": "billing", "confidence": 1, "n": "zzz"}') == Verdict(
        True, "ok: json, schema, label, regex"
    )


def test_long_reasons_are_cut_to_one_line():
    spec = spec_with(labels=["a"])
    verdict = validate(spec, "x" * 5000)
    assert not verdict.ok and len(verdict.reason) == 300 and verdict.reason.endswith("...")


def test_validator_is_compiled_once_per_spec():
    spec = spec_with(json_schema=SCHEMA, regex="a")
    assert validator_for(spec.validation) is validator_for(spec.validation)
    other = spec_with(json_schema=SCHEMA, regex="a")
    assert validator_for(other.validation) is not validator_for(spec.validation)
