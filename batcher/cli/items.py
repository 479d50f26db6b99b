"""`batcher items` and `batcher show`: a run's items, and everything about one of them."""

from __future__ import annotations

import click

from batcher.cli import cli, db_option, handle_errors, json_option
from batcher.money.amounts import fmt_money
from batcher.output import print_json, print_table
from batcher.store.states import ItemStatus

ANSWER_WIDTH = 40


def shorten(text: str | None, width: int = ANSWER_WIDTH) -> str:
    """One line of at most `width` characters, cut at a word boundary with '…'."""
    if not text:
        return ""
    line = " ".join(text.split())
    if len(line) <= width:
        return line
    cut = line[: width - 1].rsplit(" ", 1)[0] if " " in line[: width - 1] else line[: width - 1]
    return cut + "…"


@cli.command()
@click.argument("run_id", metavar="RUN", type=int)
@click.option(
    "--status", type=click.Choice([s.value for s in ItemStatus]), help="Only items in this status."
)
@click.option("--tier", metavar="T", help="Only items whose last attempt ran on tier T.")
@db_option
@json_option
@handle_errors
def items(run_id, status, tier, db, as_json):
    """List the items of RUN in input order: tier, status, attempts, cost and answer.

    `batcher show RUN ITEM` then shows every attempt of one of them.

    \b
    Examples:
      batcher items 12 --status failed
      batcher items 12 --tier frontier --json
    """
    from batcher.store import open_store
    from batcher.store.views import list_items

    rows = list_items(open_store(db), run_id, status=status, tier=tier)
    if as_json:
        print_json(rows)
        return
    table = [
        {**row, "cost": fmt_money(row["cost_usd"]), "answer": shorten(row["output"])}
        for row in rows
    ]
    columns = ["id", "line", "tier", "status", "attempts", "cost", "answer"]
    print_table(table, title=f"Run {run_id}: {len(rows)} items", columns=columns)


@cli.command()
@click.argument("run_id", metavar="RUN", type=int)
@click.argument("item_id", metavar="ITEM")
@db_option
@json_option
@handle_errors
def show(run_id, item_id, db, as_json):
    """Show item ITEM of RUN (its id in the input): routing, status, and every attempt with
    tier, model, batch, stop reason, verdict, cost and the answer text.

    \b
    Examples:
      batcher show 12 TCK-100001
      batcher show 12 17 --json
    """
    from batcher.store import open_store
    from batcher.store.views import item_detail

    item = item_detail(open_store(db), run_id, item_id)
    if as_json:
        print_json(item)
        return
    fields = ("status", "tier", "route_reason", "cache_group", "line")
    rows = [{"": key, "value": item[key]} for key in fields if item[key] is not None]
    print_table(rows, title=f"Run {run_id}, item {item_id}", columns=["", "value"])
    attempts = [
        {
            "#": a["seq"],
            "model": a["model"],
            "batch": a["batch"] or "",
            "status": a["status"],
            "stop": a["stop_reason"] or "",
            "verdict": shorten(a["verdict"] or a["error"], 30),
            "cost": fmt_money(a["cost_usd"]),
        }
        for a in item["attempts"]
    ]
    print_table(attempts, title="Attempts")
    for a in item["attempts"]:
        click.echo(f"attempt {a['seq']} ({a['tier']}) answered: {a['output'] or '(no answer)'}")
