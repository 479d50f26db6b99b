"""The state database: tables (`models`), migrations, and opening it (`db`)."""

from batcher.store.db import open_store, resolve_url, state_dir
from batcher.store.models import TABLES, Attempt, Batch, Item, Run

__all__ = ["open_store", "resolve_url", "state_dir", "TABLES", "Run", "Item", "Attempt", "Batch"]
