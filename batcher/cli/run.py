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
from batcher.cli.connect import clients_for, sandbox_option
from batcher.money.amounts import fmt_money
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
            f"paid {fmt_money(summary['cost_usd'])} against a baseline of "
            f"{fmt_money(summary['baseline_usd'])}"
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
@sandbox_option
@click.option("--skip-invalid", is_flag=True, help="Set bad input lines aside, run the rest.")
@max_usd_option
@reuse_option
@poll_option
@click.option(
    "--detach",
    is_flag=True,
    help="Plan the run and leave it to `batcher worker` processes (exit code 3).",
)
@click.option(
    "--keep-files",
    is_flag=True,
    help="Keep the local batch files once reconciled (spec: [batching] keep_files).",
)
@db_option
@json_option
@handle_errors
def run(
    job,
    input_path,
    sandbox,
    skip_invalid,
    max_usd,
    no_reuse,
    poll_interval,
    detach,
    keep_files,
    db,
    as_json,
):
    """Plan, submit, wait for, reconcile and escalate JOB: the nightly command.

    Items go to the cheapest tier that can answer them; invalid answers climb the spec's
    ladder in follow-up batches; provider errors and expired batches are retried. Progress
    shows on a terminal (log lines otherwise). Ctrl-C stops cleanly: `batcher resume RUN`
    continues, and so does it after a crash.

    --sandbox points the SDKs at the local sandbox with dummy keys (the one `batcher
    sandbox` serves, else one started in this process): nothing leaves the machine and
    nothing is billed. The run's options (--no-reuse, --poll-interval, --sandbox) are kept
    with it: `resume`, `retry` and `cancel` carry on with them.

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
    from batcher.run.options import RunOptions
    from batcher.run.preflight import check_keys, preflight_new_run, preflight_spec
    from batcher.run.progress import make_reporter
    from batcher.spec import load_spec
    from batcher.store import open_store

    spec = load_spec(job)
    if keep_files:  # in the spec, whose snapshot the run keeps: resume keeps them too
        batching = spec.batching.model_copy(update={"keep_files": True})
        spec = spec.model_copy(update={"batching": batching})
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
    options = RunOptions(reuse=not no_reuse, poll_interval_s=poll_interval, sandbox=sandbox)
    with ExitStack() as stack:
        clients = clients_for(stack, sandbox)
        poll = _poll_settings(spec, options)
        preflight_spec(spec, clients, poll.unreachable_s)
        run_id = start_run(
            engine, spec, source, skip_invalid=skip_invalid, max_usd=max_usd, options=options,
            defer_layout=True,  # each batch is submitted as soon as it is written
        )  # fmt: skip
        preflight_new_run(engine, run_id, spec, clients)
        click.echo(f"run {run_id}: planned; submitting", err=True)
        reporter = make_reporter()
        try:
            outcome = drive_run(
                engine,
                run_id,
                clients=clients,
                stop=stack.enter_context(_stop_on_signals()),
                poll=poll,
                reporter=reporter,
                reuse=options.reuse,
            )
        except LeaseHeld as exc:
            _lease_held(exc)
        finally:
            reporter.close()
    _finish(outcome, as_json, engine)


def _poll_settings(spec, options):
    """The spec's polling or the run's --poll-interval; with --sandbox quick polls and a
    provider that is given up on after seconds of silence rather than minutes."""
    from batcher.run.poll import SANDBOX_POLL_S, SANDBOX_UNREACHABLE_S, PollSettings

    interval_s = options.poll_interval_s
    if options.sandbox:
        return PollSettings.of(spec, interval_s or SANDBOX_POLL_S, SANDBOX_UNREACHABLE_S)
    return PollSettings.of(spec, interval_s)


@contextmanager
def _carried_on(db, run_id: int, *, no_reuse=False, poll_interval=None, sandbox=False,
                outlive=False):  # fmt: skip
    """For a command that continues RUN: its stored options with those given now (kept
    with the run), the clients they call for, and its polling; after the preflight."""
    from batcher.run.engine import run_options, run_spec, save_options
    from batcher.run.preflight import preflight_run
    from batcher.store import open_store

    engine = open_store(db)
    spec = run_spec(engine, run_id)
    options = run_options(engine, run_id).overridden(
        no_reuse=no_reuse, poll_interval_s=poll_interval, sandbox=sandbox
    )
    save_options(engine, run_id, options)
    with ExitStack() as stack:
        clients = clients_for(stack, options.sandbox, outlive=outlive)
        poll = _poll_settings(spec, options)
        preflight_run(engine, run_id, clients, poll.unreachable_s)
        yield engine, options, clients, poll


@cli.command()
@click.argument("job", type=click.Path(dir_okay=False))
@input_option
@sandbox_option
@click.option("--skip-invalid", is_flag=True, help="Set bad input lines aside, run the rest.")
@max_usd_option
@reuse_option
@db_option
@json_option
@handle_errors
def submit(job, input_path, sandbox, skip_invalid, max_usd, no_reuse, db, as_json):
    """Plan JOB and submit its batches without waiting for them (exit code 3).

    `batcher resume RUN` later polls, reconciles and escalates; `batcher status RUN` shows
    where the batches are. --sandbox needs a running `batcher sandbox`, since the batches
    must outlive this command.

    \b
    Examples:
      batcher submit jobs/example.toml --input tonight.jsonl
      batcher resume 12
    """
    from batcher.run.engine import drive_run, start_run
    from batcher.run.options import RunOptions
    from batcher.run.preflight import preflight_new_run, preflight_spec
    from batcher.spec import load_spec
    from batcher.store import open_store

    spec = load_spec(job)
    options = RunOptions(reuse=not no_reuse, sandbox=sandbox)
    with ExitStack() as stack:
        clients = clients_for(stack, sandbox, outlive=True)
        preflight_spec(spec, clients, _poll_settings(spec, options).unreachable_s)
        engine = open_store(db)
        run_id = start_run(
            engine,
            spec,
            spec.input_file(input_path),
            skip_invalid=skip_invalid,
            max_usd=max_usd,
            options=options,
        )
        preflight_new_run(engine, run_id, spec, clients)
        outcome = drive_run(engine, run_id, clients=clients, reuse=options.reuse, submit_only=True)
    _finish(outcome, as_json)


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
@sandbox_option
@db_option
@json_option
@handle_errors
def resume(run_id, adopt, not_created, max_usd, no_reuse, poll_interval, sandbox, db, as_json):
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

    adopted = _pairs(adopt)
    given = {"no_reuse": no_reuse, "poll_interval": poll_interval, "sandbox": sandbox}
    with _carried_on(db, run_id, **given) as (engine, options, clients, poll):
        reporter = make_reporter()
        try:
            with _stop_on_signals() as stop:
                outcome = resume_run(
                    engine,
                    run_id,
                    adopt=adopted,
                    not_created=list(not_created),
                    max_usd=max_usd,
                    clients=clients,
                    stop=stop,
                    poll=poll,
                    reporter=reporter,
                    reuse=options.reuse,
                )
        except LeaseHeld as exc:
            _lease_held(exc)
        finally:
            reporter.close()
    _finish(outcome, as_json, engine)


@cli.command()
@click.argument("run_id", metavar="RUN", type=int)
@poll_option
@sandbox_option
@db_option
@json_option
@handle_errors
def cancel(run_id, poll_interval, sandbox, db, as_json):
    """Cancel RUN: its provider batches are cancelled, finished answers are kept, and the
    unfinished items end `cancelled` (exit code 4).

    When another process drives the run, that process does the cancelling.

    \b
    Examples:
      batcher cancel 12
    """
    from batcher.run.engine import cancel_run
    from batcher.run.progress import make_reporter

    with _carried_on(db, run_id, poll_interval=poll_interval, sandbox=sandbox) as (
        engine, _, clients, poll,
    ):  # fmt: skip
        reporter = make_reporter()
        try:
            with _stop_on_signals() as stop:
                outcome = cancel_run(
                    engine, run_id, clients=clients, stop=stop, poll=poll, reporter=reporter
                )
        finally:
            reporter.close()
    _finish(outcome, as_json)


@cli.command()
@click.argument("run_id", metavar="RUN", type=int)
@click.option(
    "--failed", "only_failed", is_flag=True, help="Only failed items, not cancelled ones."
)
@click.option("--tier", metavar="T", help="Send them to tier T (default: their last tier).")
@max_usd_option
@reuse_option
@poll_option
@sandbox_option
@db_option
@json_option
@handle_errors
def retry(run_id, only_failed, tier, max_usd, no_reuse, poll_interval, sandbox, db, as_json):
    """New attempts, inside RUN, for its items that did not succeed (failed and cancelled).

    The round is estimated and checked against the budget (--max-usd, else the spec's
    max_usd) before anything is sent, then submitted, reconciled, escalated and reported
    like any round of the run.

    \b
    Examples:
      batcher retry 12 --failed
      batcher retry 12 --tier frontier --max-usd 5
    """
    from batcher.errors import LeaseHeld
    from batcher.run.engine import drive_run
    from batcher.run.progress import make_reporter
    from batcher.run.retry import plan_retry

    given = {"no_reuse": no_reuse, "poll_interval": poll_interval, "sandbox": sandbox}
    with _carried_on(db, run_id, **given) as (engine, options, clients, poll):
        planned = plan_retry(engine, run_id, only_failed=only_failed, tier=tier, max_usd=max_usd)
        if planned.estimate is None:
            which = "failed" if only_failed else "failed or cancelled"
            click.echo(f"run {run_id}: nothing to retry: no item is {which}", err=True)
            sys.exit(0)
        items = ", ".join(f"{n} {status}" for status, n in sorted(planned.items.items()))
        click.echo(
            f"run {run_id}: round {planned.round} retries {planned.n_items} items ({items}), "
            f"estimated {fmt_money(planned.estimate.cost_usd)}; submitting",
            err=True,
        )
        reporter = make_reporter()
        try:
            with _stop_on_signals() as stop:
                outcome = drive_run(
                    engine, run_id, clients=clients, stop=stop, poll=poll, reporter=reporter,
                    reuse=options.reuse,
                )  # fmt: skip
        except LeaseHeld as exc:
            _lease_held(exc)
        finally:
            reporter.close()
    _finish(outcome, as_json, engine)
