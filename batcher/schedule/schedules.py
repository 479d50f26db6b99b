"""Schedules: recurring runs of a job over an input glob, kept in the state database.

A schedule is an APScheduler 3 job in APScheduler's SQLAlchemy job store (table
`apscheduler_jobs`) on the same engine as the rest of the state, so schedules survive restarts
and every scheduler process that opens the database sees the same ones. The stored job calls
`batcher.schedule.firing:fire(schedule_name, db_url, job=SPEC_PATH, input=GLOB, reprocess=BOOL)`:
plain strings only, never an engine or an SDK client, and the URL without its password
(secrets come from the environment, e.g. PGPASSWORD).

`Schedules` manages them (add, list, pause, resume, remove) with APScheduler's own job
management; `batcher.schedule.daemon.Scheduler` decides when they are due and fires them. Every
time computation goes through the `clock` given here, so tests can move time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from apscheduler.job import Job
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.engine import Engine

from batcher.errors import UsageError
from batcher.spec import load_spec
from batcher.store import firings

FIRE_FUNC = "batcher.schedule.firing:fire"  # stored in the job store: keep this name importable
DEFAULT_GRACE = timedelta(hours=6)
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_EVERY_RE = re.compile(r"(\d+)([dhms])")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun"]

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UnknownSchedule(UsageError):
    def __init__(self, name: str):
        super().__init__(f"no schedule named {name!r}; `batcher schedule list` shows them")


@dataclass
class ScheduleInfo:
    """A schedule as `schedule list` shows it, with what its latest firing did."""

    name: str
    job: str
    input: str
    trigger: str
    next_fire: datetime | None  # None while paused
    grace_s: int | None
    reprocess: bool
    last_fired_at: datetime | None = None
    last_outcome: str | None = None  # "running" while a firing works on it
    last_run_id: int | None = None
    last_error: str | None = None

    @property
    def paused(self) -> bool:
        return self.next_fire is None


def parse_every(text: str) -> timedelta:
    """'6h', '30m', '1h30m', '1d', '90s' -> timedelta. Raises UsageError."""
    parts = _EVERY_RE.findall(text.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != text.strip().lower():
        raise UsageError(f"--every {text!r}: write a duration like 30m, 6h, 1h30m or 1d")
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds < 1:
        raise UsageError(f"--every {text!r}: the interval must be at least 1s")
    return timedelta(seconds=seconds)


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UsageError(f"--tz {tz!r}: not a time zone; use a name like Europe/Berlin") from exc


def _crontab_weekdays(field: str) -> str:
    """Crontab weekday numbers (0 and 7 = Sunday) as day names. APScheduler 3 reads numbers
    with 0 = Monday, so "1-5" would silently mean Tuesday to Saturday."""

    def name(number: str) -> str:
        if not number.isdigit() or int(number) > 7:
            raise ValueError(f"day of week {number!r} is not 0-7")
        return _DAY_NAMES[int(number)]

    out = []
    for token in field.split(","):
        body, slash, step = token.partition("/")
        if not any(ch.isdigit() for ch in body):
            out.append(token)  # "*", "*/2", "mon-fri"
            continue
        if slash:
            raise ValueError(f"day of week {token!r}: write a list of days instead of a step")
        first, dash, last = body.partition("-")
        if not dash:
            out.append(name(first))
        elif first == "0" or last == "7":  # Sunday at either end: split it off the range
            lo, hi = max(int(first), 1), min(int(last), 6)
            out.append("sun")
            if lo <= hi:
                out.append(f"{name(str(lo))}-{name(str(hi))}" if lo < hi else name(str(lo)))
        else:
            out.append(f"{name(first)}-{name(last)}")
    return ",".join(out)


def make_trigger(*, cron: str | None, every: str | None, tz: str, now: datetime) -> BaseTrigger:
    """A CronTrigger for a crontab expression or an IntervalTrigger for a duration."""
    if (cron is None) == (every is None):
        raise UsageError("give exactly one of --cron EXPR or --every DURATION")
    zone = _zone(tz)
    if every is not None:
        interval = parse_every(every)
        # The first firing comes one interval after the schedule is added, as in cron's spirit
        # of "not right now"; `run-now` is there for an immediate one.
        return IntervalTrigger(seconds=int(interval.total_seconds()), start_date=now + interval,
                               timezone=zone)  # fmt: skip
    fields = cron.split()
    try:
        if len(fields) != 5:
            raise ValueError(f"{len(fields)} fields; a crontab line has 5: MIN HOUR DOM MON DOW")
        minute, hour, day, month, weekday = fields
        return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                           day_of_week=_crontab_weekdays(weekday), timezone=zone)  # fmt: skip
    except ValueError as exc:
        raise UsageError(f'--cron "{cron}": {exc} (example: "0 2 * * *" for 02:00 daily)') from exc


def describe_trigger(trigger: BaseTrigger) -> str:
    """'0 2 * * * Europe/Berlin' for cron, 'every 6h' for an interval."""
    if isinstance(trigger, CronTrigger):
        f = {field.name: str(field) for field in trigger.fields}
        expr = f"{f['minute']} {f['hour']} {f['day']} {f['month']} {f['day_of_week']}"
        return f"{expr} {trigger.timezone}"
    if isinstance(trigger, IntervalTrigger):
        return f"every {format_duration(trigger.interval)}"
    return str(trigger)


def format_duration(delta: timedelta) -> str:
    """The inverse of parse_every: timedelta(hours=1, minutes=30) -> '1h30m'."""
    seconds, parts = int(delta.total_seconds()), []
    for unit, size in _UNIT_SECONDS.items():
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


def storable_url(db: Engine) -> str:
    """The database URL to keep in the job store: absolute for SQLite, never a password."""
    url = db.url
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        url = url.set(database=str(Path(url.database).resolve()))
    bare = sa.engine.URL.create(  # URL.set(password=None) would keep the password
        url.drivername, url.username, None, url.host, url.port, url.database, url.query
    )
    return bare.render_as_string(hide_password=False)


class _JobStore(SQLAlchemyJobStore):
    def shutdown(self) -> None:
        """Keep the engine: it belongs to whoever opened the store, not to the job store."""


class _Manager(BaseScheduler):
    """APScheduler's job management (add, modify, pause, remove) over the job store, without
    its timer loop: `batcher.schedule.daemon.Scheduler` decides when jobs are due."""

    def __init__(self, store: _JobStore, on_change: Callable[[], None]):
        super().__init__(
            jobstores={"default": store},
            executors={"default": {"type": "debug"}},  # never used: no job runs through it
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        self._on_change = on_change

    def wakeup(self) -> None:
        """APScheduler calls this after a change in this process: tell the scheduler loop."""
        self._on_change()

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)


class Schedules:
    """The schedules kept in one state database. `on_change` is called after a change made
    through this object (add, pause, resume, a fire time moved)."""

    def __init__(
        self, db: Engine, *, clock: Clock = utcnow, on_change: Callable[[], None] | None = None
    ):
        self.db, self.clock = db, clock
        self._store = _JobStore(engine=db)
        self._manager = _Manager(self._store, on_change or (lambda: None))
        # Started, so that changes go straight to the store (and reach `on_change`); its
        # `_process_jobs` is never called: the clock-driven Scheduler.tick does that work.
        self._manager.start()

    def close(self) -> None:
        self._manager.shutdown(wait=False)

    def add(
        self,
        name: str,
        *,
        job: str,
        input: str,
        cron: str | None = None,
        every: str | None = None,
        tz: str = "UTC",
        grace: timedelta | None = DEFAULT_GRACE,
        reprocess: bool = False,
    ) -> ScheduleInfo:
        """Add a schedule. Raises UsageError on a bad name, spec, trigger, or a name in use."""
        if not NAME_RE.fullmatch(name):
            raise UsageError(
                f"schedule name {name!r}: use letters, digits, '.', '_' or '-' (at most 100)"
            )
        spec_path = str(Path(job).resolve())
        load_spec(spec_path)  # refuse a broken spec now rather than at 02:00
        trigger = make_trigger(cron=cron, every=every, tz=tz, now=self.clock())
        try:
            self._manager.add_job(
                FIRE_FUNC,
                trigger=trigger,
                args=(name, storable_url(self.db)),
                kwargs={"job": spec_path, "input": _absolute_glob(input), "reprocess": reprocess},
                id=name,
                name=name,
                misfire_grace_time=int(grace.total_seconds()) if grace is not None else None,
                next_run_time=trigger.get_next_fire_time(None, self.clock()),
            )
        except ConflictingIdError:
            raise UsageError(
                f"a schedule named {name!r} exists; `batcher schedule remove {name}` first, "
                "or pick another name"
            ) from None
        return self.get(name)

    def job(self, name: str) -> Job:
        job = self._manager.get_job(name)
        if job is None:
            raise UnknownSchedule(name)
        return job

    def get(self, name: str) -> ScheduleInfo:
        return self._info(self.job(name))

    def list(self) -> list[ScheduleInfo]:
        """Every schedule, by name."""
        return sorted((self._info(j) for j in self._manager.get_jobs()), key=lambda s: s.name)

    def remove(self, name: str) -> None:
        """Remove a schedule. Its firings and runs stay in the database."""
        try:
            self._manager.remove_job(name)
        except JobLookupError:
            raise UnknownSchedule(name) from None

    def pause(self, name: str) -> ScheduleInfo:
        """Stop firing until `resume`; a firing in progress goes on."""
        self.job(name)
        self._manager.pause_job(name)
        return self.get(name)

    def resume(self, name: str) -> ScheduleInfo:
        """Fire again from the next fire time after now; fire times while paused are skipped."""
        job = self.job(name)
        next_fire = job.trigger.get_next_fire_time(None, self.clock())
        self._manager.modify_job(name, next_run_time=next_fire)
        return self.get(name)

    def due(self, now: datetime) -> list[Job]:
        """The jobs whose next fire time is at or before `now` (paused ones never are)."""
        return self._store.get_due_jobs(now)

    def set_next_fire(self, name: str, when: datetime | None) -> None:
        """Move a schedule on after a firing; a trigger with no next time removes it."""
        try:
            if when is None:
                self._manager.remove_job(name)
            else:
                self._manager.modify_job(name, next_run_time=when)
        except JobLookupError:
            pass  # removed meanwhile (e.g. `schedule remove` in another process)

    def next_fire_time(self) -> datetime | None:
        """The earliest next fire time over all schedules."""
        return self._store.get_next_run_time()

    def _info(self, job: Job) -> ScheduleInfo:
        info = ScheduleInfo(
            name=job.id,
            job=job.kwargs["job"],
            input=job.kwargs["input"],
            trigger=describe_trigger(job.trigger),
            next_fire=job.next_run_time,
            grace_s=job.misfire_grace_time,
            reprocess=bool(job.kwargs.get("reprocess")),
        )
        last = last_firing(self.db, job.id)
        if last is not None:
            info.last_fired_at = _aware(last.fired_at)
            info.last_outcome = last.outcome or "running"
            info.last_run_id, info.last_error = last.run_id, last.error
        return info


def last_firing(db: Engine, name: str) -> sa.Row | None:
    """The latest firing row of schedule `name`, or None."""
    with db.connect() as conn:
        return firings.latest(conn, name)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without a zone; they were written in UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _absolute_glob(pattern: str) -> str:
    """The glob anchored at the current folder, so the scheduler can run from anywhere."""
    path = Path(pattern).expanduser()
    return str(path if path.is_absolute() else Path.cwd() / path)
