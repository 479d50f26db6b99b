"""The engine's public API: start, drive, resume, cancel and inspect runs.

`start_run` takes a job from its input to planned batches (ingest with routing, plan,
estimate, budget check). `drive_run` holds the run's lease and loops (batcher.run.driver) until
every item is terminal, or until `stop` is set (the run stays `running`, resumable). Any
interruption, a crash included, is finished by `resume_run`. `cancel_run` cancels the
provider batches and ends the unfinished items `cancelled`, keeping what finished.

Exit codes for the CLI and cron wrappers come from `RunOutcome.exit_code`:
0 every item succeeded; 1 the run finished with failed items, or stopped on an error;
3 still running (interrupted, or submitted without waiting); 4 cancelled.
(2 is bad usage or input, raised as UsageError before anything is submitted.)
"""

from __future__ import annotations

import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from batcher.errors import BatcherError, LeaseHeld, UsageError
from batcher.money.prices import check_models_known
from batcher.plan.estimate import InputFacts, budget_refusal, estimate_run
from batcher.plan.ingest import ingest
from batcher.plan.onepass import PlanningSink
from batcher.plan.params import check_params
from batcher.plan.planner import ensure_planned, input_facts
from batcher.plan.routing import make_annotator
from batcher.providers import Clients, Registry
from batcher.providers.calls import Interrupted, ProviderError, stopping_on
from batcher.run.driver import Driver, LeaseLost, RunStopped
from batcher.run.lease import DEFAULT_TTL_S, Lease, new_owner
from batcher.run.options import RunOptions
from batcher.run.outcome import (  # noqa: F401 - EXIT_* re-exported for callers
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_RUNNING,
    EXIT_USAGE,
    RunOutcome,
)
from batcher.run.pipeline import free_tokenizers
from batcher.run.poll import PollSettings
from batcher.run.progress import QuietReporter, Reporter
from batcher.run.submit import SubmissionUndecided, resolve
from batcher.spec import JobSpec, spec_from_snapshot
from batcher.store import attempts, batches, items, runs
from batcher.store.states import ITEM_TERMINAL, RunStatus


class BudgetExceeded(BatcherError):
    """The plan's estimate is over the budget; nothing was submitted."""


def outcome_of(db: Engine, run_id: int) -> RunOutcome:
    """The current RunOutcome of `run_id` from the database. UsageError when unknown."""
    with db.connect() as conn:
        run = runs.get(conn, run_id)
        if run is None:
            raise UsageError(f"no run {run_id} in the state database (see `batcher status`)")
        by_status = items.counts_by_status(conn, run_id)
        cost, baseline = attempts.cost_totals(conn, run_id)
    return RunOutcome(run_id, run.status, by_status, cost, baseline, run.error)


def check_budget(db: Engine, run_id: int, spec: JobSpec, facts: InputFacts | None = None) -> None:
    """Refuse (BudgetExceeded, run marked failed) when the plan's estimate is over the
    spec's `max_usd`. `facts` of a plan just made spare the estimate reading the run back."""
    estimate = estimate_run(db, run_id, spec, facts=facts)
    refusal = budget_refusal(estimate, spec.max_usd, "max_usd")
    if refusal is None:
        return
    message = (
        f"run {run_id}: {refusal}. Raise the budget with "
        f"`batcher resume {run_id} --max-usd X`, or send less input"
    )
    with db.begin() as conn:
        runs.fail(conn, run_id, message)
    raise BudgetExceeded(message)


def start_run(
    db: Engine,
    spec: JobSpec,
    input_path: str | Path,
    *,
    skip_invalid: bool = False,
    schedule_name: str | None = None,
    max_usd: float | None = None,
    rejects_path: str | Path | None = None,
    options: RunOptions | None = None,
    defer_layout: bool = False,
) -> int:
    """Ingest `input_path` as a new run of `spec`, plan it and check its budget.

    Ingest and plan are one pass (`batcher.plan.onepass`), as in `batcher plan`. With
    `defer_layout` (a caller that drives the run right away) and an estimate that the sums of
    that pass can make, the batches are laid out later, by `drive_run`, which submits each as
    soon as it is written. `options` are kept with the run for `resume`. Returns the run id
    (status `planned`).
    Raises UsageError (bad input, unknown models; no
    run is left behind for bad input), BudgetExceeded (the run is kept, `failed`).
    """
    check_models_known(spec)
    check_params(spec)
    if max_usd is not None:  # the run's spec snapshot keeps the budget it runs under
        spec = spec.model_copy(update={"max_usd": max_usd})
    with PlanningSink(db, spec, defer=defer_layout) as sink:
        result = ingest(
            db,
            spec,
            input_path,
            skip_invalid=skip_invalid,
            rejects_path=rejects_path,
            annotate=make_annotator(spec, input_path=input_path),
            schedule_name=schedule_name,
            sink=sink,
        )
    save_options(db, result.run_id, options or RunOptions())
    try:
        check_budget(db, result.run_id, spec, input_facts(result, sink))
    except BudgetExceeded:
        if sink.deferred:  # a refused run is kept laid out, as `batcher plan` would show it
            ensure_planned(db, result.run_id, spec)
        raise
    if sink.deferred:  # the input is read and its prompts counted: the layout needs no more
        free_tokenizers(result.n_items)
    return result.run_id


def run_options(db: Engine, run_id: int) -> RunOptions:
    """The options run `run_id` was started with (defaults for older runs)."""
    with db.connect() as conn:
        return RunOptions.from_json(runs.options_json(conn, run_id))


def save_options(db: Engine, run_id: int, options: RunOptions) -> None:
    """Keep `options` with the run, for later commands that continue it."""
    with db.begin() as conn:
        runs.set_options(conn, run_id, options.to_json())


def run_spec(db: Engine, run_id: int) -> JobSpec:
    """The spec a run was planned with (its snapshot). UsageError for an unknown run."""
    with db.connect() as conn:
        snapshot = runs.spec_snapshot(conn, run_id)
    if snapshot is None:
        raise UsageError(f"no run {run_id} in the state database (see `batcher status`)")
    return spec_from_snapshot(snapshot)


def drive_run(
    db: Engine,
    run_id: int,
    *,
    clients: Clients | None = None,
    owner: str | None = None,
    stop: threading.Event | None = None,
    poll: PollSettings | float | None = None,
    reporter: Reporter | None = None,
    reuse: bool = True,
    submit_only: bool = False,
    lease_ttl: float = DEFAULT_TTL_S,
) -> RunOutcome:
    """Submit, poll, reconcile and escalate run `run_id` until every item is terminal.

    Holds the run's lease throughout (LeaseHeld when another process drives it), renewing it
    every third of `lease_ttl` seconds. `stop` makes it return early and cleanly (status
    stays `running`); `poll` overrides the spec's polling (seconds, or PollSettings);
    `submit_only` returns once every planned batch is submitted.
    An error that needs a person marks the run `failed` with a message saying what to do;
    the outcome carries it.
    """
    spec = run_spec(db, run_id)
    if outcome_of(db, run_id).status == RunStatus.COMPLETED:
        return outcome_of(db, run_id)
    settings = poll if isinstance(poll, PollSettings) else PollSettings.of(spec, poll)
    stop = stop or threading.Event()
    with Lease(db, run_id, owner or new_owner(), lease_ttl) as lease:
        driver = Driver(
            db,
            run_id,
            spec,
            Registry(clients, spec),
            lease=lease,
            stop=stop,
            poll=settings,
            reporter=reporter or QuietReporter(),
            reuse=reuse,
        )
        try:
            with stopping_on(stop):
                driver.run(submit_only=submit_only)
        except Interrupted:  # a stop during a retry wait: as resumable as one between steps
            return outcome_of(db, run_id)
        except LeaseLost as exc:  # the run is someone else's now: leave its status alone
            outcome = outcome_of(db, run_id)
            outcome.message = str(exc)
            return outcome
        except (SubmissionUndecided, RunStopped, ProviderError) as exc:
            message = str(exc)
            if isinstance(exc, ProviderError):
                message += f"; once it answers again, `batcher resume {run_id}` continues"
            with db.begin() as conn:
                runs.fail(conn, run_id, message)
            outcome = outcome_of(db, run_id)
            outcome.message = message
            return outcome
    return outcome_of(db, run_id)


def resume_run(
    db: Engine,
    run_id: int,
    *,
    adopt: dict[str, str] | None = None,
    not_created: list[str] | None = None,
    max_usd: float | None = None,
    **drive: Any,
) -> RunOutcome:
    """Finish a run after any interruption: settle the user's decisions about undecided
    batches (`adopt` local id -> provider batch id, `not_created` local ids), set a new
    budget (`max_usd`, kept with the run) and check it when nothing was submitted yet, then
    `drive_run`."""
    spec = run_spec(db, run_id)
    registry = Registry(drive.get("clients"), spec)
    with db.connect() as conn:
        providers = batches.providers_of_run(conn, run_id)
    for batch_id, provider_batch_id in list((adopt or {}).items()) + [
        (b, None) for b in not_created or []
    ]:
        if batch_id not in providers:
            raise UsageError(
                f"run {run_id} has no batch {batch_id!r} (see `batcher status {run_id}`)"
            )
        resolve(db, registry.get(providers[batch_id]), batch_id, provider_batch_id)
    if max_usd is not None:
        spec = spec.model_copy(update={"max_usd": max_usd})
        with db.begin() as conn:
            runs.set_spec(conn, run_id, spec.snapshot())
    ensure_planned(db, run_id, spec)  # a run stored by `batcher ingest` is planned first
    with db.connect() as conn:
        sent = batches.anything_sent(conn, run_id)
    if not sent:  # e.g. a run the budget refused at start
        check_budget(db, run_id, spec)
    return drive_run(db, run_id, **drive)


def cancel_run(
    db: Engine,
    run_id: int,
    *,
    clients: Clients | None = None,
    owner: str | None = None,
    stop: threading.Event | None = None,
    poll: PollSettings | float | None = None,
    reporter: Reporter | None = None,
) -> RunOutcome:
    """Cancel run `run_id`: its provider batches are cancelled, what they finished is kept,
    every unfinished item ends `cancelled`.

    When another process drives the run, that process does the cancelling (it sees the run
    `cancelled` on its next loop); this call then returns at once.
    """
    outcome = outcome_of(db, run_id)
    unfinished = sum(n for status, n in outcome.items.items() if status not in ITEM_TERMINAL)
    if outcome.status == RunStatus.COMPLETED or (outcome.n_items and not unfinished):
        done = ", ".join(f"{n} {status}" for status, n in sorted(outcome.items.items()))
        outcome.message = (
            f"run {run_id} has nothing left to cancel: its items had all ended ({done})"
        )
        outcome.nothing_to_cancel = True
        return outcome
    with db.begin() as conn:
        runs.cancel(conn, run_id)
    try:
        return drive_run(
            db, run_id, clients=clients, owner=owner, stop=stop, poll=poll, reporter=reporter
        )
    except LeaseHeld:
        outcome = outcome_of(db, run_id)
        outcome.message = "the process driving this run is cancelling it"
        return outcome


def run_status(db: Engine, run_id: int | None = None) -> list[dict[str, Any]] | dict[str, Any]:
    """Without `run_id`: one row a run, newest first. With it: the run, its batches, items."""
    if run_id is None:
        with db.connect() as conn:
            recent = runs.recent(conn)
        rows = []
        for run in recent:
            summary = outcome_of(db, run.id).summary()
            rows.append(
                {
                    "run": run.id,
                    "job": run.job_name,
                    "status": run.status,
                    "items": summary["items"],
                    "succeeded": summary["succeeded"],
                    "failed": summary["failed"],
                    "cost_usd": summary["cost_usd"],
                    "created": f"{run.created_at:%Y-%m-%d %H:%M}",
                }
            )
        return rows
    summary = outcome_of(db, run_id).summary()
    with db.connect() as conn:
        run = runs.get(conn, run_id)
        shown = batches.for_status(conn, run_id)
        options = asdict(RunOptions.from_json(runs.options_json(conn, run_id)))
    return {**summary, "lease_owner": run.lease_owner, "options": options, "batches": shown}
