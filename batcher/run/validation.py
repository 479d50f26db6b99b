"""The spec's output checks: they decide whether an answer is a success or escalates.

`validator_for(spec.validation)` compiles the JSON Schema and the regex once; its `check(text)`
returns a `Verdict`. Checks run in a fixed order (JSON, schema, label, regex) and the first
that fails gives the reason, so a stored verdict says exactly what was wrong with the answer.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import jsonschema
import orjson

from batcher.spec import JobSpec, Validation

MAX_REASON = 300  # verdicts are stored per attempt: keep them a line long
NOT_PARSED = object()  # check_parsed: the checks did not parse the answer as JSON


class Verdict(NamedTuple):
    """Whether an answer passed the spec's checks, and why (or why not).

    A NamedTuple rather than a frozen dataclass: one is made per result reconciled, and a
    tuple is several times cheaper to build."""

    ok: bool
    reason: str


def strip_fences(text: str) -> str:
    """The answer without a surrounding ```json ... ``` (or bare ```) markdown fence."""
    text = text.strip()
    if not text.startswith("```"):
        return text
    first_newline = text.find("\n")
    if first_newline < 0:  # a one-line "```{...}```"
        body = text[3:]
    else:
        body = text[first_newline + 1 :]
    if body.rstrip().endswith("```"):
        body = body.rstrip()[:-3]
    return body.strip()


def _short(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


class Validator:
    """The compiled checks of one `Validation` section. Thread-safe, reusable."""

    def __init__(self, validation: Validation):
        self.labels = frozenset(validation.labels) if validation.labels is not None else None
        self.label_field = validation.label_field
        self.schema = (
            jsonschema.Draft202012Validator(validation.json_schema)
            if validation.json_schema is not None
            else None
        )
        self.regex = re.compile(validation.regex) if validation.regex is not None else None
        # A label inside a JSON answer needs the JSON parsed even without `json = true`.
        self.wants_json = bool(validation.json_output or self.schema or self.label_field)
        self.passed = Verdict(True, "ok: " + (", ".join(self._names()) or "no checks"))

    def _names(self) -> list[str]:
        names = []
        if self.wants_json:
            names.append("json")
        if self.schema is not None:
            names.append("schema")
        if self.labels is not None:
            names.append("label")
        if self.regex is not None:
            names.append("regex")
        return names

    def check(self, text: str | None) -> Verdict:
        """The verdict on one answer. An empty answer never passes."""
        return self.check_parsed(text)[0]

    def check_parsed(self, text: str | None) -> tuple[Verdict, Any]:
        """The verdict, and the answer's JSON when the checks parsed it (its fences
        stripped), else NOT_PARSED: answer keys read the same JSON without parsing it again."""
        stripped = text.strip() if text is not None else ""
        if not stripped:
            return Verdict(False, "empty answer"), NOT_PARSED
        parsed: Any = NOT_PARSED
        if self.wants_json:
            # Most answers come unfenced: strip_fences only for the ones that start with one.
            body = strip_fences(stripped) if stripped.startswith("```") else stripped
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                return Verdict(False, _short(f"not valid JSON: {exc}")), NOT_PARSED
            if self.schema is not None:
                error = jsonschema.exceptions.best_match(self.schema.iter_errors(parsed))
                if error is not None:
                    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
                    return Verdict(False, _short(f"schema: at {where}: {error.message}")), parsed
        if self.labels is not None:
            problem = self._label_problem(stripped, None if parsed is NOT_PARSED else parsed)
            if problem is not None:
                return Verdict(False, _short(problem)), parsed
        if self.regex is not None and self.regex.search(stripped) is None:
            return Verdict(False, _short(f"does not match regex {self.regex.pattern!r}")), parsed
        return self.passed, parsed

    def _label_problem(self, stripped: str, parsed: Any) -> str | None:
        if self.label_field is not None:
            if not isinstance(parsed, dict) or self.label_field not in parsed:
                return f"no {self.label_field!r} field in the JSON answer"
            label = parsed[self.label_field]
        elif isinstance(parsed, str):  # a JSON answer that is just a string: "billing"
            label = parsed
        else:
            label = stripped
        if not isinstance(label, str) or label.strip() not in self.labels:
            return f"label {label!r} is not one of the allowed labels"
        return None


# id(validation) -> (validation, validator): keeping the object pins its id.
_compiled: dict[int, tuple[Validation, Validator]] = {}


def validator_for(validation: Validation) -> Validator:
    """The compiled `Validator` of `validation`, built once per spec section."""
    entry = _compiled.get(id(validation))
    if entry is None or entry[0] is not validation:
        if len(_compiled) > 64:  # specs are few; a long-lived scheduler must not grow this
            _compiled.clear()
        entry = (validation, Validator(validation))
        _compiled[id(validation)] = entry
    return entry[1]


def validate(spec: JobSpec, text: str | None) -> Verdict:
    """Check one answer against `spec.validation`."""
    return validator_for(spec.validation).check(text)
