"""Request helpers shared by both providers' routes: JSON bodies, multipart, paging."""

from __future__ import annotations

import json
import re
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
    """multipart/form-data fields. A byte split, not a MIME parser: an 80 MB batch file is
    parsed in milliseconds, and no python-multipart dependency is needed."""
    match = _BOUNDARY.search(request.headers.get("content-type", ""))
    if not match:
        raise ApiError(400, "Expected a multipart/form-data body with a boundary.")
    delimiter = b"--" + match.group(1).strip('"').encode()
    raw = await request.body()
    fields: dict[str, FormPart] = {}
    for chunk in raw.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, value = chunk.partition(b"\r\n\r\n")
        disposition = head.decode("utf-8", errors="replace")
        name = _NAME.search(disposition)
        if name:
            filename = _FILENAME.search(disposition)
            fields[name.group(1)] = FormPart(
                value.removesuffix(b"\r\n"), filename.group(1) if filename else None
            )
    return fields


_BOUNDARY = re.compile(r"boundary=([^;]+)")
_NAME = re.compile(r'[; ]name="([^"]*)"')
_FILENAME = re.compile(r'filename="([^"]*)"')


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
    page = items[start : start + limit]
    return page, start + limit < len(items)


def page_before(items: list, before: str, limit: int, key=lambda x: x.id) -> tuple[list, bool]:
    """The `limit` items right before the one whose id is `before`."""
    ids = [key(item) for item in items]
    end = ids.index(before) if before in ids else 0
    start = max(0, end - limit)
    return items[start:end], start > 0
