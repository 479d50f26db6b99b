"""`batcher report` and `batcher export`: what a run spent, saved and answered."""

from __future__ import annotations

import sys

import click

from batcher.cli import cli, db_option, handle_errors
from batcher.errors import UsageError


@cli.command()
@click.argument("run", type=int, required=False)
@click.option(
    "--job", metavar="NAME", help="Report every run of this job (with --since: from then)."
)
@click.option(
    "--since", metavar="DATE", help="Only runs created on or after DATE, e.g. 2026-11-01."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv", "md", "html"]),
    default="table",
    show_default=True,
    help="table for people; json and csv for machines (money as exact strings); md to paste; "
    "html for a self-contained page with charts (needs -o).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to FILE, not stdout.")
@click.option(
    "--wide", is_flag=True, help="table: every column (tokens, providers), wider than 100."
)
@db_option
@handle_errors
def report(run, job, since, fmt, output, wide, db):
    """Show what RUN cost, what it saved against the baseline, and what succeeded.

    Per tier and model: items, success rate, attempts, tokens, cost and cost per success.
    Savings against the baseline (each attempt's input tokens and visible output tokens,
    reasoning excluded, on the job's frontier model at standard rates, no cache) split into
    routing, caching and batch discount, which add up to the total; the effective discount;
    and the share of each cache group's prompt prefix that was billed as cache reads. Without
    RUN, the latest run; with --job and/or --since, every matching run summed, with a line
    for each. A run still in flight is flagged.

    \b
    Examples:
      batcher report                       # the latest run
      batcher report 12 --format json
      batcher report --job tickets --since 2026-11-01 --format md
      batcher report --job tickets --format html -o report.html
    """
    from batcher.report.build import build_report, parse_since, select_runs
    from batcher.report.formats import render_report
    from batcher.store import open_store

    if fmt == "html" and not output:
        raise UsageError("--format html writes a page: add -o FILE, e.g. -o report.html")
    when = parse_since(since) if since else None
    engine = open_store(db)
    runs = select_runs(engine, run, job=job, since=when)
    text = render_report(build_report(engine, runs), fmt, wide=wide)
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
        click.echo(f"Wrote the report to {output}", err=True)
    else:
        click.echo(text, nl=False)


@cli.command()
@click.argument("run", type=int)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv", "parquet"]),
    default="jsonl",
    show_default=True,
    help="parquet needs the optional extra: pip install 'batcher[parquet]'.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write to FILE (required for parquet); jsonl and csv go to stdout without it.",
)
@click.option(
    "--columns",
    metavar="A,B,...",
    help="Only these columns, in this order (metadata keys as metadata.KEY).",
)
@click.option(
    "--with-prompts", is_flag=True, help="Include the system prompt texts (column system)."
)
@db_option
@handle_errors
def export(run, fmt, output, columns, with_prompts, db):
    """Write one row per input item of RUN, in input order.

    Each row holds the item's id, its inputs (the system prompt by name, messages,
    parameters, metadata: one column per key in CSV and Parquet), the final output, its
    status, verdict and parsed answer key, the tier and model of the final attempt, the number of
    attempts, the tokens and the exact cost. Streams from the database, so a run of any size
    exports in little memory; a file is complete or absent, never cut short.

    \b
    Examples:
      batcher export 12 -o results.jsonl
      batcher export 12 --format csv > results.csv
      batcher export 12 --format csv --columns id,metadata.queue,answer_key,cost_usd
      batcher export 12 --format parquet -o results.parquet
    """
    from batcher.report.exports import count_items, export_run, write_export
    from batcher.store import open_store

    if fmt == "parquet" and not output:
        raise UsageError("--format parquet writes a file: add -o FILE, e.g. -o results.parquet")
    engine = open_store(db)
    options = {
        "columns": [c.strip() for c in columns.split(",") if c.strip()] if columns else None,
        "with_prompts": with_prompts,
    }
    if not output:
        write_export(engine, run, sys.stdout.buffer, fmt, **options)
        return
    from rich.console import Console
    from rich.progress import Progress

    stderr = Console(stderr=True)
    with Progress(console=stderr, transient=True, disable=not stderr.is_terminal) as bar:
        task = bar.add_task("exporting", total=count_items(engine, run))
        n = export_run(
            engine,
            run,
            output,
            fmt,
            progress=lambda done: bar.update(task, completed=done),
            **options,
        )
    click.echo(f"Exported {n:,} items of run {run} to {output}", err=True)
