"""Pausing CPython's cycle collector while a batch is parsed or processed.

A 10,000-request batch allocates millions of short-lived containers (parsed lines, result
lines, usage objects) and no reference cycles, while the sandbox holds every earlier batch's
lines and its ledger. Each allocation burst triggers collections, and every full one walks
all that is held: a third of the time a batch's requests took went to collections that
found nothing (10,000 requests of a 50,000-request job: 1.6 s, 1.1 s with the collector
paused). Reference counting still frees everything these sections drop; the collector
resumes when the last of them ends.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_resume = False  # whether the collector was enabled when the first section began


@contextmanager
def paused_collection() -> Iterator[None]:
    """No automatic cycle collection inside (sections may nest and run in several threads).

    Use it around synchronous work only: a section that awaits would keep the collector off
    while other requests run."""
    global _depth, _resume
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()
