"""One firing of a schedule: resume its open runs, then start a run per new input, and drive
each to the end.

A firing first resumes the runs that earlier firings of the schedule left open (a crash, a
SIGTERM, a failure), so a schedule never has two runs of one input going. Then it resolves the
input glob, skips inputs whose content (sha256) this job already processed, and starts and
drives a run for each new one. Each input it works on is claimed by inserting a
`schedule_firing` row keyed by (schedule, fire time, input sha256): when two scheduler
processes share a database and both fire the same fire time, the second insert fails and that
process leaves the input alone. The row's outcome is written once, when the work ends.

`fire` is the function stored in the job store. It reads the scheduler that runs it from a
thread-local context, and stands alone (opening the store from `db_url`) without one.
"""

from __future__ import annotations

import glob
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batcher.errors import BatcherError, LeaseHeld
from batcher.plan.ingest import file_sha256
from batcher.run import engine
from batcher.schedule.schedules import Clock, utcnow
from batcher.spec import JobSpec, load_spec
from batcher.store import firings, items, open_store, runs
from batcher.store.states import ItemStatus, RunStatus

log = logging.getLogger("batcher.schedule")


class Outcome(StrEnum):
    COMPLETED = "completed"  # the run ended with every item terminal
    FAILED = "failed"  # the firing or its run stopped on an error; `error` says why
    STOPPED = "stopped"  # the scheduler was told to stop; the run resumes on the next firing
    BUSY = "busy"  # another process drives this run; nothing was done here
    NO_INPUT = "no_input"  # the input glob matched no file
    NOTHING_NEW = "nothing_new"  # every matching input was processed already
    MISSED = "missed"  # the fire time passed longer ago than the grace period (downtime)
    QUEUED = "queued"  # planned and left for the worker pool (`batcher scheduler --pool`)


OK_OUTCOMES = {Outcome.COMPLETED, Outcome.NOTHING_NEW, Outcome.QUEUED}


class Driver(Protocol):
    """How a firing starts and drives runs: the seam between schedules and the run engine."""

    def start(self, db: Engine, spec: JobSpec, input_path: str, *, schedule_name: str) -> int:
        """Ingest and plan `input_path` as a new run of `spec`; return its id."""

    def drive(self, db: Engine, run_id: int, *, stop: threading.Event) -> None:
        """Drive the run until every item is terminal or `stop` is set."""

    def resume(self, db: Engine, run_id: int, *, stop: threading.Event) -> None:
        """Continue a run that an earlier process left open, then drive it like `drive`."""


class EngineDriver:
    """The real driver: batcher.run.engine, with the providers' clients from `clients` or the
    environment (OPENAI_BASE_URL / ANTHROPIC_BASE_URL and the API keys). `poll` overrides the
    spec's polling interval (seconds), as in `engine.drive_run`."""

    # Driven right away (drive below): each batch goes out as soon as it is written.
    defer_layout = True

    def __init__(self, clients: Any = None, owner: str | None = None, poll: float | None = None):
        self.clients, self.owner, self.poll = clients, owner, poll

    def start(self, db: Engine, spec: JobSpec, input_path: str, *, schedule_name: str) -> int:
        return engine.start_run(
            db, spec, input_path, schedule_name=schedule_name, defer_layout=self.defer_layout
        )

    def drive(self, db: Engine, run_id: int, *, stop: threading.Event) -> None:
        engine.drive_run(db, run_id, stop=stop, **self._options())

    def resume(self, db: Engine, run_id: int, *, stop: threading.Event) -> None:
        # resume_run checks the run's budget again when nothing was submitted (e.g. the
        # budget refused it at start): a schedule never spends what a person was refused.
        engine.resume_run(db, run_id, stop=stop, **self._options())

    def _options(self) -> dict[str, Any]:
        return {"clients": self.clients, "owner": self.owner, "poll": self.poll}


class PoolDriver(EngineDriver):
    """Fires into the worker pool: a firing plans its run (budget checked) and leaves it to
    `batcher worker` processes; a run an earlier firing left open is theirs already."""

    queues = True
    # Laid out in full here: the worker that takes the run may be on another machine, which
    # does not see this one's state folder.
    defer_layout = False

    def drive(self, db: Engine, run_id: int, *, stop: threading.Event) -> None:
        return None

    def resume(self, db: Engine, run_id: int, *, stop: threading.Event) -> None:
        return None


def log_result(result: FiringResult, note: str | None = None) -> None:
    """The default report of a firing: its one log line (a warning unless it went well)."""
    level = logging.INFO if result.outcome in OK_OUTCOMES else logging.WARNING
    log.log(level, "%s%s", result.log_line(), f" ({note})" if note else "")


@dataclass
class FiringContext:
    """What a firing needs from the process that runs it."""

    db: Engine
    driver: Driver
    stop: threading.Event = field(default_factory=threading.Event)
    clock: Clock = utcnow
    scheduled_for: datetime | None = None  # the fire time; None means now (run-now)
    report: Callable[[FiringResult, str | None], None] = log_result  # one log line an input


@dataclass
class FiringResult:
    """What a firing did with one input (one `schedule_firing` row, and one log line)."""

    schedule: str
    outcome: Outcome
    input_path: str | None = None
    run_id: int | None = None
    error: str | None = None
    items: dict[str, int] = field(default_factory=dict)  # the run's items by status

    def log_line(self) -> str:
        counts = ""
        if self.items:
            total, done = sum(self.items.values()), self.items.get(ItemStatus.SUCCEEDED, 0)
            counts = f" items={total} succeeded={done}"
            if self.items.get(ItemStatus.FAILED):
                counts += f" failed={self.items[ItemStatus.FAILED]}"
        error = f" error={_one_line(self.error)!r}" if self.error else ""
        return (
            f"schedule={self.schedule} input={self.input_path or '-'} "
            f"run={self.run_id or '-'} outcome={self.outcome}{counts}{error}"
        )


_local = threading.local()


@contextmanager
def firing_context(ctx: FiringContext) -> Iterator[None]:
    """Make `fire` called in this thread use `ctx` (the scheduler's database, driver, stop)."""
    previous = getattr(_local, "ctx", None)
    _local.ctx = ctx
    try:
        yield
    finally:
        _local.ctx = previous


def fire(
    schedule_name: str, db_url: str, *, job: str, input: str, reprocess: bool = False
) -> list[FiringResult]:
    """The job-store entry point of a schedule: one firing. Never raises for a failed run;
    every outcome is recorded in `schedule_firing` and logged."""
    ctx = getattr(_local, "ctx", None)
    if ctx is None:
        ctx = FiringContext(db=open_store(db_url), driver=EngineDriver())
    return Firing(ctx, schedule_name, job, input, reprocess).run()


class Firing:
    """One firing of one schedule at one fire time."""

    def __init__(self, ctx: FiringContext, name: str, job: str, pattern: str, reprocess: bool):
        self.ctx, self.name, self.job, self.pattern = ctx, name, job, pattern
        self.reprocess = reprocess
        self.scheduled_for = ctx.scheduled_for or ctx.clock()
        self.results: list[FiringResult] = []

    def run(self) -> list[FiringResult]:
        try:
            spec = load_spec(self.job)
        except BatcherError as exc:
            self._record_without_input(Outcome.FAILED, str(exc))
            return self.results
        handled = self._resume_open_runs()
        if not self.ctx.stop.is_set():
            self._start_new_runs(spec, handled)
        return self.results

    def _resume_open_runs(self) -> set[str]:
        """Resume what earlier firings left open; returns the input hashes they cover."""
        handled = set()
        for run in open_runs(self.ctx.db, self.name):
            handled.add(run.input_sha256)
            if self.ctx.stop.is_set():
                break
            self._work(run.input_path, run.input_sha256, run_id=run.id)
        return handled

    def _start_new_runs(self, spec: JobSpec, handled: set[str]) -> None:
        paths = resolve_inputs(self.pattern)
        if not paths and not handled:
            self._record_without_input(Outcome.NO_INPUT, f"no file matches {self.pattern}")
            return
        started = skipped = 0
        for path in paths:
            if self.ctx.stop.is_set():
                return
            try:
                sha = file_sha256(path)
            except OSError as exc:  # moved or removed since the glob; the next firing sees
                log.warning("schedule=%s input=%s unreadable: %s", self.name, path, exc)
                continue
            if sha in handled:  # an open run covers it, or an identical file came earlier
                continue
            handled.add(sha)
            done_by = None if self.reprocess else processed_by(self.ctx.db, spec.name, sha)
            if done_by is not None:
                skipped += 1
                log.info("schedule=%s input=%s skipped: %s", self.name, path, done_by)
                continue
            started += 1
            self._work(path, sha, spec=spec)
        if started == 0 and skipped and not self.results:
            self._record_without_input(
                Outcome.NOTHING_NEW, None, note=f"{skipped} matching input(s) already processed"
            )

    def _work(
        self, path: str, sha: str, *, run_id: int | None = None, spec: JobSpec | None = None
    ) -> None:
        """Claim one input for this fire time, then resume run `run_id` or start one."""
        firing_id = self._claim(path, sha, run_id)
        if firing_id is None:
            log.info("schedule=%s input=%s claimed by another scheduler", self.name, path)
            return
        outcome, error = Outcome.FAILED, None
        try:
            if run_id is None:
                run_id = self.ctx.driver.start(self.ctx.db, spec, path, schedule_name=self.name)
                self._set_run(firing_id, run_id)
                self.ctx.driver.drive(self.ctx.db, run_id, stop=self.ctx.stop)
            else:
                self.ctx.driver.resume(self.ctx.db, run_id, stop=self.ctx.stop)
            outcome, error = self._outcome_of(run_id)
        except LeaseHeld as exc:
            outcome, error = Outcome.BUSY, str(exc)
        except BatcherError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - record any failure; the scheduler goes on
            log.exception("schedule=%s input=%s crashed", self.name, path)
            error = f"{type(exc).__name__}: {exc}"
        if run_id is None:  # start failed; it may have kept a run (e.g. over budget)
            run_id = latest_open_run(self.ctx.db, self.name, sha)
        items = item_counts(self.ctx.db, run_id) if run_id is not None else {}
        self._finish(firing_id, FiringResult(self.name, outcome, path, run_id, error, items))

    def _outcome_of(self, run_id: int) -> tuple[Outcome, str | None]:
        with self.ctx.db.connect() as conn:
            run = runs.get(conn, run_id)
        status, error = run.status, run.error
        if status == RunStatus.COMPLETED:
            return Outcome.COMPLETED, None
        if status == RunStatus.CANCELLED:
            return Outcome.FAILED, f"run {run_id} was cancelled"
        if getattr(self.ctx.driver, "queues", False) and status != RunStatus.FAILED:
            return Outcome.QUEUED, None
        if status != RunStatus.FAILED and self.ctx.stop.is_set():
            return Outcome.STOPPED, None
        return Outcome.FAILED, error or f"run {run_id} stopped while {status}"

    def _claim(self, path: str | None, sha: str, run_id: int | None) -> int | None:
        return claim(
            self.ctx.db, self.name, self.scheduled_for, self.ctx.clock(), path, sha, run_id
        )

    def _set_run(self, firing_id: int, run_id: int) -> None:
        with self.ctx.db.begin() as conn:
            firings.set_run(conn, firing_id, run_id)

    def _finish(self, firing_id: int, result: FiringResult, note: str | None = None) -> None:
        finish(self.ctx.db, firing_id, result, self.ctx.clock())
        self.results.append(result)
        self.ctx.report(result, note)

    def _record_without_input(
        self, outcome: Outcome, error: str | None, note: str | None = None
    ) -> None:
        firing_id = self._claim(None, "", None)
        if firing_id is not None:  # else another scheduler fired this fire time and recorded it
            self._finish(firing_id, FiringResult(self.name, outcome, error=error), note)


def claim(
    db: Engine,
    name: str,
    scheduled_for: datetime,
    now: datetime,
    path: str | None,
    sha: str,
    run_id: int | None = None,
) -> int | None:
    """Insert the `schedule_firing` row for (schedule, fire time, input hash) and return its
    id, or None when another process inserted it first."""
    try:
        with db.begin() as conn:
            return firings.claim(conn, name, scheduled_for, now, path, sha, run_id)
    except sa.exc.IntegrityError:
        return None


def finish(db: Engine, firing_id: int, result: FiringResult, now: datetime) -> None:
    """Write the outcome of a claimed firing row (once)."""
    with db.begin() as conn:
        firings.finish(conn, firing_id, result.outcome.value, result.error, result.run_id, now)


def record_missed(
    db: Engine, name: str, scheduled_for: datetime, now: datetime, grace_s: int
) -> FiringResult | None:
    """Record that a fire time passed more than the grace period before it could run (the
    scheduler was down); None when another scheduler recorded it already."""
    error = (
        f"fire time {scheduled_for.isoformat(timespec='minutes')} missed by "
        f"{now - scheduled_for} (grace {grace_s}s); the next fire time runs as usual"
    )
    firing_id = claim(db, name, scheduled_for, now, None, "")
    if firing_id is None:
        return None
    result = FiringResult(name, Outcome.MISSED, error=error)
    finish(db, firing_id, result, now)
    log_result(result)
    return result


def resolve_inputs(pattern: str) -> list[str]:
    """The files an input pattern names now: a file, a glob, or a folder (its *.jsonl)."""
    if Path(pattern).is_dir():
        pattern = str(Path(pattern) / "*.jsonl")
    return sorted(p for p in glob.glob(pattern) if Path(p).is_file())


def open_runs(db: Engine, schedule_name: str) -> list[sa.Row]:
    """Runs started by this schedule that have not ended (failed ones included)."""
    with db.connect() as conn:
        return runs.open_of_schedule(conn, schedule_name)


def item_counts(db: Engine, run_id: int) -> dict[str, int]:
    """The run's items by status."""
    with db.connect() as conn:
        return items.counts_by_status(conn, run_id)


def latest_open_run(db: Engine, schedule_name: str, sha: str) -> int | None:
    """The newest open run of this schedule over this content, if any."""
    with db.connect() as conn:
        return runs.latest_open_of_schedule(conn, schedule_name, sha)


def processed_by(db: Engine, job_name: str, sha: str) -> str | None:
    """Why an input with this content needs no new run of this job, or None when it does: a
    completed run of the job, or an open run of it that another schedule or a person started
    (this schedule's own open runs are resumed before new inputs are looked at)."""
    with db.connect() as conn:
        row = runs.best_of_job(conn, job_name, sha)
    if row is None:
        return None
    if row.status == RunStatus.COMPLETED:
        return f"run {row.id} of this job completed the same content"
    return f"run {row.id} of this job is working on the same content ({row.status})"


def _one_line(text: str) -> str:
    lines = text.strip().splitlines() or [""]
    return lines[0] + (f" (+{len(lines) - 1} lines)" if len(lines) > 1 else "")
