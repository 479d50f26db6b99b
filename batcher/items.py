"""Input JSONL -> parsed items, streamed in bounded memory, with line-numbered problems.

Two line forms are accepted (see DESIGN.md): the item form
    {"id", "prompt" | "messages", "system", "system_ref", "tier", "model",
     "max_tokens", "temperature", "metadata"}
and OpenAI's batch-request form {"custom_id", "method", "url", "body": {...}}.

Parsing never stops at a bad line: `parse_lines` yields a `Problem` for it and goes on, so
the caller can list every problem (or write them to a rejects file) in one pass.
Duplicate ids are a property of the whole file and are checked where items are stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

DEFAULT_MAX_LINE_BYTES = 4 * 1024 * 1024
ROLES = ("system", "user", "assistant")
_ITEM_KEYS = {
    "id", "prompt", "messages", "system", "system_ref", "tier", "model",
    "max_tokens", "temperature", "metadata", "params",
}  # fmt: skip


@dataclass(slots=True)
class ParsedItem:
    """One valid input line, normalised to the provider-neutral shape."""

    line_no: int
    custom_id: str
    messages: list[dict[str, Any]]
    system: str | None = None  # inline system prompt
    system_ref: str | None = None  # name of a prompt in the spec's [prompts]
    model: str | None = None  # "provider:model" when the item names one
    tier: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    params: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None

    def request(self) -> dict[str, Any]:
        """The stored request: messages plus only the parameters this item set itself."""
        req: dict[str, Any] = {"messages": self.messages}
        if self.max_tokens is not None:
            req["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            req["temperature"] = self.temperature
        if self.params:
            req["params"] = self.params
        return req

    def prompt_text(self) -> str:
        """The text of the last user message (what routing looks at)."""
        for message in reversed(self.messages):
            if message["role"] == "user":
                return content_text(message["content"])
        return ""


@dataclass(slots=True)
class Problem:
    """A line that cannot be used, and why."""

    line_no: int
    reason: str
    raw: bytes = field(default=b"", repr=False)

    def to_reject(self, path: str) -> dict[str, Any]:
        return {
            "file": path,
            "line": self.line_no,
            "reason": self.reason,
            "text": self.raw[:2000].decode("utf-8", "replace"),
        }


class LineError(ValueError):
    """Raised inside parsing with the reason for the current line."""


def content_text(content: Any) -> str:
    """The text of a message content: a string, or a list of {"type":"text","text"} blocks."""
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if isinstance(block, dict))


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise LineError('"messages" must be a non-empty list of {"role", "content"} objects')
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise LineError(f'"messages"[{i}] must be an object, got {_kind(message)}')
        if message.get("role") not in ROLES:
            raise LineError(f'"messages"[{i}].role must be one of {", ".join(ROLES)}')
        content = message.get("content")
        if not isinstance(content, str) and not isinstance(content, list):
            raise LineError(f'"messages"[{i}].content must be a string or a list of blocks')
    return messages


def _split_system(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """Leading system messages become the system prompt (Anthropic has no system role)."""
    system_parts = []
    while messages and messages[0]["role"] == "system":
        system_parts.append(content_text(messages[0]["content"]))
        messages = messages[1:]
    if not messages:
        raise LineError('"messages" has only system messages: add a user message')
    if any(m["role"] == "system" for m in messages):
        raise LineError('"messages": system messages may only come first')
    return ("\n\n".join(system_parts) if system_parts else None), messages


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else "null"
    )


def _opt(obj: dict[str, Any], key: str, types: type | tuple[type, ...], what: str) -> Any:
    value = obj.get(key)
    if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
        raise LineError(f'"{key}" must be {what}, got {_kind(value)}')
    return value


def _parse_item_form(obj: dict[str, Any], line_no: int) -> ParsedItem:
    unknown = obj.keys() - _ITEM_KEYS
    if unknown:
        raise LineError(f'unknown field {sorted(unknown)[0]!r} (put extra data in "metadata")')
    raw_id = obj.get("id", line_no)
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or raw_id == "":
        raise LineError('"id" must be a non-empty string or an integer')
    prompt, messages = obj.get("prompt"), obj.get("messages")
    if prompt is None and messages is None:
        raise LineError('no "prompt" or "messages": every item needs one of them')
    if prompt is not None and messages is not None:
        raise LineError('give "prompt" or "messages", not both')
    if prompt is not None:
        if not isinstance(prompt, str) or not prompt.strip():
            raise LineError('"prompt" must be a non-empty string')
        messages = [{"role": "user", "content": prompt}]
        system = None
    else:
        system, messages = _split_system(_check_messages(messages))
    inline_system = _opt(obj, "system", str, "a string")
    if inline_system is not None and system is not None:
        raise LineError('give the system prompt in "system" or in "messages", not both')
    item = ParsedItem(line_no=line_no, custom_id=str(raw_id), messages=messages)
    item.system = inline_system if inline_system is not None else system
    item.system_ref = _opt(obj, "system_ref", str, "a string naming a prompt of the spec")
    if item.system is not None and item.system_ref is not None:
        raise LineError('give "system" or "system_ref", not both')
    item.tier = _opt(obj, "tier", str, "a string")
    item.model = _opt(obj, "model", str, 'a string like "openai:gpt-5-mini"')
    if item.model is not None and ":" not in item.model:
        raise LineError(f'"model" {item.model!r} must be PROVIDER:MODEL, e.g. "openai:gpt-5-mini"')
    item.max_tokens = _opt(obj, "max_tokens", int, "an integer")
    if item.max_tokens is not None and item.max_tokens < 1:
        raise LineError('"max_tokens" must be at least 1')
    item.temperature = _opt(obj, "temperature", int | float, "a number")
    item.params = _opt(obj, "params", dict, "an object")
    item.metadata = _opt(obj, "metadata", dict, "an object")
    return item


def _parse_batch_form(obj: dict[str, Any], line_no: int) -> ParsedItem:
    custom_id, body = obj.get("custom_id"), obj.get("body")
    if not isinstance(custom_id, str) or not custom_id:
        raise LineError('"custom_id" must be a non-empty string')
    if not isinstance(body, dict):
        raise LineError('"body" must be an object with "model" and "messages"')
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise LineError('"body.model" must be a string')
    system, messages = _split_system(_check_messages(body.get("messages")))
    rest = {k: v for k, v in body.items() if k not in ("model", "messages")}
    max_tokens = rest.pop("max_completion_tokens", None) or rest.pop("max_tokens", None)
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise LineError('"body.max_tokens" must be an integer of at least 1')
    temperature = rest.pop("temperature", None)
    return ParsedItem(
        line_no=line_no,
        custom_id=custom_id,
        messages=messages,
        system=system,
        model=f"openai:{model}",
        max_tokens=max_tokens,
        temperature=temperature,
        params=rest or None,
    )


def parse_line(raw: bytes, line_no: int) -> ParsedItem:
    """Parse one input line; raises LineError with the reason when it cannot be used."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise LineError(f"bytes that are not UTF-8 at byte {uexc.start}") from None
        raise LineError(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise LineError(f"expected a JSON object, got {_kind(obj)}")
    if "custom_id" in obj and "body" in obj:
        return _parse_batch_form(obj, line_no)
    return _parse_item_form(obj, line_no)


def iter_lines(stream: IO[bytes], max_line_bytes: int) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes, too_long) for each non-blank line, reading at most the cap a line."""
    line_no = 0
    while True:
        raw = stream.readline(max_line_bytes + 1)
        if not raw:
            return
        line_no += 1
        too_long = len(raw) > max_line_bytes
        if too_long:
            while raw and not raw.endswith(b"\n"):  # drop the rest of the long line
                raw = stream.readline(1 << 20)
            raw = b""
        elif not raw.strip():
            continue
        yield line_no, raw, too_long


def parse_lines(
    stream: IO[bytes], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> Iterator[ParsedItem | Problem]:
    """Every non-blank line of `stream` as a ParsedItem or a Problem, in order."""
    for line_no, raw, too_long in iter_lines(stream, max_line_bytes):
        if too_long:
            yield Problem(line_no, f"line longer than the {max_line_bytes:,}-byte cap")
            continue
        try:
            yield parse_line(raw, line_no)
        except LineError as exc:
            yield Problem(line_no, str(exc), raw)
