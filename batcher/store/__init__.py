"""The state database as the ledger: one module per table holding every query of it and its
status transitions (`runs`, `items`, `attempts`, `batches`, `prompts`, `firings`), the state
machine (`states`), the tables (`models`), migrations and opening the database (`db`).

The names below load on first use (PEP 562): `batcher --help` reads the status enums without
importing SQLAlchemy, SQLModel and Alembic, about a second on this project's machine.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "open_store": "batcher.store.db",
    "resolve_url": "batcher.store.paths",
    "state_dir": "batcher.store.paths",
    "TABLES": "batcher.store.models",
    "Run": "batcher.store.models",
    "Item": "batcher.store.models",
    "Attempt": "batcher.store.models",
    "Batch": "batcher.store.models",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'batcher.store' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
