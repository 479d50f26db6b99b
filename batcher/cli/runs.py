"""`batcher runs prune`: remove runs nobody needs any more (never-sent plans, old runs)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import click

from batcher.cli import cli, db_option, handle_errors, json_option
from batcher.errors import UsageError
from batcher.output import print_json, print_table
from batcher.store.states import RunStatus

UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """'30d', '12h', '90m', '2w' -> timedelta; UsageError naming the option otherwise."""
    match = re.fullmatch(r"(\d+)([mhdw])", text.strip())
    if not match:
        raise UsageError(
            f"--older-than {text!r}: write a number and a unit, e.g. 30d, 12h, 90m, 2w"
        )
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


@cli.group()
def runs() -> None:
    """Manage stored runs (see `batcher status` for the list)."""


@runs.command()
@click.option(
    "--older-than",
    metavar="AGE",
    help="Only runs created more than AGE ago: 30d, 12h, 90m, 2w [default: any age].",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in RunStatus]),
    help="Only runs in this status; repeat for several [default: created and planned, the "
    "runs that never sent anything].",
)
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@db_option
@json_option
@handle_errors
def prune(older_than, statuses, dry_run, db, as_json):
    """Remove runs with their items, attempts, batches and batch files.

    A run whose batches the provider may still be working on is never removed: cancel it
    first (`batcher cancel RUN`). Reports and exports of removed runs are gone with them.

    \b
    Examples:
      batcher runs prune --dry-run
      batcher runs prune --status failed --status cancelled --older-than 30d
    """
    from batcher.store import open_store
    from batcher.store.runs import delete_runs, find_runs, runs_at_provider

    engine = open_store(db)
    before = datetime.now(UTC) - parse_age(older_than) if older_than else None
    chosen = find_runs(
        engine, before=before, statuses=statuses or (RunStatus.CREATED, RunStatus.PLANNED)
    )
    busy = runs_at_provider(engine, [r["run"] for r in chosen])
    doomed = [r for r in chosen if r["run"] not in busy]
    if not dry_run:
        delete_runs(engine, [r["run"] for r in doomed])
    if as_json:
        print_json({"removed": [] if dry_run else doomed, "would_remove": doomed if dry_run else [],
                    "kept_at_provider": sorted(busy)})  # fmt: skip
        return
    rows = [{**r, "created": f"{r['created']:%Y-%m-%d %H:%M}"} for r in doomed]
    print_table(rows, title="Would remove" if dry_run else "Removed")
    for run_id in sorted(busy):
        click.echo(f"kept run {run_id}: batches still at the provider (`batcher cancel {run_id}`)")
