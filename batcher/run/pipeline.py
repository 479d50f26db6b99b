"""The layout thread of a pipelined run: a deferred plan laid out while its batches go out.

A run started with `engine.start_run(defer_layout=True)` has its items queued and its spools
kept (`batcher.plan.onepass`), but no batch yet. `PipelinedLayout` lays it out in a thread of
its own while the driver's loop runs: each batch is committed on its own and then `released`
to the submit pool, so the provider works on the first batches while the next are written.
The budget check of the whole plan ran before its first batch was laid out, so every batch
of the layout is within budget. Where reuse may answer requests from earlier runs (`gated`),
each batch is matched against them before it is released (a batch with reused requests is
abandoned and its others laid out again by the follow-up, as reuse does for a whole plan).

Stopping (a stop, a lost lease, a cancel) halts the layout after the batch it is writing; the
next drive lays out the rest from the database (see `onepass.lay_out_kept`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_all

from sqlalchemy.engine import Engine

from batcher.plan import tokens
from batcher.plan.layout import BatchInfo
from batcher.plan.onepass import lay_out_kept
from batcher.run.crash import crash_point
from batcher.run.reuse import apply_reuse
from batcher.spec import JobSpec

# Requests of a plan before the tokenizers are worth freeing once its input is read: the
# layout only counts the shared prompts, counted (and cached) already, the rest of the run
# polls and reconciles, and loading them again (for a follow-up round) takes a fraction of
# a second.
RELEASE_TOKENIZERS_AT = 20_000


class LayoutHalted(Exception):
    """Raised into the layout thread to stop it after the batch it just committed."""


def free_tokenizers(n_requests: int) -> None:
    """A plan of `n_requests` is read (or laid out): a large one frees the tokenizers, a
    sixth of the run's memory, before its layout and the SDKs take theirs."""
    if n_requests >= RELEASE_TOKENIZERS_AT:
        tokens.release()


class PipelinedLayout:
    """The layout of one run's deferred plan, in a thread; see the module docstring."""

    def __init__(
        self,
        db: Engine,
        run_id: int,
        spec: JobSpec,
        *,
        gated: bool,
        halt: Callable[[], bool],
        wake: threading.Event,
    ):
        self.db, self.run_id, self.spec = db, run_id, spec
        self.gated, self.halt, self.wake = gated, halt, wake
        self.released: set[str] = set()  # batches that may go out
        self.reused = False  # reuse answered requests: their items need a follow-up
        self.halted = threading.Event()
        pool = ThreadPoolExecutor(1, thread_name_prefix="layout")
        self.future: Future = pool.submit(lay_out_kept, db, run_id, spec, self._committed)
        self.future.add_done_callback(lambda _: wake.set())
        pool.shutdown(wait=False)  # the thread ends with its one task

    def _committed(self, batch: BatchInfo) -> None:
        """In the layout thread, after each batch is committed."""
        if self.gated and apply_reuse(self.db, self.run_id, self.spec, batch_id=batch.id):
            self.reused = True
        self.released.add(batch.id)
        self.wake.set()
        crash_point("mid_layout")
        if self.halted.is_set() or self.halt():
            raise LayoutHalted

    def may_send(self, batch_id: str) -> bool:
        """Whether a planned batch may go out while the layout runs (gated: once released)."""
        return not self.gated or batch_id in self.released

    def collect(self) -> bool:
        """True once the thread has finished (the plan laid out, or halted); raises what the
        layout raised."""
        if not self.future.done():
            return False
        try:
            free_tokenizers(self.future.result().n_requests)
        except LayoutHalted:
            pass
        return True

    def stop(self) -> None:
        """Halt the layout after its current batch and wait for the thread."""
        self.halted.set()
        wait_for_all([self.future])
