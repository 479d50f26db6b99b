"""Helpers for the schedule tests: a clock the test moves, a small job spec and inputs, and
`LedgerDriver`, which stands in for the run engine at the firing's one seam (`Driver`).

LedgerDriver is not a mock of a library: it stores real runs with the real ingest (so runs
carry schedule_name and input_sha256 in the real database), moves them through the real state
machine, and records which of start/drive/resume the firing asked for. `gate` holds a drive
open until the test releases it (or the scheduler's stop is set), to test overlap.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from batcher.errors import BatcherError
from batcher.plan.ingest import ingest
from batcher.store.models import TABLES
from batcher.store.states import ItemStatus, RunStatus, set_status

SPEC = """
name = "nightly-labels"
[tiers]
nano = "openai:gpt-5-nano"
[routing]
classifier = "fixed:nano"
ladder = ["nano"]
[defaults]
max_tokens = 64
"""


class Clock:
    """A clock the test sets and moves; tz-aware UTC like the scheduler's own."""

    def __init__(self, start: datetime):
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def set(self, when: datetime) -> None:
        with self._lock:
            self.now = when

    def advance(self, **delta: float) -> datetime:
        with self._lock:
            self.now += timedelta(**delta)
            return self.now


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def write_spec(folder: Path, text: str = SPEC) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "nightly.toml"
    path.write_text(text)
    return path


def write_input(path: Path, prompts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps({"prompt": p}) + b"\n" for p in prompts))
    return path


class LedgerDriver:
    """Runs stored for real; driving walks created -> planned -> running -> completed."""

    def __init__(
        self,
        gate: threading.Event | None = None,
        fail: str | None = None,
        refuse_start: str | None = None,
    ):
        self.gate, self.fail, self.refuse_start = gate, fail, refuse_start
        self.calls: list[tuple[str, object]] = []
        self.driving = threading.Event()  # set while a drive waits at the gate
        self._lock = threading.Lock()

    def _note(self, call: str, arg: object) -> None:
        with self._lock:
            self.calls.append((call, arg))

    def start(self, db, spec, input_path, *, schedule_name):
        self._note("start", Path(input_path).name)
        run_id = ingest(db, spec, input_path, schedule_name=schedule_name).run_id
        if self.refuse_start:  # like the engine's budget check: the run is kept, failed
            run = TABLES["run"]
            with db.begin() as conn:
                set_status(conn, run, RunStatus.PLANNED, run.c.id == run_id)
                set_status(conn, run, RunStatus.FAILED, run.c.id == run_id,
                           {"error": self.refuse_start})  # fmt: skip
            raise BatcherError(self.refuse_start)
        return run_id

    def drive(self, db, run_id, *, stop):
        self._note("drive", run_id)
        self._walk(db, run_id, stop)

    def resume(self, db, run_id, *, stop):
        self._note("resume", run_id)
        self._walk(db, run_id, stop)

    def _walk(self, db, run_id, stop):
        run = TABLES["run"]
        where = run.c.id == run_id
        with db.begin() as conn:
            set_status(conn, run, RunStatus.PLANNED, where)
            set_status(conn, run, RunStatus.RUNNING, where)
        if self.gate is not None:
            self.driving.set()
            while not self.gate.wait(0.02):
                if stop.is_set():
                    return  # a safe point: the run stays open and resumes later
        with db.begin() as conn:
            if self.fail:
                set_status(conn, run, RunStatus.FAILED, where, {"error": self.fail})
            else:
                item = TABLES["item"]
                set_status(conn, item, ItemStatus.SUCCEEDED, item.c.run_id == run_id)
                set_status(conn, run, RunStatus.COMPLETED, where)

    def count(self, call: str) -> int:
        with self._lock:
            return sum(1 for c, _ in self.calls if c == call)
