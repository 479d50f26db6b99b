"""`batcher plan`: what would be sent, and what it would cost, before anything is spent."""

from __future__ import annotations

import textwrap
from decimal import Decimal

import click

from batcher.cli import cli, db_option, handle_errors, input_option, json_option
from batcher.money.amounts import fmt_money, fmt_usd, to_usd
from batcher.output import print_json, print_table


def _progress(n: int) -> None:
    if n and n % 100_000 == 0:
        click.echo(f"  laid out {n:,} requests", err=True)


def _group_rows(plan, wide: bool = False) -> list[dict]:
    """Cache groups by their prompt's name and short id; --wide adds the provider-side key."""
    rows = []
    for g in plan.largest_groups:
        row = {
            "group": g.label,
            "model": g.model,
            "tier": g.tier,
            "requests": g.n_requests,
            "prefix tokens": g.prefix_tokens,
            "cache": {"key": "by key"}.get(g.cache or "", g.cache or "none"),
            "batches": g.n_batches,
        }
        if wide:
            row["cache key"] = g.key or ""
        rows.append(row)
    return rows


def _group_json(plan) -> list[dict]:
    from batcher.plan.groups import short_id

    return [
        {
            "group": short_id(g.system_hash),
            "prompt": g.name,
            "model": g.model,
            "tier": g.tier,
            "requests": g.n_requests,
            "prefix_tokens": g.prefix_tokens,
            "cache": g.cache,
            "cache_key": g.key,
            "batches": g.n_batches,
        }
        for g in plan.largest_groups
    ]


def _explicit_cache_notes(plan, spec) -> list[str]:
    """For each Gemini group shown: what an explicit cache would cost and could save."""
    from batcher.money.prices import unit_prices
    from batcher.providers import wire_format

    notes = []
    for g in plan.largest_groups:
        arithmetic = getattr(wire_format(g.provider), "explicit_cache_arithmetic", None)
        if arithmetic is None or g.provider in spec.providers:
            continue
        standard = unit_prices(g.provider, g.model, batch=False, spec=spec)
        batch = unit_prices(g.provider, g.model, batch=True, spec=spec)
        found = arithmetic(g.model, g.prefix_tokens, g.n_requests, standard, batch)
        if found is not None:
            notes.append(f"  {g.key}: {found.text()}")
    return notes


def _batch_rows(plan) -> list[dict]:
    return [
        {
            "batch": b.id,
            "provider": b.provider,
            "model": b.model,
            "tier": b.tier,
            "lines": b.n_requests,
            "bytes": b.n_bytes,
        }
        for b in plan.batches
    ]


def _model_rows(est) -> list[dict]:
    return [
        {
            "tier": tier,
            "model": f"{provider}:{model}",
            "requests": row["requests"],
            "input tokens": row["input_tokens"],
            "cached": f"{row['cache_read_tokens'] / row['input_tokens'] * 100:.1f}%"
            if row["input_tokens"]
            else "",
            "usd": fmt_money(to_usd(row["cost_pusd"])),
        }
        for (provider, model, tier), row in sorted(est.by_model.items(), key=lambda kv: kv[0][2])
    ]


def _to_json(report) -> dict:
    plan = report.plan
    return {
        "stored": False,
        "items": report.n_items,
        "rejected": report.n_rejected,
        "tiers": plan.tiers,
        "groups": {"count": plan.n_groups, "largest": _group_json(plan)},
        "batches": _batch_rows(plan),
        "estimate": report.estimate.to_dict(),
    }


def _print(report, spec, job: str, wide: bool = False) -> None:
    plan, est = report.plan, report.estimate
    tiers = [{**row, "model": spec.tiers.get(row["tier"], "")} for row in plan.tiers]
    print_table(tiers, "Tiers", ["tier", "model", "reason", "items"])
    shown = (
        f" (largest {len(plan.largest_groups)})" if plan.n_groups > len(plan.largest_groups) else ""
    )
    print_table(_group_rows(plan, wide), f"Cache groups: {plan.n_groups}{shown}", wide=wide)
    if notes := _explicit_cache_notes(plan, spec):
        click.echo("Gemini explicit context caching (cachedContents), per group:")
        click.echo("\n".join(notes) + "\n")
    print_table(_batch_rows(plan), f"Batches: {len(plan.batches)}")
    print_table(_model_rows(est), "Estimate by model (batch rates, expected cache use)")
    print_table(est.baseline_rows(), "Estimate against the baselines")
    footer = (
        f"Expected cost: {fmt_usd(est.cost_usd)}; worst case, every escalation taken: "
        f"{fmt_usd(to_usd(est.worst_case_pusd))} (a budget under it may stop the run before "
        "its last rounds)\n"
        f"Expected cached share of input tokens: {est.cached_share * 100:.1f}% "
        f"(cache model: {est.cache_model})\n"
        f"Tokens: {est.input_tokens:,} input by {est.token_basis}; {est.output_tokens:,} "
        f"output by {est.output_basis}\n"
        f"Planned {report.n_items:,} items"
        + (
            f" ({report.n_rejected:,} rejected to {report.rejects_path})"
            if report.n_rejected
            else ""
        )
        + f"; nothing was stored or sent: `batcher run {job}` plans the same and submits it."
    )
    for line in footer.splitlines():  # 100 columns, broken between words only
        click.echo(textwrap.fill(line, 100, break_long_words=False, break_on_hyphens=False))


@cli.command()
@click.argument("job", type=click.Path(dir_okay=False))
@input_option
@click.option(
    "--skip-invalid", is_flag=True, help="Set bad lines aside in a rejects file and plan the rest."
)
@click.option(
    "--max-usd",
    type=click.FloatRange(min=0, min_open=True),
    metavar="X",
    help="Refuse (exit 2) when the estimate is above X dollars [default: the spec's max_usd].",
)
@click.option(
    "--output-tokens",
    type=click.IntRange(min=0),
    metavar="N",
    help="Estimate with N output tokens a request [default: each request's max_tokens, an "
    "upper bound].",
)
@db_option
@click.option("--wide", is_flag=True, help="Every column (the provider's cache key too).")
@json_option
@handle_errors
def plan(job, input_path, skip_invalid, max_usd, output_tokens, wide, db, as_json):
    """Plan JOB over an input and show what would be sent and what it would cost.

    Routes every item to a tier (and says why), groups items that share a system prompt so
    the provider's prompt cache is reused, writes the batch files within the providers'
    limits, and estimates the cost next to the baselines: all-frontier synchronous with no
    cache, then with batch, with caching, with routing, and all combined.

    A dry run: nothing is sent and nothing stays in the database, so reviewing a plan leaves
    no run behind. `batcher run JOB` (or `submit JOB`) plans the same input the same way
    (same code, same batches) and submits it. Exit code 2 when the estimate is over the
    budget (--max-usd, else the spec's max_usd).

    \b
    Examples:
      batcher plan jobs/example.toml
      batcher plan jobs/example.toml --input tonight.jsonl --max-usd 20
      batcher plan jobs/example.toml --output-tokens 200 --json
    """
    from batcher.plan.estimate import check_budget
    from batcher.plan.planner import plan_input
    from batcher.spec import load_spec
    from batcher.store import open_store
    from batcher.store.runs import delete_runs

    spec = load_spec(job)
    source = spec.input_file(input_path)
    engine = open_store(db)
    report = plan_input(
        engine,
        spec,
        source,
        skip_invalid=skip_invalid,
        output_tokens=output_tokens,
        progress=_progress,
    )
    # The plan is planned and estimated by the same code as `batcher run`, then dropped: a
    # stored plan would go stale with the next edit of the spec, the input or the prices.
    delete_runs(engine, [report.run_id])
    if as_json:
        print_json(_to_json(report))
    else:
        _print(report, spec, job, wide)
    limit = max_usd if max_usd is not None else spec.max_usd
    where = "--max-usd" if max_usd is not None else f"{spec.path}: max_usd"
    check_budget(report.estimate, Decimal(str(limit)) if limit is not None else None, where)
