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
    return split_parts(await request.body(), b"--" + match.group(1).strip('"').encode())


def split_parts(raw: bytes, delimiter: bytes) -> dict[str, FormPart]:
    """The named parts of a multipart body. Parts are found by offset and only a named
    part's value is sliced out: splitting and partitioning copies of a 100 MB upload cost
    three copies of it, over a second of the sandbox's CPU per file."""
    fields: dict[str, FormPart] = {}
    at = raw.find(delimiter)
    while at >= 0:
        start = at + len(delimiter)
        at = raw.find(delimiter, start)
        end = at if at >= 0 else len(raw)
        if raw.startswith(b"--", start, end):
            break
        blank = raw.find(b"\r\n\r\n", start, end)
        head_end, value_start = (blank, blank + 4) if blank >= 0 else (end, end)
        disposition = raw[start:head_end].decode("utf-8", errors="replace")
        name = _NAME.search(disposition)
        if name:
            value_end = end - 2 if raw.endswith(b"\r\n", value_start, end) else end
            filename = _FILENAME.search(disposition)
            fields[name.group(1)] = FormPart(
                raw[value_start:value_end], filename.group(1) if filename else None
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
