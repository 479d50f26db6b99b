"""The baseline prices an attempt's input and visible output tokens on the frontier model at
standard rates: a cheap model's hidden reasoning is not counted as frontier output. Run end
to end on the sandbox (gpt-5 models report reasoning tokens) through the real SDKs."""

from __future__ import annotations

from decimal import Decimal

from engine_helpers import (  # noqa: F401 - fixtures
    POLL,
    attempts,
    clients_fixture,
    db_fixture,
    sandbox_fixture,
    served_fixture,
    write_job,
)
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price
from report_db import render_run_report

from batcher.money.amounts import to_pusd
from batcher.report.build import build_report, check_report
from batcher.run import engine
from batcher.spec import load_spec


def frontier_standard_pusd(input_tokens: int, output_tokens: int) -> int:
    usage = PriceUsage(input_tokens=input_tokens, output_tokens=output_tokens)
    price = calc_price(usage, "claude-sonnet-4-6", provider_id="anthropic")
    return to_pusd(Decimal(price.total_price))


def test_baseline_leaves_out_reasoning_tokens(db, sandbox, clients, tmp_path):
    spec = load_spec(write_job(tmp_path, 4))
    run_id = engine.start_run(db, spec, spec.input_file())
    outcome = engine.drive_run(db, run_id, clients=clients, poll=POLL)
    assert outcome.status == "completed", outcome.message
    rows = attempts(db, run_id)
    assert all(a["model"] == "gpt-5-nano" and a["reasoning_tokens"] > 0 for a in rows)
    for a in rows:
        visible = a["output_tokens"] - a["reasoning_tokens"]
        assert a["baseline_pusd"] == frontier_standard_pusd(a["input_tokens"], visible)
    report = build_report(db, [run_id])
    check_report(report)  # the parts still add up to baseline - paid
    costs = report.total.costs
    assert costs.routing + costs.caching + costs.batch == costs.baseline - costs.cost
    text = render_run_report(db, run_id)
    assert "visible output tokens (hidden reasoning excluded)" in " ".join(text.split())
