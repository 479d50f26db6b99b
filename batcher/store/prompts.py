"""The `prompt` table: system prompts stored once by their sha256."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batcher.store.models import TABLES

PROMPT = TABLES["prompt"]


def text_of(conn: Connection, system_hash: str | None, cache: dict[str, str]) -> str | None:
    """The text of a stored system prompt (`cache`: a small memo, since a run may have one
    per item)."""
    if system_hash is None:
        return None
    text = cache.get(system_hash)
    if text is None:
        query = sa.select(PROMPT.c.text).where(PROMPT.c.hash == system_hash)
        text = conn.execute(query).scalar_one()
        if len(cache) >= 64:
            cache.clear()
        cache[system_hash] = text
    return text


def texts(conn: Connection, hashes: list[str]) -> dict[str, str]:
    """hash -> text of the given prompts."""
    if not hashes:
        return {}
    query = sa.select(PROMPT.c.hash, PROMPT.c.text).where(PROMPT.c.hash.in_(hashes))
    return dict(conn.execute(query).all())
