"""Report arithmetic on a database built by hand: every figure is checked against the attempt
rows inserted, summed here independently of the report code."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest
from report_db import SYSTEM, add_item, add_run, attempt, build_completed_run, render_run_report

from batcher.errors import UsageError
from batcher.money.amounts import to_usd
from batcher.plan.tokens import count_tokens
from batcher.report.build import (
    Costs,
    Report,
    ReportMismatch,
    TierRow,
    build_report,
    check_report,
    parse_since,
    select_runs,
)
from batcher.report.formats import render_report
from batcher.store import open_store


@pytest.fixture
def db(db_url):
    engine = open_store(db_url)
    yield engine
    engine.dispose()


def total(attempts, column, tier=None):
    return sum(a[column] for a in attempts if tier is None or a["tier"] == tier)


def test_totals_match_the_sum_of_attempts(db):
    run_id, attempts = build_completed_run(db)
    report = build_report(db, [run_id])

    t = report.total
    assert t.attempts == len(attempts) == 10
    assert t.items == 6 and t.succeeded == 5
    assert t.costs == Costs(
        total(attempts, "cost_pusd"),
        total(attempts, "standard_pusd"),
        total(attempts, "uncached_pusd"),
        total(attempts, "baseline_pusd"),
    )
    assert t.input_tokens == total(attempts, "input_tokens")
    assert t.cache_read_tokens == total(attempts, "cache_read_tokens")
    assert t.cache_write_tokens == total(attempts, "cache_write_5m_tokens") + total(
        attempts, "cache_write_1h_tokens"
    )
    assert t.output_tokens == total(attempts, "output_tokens")
    by_tier = {row.tier: row for row in report.tiers}
    assert list(by_tier) == ["nano", "mid", "frontier"]  # the spec's order, cheapest first
    for tier, row in by_tier.items():
        assert row.costs.cost == total(attempts, "cost_pusd", tier)
        assert row.attempts == sum(1 for a in attempts if a["tier"] == tier)
    # items attempted at a tier, and items whose successful final attempt was there
    assert [(r.items, r.succeeded) for r in report.tiers] == [(4, 2), (3, 2), (2, 1)]


def test_savings_parts_add_up_to_the_total_difference(db):
    run_id, attempts = build_completed_run(db)
    savings = build_report(db, [run_id]).total.costs

    baseline, cost = total(attempts, "baseline_pusd"), total(attempts, "cost_pusd")
    assert savings.routing == baseline - total(attempts, "uncached_pusd")
    assert savings.caching == total(attempts, "uncached_pusd") - total(attempts, "standard_pusd")
    assert savings.batch == total(attempts, "standard_pusd") - cost
    assert savings.routing + savings.caching + savings.batch == savings.saved == baseline - cost
    assert savings.discount == (Decimal(baseline - cost) / baseline).quantize(Decimal("1e-6"))


def test_cost_per_success_is_cost_over_successful_items(db):
    run_id, attempts = build_completed_run(db)
    report = build_report(db, [run_id])

    cost = total(attempts, "cost_pusd")
    expected = (Decimal(cost) / 5).quantize(Decimal(1))
    assert report.total.cost_per_success == int(expected)
    nano = report.tiers[0]
    assert nano.cost_per_success == total(attempts, "cost_pusd", "nano") // 2
    data = orjson.loads(render_report(report, "json"))
    assert Decimal(data["total"]["cost_per_success_usd"]) == to_usd(int(expected))
    assert Decimal(data["savings"]["cost_usd"]) == to_usd(cost)  # exact, as a string


def test_cost_per_success_rounds_half_even_in_whole_picodollars():
    def row(cost, succeeded):
        return TierRow("t", "p", "m", items=succeeded, succeeded=succeeded, costs=Costs(cost))

    assert row(5, 2).cost_per_success == 2  # 2.5 -> 2
    assert row(7, 2).cost_per_success == 4  # 3.5 -> 4
    assert row(10, 3).cost_per_success == 3
    assert row(10, 0).cost_per_success is None


def test_random_attempts_add_up_including_negative_savings(db):
    """Escalations can cost more than the baseline; the parts must still add up exactly."""
    rng = random.Random(7)
    run_id = add_run(db)
    attempts = []
    for line_no in range(1, 41):
        rows = [
            attempt(
                rng.choice(["nano", "mid", "frontier"]),
                rng.choice(["succeeded", "invalid", "errored"]),
                rng.randrange(10**9),
                standard_pusd=rng.randrange(10**9),
                uncached_pusd=rng.randrange(10**9),
                baseline_pusd=rng.randrange(10**9),
                input_tokens=rng.randrange(1, 5000),
                cache_read_tokens=rng.randrange(0, 50),
            )
            for _ in range(rng.randrange(1, 4))
        ]
        status = "succeeded" if rows[-1]["status"] == "succeeded" else "failed"
        add_item(db, run_id, line_no, status, rows, group=rng.choice(["billing", "tech", None]))
        attempts += rows
    report = build_report(db, [run_id])
    c = report.total.costs
    assert c.cost == total(attempts, "cost_pusd")
    assert c.baseline == total(attempts, "baseline_pusd")
    assert c.routing + c.caching + c.batch == c.baseline - c.cost
    assert sum(r.attempts for r in report.tiers) == len(attempts)
    assert sum(r.succeeded for r in report.tiers) == report.total.succeeded


def test_a_report_whose_parts_do_not_add_up_raises():
    tier = TierRow("nano", "openai", "gpt-5-nano", attempts=1, costs=Costs(1, 2, 3, 4))
    total_row = TierRow("TOTAL", "", "", attempts=1, costs=Costs(1, 2, 3, 5))
    with pytest.raises(ReportMismatch, match="per-tier costs"):
        check_report(Report(runs=[], tiers=[tier], total=total_row, cache_groups=[]))
    total_row = TierRow("TOTAL", "", "", attempts=2, costs=Costs(1, 2, 3, 4))
    with pytest.raises(ReportMismatch, match="attempts"):
        check_report(Report(runs=[], tiers=[tier], total=total_row, cache_groups=[]))


def test_cache_efficiency_is_the_share_of_prefix_tokens_read_from_cache(db):
    run_id, _ = build_completed_run(db)
    groups = {(g.cache_group, g.model): g for g in build_report(db, [run_id]).cache_groups}

    prefix = count_tokens(SYSTEM["tech"])
    claude = groups[("tech", "claude")]
    assert (claude.attempts, claude.cacheable_tokens, claude.cache_read_tokens) == (1, prefix, 15)
    assert claude.efficiency == (Decimal(15) / prefix).quantize(Decimal("1e-6"))
    # the errored attempt (no usage) is left out: it never had a chance to read the cache
    nano = groups[("tech", "gpt-5-nano")]
    assert nano.attempts == 1 and nano.efficiency == 1  # 17 read >= prefix: capped at all
    billing = groups[("billing", "gpt-5-nano")]
    assert billing.cacheable_tokens == 2 * count_tokens(SYSTEM["billing"])
    assert billing.efficiency == 0
    # the failed item has no cache group, so its attempts on mid and frontier count nowhere
    assert set(groups) == {
        ("billing", "gpt-5-mini"),
        ("billing", "gpt-5-nano"),
        ("tech", "claude"),
        ("tech", "gpt-5-nano"),
    }


def test_the_same_run_reported_twice_prints_the_same(db):
    run_id, _ = build_completed_run(db)
    first = {fmt: render_run_report(db, run_id, fmt) for fmt in ("table", "json", "csv", "md")}
    # another run of another job must not change this run's report
    build_completed_run(db, job="other", created_at=datetime(2026, 11, 2, tzinfo=UTC))
    again = {fmt: render_run_report(db, run_id, fmt) for fmt in ("table", "json", "csv", "md")}
    assert first == again
    assert "$0.00007830 " in first["table"]  # tables: four significant digits
    assert "$0.00007830001" in first["md"]  # the exact total, not rounded


def test_a_run_in_flight_says_so(db):
    run_id = add_run(db, status="running")
    add_item(db, run_id, 1, "succeeded", [attempt("nano", "succeeded", 1_000)])
    add_item(db, run_id, 2, "in_flight", [attempt("nano", "submitted", 0, input_tokens=0)])
    add_item(db, run_id, 3, "queued", [attempt("mid", "planned", 0, input_tokens=0)])
    report = build_report(db, [run_id])

    assert [r.id for r in report.in_flight] == [run_id]
    warning = f"Run {run_id} is still in flight (status running, 2 of 3 items unfinished)"
    assert report.warnings()[0].startswith(warning)
    assert warning in render_report(report, "table")
    assert warning in render_report(report, "md")
    assert orjson.loads(render_report(report, "json"))["in_flight"] is True

    done, _ = build_completed_run(db)
    assert build_report(db, [done]).warnings() == []


def test_many_runs_sum_and_list_each_run(db):
    first, a1 = build_completed_run(db, created_at=datetime(2026, 11, 1, tzinfo=UTC))
    second, a2 = build_completed_run(db, created_at=datetime(2026, 11, 2, tzinfo=UTC))
    report = build_report(db, select_runs(db, job="labels"))

    assert [r.id for r in report.runs] == [first, second]
    assert [r.costs.cost for r in report.runs] == [total(a1, "cost_pusd"), total(a2, "cost_pusd")]
    assert report.total.costs.cost == total(a1 + a2, "cost_pusd")
    assert report.total.items == 12 and report.total.succeeded == 10
    assert report.title() == "2 runs of labels"


def test_runs_are_selected_by_id_job_and_date(db):
    old = add_run(db, job="tickets", created_at=datetime(2026, 10, 30, 23, 0, tzinfo=UTC))
    new = add_run(db, job="tickets", created_at=datetime(2026, 11, 3, 2, 0, tzinfo=UTC))
    other = add_run(db, job="emails", created_at=datetime(2026, 11, 4, 2, 0, tzinfo=UTC))

    assert select_runs(db, old) == [old]
    assert select_runs(db) == [other]  # the latest
    assert select_runs(db, job="tickets") == [old, new]
    assert select_runs(db, since=parse_since("2026-11-01")) == [new, other]
    assert select_runs(db, job="tickets", since=parse_since("2026-11-01")) == [new]
    with pytest.raises(UsageError, match=r"give RUN \(1\) or --job/--since, not both"):
        select_runs(db, 1, job="tickets")
    with pytest.raises(UsageError, match=r"run 999 not found"):
        select_runs(db, 999)
    with pytest.raises(UsageError, match=r"no run matches --job nightly --since 2026-12-01"):
        select_runs(db, job="nightly", since=parse_since("2026-12-01"))


def test_an_empty_database_says_how_to_start(db):
    with pytest.raises(UsageError, match=r"no runs yet: start one with `batcher run JOB`"):
        select_runs(db)


def test_since_must_be_a_date():
    assert parse_since("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(UsageError, match=r"--since 'yesterday' is not a date: use YYYY-MM-DD"):
        parse_since("yesterday")


def test_csv_and_markdown_carry_every_tier_and_the_total(db):
    run_id, attempts = build_completed_run(db)
    csv_text = render_run_report(db, run_id, "csv")
    lines = csv_text.splitlines()
    sections = [line.split(",")[0] for line in lines[1:]]
    assert sections == ["run", "tier", "tier", "tier", "total"] + ["cache_group"] * 4
    total_line = next(line for line in lines if line.startswith("total,"))
    assert format(to_usd(total(attempts, "cost_pusd")).quantize(Decimal("1e-12")), "f") in (
        total_line
    )
    md = render_run_report(db, run_id, "md")
    assert "| frontier | anthropic:claude | 2 | 1 | 50.0% | 2 |" in md
    assert "| saved by routing |" in md


def test_an_unknown_format_is_refused(db):
    run_id, _ = build_completed_run(db)
    with pytest.raises(UsageError, match=r"unknown report format 'xml': use one of table"):
        render_run_report(db, run_id, "xml")


def test_answers_reused_from_earlier_runs_are_counted_and_cost_nothing(db):
    run_id = add_run(db)
    free = {"cost_pusd": 0, "standard_pusd": 0, "uncached_pusd": 0, "baseline_pusd": 0}
    reused = attempt("nano", "reused", 0, input_tokens=0, output_tokens=0, **free)
    add_item(db, run_id, 1, "succeeded", [reused], output="refund")
    add_item(db, run_id, 2, "succeeded", [attempt("nano", "succeeded", 5_000)], output="invoice")
    report = build_report(db, [run_id])

    assert (report.total.attempts, report.total.reused, report.total.succeeded) == (2, 1, 2)
    assert report.tiers[0].reused == 1 and report.total.costs.cost == 5_000
    assert orjson.loads(render_report(report, "json"))["total"]["reused"] == 1
    header = render_report(report, "csv").splitlines()[0].split(",")
    assert header[header.index("attempts") + 1] == "reused"
