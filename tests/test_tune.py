"""`batcher tune` and policy files end to end: a replay sandbox over HTTP, the real SDKs,
SQLite; the replays are written here."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from engine_helpers import FAST_RETRY, POLL, attempts, batches, check_accounted

from batcher.cli import cli
from batcher.errors import SpecError, UsageError
from batcher.providers import Clients
from batcher.run import engine
from batcher.sandbox import start_sandbox
from batcher.spec import load_spec
from batcher.store import open_store
from batcher.tune.fit import read_gold, tune
from batcher.tune.policies import Shape, policy_of
from batcher.tune.policy_file import policy_document, write_policy

TIERS = """
[tiers]
nano = "openai:gpt-4.1-nano"
check = "anthropic:claude-haiku-4-5"
mid = "openai:gpt-5-mini"
frontier = "anthropic:claude-sonnet-4-6"
[defaults]
max_tokens = 4000
[validation]
json = true
answer_field = "answer"
"""
# Every item to nano, a second opinion from check, and the frontier for every item too:
# all the evidence tune needs, in one run.
EVIDENCE = """
[routing]
strategy = "cascade"
classifier = "fixed:nano"
ladder = ["nano", "frontier"]
calibrate = 1.0
[routing.cascade]
second_opinions = ["check"]
"""
MODELS = {"gpt-4.1-nano": "nano", "claude-haiku-4-5": "check", "gpt-5-mini": "mid",
          "claude-sonnet-4-6": "frontier"}  # fmt: skip
N = 20


def _answer(value: int) -> str:
    return orjson.dumps({"answer": str(value)}).decode()


def _replay() -> dict[str, dict[str, str]]:
    """Two jobs of N questions. "easy": every model is right. "hard": nano is wrong on a
    quarter of the items and check on another quarter, never both (the wrong answers look
    like the right ones: same length, same form)."""
    rows = {}
    for i in range(N):
        right = _answer(10 + i)
        rows[f"easy {i}: what is it?"] = dict.fromkeys(MODELS.values(), right)
        nano = _answer(60 + i) if i % 4 == 0 else right
        check = _answer(60 + i) if i % 4 == 1 else right
        rows[f"hard {i}: what is it?"] = {"nano": nano, "check": check, "mid": right,
                                         "frontier": right}  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def replay_box(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay") / "replay.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"user": u, "outputs": o}) + b"\n"
                              for u, o in _replay().items()))  # fmt: skip
    with start_sandbox(replay=str(path), model_map=MODELS) as box:
        yield box


def _job(folder: Path, kind: str, routing: str, name: str = "job", metadata=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(N):
        item = {"id": f"q{i}", "prompt": f"{kind} {i}: what is it?"}
        if metadata is not None:
            item["metadata"] = metadata(i)
        lines.append(orjson.dumps(item) + b"\n")
    (folder / "input.jsonl").write_bytes(b"".join(lines))
    spec = folder / f"{name}.toml"
    spec.write_text(f'name = "tune-{kind}"\ninput = "input.jsonl"\n{TIERS}{routing}')
    return spec


def _run(db, box, spec_path: Path) -> int:
    box.reset()
    spec = load_spec(spec_path)
    run_id = engine.start_run(db, spec, spec.input_file())
    outcome = engine.drive_run(db, run_id, clients=Clients.for_sandbox(box, FAST_RETRY), poll=POLL)
    assert outcome.status == "completed"
    check_accounted(db, run_id, box, N)
    return run_id


def _final_tiers(db, run_id: int) -> dict[int, str]:
    """item id -> tier of the attempt its answer came from."""
    rows = attempts(db, run_id)
    by_id = {a["id"]: a for a in rows}
    with db.connect() as conn:
        ends = conn.exec_driver_sql(
            "SELECT id, final_attempt_id FROM item WHERE run_id = ?", (run_id,)
        ).all()
    return {item_id: by_id[final]["tier"] for item_id, final in ends}


def test_tune_picks_the_cheap_tier_when_disagreement_never_pays(replay_box, tmp_path):
    db = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    spec_path = _job(tmp_path, "easy", EVIDENCE)
    _run(db, replay_box, spec_path)

    result = tune(db, load_spec(spec_path))
    assert result.target == 1  # the frontier's own accuracy against itself
    assert (result.chosen.policy.kind, result.chosen.policy.tier) == ("fixed", "nano")
    assert result.chosen.score.correct == N
    frontier = next(c for c in result.candidates if c.policy.describe() == "all-frontier")
    assert result.chosen.score.cost_pusd < frontier.score.cost_pusd == result.frontier_cost_pusd
    assert any("mid" in note for note in result.notes)  # never asked: no candidate

    # the CLI writes the file; a spec naming it routes every item to nano, nothing else
    out = tmp_path / "policies" / "easy.json"
    printed = CliRunner().invoke(cli, ["tune", str(spec_path), "--db", str(tmp_path / "state.db"),
                                       "--out", str(out)])  # fmt: skip
    assert printed.exit_code == 0, printed.output
    assert "chosen: all-nano" in printed.output and "all-frontier" in printed.output
    document = orjson.loads(out.read_bytes())
    assert document["version"] == 1 and document["policy"]["kind"] == "fixed"
    assert document["learned_from"]["items"] == N and document["alternatives"]
    routing = '[routing]\nclassifier = "heuristic"\npolicy = "file:policies/easy.json"\n'
    spec = load_spec(_job(tmp_path, "easy", routing, name="tuned"))
    assert spec.routing.ladder == ["nano"] and spec.frontier_tier == "frontier"
    run_id = _run(db, replay_box, tmp_path / "tuned.toml")
    assert set(_final_tiers(db, run_id).values()) == {"nano"}
    assert {a["tier"] for a in attempts(db, run_id)} == {"nano"}


def test_tune_picks_a_cascade_when_disagreement_pays(replay_box, tmp_path):
    db = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    spec_path = _job(tmp_path, "hard", EVIDENCE)
    _run(db, replay_box, spec_path)

    result = tune(db, load_spec(spec_path))
    chosen = result.chosen
    assert chosen.policy.kind in ("agreement", "scorer") and chosen.policy.opinions == ["check"]
    assert chosen.score.correct == N and chosen.score.escalated == N // 2
    assert chosen.score.cost_pusd < result.frontier_cost_pusd
    fixed = {c.policy.tier: c for c in result.candidates if c.policy.kind == "fixed"}
    assert fixed["nano"].score.correct == fixed["check"].score.correct == N * 3 // 4
    assert any(c.policy.kind == "scorer" for c in result.candidates)


def test_a_scorer_policy_escalates_the_items_it_scores_low(replay_box, tmp_path):
    """A scorer that reads metadata (so the follow-up step reads the items' signals): the
    items marked hard escalate to the frontier in round 2; the others keep nano's answer."""
    policy = policy_of(Shape("scorer", "nano", "frontier"), _scorer(["meta:hard"], [-10.0], 5))
    write_policy(tmp_path / "policies" / "p.json", policy_document(policy))
    routing = '[routing]\npolicy = "file:policies/p.json"\n'
    spec_path = _job(tmp_path, "easy", routing, metadata=lambda i: {"hard": int(i % 5 == 0)})
    db = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    run_id = _run(db, replay_box, spec_path)

    with db.connect() as conn:
        hard = dict(conn.exec_driver_sql("SELECT id, metadata_json FROM item").all())
    ends = _final_tiers(db, run_id)
    for item_id, tier in ends.items():
        assert tier == ("frontier" if orjson.loads(hard[item_id])["hard"] else "nano")
    rounds = {(b["round"], b["tier"]) for b in batches(db, run_id)}
    assert rounds == {(1, "nano"), (2, "frontier")}


def test_a_scorer_with_second_opinions_reads_their_agreement(replay_box, tmp_path):
    scorer = _scorer(["agree:check"], [10.0], -5)
    policy = policy_of(Shape("scorer", "nano", "frontier", ("check",)), scorer)
    write_policy(tmp_path / "policies" / "p.json", policy_document(policy))
    spec_path = _job(tmp_path, "hard", '[routing]\npolicy = "file:policies/p.json"\n')
    db = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    run_id = _run(db, replay_box, spec_path)
    assert {(b["round"], b["tier"]) for b in batches(db, run_id)} == {
        (1, "nano"), (1, "check"), (2, "frontier")}  # fmt: skip
    assert sum(t == "frontier" for t in _final_tiers(db, run_id).values()) == N // 2


def _scorer(features: list[str], coefficients: list[float], intercept: float):
    from batcher.tune.policy_file import Scorer

    n = len(features)
    return Scorer(features=features, means=[0.0] * n, scales=[1.0] * n,
                  coefficients=coefficients, intercept=intercept, threshold=0.5)  # fmt: skip


def test_a_bad_policy_file_names_the_file(tmp_path):
    routing = '[routing]\npolicy = "file:policies/p.json"\n'
    spec_path = _job(tmp_path, "easy", routing)
    with pytest.raises(SpecError, match=r"routing\.policy: cannot read .*p\.json"):
        load_spec(spec_path)
    target = tmp_path / "policies" / "p.json"
    target.parent.mkdir()
    target.write_text('{"version": 1, ')
    with pytest.raises(SpecError, match=r"p\.json is not valid JSON"):
        load_spec(spec_path)
    target.write_text('{"version": 1, "policy": {"kind": "fixed", "tier": "huge", '
                      '"frontier": "frontier"}}')  # fmt: skip
    with pytest.raises(SpecError, match=r"policy\.tier: .*p\.json: 'huge' is not a tier"):
        load_spec(spec_path)
    target.write_text('{"version": 1, "policy": {"kind": "scorer", "tier": "nano", '
                      '"frontier": "frontier"}}')  # fmt: skip
    with pytest.raises(SpecError, match=r"p\.json: kind \"scorer\" needs its scorer"):
        load_spec(spec_path)
    target.write_text('{"version": 7, "policy": {"kind": "fixed", "tier": "nano", '
                      '"frontier": "frontier"}}')  # fmt: skip
    with pytest.raises(SpecError, match=r"version 7"):
        load_spec(spec_path)


def test_gold_files_in_csv_and_jsonl(tmp_path):
    csv_path = tmp_path / "gold.csv"
    csv_path.write_text('id,answer\nq1,"1,000"\nq2, Billing \n')
    assert read_gold(csv_path) == {"q1": "1000", "q2": "billing"}
    jsonl = tmp_path / "gold.jsonl"
    jsonl.write_text('{"id": "q1", "answer": 1000.0}\n{"id": 2, "answer": "x"}\n')
    assert read_gold(jsonl) == {"q1": "1000", "2": "x"}
    jsonl.write_text('{"id": "q1", "answer": 1}\n{"answer": "x"}\n')
    with pytest.raises(UsageError, match=r"gold\.jsonl line 2: write"):
        read_gold(jsonl)
    csv_path.write_text("q1,1\nq2,2,3\n")
    with pytest.raises(UsageError, match=r"gold\.csv line 2: write `id,answer`"):
        read_gold(csv_path)
    csv_path.write_text("q1,1\nq1,2\n")
    with pytest.raises(UsageError, match="line 2: id 'q1' appears twice"):
        read_gold(csv_path)


def test_gold_answers_and_no_scikit_learn(replay_box, tmp_path, monkeypatch):
    """Judged by gold (here: the frontier is wrong on q3), with scikit-learn hidden: the
    fixed and cascade families still choose, the scorer family is skipped with a note."""
    db = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    spec_path = _job(tmp_path, "easy", EVIDENCE)
    _run(db, replay_box, spec_path)
    gold = {f"q{i}": str(10 + i) for i in range(N)} | {"q3": "99"}
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn raises ImportError
    result = tune(db, load_spec(spec_path), gold=gold)
    assert result.target == pytest.approx((N - 1) / N)
    assert result.chosen.policy.describe() == "all-nano"
    assert not any(c.policy.kind == "scorer" for c in result.candidates)
    assert any("pip install 'batcher[tune]'" in note for note in result.notes)


def test_a_policy_within_a_standard_error_of_the_target_meets_it(replay_box, tmp_path):
    """The target is measured on a sample: with the default tolerance_se = 1 a policy one
    standard error below it meets it; tolerance_se = 0 asks for the target itself."""
    db = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    spec_path = _job(tmp_path, "easy", EVIDENCE)
    _run(db, replay_box, spec_path)
    gold = {f"q{i}": str(10 + i) for i in range(N)} | {"q3": "99"}  # every tier: 19 of 20
    lenient = tune(db, load_spec(spec_path), gold=gold, target=0.97, scorer=False)
    assert float(lenient.bar) == pytest.approx(0.97 - math.sqrt(0.97 * 0.03 / N))
    assert lenient.chosen.policy.describe() == "all-nano" and lenient.meets(lenient.chosen)
    assert not any("no policy reaches" in note for note in lenient.notes)

    strict_path = _job(tmp_path, "easy", EVIDENCE + "[routing.tune]\ntolerance_se = 0\n", "s")
    strict = tune(db, load_spec(strict_path), gold=gold, target=0.97, scorer=False)
    assert strict.bar == strict.target and not strict.meets(strict.chosen)
    assert any("no policy reaches the target 97.0%" in note for note in strict.notes)


def test_tune_without_evidence_says_what_to_run(tmp_path):
    spec_path = _job(tmp_path, "easy", EVIDENCE)
    printed = CliRunner().invoke(cli, ["tune", str(spec_path), "--db", str(tmp_path / "s.db")])
    assert printed.exit_code == 2
    assert "has no stored runs" in printed.output and "calibrate" in printed.output


class Recorder:
    """An Acceptor that keeps what it was shown and accepts answers whose key is "5"."""

    reads_items = False

    def __init__(self):
        self.seen = []

    def accept(self, signals):
        self.seen.append(signals)
        return signals.answer_key == "5", "recorder"


def _step(seq, tier, status, role="primary", key=None, tokens=0):
    from batcher.store.attempts import ChainStep

    return ChainStep(seq, seq, tier, "p", "m", status, None, None, None, None, None, role=role,
                     answer_key=key, input_tokens=tokens, output_tokens=7)  # fmt: skip


def test_an_acceptor_sees_the_billed_prompt_tokens_and_decides_after_the_opinions():
    """The scorer reads the prompt's tokens as billed for the first tier's attempt, in a run
    as in tune's replay: the ingest estimate samples the tokenizer, so it differs between
    runs of different inputs (a run then disagreed with its replay)."""
    from batcher.run.followups import FollowupPolicy, decide_item

    policy = FollowupPolicy(max_attempts=4, transient_retries=1, ladder=("nano", "top"))
    recorder = Recorder()
    first = _step(1, "nano", "succeeded", key="5", tokens=123)
    opinion = _step(2, "c", "succeeded", "opinion", key="6")
    decision = decide_item(policy, [first, opinion], recorder, ("rule 1: always", None))
    assert decision.kind == "succeed"  # the acceptor, not the disagreement, decides
    (seen,) = recorder.seen
    assert (seen.input_tokens, seen.output_tokens, seen.opinions) == (123, 7, {"c": "6"})
    assert seen.route_reason == "rule 1: always"
    wrong = _step(1, "nano", "succeeded", key="4", tokens=123)
    assert decide_item(policy, [wrong], recorder).kind == "escalate"
    errored = _step(2, "c", "errored", "opinion")
    again = decide_item(policy, [first, errored], recorder)
    assert (again.kind, again.tier, again.role) == ("retry", "c", "opinion")
    assert len(recorder.seen) == 2  # not asked before the opinion is in
    top = _step(1, "top", "succeeded", key="4")
    assert decide_item(policy, [top], recorder).kind == "succeed"  # nothing above


def test_tune_reads_the_billed_prompt_tokens(replay_box, tmp_path):
    from batcher.tune.fit import gather

    db = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    spec_path = _job(tmp_path, "easy", EVIDENCE)
    run_id = _run(db, replay_box, spec_path)
    billed = {a["item_id"]: a["input_tokens"] for a in attempts(db, run_id)
              if a["tier"] == "nano"}  # fmt: skip
    with db.connect() as conn:
        ids = dict(conn.exec_driver_sql("SELECT custom_id, id FROM item").all())
    for record in gather(db, load_spec(spec_path)).records:
        signals = record.signals("nano", ["check"])
        assert signals.input_tokens == billed[ids[record.custom_id]] > 0
