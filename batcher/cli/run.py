"""`batcher run`, `submit`, `resume`, `status`, `cancel`: the engine's commands.

Exit codes (for cron wrappers):
  0  every item succeeded
  1  the run finished with failed items, or stopped on an error (the message says what to do)
  2  bad usage or input: nothing was submitted
  3  still running: interrupted (Ctrl-C), submitted without waiting, or another process
     drives the run; `batcher resume RUN` continues
  4  the run was cancelled
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import click

from batcher.cli import cli, db_option, handle_errors, input_option, json_option
from batcher.money.amounts import fmt_usd
from batcher.output import print_json, print_table

poll_option = click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.01),
    metavar="S",
    help="Seconds between polls (default: the spec's polling; 0.05 with --sandbox).",
)
reuse_option = click.option(
    "--no-reuse",
    is_flag=True,
    help="Send every request, even ones already answered in an earlier run.",
)
max_usd_option = click.option(
    "--max-usd",
    type=click.FloatRange(min=0, min_open=True),
    metavar="X",
    help="Refuse to submit when the estimate is above X dollars (default: the spec's max_usd).",
)


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """Ctrl-C or SIGTERM stop the loop cleanly (the run stays resumable) instead of killing;
    the previous handlers come back afterwards."""
    stop = threading.Event()

    def handler(signum, frame):  # noqa: ANN001 - signal handler signature
        if stop.is_set():  # a second Ctrl-C: the user insists
            raise KeyboardInterrupt
        click.echo("stopping after the current step (Ctrl-C again to abort)...", err=True)
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals can only be handled in the main thread
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _print_report(engine, run_id: int) -> None:
    """The run's cost and savings report (batcher report RUN), before the summary."""
    from batcher.report.build import build_report, select_runs
    from batcher.report.formats import render_report

    click.echo(render_report(build_report(engine, select_runs(engine, run_id)), "table"), nl=False)


def _finish(outcome, as_json: bool, engine=None) -> None:
    """Print the outcome and exit with its code. With `engine` (run, resume), people get the
    run's full report (batcher report RUN) and a one-line verdict instead of the summary."""
    summary = outcome.summary()
    if as_json:
        print_json(summary)
    elif engine is not None and outcome.n_items:
        _print_report(engine, outcome.run_id)
        click.echo(
            f"run {outcome.run_id} {outcome.status}: {summary['succeeded']}/{outcome.n_items} "
            f"succeeded, {summary['failed']} failed, {summary['cancelled']} cancelled; "
            f"paid {fmt_usd(summary['cost_usd'])} against a baseline of "
            f"{fmt_usd(summary['baseline_usd'])}"
        )
    else:
        rows = [{"": key, "value": value} for key, value in summary.items() if key != "message"]
        print_table(rows, title=f"Run {outcome.run_id}", columns=["", "value"])
    if outcome.message:
        kind = "Error" if outcome.status == "failed" else "Note"
        click.echo(f"{kind}: {outcome.message}", err=True)
    elif outcome.exit_code == 3:
        click.echo(
            f"run {outcome.run_id} is still running: `batcher resume {outcome.run_id}`", err=True
        )
    sys.exit(outcome.exit_code)


def _lease_held(exc) -> None:
    click.echo(f"Error: {exc}", err=True)
    sys.exit(3)


@cli.command()
@click.argument("job", type=click.Path(dir_okay=False))
@input_option
@click.option("--sandbox", is_flag=True, help="Run against the local sandbox (no real calls).")
@click.option("--skip-invalid", is_flag=True, help="Set bad input lines aside, run the rest.")
@max_usd_option
@reuse_option
@poll_option
@click.option(
    "--detach",
    is_flag=True,
    help="Plan the run and leave it to `batcher worker` processes (exit code 3).",
)
@db_option
@json_option
@handle_errors
def run(
    job, input_path, sandbox, skip_invalid, max_usd, no_reuse, poll_interval, detach, db, as_json
):
    """Plan, submit, wait for, reconcile and escalate JOB: the nightly command.

    Items go to the cheapest tier that can answer them; invalid answers climb the spec's
    ladder in follow-up batches; provider errors and expired batches are retried. Progress
    shows on a terminal (log lines otherwise). Ctrl-C stops cleanly: `batcher resume RUN`
    continues, and so does it after a crash.

    --sandbox starts the local sandbox in this process and points both SDKs at it with dummy
    keys: nothing leaves the machine and nothing is billed.

    \b
    Examples:
      batcher run jobs/example.toml --sandbox
      batcher run jobs/example.toml --input tonight.jsonl --max-usd 20
      batcher run jobs/example.toml --json > outcome.json
      batcher run jobs/example.toml --detach      # for the worker pool

    \b
    Exit codes:
      0  every item succeeded
      1  finished with failed items, or stopped on an error
      2  bad usage or input (nothing submitted)
      3  still running: interrupted, submitted without waiting, or driven
         by another process (`batcher resume RUN` continues)
      4  cancelled
    """
    from batcher.errors import LeaseHeld, UsageError
    from batcher.run.engine import drive_run, outcome_of, start_run
    from batcher.run.preflight import check_keys
    from batcher.run.progress import make_reporter
    from batcher.spec import load_spec
    from batcher.store import open_store

    spec = load_spec(job)
    source = spec.input_file(input_path)
    engine = open_store(db)
    if detach:
        if sandbox:
            raise UsageError("--detach leaves the run to workers: it cannot use --sandbox")
        check_keys(spec)
        run_id = start_run(engine, spec, source, skip_invalid=skip_invalid, max_usd=max_usd)
        outcome = outcome_of(engine, run_id)
        outcome.message = (
            f"run {run_id} is planned and left for the workers (`batcher workers` shows who "
            f"takes it; `batcher status {run_id}` where it is)"
        )
        _finish(outcome, as_json)
    with ExitStack() as stack:
        clients = None
        if sandbox:
            from batcher.providers import Clients
            from batcher.sandbox import start_sandbox

            clients = Clients.for_sandbox(stack.enter_context(start_sandbox()))
            poll_interval = poll_interval or 0.05
        check_keys(spec, clients)
        run_id = start_run(engine, spec, source, skip_invalid=skip_invalid, max_usd=max_usd)
        click.echo(f"run {run_id}: planned; submitting", err=True)
        reporter = make_reporter()
        try:
            outcome = drive_run(
                engine,
                run_id,
                clients=clients,
                stop=stack.enter_context(_stop_on_signals()),
                poll=poll_interval,
                reporter=reporter,
                reuse=not no_reuse,
            )
        except LeaseHeld as exc:
            _lease_held(exc)
        finally:
            reporter.close()
    _finish(outcome, as_json, engine)


@cli.command()
@click.argument("job", type=click.Path(dir_okay=False))
@input_option
@click.option("--skip-invalid", is_flag=True, help="Set bad input lines aside, run the rest.")
@max_usd_option
@reuse_option
@db_option
@json_option
@handle_errors
def submit(job, input_path, skip_invalid, max_usd, no_reuse, db, as_json):
    """Plan JOB and submit its batches without waiting for them (exit code 3).

    `batcher resume RUN` later polls, reconciles and escalates; `batcher status RUN` shows
    where the batches are.

    \b
    Examples:
      batcher submit jobs/example.toml --input tonight.jsonl
      batcher resume 12
    """
    from batcher.run.engine import drive_run, start_run
    from batcher.run.preflight import check_keys
    from batcher.spec import load_spec
    from batcher.store import open_store

    spec = load_spec(job)
    check_keys(spec)
    engine = open_store(db)
    run_id = start_run(
        engine, spec, spec.input_file(input_path), skip_invalid=skip_invalid, max_usd=max_usd
    )
    _finish(drive_run(engine, run_id, reuse=not no_reuse, submit_only=True), as_json)


def _pairs(values: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for value in values:
        local, sep, remote = value.partition("=")
        if not sep or not local or not remote:
            raise click.BadParameter(
                f"{value!r}: write LOCAL_BATCH=PROVIDER_BATCH_ID", param_hint="--adopt"
            )
        pairs[local] = remote
    return pairs


@cli.command()
@click.argument("run_id", metavar="RUN", type=int)
@click.option(
    "--adopt",
    multiple=True,
    metavar="BATCH=PROVIDER_ID",
    help="A batch left undecided is this provider batch (after checking the provider).",
)
@click.option(
    "--not-created",
    multiple=True,
    metavar="BATCH",
    help="A batch left undecided never reached the provider: submit it again.",
)
@max_usd_option
@reuse_option
@poll_option
@db_option
@json_option
@handle_errors
def resume(run_id, adopt, not_created, max_usd, no_reuse, poll_interval, db, as_json):
    """Finish RUN after any interruption: a crash, Ctrl-C, `submit`, or an error.

    Batches whose submission was interrupted are looked up at the provider and adopted,
    never sent twice. When the provider cannot tell, resume stops and names the batch:
    check the provider's batch list, then pass --adopt or --not-created.

    \b
    Examples:
      batcher resume 12
      batcher resume 12 --adopt b3f9...=msgbatch_01ab...
      batcher resume 12 --not-created b3f9...

    \b
    Exit codes:
      0  every item succeeded
      1  finished with failed items, or stopped on an error
      2  bad usage or input (nothing submitted)
      3  still running: interrupted, submitted without waiting, or driven
         by another process (`batcher resume RUN` continues)
      4  cancelled
    """
    from batcher.errors import LeaseHeld
    from batcher.run.engine import resume_run
    from batcher.run.progress import make_reporter
    from batcher.store import open_store

    engine = open_store(db)
    reporter = make_reporter()
    try:
        with _stop_on_signals() as stop:
            outcome = resume_run(
                engine,
                run_id,
                adopt=_pairs(adopt),
                not_created=list(not_created),
                max_usd=max_usd,
                stop=stop,
                poll=poll_interval,
                reporter=reporter,
                reuse=not no_reuse,
            )
    except LeaseHeld as exc:
        _lease_held(exc)
    finally:
        reporter.close()
    _finish(outcome, as_json, engine)


@cli.command()
@click.argument("run_id", metavar="[RUN]", type=int, required=False)
@db_option
@json_option
@handle_errors
def status(run_id, db, as_json):
    """Show the recent runs, or one RUN with its batches.

    \b
    Examples:
      batcher status
      batcher status 12 --json
    """
    from batcher.run.engine import run_status
    from batcher.store import open_store

    data = run_status(open_store(db), run_id)
    if as_json:
        print_json(data)
    elif run_id is None:
        print_table(data, title="Runs")
    else:
        batches = data.pop("batches")
        rows = [{"": k, "value": v} for k, v in data.items() if v is not None]
        print_table(rows, title=f"Run {run_id}", columns=["", "value"])
        print_table([_batch_row(b) for b in batches], title="Batches")
        for batch in batches:
            if batch["error"]:
                click.echo(f"batch {batch['id']}: {batch['error']}")


def _batch_row(batch: dict) -> dict:
    """A batch for people: fewer, wider columns than --json gives."""
    status = batch["status"]
    if status != "reconciled" and batch["raw_status"]:  # where it is at the provider
        status += f" ({batch['raw_status']})"
    counts = ", ".join(
        f"{batch[f'n_{name}']} {name}"
        for name in ("succeeded", "errored", "expired", "cancelled")
        if batch[f"n_{name}"]
    )
    return {
        "batch": batch["id"],
        "round": batch["round"],
        "model": f"{batch['provider']}:{batch['model']}",
        "status": status,
        "requests": batch["n_requests"],
        "results": counts if batch["status"] == "reconciled" else "",
    }


@cli.command()
@click.argument("run_id", metavar="RUN", type=int)
@poll_option
@db_option
@json_option
@handle_errors
def cancel(run_id, poll_interval, db, as_json):
    """Cancel RUN: its provider batches are cancelled, finished answers are kept, and the
    unfinished items end `cancelled` (exit code 4).

    When another process drives the run, that process does the cancelling.

    \b
    Examples:
      batcher cancel 12
    """
    from batcher.run.engine import cancel_run
    from batcher.run.progress import make_reporter
    from batcher.store import open_store

    reporter = make_reporter()
    try:
        with _stop_on_signals() as stop:
            outcome = cancel_run(
                open_store(db), run_id, stop=stop, poll=poll_interval, reporter=reporter
            )
    finally:
        reporter.close()
    _finish(outcome, as_json)
