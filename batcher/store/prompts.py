"""The `prompt` table: system prompts stored once by their sha256."""

from __future__ import annotations

import hashlib

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


def prompt_hash(text: str) -> str:
    """The key of a system prompt in the `prompt` table (128 bits of sha256)."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _insert_ignoring_duplicates(engine_dialect: str, table: sa.Table) -> sa.Insert:
    if engine_dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()


class PromptStore:
    """Writes each distinct system prompt once and maps a text to its key cheaply.

    The cache is keyed by the text itself: a dict lookup hashes the string once (and not at
    all for the spec's own prompt, whose hash Python keeps), where sha256 per item was the
    most expensive step of an ingest. It is bounded for inputs where every item has its own
    system prompt.
    """

    MAX_CACHED = 256

    def __init__(self, conn: Connection):
        self.conn = conn
        self.keys: dict[str, str] = {}
        self.insert = _insert_ignoring_duplicates(conn.dialect.name, PROMPT)

    def key(self, text: str | None) -> str | None:
        if text is None:
            return None
        key = self.keys.get(text)
        if key is None:
            key = prompt_hash(text)
            self.conn.execute(self.insert.values(hash=key, text=text))
            if len(self.keys) >= self.MAX_CACHED:
                self.keys.clear()
            self.keys[text] = key
        return key
