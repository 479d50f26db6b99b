"""The `batcher` command line: parse options, call one library function, print the result.

Set BATCHER_DEBUG=1 to see the full traceback of an error instead of the one-line message.

Commands import the library inside their bodies, on purpose: the run engine with SQLAlchemy,
the price table and the SDKs takes about 1.5 s to import on this project's 2-core machine
(`python -X importtime -c "import batcher.run.engine"`), and `batcher --help` or a command's
`--help` should not wait for it. Inside the library, imports are at the top of each module,
except the provider SDKs and pyarrow (heavy, and optional extras).
"""

from __future__ import annotations

import os
import sys
from functools import wraps

import click

from batcher import __version__
from batcher.errors import BatcherError
from batcher.output import print_json, print_table  # noqa: F401 - re-exported for commands

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def handle_errors(command):
    """Turn a library error into one line on stderr and its exit code."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BatcherError as exc:
            if os.environ.get("BATCHER_DEBUG"):
                raise
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper


db_option = click.option(
    "--db",
    envvar="BATCHER_DB",
    metavar="URL",
    help="State database: a SQLAlchemy URL or a SQLite path "
    "[env BATCHER_DB; default state/batcher.db].",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
input_option = click.option(
    "--input",
    "input_path",
    type=click.Path(dir_okay=False),
    help="Input JSONL (default: the spec's `input`).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="batcher")
def cli() -> None:
    """Run offline LLM workloads through the providers' Batch APIs for the least money per
    successful answer.

    A job spec (TOML, see jobs/example.toml) names the model tiers, the routing, the
    validation and the budget; an input JSONL holds one item a line. batcher routes each item
    to the cheapest tier that can answer it, groups items that share a system prompt so the
    provider's prompt cache is reused, submits batches, reconciles every result and every cent
    into a database, escalates what failed, and reports what was spent and saved.

    \b
    Examples:
      batcher ingest jobs/example.toml                 # check and store the input
      batcher plan jobs/example.toml --input in.jsonl  # what would be sent, at what cost
      batcher sandbox --port 8765                      # local stand-in for the providers
    """


def main() -> None:
    cli(prog_name="batcher")


# Each command group lives in its own module and registers itself on `cli` when imported.
from batcher.cli import ingest as _ingest  # noqa: E402, F401
from batcher.cli import items as _items  # noqa: E402, F401
from batcher.cli import plan as _plan  # noqa: E402, F401
from batcher.cli import report as _report  # noqa: E402, F401
from batcher.cli import run as _run  # noqa: E402, F401
from batcher.cli import runs as _runs  # noqa: E402, F401
from batcher.cli import sandbox as _sandbox  # noqa: E402, F401
from batcher.cli import schedule as _schedule  # noqa: E402, F401
from batcher.cli import status as _status  # noqa: E402, F401
from batcher.cli import tune as _tune  # noqa: E402, F401
from batcher.cli import worker as _worker  # noqa: E402, F401
