"""The estimate of a plan: the article's figures through the whole plan path, expected cache
use, long-context requests, and the budget check."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
import sqlalchemy as sa

from batcher.errors import UsageError
from batcher.money.amounts import to_usd
from batcher.plan.estimate import check_budget, estimate_run
from batcher.plan.ingest import ingest
from batcher.plan.planner import plan_run
from batcher.plan.routing import make_annotator
from batcher.plan.tokens import count_tokens
from batcher.spec import parse_spec
from batcher.store import open_store
from batcher.store.models import TABLES

SYSTEM_2000 = "hello" + " hello" * 1999  # exactly 2,000 cl100k tokens


def plan(db, spec, tmp_path, lines, tokens: int | None = None):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    run_id = ingest(db, spec, path, annotate=make_annotator(spec)).run_id
    if tokens is not None:  # pin the token count to the article's round numbers
        item = TABLES["item"]
        with db.begin() as conn:
            conn.execute(
                sa.update(item).where(item.c.run_id == run_id).values(est_input_tokens=tokens)
            )
    plan_run(db, run_id, spec)
    return run_id


def usd(estimate, name):
    return to_usd(estimate.scenarios[name])


def test_article_figures_through_the_plan(db_url, tmp_path):
    # 30 requests of 500 in / 300 out: the article's 30,000 scaled by 1/1000.
    spec = parse_spec(
        {
            "name": "t",
            "tiers": {"mid": "openai:gpt-5-mini", "frontier": "anthropic:claude-sonnet-4-6"},
            "routing": {"ladder": ["mid", "frontier"], "classifier": "fixed:mid"},
        }
    )
    db = open_store(db_url)
    run_id = plan(db, spec, tmp_path, [{"prompt": f"q{i}"} for i in range(30)], tokens=500)
    est = estimate_run(db, run_id, spec, output_tokens=300)
    assert (est.n_requests, est.input_tokens, est.output_tokens) == (30, 15_000, 9_000)
    assert usd(est, "frontier_sync") == Decimal("0.18")  # $180.00 / 1000 on Sonnet 4.6
    assert usd(est, "batch") == Decimal("0.09")
    assert usd(est, "caching") == Decimal("0.18")  # nothing shared: caching changes nothing
    assert usd(est, "routing") == Decimal("0.02175")  # $21.75 / 1000 on gpt-5-mini
    assert usd(est, "combined") == Decimal("0.010875") == est.cost_usd
    assert est.cached_share == 0


def test_caching_scenario_of_the_article(db_url, tmp_path):
    # 1,000 requests with a 2,000-token system prompt and 200 user tokens, the first 50 of
    # the batch missing (a 95% hit rate): the article's 10,000-a-day scenario scaled by 1/10
    # ($66.00 -> $6.60 uncached, $15.45 -> $1.545 cached: 50 writes at $3.75, 950 reads at
    # $0.30, user tokens at $3), with its 5m TTL and the documented 1,024 minimum.
    assert count_tokens(SYSTEM_2000) == 2000
    spec = parse_spec(
        {
            "name": "t",
            "tiers": {"frontier": "anthropic:claude-sonnet-4-6"},
            "routing": {"ladder": ["frontier"]},
            "defaults": {"system": SYSTEM_2000},
            "caching": {
                "cold_requests": {"anthropic": 50},
                "anthropic_ttl": "5m",
                "min_tokens": {"anthropic:claude-sonnet-4-6": 1024},
            },
        }
    )
    db = open_store(db_url)
    run_id = plan(db, spec, tmp_path, [{"prompt": f"q{i}"} for i in range(1000)], tokens=2200)
    est = estimate_run(db, run_id, spec, output_tokens=0)
    assert usd(est, "frontier_sync") == Decimal("6.60")
    assert usd(est, "caching") == Decimal("1.545")
    assert usd(est, "combined") == Decimal("0.7725")  # batch halves it
    assert est.cache_read_tokens == 1_900_000 and est.cache_write_tokens == 100_000
    assert est.cached_share == Decimal(1_900_000) / Decimal(2_200_000)


def test_defect7_sonnet_prefix_below_the_measured_minimum_is_planned_uncached(db_url, tmp_path):
    # 1,500 cl100k tokens: over the documented 1,024 but under the 2,048 users measured
    # (and Claude's own count may differ from cl100k): no cache reads are assumed.
    spec = parse_spec(
        {
            "name": "t",
            "tiers": {"frontier": "anthropic:claude-sonnet-4-6"},
            "routing": {"ladder": ["frontier"]},
            "defaults": {"system": SYSTEM_2000.rsplit(" hello", 500)[0]},
        }
    )
    db = open_store(db_url)
    run_id = plan(db, spec, tmp_path, [{"prompt": f"q{i}"} for i in range(300)], tokens=1700)
    est = estimate_run(db, run_id, spec, output_tokens=0)
    assert est.cache_read_tokens == 0 and est.cache_write_tokens == 0
    # 3,000 tokens: caches, 1h writes; the first 100 requests of the batch miss, not 20%
    spec = spec.model_copy(update={"defaults": spec.defaults.model_copy(
        update={"system": SYSTEM_2000 + " hello" * 1000})})  # fmt: skip
    run_id = plan(db, spec, tmp_path, [{"prompt": f"q{i}"} for i in range(300)], tokens=3200)
    est = estimate_run(db, run_id, spec, output_tokens=0)
    assert est.cache_write_tokens == 100 * 3000 and est.cache_read_tokens == 200 * 3000


def test_openai_cache_reads_count_in_128_token_steps(sqlite_url, tmp_path):
    spec = parse_spec(
        {
            "name": "t",
            "tiers": {"nano": "openai:gpt-5-nano"},
            "routing": {"ladder": ["nano"]},
            "defaults": {"system": SYSTEM_2000},
            "caching": {"cold_requests": {"openai": 5}},
        }
    )
    db = open_store(sqlite_url)
    run_id = plan(db, spec, tmp_path, [{"prompt": f"q{i}"} for i in range(10)], tokens=2100)
    est = estimate_run(db, run_id, spec, output_tokens=10)
    # 10 requests, 5 miss, 5 hit; a hit reads 1,920 tokens (15 x 128) of the 2,000
    assert est.cache_read_tokens == 5 * 1920
    plain = 21_000 - 9600
    expected = (plain * Decimal("0.05") + 9600 * Decimal("0.005") + 100 * Decimal("0.4")) / 2
    assert est.cost_usd == expected / 1_000_000


def test_output_cap_is_the_default_bound(sqlite_url, tmp_path):
    spec = parse_spec(
        {
            "name": "t",
            "tiers": {"nano": "openai:gpt-5-nano"},
            "routing": {"ladder": ["nano"]},
            "defaults": {"max_tokens": 100},
        }
    )
    db = open_store(sqlite_url)
    lines = [{"prompt": "a"}, {"prompt": "b", "max_tokens": 40}, {"prompt": "max_tokens c"}]
    run_id = plan(db, spec, tmp_path, lines, tokens=10)
    est = estimate_run(db, run_id, spec)
    assert est.output_tokens == 100 + 40 + 100
    assert est.output_basis.startswith("max_tokens cap")


def test_long_context_requests_are_priced_alone(sqlite_url, tmp_path):
    spec = parse_spec(
        {
            "name": "t",
            "tiers": {"big": "openai:gpt-5.4"},
            "routing": {"ladder": ["big"]},
        }
    )
    db = open_store(sqlite_url)
    run_id = plan(db, spec, tmp_path, [{"prompt": "a"}, {"prompt": "b"}])
    item = TABLES["item"]
    with db.begin() as conn:  # one request past the 272k tier, one short
        ids = conn.execute(sa.select(item.c.id).where(item.c.run_id == run_id)).scalars().all()
        conn.execute(sa.update(item).where(item.c.id == ids[0]).values(est_input_tokens=300_000))
        conn.execute(sa.update(item).where(item.c.id == ids[1]).values(est_input_tokens=1_000))
    est = estimate_run(db, run_id, spec, output_tokens=0)
    # 300k at the $5.00 tier rate + 1k at $2.50, standard
    assert usd(est, "frontier_sync") == Decimal("1.5") + Decimal("0.0025")
    assert est.n_requests == 2


def test_budget_check_says_by_how_much(sqlite_url, tmp_path):
    spec = parse_spec(
        {"name": "t", "tiers": {"nano": "openai:gpt-5-nano"}, "routing": {"ladder": ["nano"]}}
    )
    db = open_store(sqlite_url)
    run_id = plan(db, spec, tmp_path, [{"prompt": "a"}], tokens=1_000_000)
    est = estimate_run(db, run_id, spec, output_tokens=0)
    assert est.cost_usd == Decimal("0.025")
    check_budget(est, 0.03, "--max-usd")
    check_budget(est, None, "spec")
    with pytest.raises(UsageError) as info:
        check_budget(est, 0.02, "--max-usd")
    assert str(info.value) == (
        "the estimate $0.025 is $0.005 over the budget of $0.02 (--max-usd); "
        "nothing was submitted: raise the budget or send fewer items"
    )


@pytest.mark.parametrize("long_prompt", [False, True])
def test_a_fresh_plans_estimate_equals_the_one_read_back(
    sqlite_url, tmp_path, long_prompt, monkeypatch
):
    """plan_input estimates from the group sums of its layout and what the read of the input
    showed (no request past the long-context tier, no max_tokens of an item's own); the
    figures are the ones estimate_run reads back from the database, with and without such
    requests (which make it read back)."""
    from batcher.plan.planner import plan_input
    from batcher.store import attempts

    read_back = []
    planned_groups = attempts.planned_groups
    monkeypatch.setattr(
        attempts, "planned_groups", lambda *a: read_back.append(1) or planned_groups(*a)
    )

    spec = parse_spec(
        {
            "name": "t",
            "tiers": {"nano": "openai:gpt-5-nano", "big": "openai:gpt-5.4"},
            "routing": {"ladder": ["nano", "big"], "classifier": "fixed:nano"},
        }
    )
    lines = [{"prompt": f"ticket {i}", "tier": "big" if i % 3 else "nano"} for i in range(9)]
    lines += [{"prompt": f"shared {i}", "system": SYSTEM_2000} for i in range(12)]
    lines += [{"prompt": "z", "model": "openai:gpt-5-mini"}]
    if long_prompt:  # past gpt-5.4's 272k-token tier, with its own max_tokens
        lines.append({"prompt": "word " * 280_000, "tier": "big", "max_tokens": 77})
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    db = open_store(sqlite_url)
    report = plan_input(db, spec, str(path))
    assert read_back == ([1] if long_prompt else [])
    again = estimate_run(db, report.run_id, spec)
    assert report.estimate.to_dict() == again.to_dict()
    assert report.estimate.n_requests == len(lines)
