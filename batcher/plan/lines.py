"""A cache group's batch lines joined from bytes instead of rendered one by one.

Within a cache group every request shares its model, system prompt, cache key and settings;
most items set nothing of their own, so their stored request is `{"messages":[...]}` and
their lines differ only in the custom id and the messages. For a provider whose renderer
copies the messages into the line as they are (`MESSAGES_VERBATIM` in its module), the
group's line is rendered once around two marks and cut there (`LineTemplate`); each item's
line is then the cut pieces joined with its id and the messages bytes of its stored
request. Building the Request, the wire body and its JSON for each of a million items cost
a tenth of a plan (bench/plan.py); the join is a few byte copies.

A request that sets anything of its own, or was stored in another form than the ingest
writes, is rendered the usual way (`join` returns None).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import orjson

MESSAGES_HEAD = b'{"messages":['  # a stored request that holds its messages and nothing else
MESSAGES_TAIL = b"]}"


class LineTemplate:
    """The pieces of a group's line around the custom id and the messages."""

    __slots__ = ("head", "middle", "tail")

    def __init__(self, head: bytes, middle: bytes, tail: bytes):
        self.head, self.middle, self.tail = head, middle, tail

    @classmethod
    def cut(cls, render: Callable[[str, list[dict[str, Any]]], bytes]) -> LineTemplate | None:
        """The template of the lines `render(custom_id, messages)` gives, or None when its
        line does not hold the id and then the messages, once each and as they are (a
        renderer that rewrites messages, or a system prompt that happens to hold a mark)."""
        mark = "batcher-" + secrets.token_hex(8)
        message = {"role": "user", "content": mark}
        line = render(mark + "-id", [message])
        id_bytes, message_bytes = orjson.dumps(mark + "-id"), orjson.dumps(message)
        if line.count(id_bytes) != 1 or line.count(message_bytes) != 1:
            return None
        head, _, rest = line.partition(id_bytes)
        middle, _, tail = rest.partition(message_bytes)
        if not tail or mark.encode() in head + middle + tail:
            return None
        return cls(head + b'"', b'"' + middle, tail)

    def join(self, custom_id: str, request_json: str | bytes) -> bytes | None:
        """The line of the request stored as `request_json` under `custom_id` (an id of
        letters, digits, "-" and "_", which JSON writes as it is), or None when the stored
        request is anything but its messages."""
        if type(request_json) is str:
            request_json = request_json.encode()
        if not (request_json.startswith(MESSAGES_HEAD) and request_json.endswith(MESSAGES_TAIL)):
            return None
        messages = request_json[len(MESSAGES_HEAD) : -len(MESSAGES_TAIL)]
        if not messages:
            return None
        return b"".join((self.head, custom_id.encode(), self.middle, messages, self.tail))
