"""`batcher worker` and `batcher workers`: the worker pool on a shared state database."""

from __future__ import annotations

import click

from batcher.cli import cli, db_option, handle_errors, json_option
from batcher.output import print_json, print_table


@cli.command()
@click.option(
    "--runs",
    "slots",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Runs this worker drives at once.",
)
@click.option(
    "--ttl",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0.3),
    metavar="S",
    help="Lease on a run, renewed every third of it; a dead worker's run is taken over after it.",
)
@click.option(
    "--poll",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    metavar="S",
    help="Seconds between looks for open runs when idle.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.01),
    metavar="S",
    help="Seconds between polls of a run's batches (default: each spec's polling).",
)
@db_option
@handle_errors
def worker(slots, ttl, poll, poll_interval, db):
    """Drive the open runs of the state database, in the foreground, until stopped.

    Any number of workers, on any hosts, may share one PostgreSQL database: each takes an
    open run nobody drives (left by `batcher run --detach`, `batcher submit`, `batcher
    scheduler --pool`, or a process that stopped) and drives it like `batcher resume`. A
    worker that dies stops renewing its lease; after --ttl seconds another worker takes its
    runs over, adopting what it had submitted. SIGTERM or Ctrl-C stops at a safe point; the
    runs stay open for the other workers.

    \b
    Examples:
      BATCHER_DB=postgresql+psycopg://batcher@db/batcher batcher worker
      batcher worker --runs 4 --ttl 30
    """
    from batcher.cli.schedule import _setup_logging, _stop_on_signals
    from batcher.run.worker import Worker, WorkerSettings
    from batcher.store import open_store

    _setup_logging()
    settings = WorkerSettings(ttl_s=ttl, poll_s=poll, slots=slots, run_poll_s=poll_interval)
    pool = Worker(open_store(db), settings)
    with _stop_on_signals(pool.stop.set):
        pool.run()


@cli.command()
@db_option
@json_option
@handle_errors
def workers(db, as_json):
    """Show the worker pool: each worker and the run it holds, since when, last heartbeat.

    Runs held by a driver outside the pool (`batcher run`, `resume`) are listed too. A lease
    shown `expired` is about to be taken over by a live worker.

    \b
    Examples:
      batcher workers
      batcher workers --json
    """
    from batcher.store import open_store
    from batcher.store.workers import pool

    rows = pool(open_store(db))
    if as_json:
        print_json(rows)
        return
    print_table(
        [
            {
                "owner": r["owner"],
                "kind": r["kind"],
                "run": "" if r["run"] is None else f"{r['run']} ({r['run_status']})",
                "since": _time(r["since"]),
                "heartbeat": _time(r["heartbeat"]),
                "lease": "expired" if r["expired"] else _time(r["lease_expires"]),
            }
            for r in rows
        ],
        title="Workers",
    )


def _time(value) -> str:  # noqa: ANN001 - a datetime or None
    return f"{value:%Y-%m-%d %H:%M:%S}" if value is not None else ""
