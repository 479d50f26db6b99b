"""The scheduler: fires due schedules, one firing of a schedule at a time, until stopped.

APScheduler 3 keeps the schedules (job store, triggers, next fire times; see
schedules.py), but its own timer loop reads the wall clock in several places, including
the misfire check. `Scheduler.tick(now)` is that loop's one step written against a clock we
pass in: it takes the due jobs from the real job store, works out the fire times each missed
with the real trigger, coalesces them into the latest one, records it as missed when it is
older than the job's grace period, fires it otherwise, and moves the job to its next fire
time. `run()` calls `tick()` with the wall clock; tests call it with a clock they move.

No overlap: a schedule whose previous firing still works is not fired again (the job's
`max_instances`, 1); across processes, the claim rows in `schedule_firing` and the run lease
keep two schedulers from working on the same input (see batcher.firing).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime

from apscheduler.job import Job
from sqlalchemy.engine import Engine

from batcher.schedule.firing import (
    Driver,
    EngineDriver,
    FiringContext,
    FiringResult,
    firing_context,
    record_missed,
)
from batcher.schedule.schedules import Clock, Schedules, utcnow

log = logging.getLogger("batcher.schedule")

POLL_S = 30.0  # re-read the job store this often, so `schedule add` elsewhere is noticed


class Scheduler:
    """Fires the schedules of one state database. `request_stop()` ends `run()` and asks
    every firing's run to stop at a safe point; the runs resume at the next start."""

    def __init__(
        self,
        db: Engine,
        *,
        driver: Driver | None = None,
        clock: Clock = utcnow,
        workers: int = 4,
        poll_s: float = POLL_S,
    ):
        self.db, self.clock, self.poll_s = db, clock, poll_s
        self.driver = driver or EngineDriver()
        self.stop = threading.Event()
        self._wake = threading.Event()
        self.schedules = Schedules(db, clock=clock, on_change=self._wake.set)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="firing")
        self._running: dict[str, list[Future]] = {}
        self._lock = threading.Lock()

    def tick(self, now: datetime | None = None) -> float | None:
        """Fire what is due at `now` (default: the clock); seconds until the next fire time,
        or None when no schedule is active."""
        now = now or self.clock()
        for job in self.schedules.due(now):
            self._process(job, now)
        upcoming = self.schedules.next_fire_time()
        if upcoming is None:
            return None
        return max((upcoming - self.clock()).total_seconds(), 0.0)

    def _process(self, job: Job, now: datetime) -> None:
        fire_times = _fire_times(job, now)
        if not fire_times:
            return
        if job.coalesce:
            if len(fire_times) > 1:
                log.info("schedule=%s %d missed fire times coalesced into one", job.id,
                         len(fire_times))  # fmt: skip
            fire_times = fire_times[-1:]
        for when in fire_times:
            late = (now - when).total_seconds()
            if job.misfire_grace_time is not None and late > job.misfire_grace_time:
                record_missed(self.db, job.id, when, now, job.misfire_grace_time)
            elif not self._submit(job, when):
                log.warning("schedule=%s fire time %s skipped: its previous firing still "
                            "works (no overlap)", job.id, when.isoformat())  # fmt: skip
        self.schedules.set_next_fire(job.id, job.trigger.get_next_fire_time(fire_times[-1], now))

    def _submit(self, job: Job, when: datetime) -> bool:
        with self._lock:
            active = [f for f in self._running.get(job.id, []) if not f.done()]
            if len(active) >= job.max_instances:
                return False
            future = self._pool.submit(self._fire, job, when)
            self._running[job.id] = [*active, future]
        return True

    def _fire(self, job: Job, when: datetime) -> list[FiringResult]:
        ctx = FiringContext(self.db, self.driver, self.stop, self.clock, scheduled_for=when)
        try:
            with firing_context(ctx):
                return job.func(*job.args, **job.kwargs)
        except Exception:  # a bug, not a run failure (those are recorded): log, keep going
            log.exception("schedule=%s firing crashed", job.id)
            return []

    def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until every firing started so far has returned."""
        with self._lock:
            futures = [f for fs in self._running.values() for f in fs]
        for future in futures:
            future.result(timeout)

    def run(self) -> None:
        """Fire schedules as they come due until `stop` is set; then let the firings stop at
        a safe point and return."""
        log.info("scheduler started")
        while not self.stop.is_set():
            try:
                wait = self.tick()
            except Exception:  # e.g. the database restarting: try again, as APScheduler does
                log.exception("scheduler: cannot read the schedules; retrying")
                wait = self.poll_s
            self._wake.wait(self.poll_s if wait is None else min(wait, self.poll_s))
            self._wake.clear()
        log.info("scheduler stopping: waiting for firings to reach a safe point")
        self.close()
        log.info("scheduler stopped")

    def request_stop(self) -> None:
        """Ask `run()` to return (safe from a signal handler): no new firings; running ones
        return at their run's next safe point."""
        self.stop.set()
        self._wake.set()

    def close(self) -> None:
        self.stop.set()
        self._pool.shutdown(wait=True)
        self.schedules.close()


def _fire_times(job: Job, now: datetime) -> list[datetime]:
    """The fire times from the job's next fire time up to `now`, by its trigger."""
    times: list[datetime] = []
    when = job.next_run_time
    while when is not None and when <= now:
        times.append(when)
        when = job.trigger.get_next_fire_time(when, now)
    return times


def run_now(
    db: Engine,
    name: str,
    *,
    reprocess: bool = False,
    driver: Driver | None = None,
    stop: threading.Event | None = None,
    report: Callable[[FiringResult, str | None], None] | None = None,
) -> list[FiringResult]:
    """Fire schedule `name` once, now, in this process (its next fire time is unchanged).

    The same guards as a scheduled firing apply: its open runs are resumed, processed inputs
    skipped (unless `reprocess`), and a run another process drives is left alone.
    `report(result, note)` receives each input's outcome (default: log it). Raises
    UnknownSchedule.
    """
    schedules = Schedules(db)
    try:
        job = schedules.job(name)
    finally:
        schedules.close()
    ctx = FiringContext(db, driver or EngineDriver(), stop or threading.Event())
    if report is not None:
        ctx.report = report  # e.g. print each line for a person instead of logging it
    kwargs = {**job.kwargs, "reprocess": reprocess or job.kwargs.get("reprocess", False)}
    with firing_context(ctx):
        return job.func(*job.args, **kwargs)
