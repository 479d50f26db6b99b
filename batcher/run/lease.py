"""The run lease: only one process drives a run at a time.

The lease lives in the run row (`lease_owner`, `lease_expires_at`). A driver takes it with one
atomic UPDATE that also returns who holds it (see batcher.store.lease), renews it from a
background thread while it works, and gives it back when it stops. A process killed without
giving it back holds it until it expires, except that a process on the same host whose owner
pid is gone takes it over at once, so `batcher resume` right after a crash does not have to
wait.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batcher.errors import LeaseHeld
from batcher.store.lease import release_lease, renew_lease, take_lease

DEFAULT_TTL_S = 120.0


def new_owner() -> str:
    """An owner id naming this process: host:pid:random."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _dead_local_owner(owner: str | None) -> bool:
    """True when `owner` is a process of this host that no longer exists."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by someone else
        return False
    return False


def acquire(db: Engine, run_id: int, owner: str, ttl_s: float = DEFAULT_TTL_S) -> None:
    """Take the lease of `run_id` for `owner`. Raises LeaseHeld naming the holder."""
    holder = take_lease(db, run_id, owner, ttl_s)
    if holder is not None and holder.owner != owner and _dead_local_owner(holder.owner):
        # The holder crashed on this host: take over at once, but only from that holder, so
        # a third process that got there first still wins.
        holder = take_lease(db, run_id, owner, ttl_s, stale=holder.owner)
    if holder is None:
        raise LeaseHeld(f"run {run_id} does not exist")
    if holder.owner != owner:
        until = f"{holder.expires_at:%Y-%m-%d %H:%M:%S} UTC" if holder.expires_at else "unknown"
        raise LeaseHeld(
            f"run {run_id} is being driven by {holder.owner} (lease until {until}); wait for "
            f"it to finish, or stop that process and run `batcher resume {run_id}` after the "
            f"lease expires"
        )


def renew(db: Engine, run_id: int, owner: str, ttl_s: float = DEFAULT_TTL_S) -> bool:
    """Extend our lease; False when it is no longer ours."""
    return renew_lease(db, run_id, owner, ttl_s)


def release(db: Engine, run_id: int, owner: str) -> None:
    """Give the lease back (no-op when it is not ours)."""
    release_lease(db, run_id, owner)


class Lease:
    """Holds a run's lease while a `with` block runs, renewing it in the background.

    `lost` is set when a renewal finds the lease taken by someone else; the driver checks it
    and stops, so two processes never drive one run.
    """

    def __init__(self, db: Engine, run_id: int, owner: str, ttl_s: float = DEFAULT_TTL_S):
        self.db, self.run_id, self.owner, self.ttl_s = db, run_id, owner, ttl_s
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Lease:
        acquire(self.db, self.run_id, self.owner, self.ttl_s)
        self._thread = threading.Thread(target=self._renew, name="lease", daemon=True)
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._done.wait(self.ttl_s / 3):
            try:
                if not renew(self.db, self.run_id, self.owner, self.ttl_s):
                    self.lost.set()
                    return
            except sa.exc.SQLAlchemyError:  # a busy database: try again next time
                continue

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        release(self.db, self.run_id, self.owner)
