"""Running a stream of write transactions beside the caller's own work, in a second process.

Reconciling a large batch is about half Python (parsing, validating and pricing each result)
and half database (SQLite's B-tree updates). Threads cannot overlap the two: the database
driver holds the GIL while it binds every row, so a writer thread and a parsing thread take
turns. A second process can: the caller hands it each transaction's work and goes on with
the next while the last one is written, which uses both cores of a small machine.

A transaction is a list of steps `(function, args)`; each function is a module-level function
of batcher taking `(conn, *args)`, run in the writer inside one transaction, in order. Replies
come back in order. `InlineWriter` runs the same steps at once in the caller's process: the
path for small work, where starting a process would cost more than it saves.

A crash of either side loses nothing that was committed: the writer commits one transaction
at a time, and a writer whose caller has gone reads end-of-file and exits.
"""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from typing import Any, BinaryIO

from sqlalchemy.engine import Connection, Engine

from batcher.bulk import tune_for_bulk
from batcher.errors import StoreError

SMALL_BYTES = 16_384  # fits a pipe's buffer (64 KiB on Linux) with room to spare
Step = tuple[Callable[..., Any], tuple[Any, ...]]
Done = Callable[[list[Any]], None]  # hears each step's return value, in order


class InlineWriter:
    """Runs each transaction at once, in this process."""

    def __init__(self, db: Engine):
        self.db = db

    def submit(self, steps: list[Step], done: Done | None = None) -> None:
        with self.db.begin() as conn:
            tune_for_bulk(conn)
            values = [function(conn, *args) for function, args in steps]
        if done is not None:
            done(values)

    def wait(self) -> None:
        """Nothing is ever pending here."""

    def close(self) -> None:
        """Nothing to stop."""


class ProcessWriter:
    """Runs each transaction in a child process (`python -m batcher.writer`).

    A large transaction is sent only when the child is idle (`submit` first waits for what is
    in flight), so the caller never blocks on a full pipe while the child writes: it prepares
    transaction N+1 while the child writes N. A small one (a batch's closing counts) goes
    straight behind the others, into the pipe's buffer. The database URL, with its password,
    goes to the child over its stdin, never on a command line or in a log.
    """

    def __init__(self, db: Engine):
        self.child = subprocess.Popen(
            [sys.executable, "-m", "batcher.writer"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.pending: deque[Done | None] = deque()
        url = db.url.render_as_string(hide_password=False)
        self._send(pickle.dumps(url, protocol=pickle.HIGHEST_PROTOCOL))

    def submit(self, steps: list[Step], done: Done | None = None) -> None:
        message = [(f.__module__, f.__qualname__, args) for f, args in steps]
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        if len(payload) > SMALL_BYTES:
            self.wait()
        self._send(payload)
        self.pending.append(done)

    def wait(self) -> None:
        """Until every submitted transaction is committed; raises StoreError if one failed."""
        while self.pending:
            done = self.pending.popleft()
            try:
                kind, value = pickle.load(self.child.stdout)  # type: ignore[arg-type]
            except (EOFError, pickle.UnpicklingError):
                raise StoreError(self._died()) from None
            if kind == "error":
                self.pending.clear()
                raise StoreError(f"the writer process failed a transaction: {value}")
            if done is not None:
                done(value)

    def close(self) -> None:
        """Stop the child (it finishes the transaction it is writing, if any)."""
        if self.child.stdin is not None and not self.child.stdin.closed:
            try:
                self.child.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()
        if self.child.stdout is not None:
            self.child.stdout.close()

    def _send(self, payload: bytes) -> None:
        try:
            self.child.stdin.write(payload)  # type: ignore[union-attr]
            self.child.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError):
            raise StoreError(self._died()) from None

    def _died(self) -> str:
        code = self.child.poll()
        return f"the writer process stopped (exit code {code}); run the command again to go on"


def open_writer(db: Engine, parallel: bool) -> InlineWriter | ProcessWriter:
    """A ProcessWriter when `parallel` and the database can be opened from another process
    (a file or a server, not an in-memory SQLite); an InlineWriter otherwise."""
    in_memory = db.dialect.name == "sqlite" and db.url.database in (None, "", ":memory:")
    if parallel and not in_memory:
        return ProcessWriter(db)
    return InlineWriter(db)


def _resolve(module: str, name: str) -> Callable[..., Any]:
    if not module.startswith("batcher."):  # only batcher's own functions run here
        raise StoreError(f"refusing to run {module}.{name} in the writer")
    return getattr(importlib.import_module(module), name)


def _apply(conn: Connection, steps: list[tuple[str, str, tuple[Any, ...]]]) -> list[Any]:
    return [_resolve(module, name)(conn, *args) for module, name, args in steps]


def serve(source: BinaryIO, sink: BinaryIO) -> None:
    """The child's loop: a URL, then transactions until end-of-file."""
    from batcher.store.db import create_engine  # the store's connection settings

    db = create_engine(pickle.load(source))
    try:
        while True:
            try:
                steps = pickle.load(source)
            except (EOFError, pickle.UnpicklingError):  # the caller has gone (maybe mid-send)
                return
            try:
                with db.begin() as conn:
                    tune_for_bulk(conn)
                    reply: tuple[str, Any] = ("ok", _apply(conn, steps))
            except Exception as exc:  # the caller raises it; the child goes on serving
                reply = ("error", f"{type(exc).__name__}: {exc}")
            pickle.dump(reply, sink, protocol=pickle.HIGHEST_PROTOCOL)
            sink.flush()
    finally:
        db.dispose()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
