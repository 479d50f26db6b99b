"""The agreement cascade end to end: a replay sandbox over HTTP, the real SDKs, SQLite."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from engine_helpers import FAST_RETRY, POLL, attempts, batches, check_accounted

from batcher.errors import SpecError
from batcher.plan.estimate import estimate_run
from batcher.providers import Clients
from batcher.report.build import build_report
from batcher.report.formats import render_report
from batcher.report.render import report_dict
from batcher.run import engine
from batcher.run.followups import FollowupPolicy, decide_item
from batcher.sandbox import start_sandbox
from batcher.spec import load_spec, parse_spec
from batcher.store import open_store
from batcher.store.attempts import ChainStep

SPEC = """
name = "cascade-test"
input = "input.jsonl"
[tiers]
nano = "openai:gpt-5-nano"
check = "anthropic:claude-haiku-4-5"
mid = "openai:gpt-5-mini"
[defaults]
max_tokens = 4000
[routing]
strategy = "cascade"
classifier = "fixed:nano"
[routing.cascade]
second_opinions = ["check"]
temperature = 0.9
[validation]
json = true
answer_field = "answer"
"""

# question -> (nano's answer, check's answer, mid's answer)
REPLAY = {
    "agree": ('{"answer": "1,000"}', '{"answer": "1000.0"}', '{"answer": "1000"}'),
    "differ": ('{"answer": "54"}', '{"answer": "56"}', '{"answer": "56"}'),
    "check-invalid": ('{"answer": "7"}', "seven, I think", '{"answer": "7"}'),
    "nano-invalid": ("no idea", '{"answer": "3"}', '{"answer": "3"}'),
}
MODELS = {"gpt-5-nano": "nano", "claude-haiku-4-5": "check", "gpt-5-mini": "mid"}


@pytest.fixture(scope="module")
def replay_box(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay") / "replay.jsonl"
    with open(path, "wb") as f:
        for user, answers in REPLAY.items():
            outputs = dict(zip(("nano", "check", "mid"), answers, strict=True))
            f.write(orjson.dumps({"user": user, "outputs": outputs}) + b"\n")
    with start_sandbox(replay=str(path), model_map=MODELS) as box:
        yield box


def _job(tmp_path: Path) -> Path:
    (tmp_path / "input.jsonl").write_bytes(
        b"".join(orjson.dumps({"id": q, "prompt": q}) + b"\n" for q in REPLAY)
    )
    spec = tmp_path / "job.toml"
    spec.write_text(SPEC)
    return spec


def test_agreement_accepts_and_disagreement_escalates_in_the_right_rounds(replay_box, tmp_path):
    replay_box.reset()
    db = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    spec = load_spec(_job(tmp_path))
    assert spec.routing.ladder == ["nano", "mid"]  # the opinion tier is no rung
    run_id = engine.start_run(db, spec, spec.input_file())

    planned = batches(db, run_id)  # second opinions go out with the first tier
    assert {(b["round"], b["tier"]) for b in planned} == {(1, "nano"), (1, "check")}
    for b in planned:  # the second opinions only are sampled with their own temperature
        lines = [orjson.loads(line) for line in Path(b["path"]).read_bytes().splitlines()]
        sent = {line["params"].get("temperature") if "params" in line
                else line["body"].get("temperature") for line in lines}  # fmt: skip
        assert sent == ({0.9} if b["tier"] == "check" else {None})
    outcome = engine.drive_run(
        db, run_id, clients=Clients.for_sandbox(replay_box, FAST_RETRY), poll=POLL
    )
    assert outcome.status == "completed"
    check_accounted(db, run_id, replay_box, len(REPLAY))

    rows = attempts(db, run_id)
    with db.connect() as conn:
        items = {
            r.custom_id: r
            for r in conn.exec_driver_sql(
                "SELECT i.id, i.custom_id, i.status, a.output, i.final_attempt_id FROM item i"
                " LEFT JOIN attempt a ON a.id = i.answer_attempt_id"
            )
        }
    rounds = {b["id"]: b["round"] for b in batches(db, run_id)}

    def chain(question: str) -> list[tuple]:
        item = items[question]
        return [
            (a["role"], a["tier"], a["status"], rounds[a["batch_id"]])
            for a in rows
            if a["item_id"] == item.id
        ]

    assert chain("agree") == [
        ("primary", "nano", "succeeded", 1),
        ("opinion", "check", "succeeded", 1),
    ]
    assert chain("differ") == [
        ("primary", "nano", "succeeded", 1),
        ("opinion", "check", "succeeded", 1),
        ("primary", "mid", "succeeded", 2),
    ]
    assert chain("check-invalid")[-1] == ("primary", "mid", "succeeded", 2)
    # a failed first tier escalates as usual; its opinion is bought but not needed
    assert chain("nano-invalid") == [
        ("primary", "nano", "invalid", 1),
        ("opinion", "check", "succeeded", 1),
        ("primary", "mid", "succeeded", 2),
    ]
    assert all(item.status == "succeeded" for item in items.values())
    # the agreed item ends with the first tier's answer, the others with mid's
    assert items["agree"].output == REPLAY["agree"][0]
    final = {a["id"]: a for a in rows}
    assert final[items["agree"].final_attempt_id]["tier"] == "nano"
    assert items["differ"].output == REPLAY["differ"][2]
    assert {final[i.final_attempt_id]["role"] for i in items.values()} == {"primary"}

    report = build_report(db, [run_id])  # check_report: the parts add up to the total
    (row,) = report.agreement
    # "differ" disagreed, "check-invalid" had an invalid opinion; "nano-invalid" compared nothing
    assert (row.tier, row.compared, row.agreed, row.escalated) == ("nano", 2, 1, 2)
    opinions = [a for a in rows if a["role"] == "opinion"]
    costs = report.total.costs
    assert costs.second_opinions == -sum(a["uncached_pusd"] for a in opinions) < 0
    assert costs.baseline == sum(a["baseline_pusd"] for a in rows if a["role"] == "primary")
    assert costs.routing + costs.second_opinions + costs.caching + costs.batch == costs.saved
    assert costs.cost == sum(a["cost_pusd"] for a in rows)
    table = render_report(report, "table")
    assert "second opinions" in table and "Agreement cascade" in table
    assert report_dict(report)["agreement"][0]["agreement_rate"] == 0.5


def test_second_opinions_have_no_all_frontier_baseline_in_the_estimate(tmp_path):
    spec_path = _job(tmp_path)
    plain = tmp_path / "plain.toml"
    plain.write_text(SPEC.replace('strategy = "cascade"', 'strategy = "classifier"'))
    figures = []
    for path in (spec_path, plain):
        db = open_store(f"sqlite:///{tmp_path / (path.stem + '.db')}")
        spec = load_spec(path)
        run_id = engine.start_run(db, spec, spec.input_file())
        figures.append(estimate_run(db, run_id, spec))
    cascade, classifier = figures
    assert cascade.n_requests == 2 * classifier.n_requests  # one second opinion each
    for name in ("frontier_sync", "batch", "caching"):
        assert cascade.scenarios[name] == classifier.scenarios[name]
    assert cascade.scenarios["combined"] > classifier.scenarios["combined"]


def test_cascade_needs_second_opinion_tiers():
    base = {"name": "j", "tiers": {"nano": "openai:gpt-5-nano", "mid": "openai:gpt-5-mini"}}
    with pytest.raises(SpecError, match="second_opinions"):
        parse_spec({**base, "routing": {"strategy": "cascade"}})
    with pytest.raises(SpecError, match="not a tier"):
        parse_spec(
            {**base, "routing": {"strategy": "cascade", "cascade": {"second_opinions": ["x"]}}}
        )
    spec = parse_spec(
        {**base, "routing": {"strategy": "cascade", "cascade": {"second_opinions": ["nano"]}}}
    )
    assert spec.opinion_tiers("mid") == []  # the top of the ladder gets none
    assert spec.opinion_tiers("nano") == []  # nor an opinion tier itself


def _a(seq, tier, status, role="primary", key=None, code=None):
    return ChainStep(
        seq, seq, tier, "p", "m", status, code, None, None, None, None, role=role, answer_key=key
    )


POLICY = FollowupPolicy(max_attempts=4, transient_retries=1, ladder=("nano", "mid", "top"))


@pytest.mark.parametrize(
    ("chain", "expected"),
    [
        ([_a(1, "nano", "succeeded", key="5"), _a(2, "c", "succeeded", "opinion", "5")],
         ("succeed", None, "primary")),
        ([_a(1, "nano", "succeeded", key="5"), _a(2, "c", "succeeded", "opinion", "6")],
         ("escalate", "mid", "primary")),
        ([_a(1, "nano", "succeeded", key=None), _a(2, "c", "succeeded", "opinion", None)],
         ("escalate", "mid", "primary")),  # no key to compare is no agreement
        ([_a(1, "nano", "succeeded", key="5"), _a(2, "c", "truncated", "opinion")],
         ("escalate", "mid", "primary")),  # a cut-off opinion is no agreement
        ([_a(1, "nano", "succeeded", key="5"), _a(2, "c", "errored", "opinion")],
         ("retry", "c", "opinion")),
        ([_a(1, "nano", "succeeded", key="5"), _a(2, "c", "errored", "opinion"),
          _a(3, "c", "errored", "opinion")],
         ("escalate", "mid", "primary")),  # the opinion's retries are used up
        ([_a(1, "nano", "succeeded", key="5"), _a(2, "c", "errored", "opinion"),
          _a(3, "c", "expired", "opinion")],
         ("retry", "c", "opinion")),  # an expiry has its own budget (expired_retries)
        ([_a(1, "nano", "succeeded", key="5"), _a(2, "c", "errored", "opinion"),
          _a(3, "c", "succeeded", "opinion", "5")],
         ("succeed", None, "primary")),
        ([_a(1, "nano", "errored"), _a(2, "c", "succeeded", "opinion", "5")],
         ("retry", "nano", "primary")),
        ([_a(1, "nano", "errored"), _a(2, "c", "succeeded", "opinion", "5"),
          _a(3, "nano", "succeeded", key="5")],
         ("succeed", None, "primary")),  # the retried first tier is compared again
        ([_a(1, "nano", "succeeded", key="5"), _a(2, "c", "succeeded", "opinion", "6"),
          _a(3, "mid", "succeeded", key="6")],
         ("succeed", None, "primary")),  # above the first tier: valid is enough
        ([_a(1, "top", "succeeded", key="5"), _a(2, "c", "succeeded", "opinion", "6")],
         ("succeed", None, "primary")),  # nothing above: accepted on validity
    ],
)  # fmt: skip
def test_cascade_decisions(chain, expected):
    decision = decide_item(POLICY, chain)
    assert (decision.kind, decision.tier, decision.role) == expected
