"""Input JSONL -> parsed items, streamed in bounded memory, with line-numbered problems.

Two line forms are accepted (see DESIGN.md): the item form
    {"id", "prompt" | "messages", "system", "system_ref", "tier", "model",
     "max_tokens", "temperature", "params", "metadata"}
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
BOM = b"\xef\xbb\xbf"


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
    raw: bytes = field(default=b"", repr=False)  # the line as read, for a rejects file

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
        if type(content) is list:
            _check_blocks(content, i)
        elif type(content) is not str:
            raise LineError(f'"messages"[{i}].content must be a string or a list of blocks')
    return messages


def _check_blocks(blocks: list[Any], i: int) -> None:
    for j, block in enumerate(blocks):
        if type(block) is not dict or type(block.get("type")) is not str:
            raise LineError(f'"messages"[{i}].content[{j}] must be an object with a "type"')
        if block["type"] == "text" and type(block.get("text")) is not str:
            raise LineError(f'"messages"[{i}].content[{j}].text must be a string')


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


# Field of the item form -> (accepted types, what to write). Exact type checks: orjson only
# makes exact dict/list/str/int/float/bool, and `type(True) is not int` keeps booleans out.
_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "id": ((str, int), "a non-empty string or an integer"),
    "prompt": ((str,), "a non-empty string"),
    "messages": ((list,), 'a non-empty list of {"role", "content"} objects'),
    "system": ((str,), "a string"),
    "system_ref": ((str,), "a string naming a prompt of the spec"),
    "tier": ((str,), "a string naming a tier of the spec"),
    "model": ((str,), 'a string like "openai:gpt-5-mini"'),
    "max_tokens": ((int,), "an integer of at least 1"),
    "temperature": ((int, float), "a number"),
    "params": ((dict,), "an object"),
    "metadata": ((dict,), "an object"),
}


def _check_fields(obj: dict[str, Any]) -> None:
    """Unknown keys and wrong types, in one pass over the keys the line actually has."""
    for key, value in obj.items():
        spec = _FIELDS.get(key)
        if spec is None:
            raise LineError(f'unknown field "{key}": put extra data in "metadata"')
        if value is not None and type(value) not in spec[0]:
            raise LineError(f'"{key}" must be {spec[1]}, got {_kind(value)}')


def _parse_item_form(obj: dict[str, Any], line_no: int) -> ParsedItem:
    _check_fields(obj)
    get = obj.get
    raw_id = get("id", line_no)
    if raw_id is None or raw_id == "":
        raise LineError('"id" must be a non-empty string or an integer')
    prompt, messages = get("prompt"), get("messages")
    if prompt is not None:
        if messages is not None:
            raise LineError('give "prompt" or "messages", not both')
        if not prompt or prompt.isspace():
            raise LineError('"prompt" is empty: give the text to send')
        messages = [{"role": "user", "content": prompt}]
        system = None
    elif messages is not None:
        system, messages = _split_system(_check_messages(messages))
    else:
        raise LineError('no "prompt" or "messages": every item needs one of them')
    inline_system = get("system")
    if inline_system is not None:
        if system is not None:
            raise LineError('give the system prompt in "system" or in "messages", not both')
        system = inline_system
    system_ref = get("system_ref")
    if system is not None and system_ref is not None:
        raise LineError('give "system" or "system_ref", not both')
    model = get("model")
    if model is not None and ":" not in model:
        raise LineError(f'"model" {model!r} must be PROVIDER:MODEL, e.g. "openai:gpt-5-mini"')
    max_tokens = get("max_tokens")
    if max_tokens is not None and max_tokens < 1:
        raise LineError(f'"max_tokens" is {max_tokens}: it must be at least 1')
    temperature = get("temperature")
    if temperature is not None and temperature < 0:
        raise LineError(f'"temperature" is {temperature}: it must be 0 or more')
    return ParsedItem(
        line_no,
        raw_id if type(raw_id) is str else str(raw_id),
        messages,
        system,
        system_ref,
        model,
        get("tier"),
        max_tokens,
        temperature,
        get("params"),
        get("metadata"),
    )


_BATCH_KEYS = {"custom_id", "method", "url", "body"}
CHAT_URL = "/v1/chat/completions"


def _parse_batch_form(obj: dict[str, Any], line_no: int) -> ParsedItem:
    unknown = obj.keys() - _BATCH_KEYS
    if unknown:
        raise LineError(f'unknown field "{sorted(unknown)[0]}" in a batch-request line')
    custom_id, body = obj.get("custom_id"), obj.get("body")
    if not isinstance(custom_id, str) or not custom_id:
        raise LineError('"custom_id" must be a non-empty string')
    if obj.get("method", "POST") != "POST":
        raise LineError('"method" must be "POST"')
    if obj.get("url", CHAT_URL) != CHAT_URL:
        raise LineError(f'"url" must be "{CHAT_URL}" (chat completions requests only)')
    if not isinstance(body, dict):
        raise LineError('"body" must be an object with "model" and "messages"')
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise LineError('"body.model" must be a model name string, e.g. "gpt-5-mini"')
    system, messages = _split_system(_check_messages(body.get("messages")))
    rest = {k: v for k, v in body.items() if k not in ("model", "messages")}
    max_tokens = rest.pop("max_completion_tokens", None)
    legacy_max = rest.pop("max_tokens", None)
    max_tokens = max_tokens if max_tokens is not None else legacy_max
    if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
        raise LineError('"body.max_completion_tokens" must be an integer of at least 1')
    temperature = rest.pop("temperature", None)
    if temperature is not None and (type(temperature) not in (int, float) or temperature < 0):
        raise LineError('"body.temperature" must be a number, 0 or more')
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
            raise LineError(
                f"bytes that are not UTF-8 at byte {uexc.start + 1}: save the file as UTF-8"
            ) from None
        if exc.msg == "unexpected end of data":
            raise LineError("invalid JSON: the line ends inside a value") from None
        raise LineError(f"invalid JSON at column {exc.pos + 1}: {exc.msg}") from None
    if type(obj) is not dict:
        raise LineError(f"expected a JSON object, got {_kind(obj)}")
    if "custom_id" in obj or "body" in obj:
        item = _parse_batch_form(obj, line_no)
    else:
        item = _parse_item_form(obj, line_no)
    _check_no_nul(item)
    item.raw = raw
    return item


def _check_no_nul(item: ParsedItem) -> None:
    """PostgreSQL cannot store NUL in text; JSON-encoded fields are safe, plain ones are not.

    Each field is looked at itself: `in` on a str is a memchr, where searching the line for
    the escape cost as much as parsing it on lines with a long system prompt."""
    fields = (
        ("id", item.custom_id),
        ("system", item.system),
        ("system_ref", item.system_ref),
        ("model", item.model),
        ("tier", item.tier),
    )
    for name, value in fields:
        if value is not None and "\x00" in value:
            raise LineError(f'"{name}" contains a NUL character (\\u0000): remove it')


def iter_lines(stream: IO[bytes], max_line_bytes: int) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes, too_long) for each non-blank line, reading at most the cap a line.

    The cap counts the line's bytes without its line ending. A too-long line is skipped
    in pieces (never held whole) and yielded with empty bytes.
    """
    line_no = 0
    readline = stream.readline
    while True:
        raw = readline(max_line_bytes + 1)
        if not raw:
            return
        line_no += 1
        if line_no == 1 and raw.startswith(BOM):  # editors on Windows write one
            raw = raw[len(BOM) :]
        if len(raw) > max_line_bytes and raw[-1:] != b"\n":
            while raw and not raw.endswith(b"\n"):  # drop the rest of the long line
                raw = readline(1 << 20)
            yield line_no, b"", True
        elif raw and not raw.isspace():  # isspace stops at the first character; strip copies
            yield line_no, raw, False


def parse_lines(
    stream: IO[bytes], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> Iterator[ParsedItem | Problem]:
    """Every non-blank line of `stream` as a ParsedItem or a Problem, in order."""
    for line_no, raw, too_long in iter_lines(stream, max_line_bytes):
        if too_long:
            yield Problem(
                line_no,
                f"line longer than the {max_line_bytes:,}-byte cap: shorten the item "
                "(lines are capped to keep memory bounded)",
            )
            continue
        try:
            yield parse_line(raw, line_no)
        except LineError as exc:
            yield Problem(line_no, str(exc), raw)
