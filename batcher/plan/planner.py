"""Planning a run: route its items, make their first attempts, lay them out into batches.

`plan_input` (`batcher plan`; `batcher run` does the same through `engine.start_run`)
ingests, routes and lays out a fresh input in one pass (see `batcher.plan.onepass`); `plan_run`
turns a run ingested on its own (`batcher ingest`, or a crash between the two on an older
run) into planned batch files; `lay_out_batches` lays out any planned attempts that have no
batch yet (the engine's retries and escalations). The layout itself (cache groups, provider
limits, batch files) is in `batcher.plan.layout`; the estimate of what a plan will cost is in
`batcher.plan.estimate`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.engine import Engine

from batcher.errors import UsageError
from batcher.money.prices import check_model_known, check_models_known
from batcher.plan.estimate import Estimate, InputFacts, estimate_run
from batcher.plan.ingest import IngestResult, ingest
from batcher.plan.inputs import ParsedItem
from batcher.plan.layout import (
    SHOWN_GROUPS,
    BatchInfo,
    GroupInfo,
    Progress,
    add_second_opinions,
    attempt_source,
    item_source,
    lay_out,
)
from batcher.plan.onepass import PlanningSink, lay_out_kept, layout_pending
from batcher.plan.params import check_params
from batcher.plan.routing import (
    TEMPLATE_SAMPLE,
    Router,
    Template,
    estimate_input_tokens,
    make_annotator,
)
from batcher.spec import JobSpec, split_model_ref
from batcher.store import items, runs
from batcher.store.prompts import text_of

ROUTE_PAGE = 5000

__all__ = [
    "BatchInfo",
    "Estimate",
    "GroupInfo",
    "PlanSummary",
    "estimate_run",
    "lay_out_batches",
    "plan_run",
]


@dataclass
class PlanSummary:
    """What `plan_run` did: the tier split of the run, its cache groups and its batches."""

    run_id: int
    n_attempts: int  # first attempts created by this call
    tiers: list[dict[str, Any]]  # {"tier", "reason", "items"} over every item of the run
    batches: list[BatchInfo]
    n_groups: int
    largest_groups: list[GroupInfo]


def _route_untiered(db: Engine, run_id: int, spec: JobSpec) -> None:
    """Route pending items that were ingested without the routing annotator."""
    with db.connect() as conn:  # the run's first prompts teach the classifier its template
        head = items.unrouted(conn, run_id, 0, TEMPLATE_SAMPLE)
    sample = [
        ParsedItem(0, "", orjson.loads(r.request_json)["messages"]).prompt_text() for r in head
    ]
    router = Router(spec, template=Template.learn(sample))
    prompts: dict[str, str] = {}
    last_id = 0
    while True:
        with db.begin() as conn:
            rows = items.unrouted(conn, run_id, last_id, ROUTE_PAGE)
            if not rows:
                return
            routes = []
            for row in rows:
                request = orjson.loads(row.request_json)
                parsed = ParsedItem(line_no=0, custom_id="", messages=request["messages"])
                system = text_of(conn, row.system_hash, prompts)
                tokens = estimate_input_tokens(parsed, system)
                metadata = orjson.loads(row.metadata_json) if row.metadata_json else None
                tier, reason = router.route(
                    row.explicit_model, row.explicit_tier, metadata, parsed.prompt_text(), tokens,
                    parsed.messages, system,
                )  # fmt: skip
                routes.append((row.id, tier, reason, tokens))
            items.set_routes(conn, routes)
            last_id = rows[-1].id


def _check_explicit_models(db: Engine, run_id: int, spec: JobSpec) -> None:
    with db.connect() as conn:
        refs = items.explicit_models(conn, run_id)
    for ref in refs:
        try:
            provider, model = split_model_ref(ref)
        except ValueError as exc:
            raise UsageError(f"run {run_id}: {exc}") from None
        check_model_known(spec, provider, model, f"run {run_id}: an item's model {ref!r}")


def _sorted_split(counts: Iterable[tuple[str, str, int]]) -> list[dict[str, Any]]:
    """Rows of the tier split, largest first."""
    split = [{"tier": t, "reason": r, "items": n} for t, r, n in counts]
    return sorted(split, key=lambda row: (-row["items"], str(row["tier"]), str(row["reason"])))


def plan_run(
    db: Engine, run_id: int, spec: JobSpec, *, progress: Progress | None = None
) -> PlanSummary:
    """Route, make first attempts for, and lay out every pending item of run `run_id`.

    Afterwards every such item is queued with one planned attempt (seq 1, custom id
    "i{item}-a1") in a planned batch whose file is written, and the run is planned. The
    first attempts are inserted with their batch already set (one write each instead of an
    insert and an update) and the items queued at the end, in one UPDATE; attempts already
    planned without a batch are laid out too, so a call after a crash finishes the work.
    Raises UsageError for a model that cannot be priced or a request too large for a batch
    file.
    """
    check_models_known(spec)
    _check_explicit_models(db, run_id, spec)
    _route_untiered(db, run_id, spec)
    fresh = lay_out(db, run_id, spec, item_source(run_id, spec), 1, progress)
    with db.begin() as conn:
        add_second_opinions(conn, run_id, spec)
    leftover = lay_out(db, run_id, spec, attempt_source(run_id), 1, None)
    with db.begin() as conn:  # committed even when the check below refuses the run
        items.queue_laid_out(conn, run_id)
    with db.begin() as conn:
        stranded = items.count_pending(conn, run_id)
        if stranded:  # only a spec without the tier the items were routed to leaves these
            raise UsageError(
                f"run {run_id}: {stranded} items have a tier that the spec does not define "
                f"(tiers: {', '.join(spec.tiers)}); plan with the spec the run was ingested with"
            )
        runs.mark_planned(conn, run_id)
        tiers = _sorted_split(items.tier_split(conn, run_id))
    return PlanSummary(
        run_id=run_id,
        n_attempts=fresh.n_requests,
        tiers=tiers,
        batches=fresh.batches + leftover.batches,
        n_groups=fresh.n_groups + leftover.n_groups,
        largest_groups=sorted(
            fresh.largest_groups + leftover.largest_groups, key=lambda g: -g.n_requests
        )[:SHOWN_GROUPS],
    )


def ensure_planned(db: Engine, run_id: int, spec: JobSpec, *, kept: bool = True) -> bool:
    """Plan the run's pending items, if it has any (a run stored by `batcher ingest`, or a
    crash between ingest and plan), and lay out a deferred plan's queued items (see
    `batcher.plan.onepass`) unless `kept` is false: the one place that decides "plan if not
    planned yet". Returns whether it planned."""
    with db.connect() as conn:
        pending = items.count_pending(conn, run_id)
    if pending:
        plan_run(db, run_id, spec)
    deferred = kept and layout_pending(run_id)
    if deferred:
        lay_out_kept(db, run_id, spec)
    return bool(pending) or deferred


def lay_out_batches(
    db: Engine, run_id: int, spec: JobSpec, round: int = 1, *, progress: Progress | None = None
) -> list[str]:
    """Put every planned attempt of the run that has no batch into batch files and rows.

    Attempts are grouped by (provider, model, tier, system prompt); files go to
    state_dir()/batches/run-{run_id}/{batch_id}.jsonl, rendered by the provider modules, and
    batch rows are inserted with status planned and this `round`. Returns the new batch ids
    ("b" + 16 hex chars) in order.
    """
    return [
        b.id for b in lay_out(db, run_id, spec, attempt_source(run_id), round, progress).batches
    ]


def input_facts(stored: IngestResult, sink: PlanningSink | None = None) -> InputFacts:
    """What the estimate of a plan just made from `stored` (by `sink`) may rely on."""
    groups = sink.groups if sink is not None else None
    return InputFacts(stored.max_input_tokens, stored.own_max_tokens, groups)


@dataclass
class PlanReport:
    """Everything `batcher plan` shows: the ingest, the plan and its estimate."""

    run_id: int
    n_items: int
    n_rejected: int
    rejects_path: str | None
    plan: PlanSummary
    estimate: Estimate


def plan_input(
    db: Engine,
    spec: JobSpec,
    input_path: str,
    *,
    skip_invalid: bool = False,
    output_tokens: int | None = None,
    progress: Progress | None = None,
) -> PlanReport:
    """Ingest `input_path` with routing, plan the run and estimate it; nothing is sent.

    Ingest and plan are one pass and one transaction (see `batcher.plan.onepass`): the run is
    stored planned, with its attempts and batches, or not at all. It stays in the database
    for the engine to submit. Raises what `ingest` and `plan_run` raise (UsageError for bad
    input or unknown models).
    """
    check_models_known(spec)  # before reading a large input
    check_params(spec)
    with PlanningSink(db, spec, progress) as sink:
        stored = ingest(
            db,
            spec,
            input_path,
            skip_invalid=skip_invalid,
            annotate=make_annotator(spec, input_path=input_path),
            sink=sink,
        )
    layout = sink.layout
    assert layout is not None  # the ingest committed, so the sink laid the run out
    summary = PlanSummary(
        run_id=stored.run_id,
        n_attempts=layout.n_requests,
        tiers=_sorted_split((t, r, n) for (t, r), n in sink.tier_split.items()),
        batches=layout.batches,
        n_groups=layout.n_groups,
        largest_groups=layout.largest_groups,
    )
    return PlanReport(
        run_id=stored.run_id,
        n_items=stored.n_items,
        n_rejected=stored.n_rejected,
        rejects_path=stored.rejects_path,
        plan=summary,
        estimate=estimate_run(
            db, stored.run_id, spec, output_tokens=output_tokens, facts=input_facts(stored, sink)
        ),
    )
