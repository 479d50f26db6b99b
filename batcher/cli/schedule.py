"""`batcher schedule ...` (recurring runs kept in the database) and `batcher scheduler`."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from contextlib import ExitStack, contextmanager

import click

from batcher.cli import EXIT_FAILURE, cli, db_option, handle_errors, json_option
from batcher.cli.connect import sandbox_clients, sandbox_option
from batcher.output import print_json, print_table

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def _fmt_time(value) -> str | None:
    return value.astimezone().strftime("%Y-%m-%d %H:%M %Z") if value else None


def _row(info) -> dict:
    return {
        "name": info.name,
        "trigger": info.trigger,
        "next_fire": "paused" if info.paused else _fmt_time(info.next_fire),
        "last_fired": _fmt_time(info.last_fired_at),
        "outcome": info.last_outcome,
        "run": info.last_run_id,
        "error": info.last_error.splitlines()[0] if info.last_error else None,
    }


def _json_row(info) -> dict:
    return {
        "name": info.name,
        "job": info.job,
        "input": info.input,
        "trigger": info.trigger,
        "paused": info.paused,
        "next_fire": info.next_fire.isoformat() if info.next_fire else None,
        "grace_s": info.grace_s,
        "reprocess": info.reprocess,
        "last_fired_at": info.last_fired_at.isoformat() if info.last_fired_at else None,
        "last_outcome": info.last_outcome,
        "last_run_id": info.last_run_id,
        "last_error": info.last_error,
    }


def _schedules(db):
    from batcher.schedule.schedules import Schedules
    from batcher.store import open_store

    return Schedules(open_store(db))


def _show(info, as_json: bool, title: str) -> None:
    if as_json:
        print_json(_json_row(info))
    else:
        print_table([_row(info)], title=title)


def _setup_logging() -> None:
    """batcher's own lines at INFO on stderr; other libraries only when they warn."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, stream=sys.stderr, force=True)
    logging.getLogger("batcher").setLevel(logging.INFO)


@contextmanager
def _stop_on_signals(stop):
    """SIGTERM (a supervisor) and SIGINT (Ctrl-C) stop cleanly instead of killing."""

    def handler(signum, _frame):
        logging.getLogger("batcher.schedule").info(
            "%s received: stopping at the next safe point", signal.Signals(signum).name
        )
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@cli.group()
def schedule() -> None:
    """Recurring runs of a job, kept in the state database; `batcher scheduler` fires them.

    \b
    Examples:
      batcher schedule add nightly --job jobs/example.toml --input 'in/*.jsonl' \\
          --cron "0 2 * * *" --tz Europe/Berlin
      batcher schedule add sweep --job jobs/example.toml --input drop/ --every 6h
      batcher schedule list
      batcher schedule run-now nightly
      batcher scheduler                  # the daemon, under a process supervisor
    """


@schedule.command("add")
@click.argument("name")
@click.option("--job", "job", required=True, type=click.Path(dir_okay=False), help="Job spec.")
@click.option(
    "--input",
    "input_glob",
    metavar="PATH_OR_GLOB",
    help="Input file or glob, resolved at each firing (a folder means every *.jsonl in it) "
    "[default: the spec's schedule.input, else its input].",
)
@click.option("--cron", metavar="EXPR", help='Crontab line MIN HOUR DOM MON DOW ("0 2 * * *").')
@click.option("--every", metavar="DURATION", help="Fixed interval: 30m, 6h, 1h30m, 1d.")
@click.option("--tz", default=None, help="Time zone of --cron [default: spec's, else UTC].")
@click.option(
    "--grace",
    default="6h",
    show_default=True,
    metavar="DURATION",
    help="A fire time missed by downtime still runs (once) if the scheduler is back within this.",
)
@click.option("--reprocess", is_flag=True, help="Run inputs again even when already processed.")
@db_option
@json_option
@handle_errors
def add(name, job, input_glob, cron, every, tz, grace, reprocess, db, as_json):
    """Add schedule NAME: run JOB over --input on a --cron or --every timetable.

    Each firing resolves the input glob then, skips files whose content this job already
    processed (unless --reprocess), and runs the rest to the end. A run left open by an
    earlier firing (crash, stop, failure) is resumed first, never started twice.

    \b
    Examples:
      batcher schedule add nightly --job jobs/example.toml --input 'in/*.jsonl' --cron "0 2 * * *"
      batcher schedule add berlin --job jobs/example.toml --cron "30 1 * * 1-5" --tz Europe/Berlin
      batcher schedule add sweep --job jobs/example.toml --input drop/ --every 6h --grace 1h
    """
    from pathlib import Path

    from batcher.schedule.schedules import parse_every
    from batcher.spec import load_spec

    spec = load_spec(job)
    planned = spec.schedule
    if cron is None and every is None and planned is not None:
        cron, every = planned.cron, planned.every
    if input_glob is None and planned is not None and planned.input:
        input_glob = str(Path(spec.path).parent / planned.input)
    input_glob = input_glob or spec.input_file()
    tz = tz or (planned.tz if planned is not None else "UTC")
    schedules = _schedules(db)
    try:
        info = schedules.add(
            name, job=job, input=input_glob, cron=cron, every=every, tz=tz,
            grace=parse_every(grace), reprocess=reprocess,
        )  # fmt: skip
    finally:
        schedules.close()
    _show(info, as_json, f"Added schedule {name}")


@schedule.command("list")
@db_option
@json_option
@handle_errors
def list_(db, as_json):
    """Show every schedule: its timetable, next fire time, and what its last firing did.

    \b
    Examples:
      batcher schedule list
      batcher schedule list --json
    """
    schedules = _schedules(db)
    try:
        infos = schedules.list()
    finally:
        schedules.close()
    if as_json:
        print_json([_json_row(i) for i in infos])
    else:
        print_table([_row(i) for i in infos], title="Schedules")


def _change(verb: str, help_text: str):
    @schedule.command(verb, help=help_text)
    @click.argument("name")
    @db_option
    @json_option
    @handle_errors
    def command(name, db, as_json):
        schedules = _schedules(db)
        try:
            if verb == "remove":
                schedules.remove(name)
                info = None
            else:
                info = getattr(schedules, verb)(name)
        finally:
            schedules.close()
        if info is None:
            click.echo(f"Removed schedule {name} (its firings and runs stay in the database).")
        else:
            _show(info, as_json, f"{verb.capitalize()}d schedule {name}")

    return command


_change(
    "pause",
    "Stop firing schedule NAME until `resume` (a firing in progress goes on).\n\n"
    "\b\nExamples:\n  batcher schedule pause nightly",
)
_change(
    "resume",
    "Fire schedule NAME again, from its next fire time after now; fire times missed while "
    "paused do not run.\n\n\b\nExamples:\n  batcher schedule resume nightly",
)
_change(
    "remove",
    "Delete schedule NAME. Its firings and runs stay in the database.\n\n"
    "\b\nExamples:\n  batcher schedule remove nightly",
)


@schedule.command("run-now")
@click.argument("name")
@click.option("--reprocess", is_flag=True, help="Run inputs again even when already processed.")
@sandbox_option
@db_option
@json_option
@handle_errors
def run_now(name, reprocess, sandbox, db, as_json):
    """Fire schedule NAME once, now, in this process, and wait until its runs end.

    Prints one line per input (schedule, input, run, outcome, items) on stdout, progress on
    stderr. Exits 1 when an outcome is not completed or nothing_new, or items failed.
    Ctrl-C or SIGTERM stops at a safe point; the run resumes at the schedule's next firing.

    \b
    Examples:
      batcher schedule run-now nightly
      batcher schedule run-now nightly --reprocess
    """
    from batcher.schedule.daemon import run_now as fire_now
    from batcher.schedule.firing import OK_OUTCOMES
    from batcher.store import open_store

    _setup_logging()
    stop = threading.Event()

    def echo(result, note):
        if not as_json:
            click.echo(result.log_line() + (f" ({note})" if note else ""))

    with ExitStack() as stack, _stop_on_signals(stop.set):
        driver = _driver(stack, sandbox)
        results = fire_now(
            open_store(db), name, reprocess=reprocess, driver=driver, stop=stop, report=echo
        )
    if as_json:
        print_json([{**r.__dict__, "outcome": r.outcome.value} for r in results])
    # Like `batcher run`: 1 when anything did not end well, failed items included.
    if any(r.outcome not in OK_OUTCOMES or r.items.get("failed") for r in results):
        sys.exit(EXIT_FAILURE)


def _check_schedule_keys(engine, clients) -> None:
    """Exit 2 before the daemon starts when an active schedule's job lacks a provider key."""
    from batcher.run.preflight import check_keys
    from batcher.schedule.schedules import Schedules
    from batcher.spec import load_spec

    schedules = Schedules(engine)
    try:
        for info in schedules.list():
            if not info.paused:
                then = f"schedule {info.name} would fail at every firing"
                check_keys(load_spec(info.job), clients, then=then)
    finally:
        schedules.close()


@cli.command()
@click.option("--workers", default=4, show_default=True, help="Schedules that may fire at once.")
@click.option(
    "--poll",
    default=30.0,
    show_default=True,
    help="Seconds between looks at the database for schedules added or changed elsewhere.",
)
@click.option(
    "--pool",
    is_flag=True,
    help="Plan each firing's run and leave it to `batcher worker` processes.",
)
@sandbox_option
@db_option
@handle_errors
def scheduler(workers, poll, pool, sandbox, db):
    """Fire the schedules of the state database, in the foreground, until stopped.

    Meant for a process supervisor (systemd, supervisord, a container). Logs one line per
    firing and input to stderr: schedule, input, run id, outcome. SIGTERM or Ctrl-C stops at
    a safe point with exit code 0; runs in flight resume at the next start. Several
    schedulers may share one PostgreSQL database: an input is worked on by one of them.

    \b
    Examples:
      batcher scheduler
      BATCHER_DB=postgresql+psycopg://batcher@db/batcher batcher scheduler --workers 8
      batcher scheduler --pool      # runs go to the pool: see `batcher worker`
    """
    from batcher.schedule.daemon import Scheduler
    from batcher.schedule.firing import PoolDriver
    from batcher.store import open_store

    engine = open_store(db)
    with ExitStack() as stack:
        driver = PoolDriver() if pool else _driver(stack, sandbox)
        _check_schedule_keys(engine, driver.clients)
        _setup_logging()
        daemon = Scheduler(engine, driver=driver, workers=workers, poll_s=poll)
        with _stop_on_signals(daemon.request_stop):
            daemon.run()


def _driver(stack: ExitStack, sandbox: bool):
    """How firings run: on the providers of the environment, or with --sandbox on the
    sandbox (quick polls, as `batcher run --sandbox`)."""
    from batcher.run.poll import SANDBOX_POLL_S
    from batcher.schedule.firing import EngineDriver

    if not sandbox:
        return EngineDriver()
    return EngineDriver(clients=sandbox_clients(stack), poll=SANDBOX_POLL_S)
