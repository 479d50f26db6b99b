"""Request helpers shared by both providers' routes: JSON bodies, multipart, paging."""

from __future__ import annotations

import email.parser
import email.policy
import json
from dataclasses import dataclass

from starlette.requests import Request

from batcher.sandbox.errors import ApiError


async def json_body(request: Request) -> dict:
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise ApiError(400, "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


@dataclass
class FormPart:
    value: bytes
    filename: str | None


async def multipart(request: Request) -> dict[str, FormPart]:
    """multipart/form-data fields (stdlib parser: no python-multipart dependency)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(400, "Expected a multipart/form-data body.")
    raw = await request.body()
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    fields: dict[str, FormPart] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = FormPart(part.get_payload(decode=True) or b"",
                                         part.get_filename())
    return fields


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer, got {raw!r}", param=name) from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}, got {value}", param=name)
    return value


def page_after(items: list, after: str | None, limit: int, key=lambda x: x.id) -> tuple[list, bool]:
    """The `limit` items following the one whose id is `after` (all from the start if None)."""
    start = 0
    if after:
        ids = [key(item) for item in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    page = items[start:start + limit]
    return page, start + limit < len(items)


def page_before(items: list, before: str, limit: int, key=lambda x: x.id) -> tuple[list, bool]:
    """The `limit` items right before the one whose id is `before`."""
    ids = [key(item) for item in items]
    end = ids.index(before) if before in ids else 0
    start = max(0, end - limit)
    return items[start:end], start > 0
