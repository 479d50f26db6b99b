"""`batcher ingest`: check an input file and store its items as a new run."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import click

from batcher.cli import cli, db_option, handle_errors, input_option, json_option
from batcher.output import print_json, print_table


@cli.command()
@click.argument("job", type=click.Path(dir_okay=False))
@input_option
@click.option(
    "--skip-invalid", is_flag=True, help="Set bad lines aside in a rejects file and store the rest."
)
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False),
    help="Where --skip-invalid writes bad lines [default state/rejects/run-N-rejects.jsonl].",
)
@db_option
@json_option
@handle_errors
def ingest(job, input_path, skip_invalid, rejects, db, as_json):
    """Check an input file against JOB and store its items as a new run.

    Every bad line is reported as FILE:LINE with the reason. By default an input with any bad
    line is refused whole, so nothing from it can be submitted.

    \b
    Examples:
      batcher ingest jobs/example.toml
      batcher ingest jobs/example.toml --input nightly.jsonl --skip-invalid
    """
    from batcher.plan.ingest import ingest as ingest_input
    from batcher.spec import load_spec
    from batcher.store import open_store

    spec = load_spec(job)
    source = spec.input_file(input_path)
    engine = open_store(db)
    with progress_bar("Ingesting") as progress:
        result = ingest_input(
            engine, spec, source, skip_invalid=skip_invalid, rejects_path=rejects, progress=progress
        )
    if as_json:
        print_json(
            {
                "run": result.run_id,
                "items": result.n_items,
                "rejected": result.n_rejected,
                "rejects_file": result.rejects_path,
                "input": source,
                "input_sha256": result.input_sha256,
            }
        )
        return
    row = {"run": result.run_id, "items": result.n_items, "rejected": result.n_rejected}
    print_table([row], title=f"Ingested {source}")
    if result.rejects_path:
        click.echo(f"Rejected lines and their reasons: {result.rejects_path}")


@contextlib.contextmanager
def progress_bar(what: str) -> Iterator[Callable[[int, int, int], None] | None]:
    """A bar on stderr for a person at a terminal (None for pipes and tests): bytes read of
    the input and items stored, so a million-line ingest does not look stuck."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn(what),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[items]:,} items"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(what, total=None, items=0)

        def update(done: int, total: int, items: int) -> None:
            bar.update(task, completed=done, total=total, items=items)

        yield update
