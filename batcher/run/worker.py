"""`batcher worker`: a process of the pool that drives the open runs of one shared database.

Any number of workers, on any hosts, share one PostgreSQL state database. Each has `slots`
threads; a free slot claims the oldest open run nobody drives (batcher.store.workers,
`FOR UPDATE SKIP LOCKED`) and drives it like `batcher resume` would, holding the run's lease
and renewing it every third of `ttl_s`. A worker that dies stops renewing: once its lease
expires, any live worker takes the run over, a busy one too (a run whose batches are at the
provider should not wait for a free slot). The takeover is a resume: batches left
`submitting` are looked up at the provider and adopted, never created twice.

A worker's row in `worker` carries its heartbeat, for `batcher workers`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from batcher.errors import BatcherError
from batcher.providers import Clients
from batcher.run.lease import new_owner, release
from batcher.store import workers as pool

log = logging.getLogger("batcher.worker")
DEFAULT_TTL_S = 60.0
DEFAULT_POLL_S = 5.0


@dataclass(frozen=True)
class WorkerSettings:
    ttl_s: float = DEFAULT_TTL_S  # the lease on a run; renewed every ttl_s / 3
    poll_s: float = DEFAULT_POLL_S  # how often an idle slot looks for work
    slots: int = 1  # runs driven at once
    run_poll_s: float | None = None  # the runs' polling interval (default: each spec's)


class Worker:
    def __init__(
        self,
        db: Engine,
        settings: WorkerSettings,
        *,
        clients: Clients | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.db, self.settings, self.clients = db, settings, clients
        self.stop = stop or threading.Event()
        self.owner = new_owner()
        self.busy = 0
        self._lock = threading.Lock()

    def run(self) -> None:
        """Work until `stop` is set; every run in hand is left resumable."""
        s = self.settings
        pool.register(self.db, self.owner, socket.gethostname(), os.getpid(), s.slots, s.ttl_s)
        pool.forget_stale(self.db, older_than_s=max(86400.0, 10 * s.ttl_s))
        log.info("worker %s: %d slot(s), lease %.1f s", self.owner, s.slots, s.ttl_s)
        threads = [
            threading.Thread(target=self._slot, name=f"slot-{i}", daemon=True)
            for i in range(s.slots)
        ]
        for thread in threads:
            thread.start()
        beat_every = s.ttl_s / 3
        next_beat = time.monotonic() + beat_every
        try:
            # Look for orphaned runs every poll (a takeover within ttl + one poll), beat less.
            while not self.stop.wait(min(s.poll_s, beat_every)):
                if time.monotonic() >= next_beat:
                    self._beat()
                    next_beat = time.monotonic() + beat_every
                self._rescue()
        finally:
            for thread in threads:
                thread.join()
            pool.unregister(self.db, self.owner)

    def _beat(self) -> None:
        try:
            pool.heartbeat(self.db, self.owner)
        except Exception as exc:  # noqa: BLE001 - a busy database: beat again next time
            log.warning("worker %s: heartbeat failed: %s", self.owner, exc)

    def _slot(self) -> None:
        while not self.stop.is_set():
            claim = self._claim(orphans_only=False)
            if claim is None:
                self.stop.wait(self.settings.poll_s)
                continue
            self._drive(claim)

    def _rescue(self) -> None:
        """With every slot busy, still take over a run whose holder died."""
        with self._lock:
            if self.busy < self.settings.slots:
                return  # a free slot finds it on its next look
        claim = self._claim(orphans_only=True)
        if claim is not None:
            threading.Thread(target=self._drive, args=(claim,), daemon=True).start()

    def _claim(self, *, orphans_only: bool) -> pool.Claim | None:
        try:
            return pool.claim_run(
                self.db, self.owner, self.settings.ttl_s, orphans_only=orphans_only
            )
        except Exception as exc:  # noqa: BLE001 - a busy or unreachable database: look again
            log.warning("worker %s: looking for work failed: %s", self.owner, exc)
            return None

    def _drive(self, claim: pool.Claim) -> None:
        from batcher.run.engine import resume_run

        with self._lock:
            self.busy += 1
        taken = f" (taken over from {claim.taken_from})" if claim.taken_from else ""
        log.info("worker %s: driving run %d%s", self.owner, claim.run_id, taken)
        try:
            outcome = resume_run(
                self.db,
                claim.run_id,
                clients=self.clients,
                owner=self.owner,
                stop=self.stop,
                poll=self.settings.run_poll_s,
                lease_ttl=self.settings.ttl_s,
            )
            log.info(
                "worker %s: run %d %s%s", self.owner, claim.run_id, outcome.status,
                f": {outcome.message}" if outcome.message else "",
            )  # fmt: skip
        except BatcherError as exc:
            log.warning("worker %s: run %d: %s", self.owner, claim.run_id, exc)
            self.stop.wait(self.settings.poll_s)  # do not pick the same run straight back up
        except Exception:  # noqa: BLE001 - one run's bug must not end the worker
            log.exception("worker %s: run %d crashed", self.owner, claim.run_id)
            self.stop.wait(self.settings.poll_s)
        finally:
            release(self.db, claim.run_id, self.owner)  # when it stopped before driving
            with self._lock:
                self.busy -= 1
