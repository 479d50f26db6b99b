"""Where the state lives: the state folder and the database URL (no SQLAlchemy needed)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_STATE_DIR = "state"


def state_dir() -> Path:
    """Where batch files and the default database live (`BATCHER_STATE_DIR`, else ./state)."""
    return Path(os.environ.get("BATCHER_STATE_DIR", DEFAULT_STATE_DIR))


def resolve_url(url: str | None = None) -> str:
    """The database URL: the argument, else `BATCHER_DB`, else SQLite in the state folder."""
    url = url or os.environ.get("BATCHER_DB")
    if url:
        if "://" not in url:  # a bare path means a SQLite file
            return f"sqlite:///{url}"
        return url
    return f"sqlite:///{state_dir() / 'batcher.db'}"


def sqlite_file(url: str | None = None) -> Path | None:
    """The file of a SQLite database URL (None for another database or an in-memory one)."""
    resolved = resolve_url(url)
    if not resolved.startswith("sqlite:///") or resolved == "sqlite:///:memory:":
        return None
    return Path(resolved.removeprefix("sqlite:///"))
