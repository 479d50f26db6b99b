"""`batcher tune`: learn the job's cheapest routing policy that meets its accuracy target."""

from __future__ import annotations

import os
from pathlib import Path

import click

from batcher.cli import cli, db_option, handle_errors, json_option
from batcher.output import print_json, print_table


@cli.command()
@click.argument("job", type=click.Path(dir_okay=False))
@click.option(
    "--gold",
    type=click.Path(dir_okay=False),
    help="Gold answers: CSV of `id,answer` lines (a header allowed) or JSONL of "
    '{"id": ..., "answer": ...}. Default: the frontier tier\'s answers are the truth.',
)
@click.option(
    "--target-accuracy",
    type=click.FloatRange(0, 1, min_open=True),
    help="Accuracy the policy must reach [default: [routing.tune] target_accuracy, else the "
    "frontier tier's own].",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="Policy file to write [default: policies/JOBNAME.json beside the spec].",
)
@db_option
@json_option
@handle_errors
def tune(job, gold, target_accuracy, out, db, as_json):
    """Choose the cheapest routing policy for JOB from its stored runs, and write it.

    Evidence: items whose frontier answer was asked for its own sake (a calibration sample,
    an all-frontier run) and, when given, a gold answer. The family: a fixed tier; a tier
    whose valid answer stands, else the frontier (validator); a tier whose answer stands when
    one or two second opinions agree (agreement cascade); and a logistic scorer over the
    answer's signals with a threshold (needs pip install 'batcher[tune]'). Accuracy is
    cross-validated (seeded folds, [routing.tune]); cost is the stored, billed cost of each
    tier's attempts. Prints every candidate, cheapest first.

    Use the policy with `policy = "file:policies/NAME.json"` in the spec's [routing].

    \b
    Examples:
      batcher tune jobs/tickets.toml
      batcher tune jobs/tickets.toml --gold gold.csv --target-accuracy 0.97
    """
    from batcher.spec import load_spec
    from batcher.store import open_store
    from batcher.tune.fit import read_gold
    from batcher.tune.fit import tune as tune_job
    from batcher.tune.policy_file import write_policy

    spec = load_spec(job)
    answers = read_gold(gold) if gold else None
    result = tune_job(open_store(db), spec, gold=answers, target=target_accuracy)
    folder = Path(job).parent
    path = Path(out) if out else folder / "policies" / f"{spec.name}.json"
    document = result.document()
    write_policy(path, document)
    if as_json:
        print_json({**document, "path": str(path)})
        return
    title = (
        f"{spec.name}: policies escalating to {spec.frontier_tier}, cheapest first; "
        f"target accuracy {float(result.target):.1%}, met from {float(result.bar):.1%} "
        "([routing.tune] tolerance_se)"
    )
    print_table(result.rows(), title=title)
    for note in result.notes:
        click.echo(f"note: {note}")
    chosen = result.chosen.policy.describe()
    click.echo(f"chosen: {chosen}; wrote {path}")
    click.echo(f'use it: policy = "file:{os.path.relpath(path, folder)}" in [routing]')
