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

    Every parsed line holds its own copy of a shared system prompt, often several KB long.
    A copy is recognised among the known texts of its length by comparing them (a memcmp,
    which stops at the first difference), where a dict keyed by text would hash every copy
    whole (five times the cost); sha256 per item was once the most expensive step of an
    ingest. `lookup` also hands back the first copy seen, whose hash Python computes once
    and keeps, so that later caches keyed by the text (token counts) cost nothing either.
    Bounded for inputs where every item has its own system prompt.
    """

    MAX_CACHED = 256
    MAX_SAME_LENGTH = 8  # texts of one length compared at most, oldest dropped first

    def __init__(self, conn: Connection):
        self.conn = conn
        self.by_length: dict[int, list[tuple[str, str]]] = {}  # len -> [(text, key)]
        self.n_cached = 0
        self.insert = _insert_ignoring_duplicates(conn.dialect.name, PROMPT)

    def key(self, text: str | None) -> str | None:
        return None if text is None else self.lookup(text)[1]

    def lookup(self, text: str) -> tuple[str, str]:
        """(the first copy seen of `text`, its key), the prompt stored once."""
        same_length = self.by_length.get(len(text))
        if same_length is not None:
            for known, key in same_length:
                if known == text:
                    return known, key
        key = prompt_hash(text)
        self.conn.execute(self.insert.values(hash=key, text=text))
        self._remember(text, key)
        return text, key

    def _remember(self, text: str, key: str) -> None:
        if self.n_cached >= self.MAX_CACHED:
            self.by_length, self.n_cached = {}, 0
        same_length = self.by_length.setdefault(len(text), [])
        if len(same_length) >= self.MAX_SAME_LENGTH:
            same_length.pop(0)
            self.n_cached -= 1
        same_length.append((text, key))
        self.n_cached += 1
