"""`batcher status [RUN]`: the recent runs, or one run with its batches, in tables that fit a
100-column terminal (everything, exact, with --json; more columns with --wide)."""

from __future__ import annotations

import click

from batcher.cli import cli, db_option, handle_errors, json_option
from batcher.money.amounts import fmt_money
from batcher.output import print_json, print_table

wide_option = click.option("--wide", is_flag=True, help="Every column (wider than 100).")


@cli.command()
@click.argument("run_id", metavar="[RUN]", type=int, required=False)
@wide_option
@db_option
@json_option
@handle_errors
def status(run_id, wide, db, as_json):
    """Show the recent runs, or one RUN with its batches and their provider batch ids.

    \b
    Examples:
      batcher status
      batcher status 12
      batcher status 12 --json
    """
    from batcher.run.outcome import quick_status

    data = quick_status(db, run_id)  # a SQLite file, read without importing the engine
    if data is None:
        from batcher.run.engine import run_status
        from batcher.store import open_store

        data = run_status(open_store(db), run_id)
    if as_json:
        print_json(data)
    elif run_id is None:
        print_table([_run_row(r, wide) for r in data], title="Runs", wide=wide)
    else:
        _show_run(run_id, data, wide)


def _run_row(run: dict, wide: bool) -> dict:
    row = {
        "run": run["run"],
        "job": run["job"],
        "status": run["status"],
        "succeeded": f"{run['succeeded']}/{run['items']}",
        "failed": run["failed"],
        "cost": fmt_money(run["cost_usd"]),
        "created": run["created"],
    }
    return {**row, "cost": str(run["cost_usd"])} if wide else row


def _show_run(run_id: int, data: dict, wide: bool) -> None:
    batches = data["batches"]
    counts = ", ".join(
        f"{data[s]} {s}"
        for s in ("succeeded", "failed", "cancelled", "in_flight", "queued", "pending")
        if data[s]
    )
    rows = [
        ("status", data["status"]),
        ("items", f"{data['items']}: {counts}" if counts else str(data["items"])),
        ("cost", f"{fmt_money(data['cost_usd'])} (baseline {fmt_money(data['baseline_usd'])})"),
        ("options", _describe_options(data["options"])),
    ]
    if data["lease_owner"]:
        rows.append(("driven by", data["lease_owner"]))
    print_table(
        [{"": k, "value": v} for k, v in rows], title=f"Run {run_id}", columns=["", "value"]
    )
    if data["message"]:
        click.echo(f"{data['status']}: {data['message']}")
    print_table([_batch_row(b, wide) for b in batches], title="Batches", wide=wide)
    if not wide:
        for batch in batches:
            if batch["provider_batch_id"]:
                click.echo(
                    f"batch {batch['id']} is {batch['provider_batch_id']} at {batch['provider']}"
                )
    for batch in batches:
        if batch["error"]:
            click.echo(f"batch {batch['id']}: {batch['error']}")


def _describe_options(options: dict) -> str:
    """The run's stored options as a person would type them ("defaults" when none)."""
    words = []
    if not options["reuse"]:
        words.append("--no-reuse")
    if options["poll_interval_s"] is not None:
        words.append(f"--poll-interval {options['poll_interval_s']:g}")
    if options["sandbox"]:
        words.append("--sandbox")
    return " ".join(words) or "defaults"


SHORT = {"succeeded": "ok", "errored": "err", "expired": "exp", "cancelled": "cxl"}


def _batch_row(batch: dict, wide: bool) -> dict:
    """A batch for people: our status and short result counts; --wide adds the provider's
    status word and batch id, and the provider name before the model."""
    results = ", ".join(
        f"{batch[f'n_{name}']} {SHORT[name] if not wide else name}"
        for name in SHORT
        if batch[f"n_{name}"]
    )
    row = {
        "batch": batch["id"],
        "round": batch["round"],
        "model": batch["model"],
        "status": batch["status"],
        "requests": batch["n_requests"],
        "results": results if batch["status"] == "reconciled" else "",
    }
    if wide:
        row["model"] = f"{batch['provider']}:{batch['model']}"
        row["provider status"] = batch["raw_status"] or ""
        row["provider batch id"] = batch["provider_batch_id"] or ""
    return row
