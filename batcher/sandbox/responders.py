"""Responders: what the sandbox answers. `deterministic` derives answers from the request;
`replay` returns recorded outputs.

Deterministic answers are stable: they come from a hash of model + request content.
Constraints are honoured:

- a JSON schema (OpenAI `response_format` `{type: json_schema}`, Responses `text.format`,
  Anthropic `output_config.format` or a forced tool) gets a JSON instance of the schema;
  under constrained decoding (OpenAI `strict: true`, Anthropic structured outputs) it is
  never malformed;
- a label list gets one of its labels. Convention: a line in the system or user text matching
  `Allowed labels: a, b, c` (case-insensitive, comma-separated). If the prompt asks for JSON
  (it contains `{"label"`), the answer is `{"label": "<one>"}`, else the bare label.

A configurable per-model rate makes some answers malformed or wrong, decided per
(model, request) so a rerun gives the same verdict: a label outside the set, broken JSON, or
a schema instance missing a required field.

Replay rows are JSON lines `{"user": "...", "outputs": {"<recorded model>": "text"}}`; a
request matches a row by the text of its last user message, and the model map turns the
requested model into the recorded one (unmapped models are looked up under their own name).
A request with no row, or a row without that model, gets a per-request error.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from batcher.sandbox.prompts import fresh_count, last_user_text, text_count, text_of

LABELS_RE = re.compile(r"^[ \t]*allowed labels[ \t]*:[ \t]*(.+?)[ \t]*$", re.I | re.M)
WANTS_JSON_RE = re.compile(r'\{\s*"label"', re.I)
REASONING_RE = re.compile(r"^(o\d|gpt-5)")
WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
    "november oscar papa quebec romeo sierra tango uniform victor whiskey xray"
).split()


@dataclass(frozen=True)
class Query:
    """The parts of a request a responder looks at, whichever provider it came from."""

    model: str
    system: str
    user: str | None
    digest: bytes
    schema: dict | None = None
    strict: bool = False  # constrained decoding: the answer always satisfies the schema
    effort: str | None = None  # reasoning_effort as sent


@dataclass(frozen=True)
class Reply:
    text: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    tokens: int | None = None  # cl100k tokens of `text` when known without tokenizing it


def make_query(
    model: str,
    body: dict,
    system: str,
    messages: list,
    schema: dict | None = None,
    strict: bool = False,
    effort: str | None = None,
) -> Query:
    """A Query whose digest covers model and request; long texts are hashed once each."""
    pieces = [model.encode()]
    _feed(pieces, body)
    digest = hashlib.blake2b(b"".join(pieces), digest_size=16).digest()
    return Query(model, system, last_user_text(messages), digest, schema, strict, effort)


def _feed(pieces: list[bytes], value: object) -> None:
    # Walk the request rather than json.dumps it: a shared 2,000-token system prompt is
    # then hashed once (text_digest is cached), not once per request. The pieces are hashed
    # in one update (the same digest as one update each, at a third of the calls).
    if isinstance(value, str):
        pieces.append(text_digest(value) if len(value) > 256 else value.encode())
    elif isinstance(value, dict):
        for key in sorted(value):
            pieces.append(_key_piece(key))
            _feed(pieces, value[key])
    elif isinstance(value, list):
        pieces.append(b"[")
        for item in value:
            _feed(pieces, item)
            pieces.append(b",")
    else:
        pieces.append(repr(value).encode())


@lru_cache(maxsize=1024)
def _key_piece(key: str) -> bytes:
    return f"\x00{key}=".encode()


@lru_cache(maxsize=4096)
def text_digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def openai_query(body: dict, endpoint: str) -> Query:
    if endpoint == "/v1/responses":
        inp = body.get("input")
        messages = [{"role": "user", "content": inp}] if isinstance(inp, str) else inp or []
        fmt = (body.get("text") or {}).get("format") or {}
        schema = fmt.get("schema") if fmt.get("type") == "json_schema" else None
        effort = (body.get("reasoning") or {}).get("effort")
        return make_query(
            body.get("model", ""), body, text_of(body.get("instructions")), messages, schema,
            fmt.get("strict") is True, effort,
        )  # fmt: skip
    messages = body.get("messages") or []
    system = "\n".join(
        text_of(m.get("content"))
        for m in messages
        if isinstance(m, dict) and m.get("role") in ("system", "developer")
    )
    fmt = body.get("response_format") or {}
    spec = (fmt.get("json_schema") or {}) if fmt.get("type") == "json_schema" else {}
    return make_query(
        body.get("model", ""), body, system, messages, spec.get("schema"),
        spec.get("strict") is True, body.get("reasoning_effort"),
    )  # fmt: skip


def anthropic_schema(params: dict) -> tuple[dict | None, bool]:
    """(schema, constrained) of Messages params: structured outputs (output_config.format,
    or the older output_format) are constrained; a forced tool's input_schema is not."""
    for fmt in ((params.get("output_config") or {}).get("format"), params.get("output_format")):
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            return fmt.get("schema"), True
    tool = forced_tool(params)
    return (tool.get("input_schema"), False) if tool else (None, False)


def forced_tool(params: dict) -> dict | None:
    """The tool that tool_choice {type: tool, name} forces, if any."""
    choice = params.get("tool_choice") or {}
    if choice.get("type") != "tool":
        return None
    return next((t for t in params.get("tools") or [] if t.get("name") == choice.get("name")), None)


def anthropic_query(params: dict) -> Query:
    schema, strict = anthropic_schema(params)
    return make_query(
        params.get("model", ""), params, text_of(params.get("system")),
        params.get("messages") or [], schema, strict,
    )  # fmt: skip


def unit(digest: bytes, salt: str) -> float:
    """A number in [0, 1) fixed by the request digest and a purpose."""
    return (
        int.from_bytes(hashlib.blake2b(digest + salt.encode(), digest_size=8).digest(), "big")
        / 2**64
    )


def pick(digest: bytes, salt: str, n: int) -> int:
    return int(unit(digest, salt) * n)


@lru_cache(maxsize=256)
def is_reasoning(model: str) -> bool:
    return bool(REASONING_RE.match(model))


def reasoning_tokens(query: Query, ranges: dict[str, list[int]]) -> int:
    """Reasoning models spend hidden tokens, more at a higher reasoning_effort (medium when
    none is sent, as the service's default); a stable amount per request within the
    effort's [low, high] range."""
    if not is_reasoning(query.model):
        return 0
    low, high = ranges.get(query.effort or "medium") or ranges["medium"]
    return low + int(unit(query.digest, "reasoning") * (high - low + 1))


class DeterministicResponder:
    """Stable answers from a hash of the request; `rate_for(model)` sets the malformed share."""

    def __init__(self, rate_for: Callable[[str], float]) -> None:
        self._rate_for = rate_for

    def answer(self, query: Query) -> Reply:
        bad = unit(query.digest, "malformed") < self._rate_for(query.model)
        bad = bad and not (query.schema is not None and query.strict)
        labels = parse_labels(query.system) or parse_labels(query.user or "")
        if query.schema is not None:
            return Reply(text=schema_answer(query, labels, bad))
        if labels:
            as_json = wants_json(query.system) or wants_json(query.user or "")
            return Reply(text=label_answer(query, labels, as_json, bad))
        stream = hashlib.blake2b(query.digest, digest_size=64).digest()
        words = [WORDS[b % len(WORDS)] for b in stream[: 8 + query.digest[0] % 40]]
        tag = f" {query.digest.hex()[:8]}:"
        text = f"Sandbox answer{tag} {' '.join(words)}."
        return Reply(text=text, tokens=_plain_tokens(tag, words))


def _plain_tokens(tag: str, words: list[str]) -> int:
    """cl100k tokens of a plain answer, summed over its parts. The tokenizer's pre-split
    (letters with one leading space, punctuation runs, digits by three) cuts this text before
    the tag's space, after its colon, before each " word" and before the final ".", and
    tokens never span such a cut, so the sum is the whole text's count; only the tag is
    tokenized per answer (counting the whole answer was a sixth of a batch's CPU)."""
    words_tokens = sum(map(_word_tokens().__getitem__, words))
    return _part_tokens("Sandbox answer") + fresh_count(tag) + words_tokens + _part_tokens(".")


@lru_cache(maxsize=1)
def _word_tokens() -> dict[str, int]:
    """Tokens of " word" for each answer word (looked up in C, not counted per answer)."""
    return {word: text_count(" " + word) for word in WORDS}


@lru_cache(maxsize=64)
def _part_tokens(part: str) -> int:
    return text_count(part)


@lru_cache(maxsize=4096)
def wants_json(text: str) -> bool:
    return bool(WANTS_JSON_RE.search(text))


@lru_cache(maxsize=4096)
def parse_labels(text: str) -> tuple[str, ...]:
    """Labels named by an `Allowed labels: a, b` line (cached: system prompts repeat)."""
    # User texts are new with every request: a cheap test first. Whatever the pattern
    # matches (case-insensitively: A for a, the long s for s) reads "allowed labels" folded.
    if "allowed labels" not in text.casefold():
        return ()
    match = LABELS_RE.search(text)
    if not match:
        return ()
    return tuple(
        label.strip().strip("\"'`") for label in match.group(1).split(",") if label.strip()
    )


def label_answer(query: Query, labels: tuple[str, ...], as_json: bool, bad: bool) -> str:
    label = labels[pick(query.digest, "label", len(labels))]
    broken = bad and as_json and pick(query.digest, "how", 2) == 0
    if bad and not broken:
        label = f"not-{labels[0]}" if f"not-{labels[0]}" not in labels else "unlisted-label"
    if not as_json:
        return label
    text = json.dumps({"label": label})
    return text[:-2] if broken else text


def schema_answer(query: Query, labels: tuple[str, ...], bad: bool) -> str:
    value = instance(query.schema or {}, query.digest, "$", labels)
    if bad and isinstance(value, dict) and value and pick(query.digest, "how", 2) == 0:
        value.pop(next(iter(value)))  # a required field goes missing
        return json.dumps(value)
    text = json.dumps(value)
    return text[: max(1, len(text) // 2)] if bad else text


def instance(schema: dict, digest: bytes, path: str, labels: tuple[str, ...]) -> object:
    """A value that validates against `schema` (the common JSON Schema subset)."""
    if "enum" in schema:
        return schema["enum"][pick(digest, path, len(schema["enum"]))]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return instance(schema[key][0], digest, path, labels)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        return {
            name: instance(sub, digest, f"{path}.{name}", labels) for name, sub in props.items()
        }
    if kind == "array":
        size = max(int(schema.get("minItems", 1)), 1)
        return [
            instance(schema.get("items") or {}, digest, f"{path}[{i}]", labels) for i in range(size)
        ]
    if kind in ("integer", "number"):
        low = int(schema.get("minimum", 0))
        high = int(schema.get("maximum", low + 100))
        return low + pick(digest, path, high - low + 1)
    if kind == "boolean":
        return pick(digest, path, 2) == 1
    if kind == "null":
        return None
    if labels and path.endswith(".label"):
        return labels[pick(digest, "label", len(labels))]
    return f"{path.rsplit('.', 1)[-1]}-{digest.hex()[:6]}"


class ReplayResponder:
    """Recorded outputs, matched by the last user message and mapped model."""

    def __init__(self, rows: dict[str, dict[str, str]], model_map: dict[str, str]) -> None:
        self._rows = rows
        self._stripped = {user.strip(): outputs for user, outputs in rows.items()}
        self.model_map = dict(model_map)

    @classmethod
    def from_file(cls, path: str | Path, model_map: dict[str, str]) -> ReplayResponder:
        rows: dict[str, dict[str, str]] = {}
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row.get("user"), str) or not isinstance(row.get("outputs"), dict):
                    raise ValueError(f"{path}:{number}: a replay row needs 'user' and 'outputs'")
                rows[row["user"]] = row["outputs"]
        return cls(rows, model_map)

    def answer(self, query: Query) -> Reply:
        recorded = self.model_map.get(query.model, query.model)
        user = query.user or ""
        outputs = self._rows.get(user) or self._stripped.get(user.strip())
        if outputs is None:
            return Reply(
                error_type="invalid_request_error",
                error_message=f"sandbox replay: no recorded row for this user message "
                f"(starts {user[:60]!r})",
            )
        text = outputs.get(recorded)
        if not isinstance(text, str):
            return Reply(
                error_type="invalid_request_error",
                error_message=f"sandbox replay: no recorded output of {recorded!r} "
                f"(requested {query.model!r})",
            )
        return Reply(text=text)
