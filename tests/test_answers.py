"""Answer keys: extraction by field or regex, normalisation, and storage per attempt."""

from __future__ import annotations

import orjson
import pytest
from engine_helpers import FAST_RETRY, POLL, attempts, db_fixture  # noqa: F401 - fixtures

from batcher.providers import Clients
from batcher.run import engine
from batcher.run.answers import AnswerKeys, normalise
from batcher.sandbox import start_sandbox
from batcher.spec import Validation, load_spec


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("1,000", "1000"),
        ("1000", "1000"),
        ("1000.0", "1000"),
        (1000, "1000"),
        (1000.0, "1000"),
        ("0.50", "0.5"),
        (" $\\boxed{12}$. ", "12"),
        ("\\dfrac{10}{8}", "5/4"),
        ("  Billing  Dispute ", "billing dispute"),
        (True, "true"),
        ("", None),
        (None, None),
    ],
)
def test_normalise(raw, key):
    assert normalise(raw) == key


def test_json_field_regex_group_and_whole_reply():
    by_field = AnswerKeys(Validation(answer_field="answer"))
    assert by_field.key('```json\n{"answer": "1,000"}\n```') == "1000"
    assert by_field.key('{"answer": 7}') == "7"
    # LaTeX backslashes left unescaped break the JSON; the field is still read.
    assert by_field.key('{"reasoning": "\\sqrt{x}", "answer": "\\dfrac{1}{2}"}') == "1/2"
    assert by_field.key('{"other": 1}') is None
    assert by_field.key("no json here") is None
    assert AnswerKeys(Validation(label_field="label")).key('{"label": " Refund "}') == "refund"
    by_group = AnswerKeys(Validation(answer_regex=r"Answer:\s*(?P<answer>\S+)"))
    assert by_group.key("so... Answer: 1,024") == "1024"
    assert by_group.key("nothing") is None
    assert AnswerKeys(Validation(answer_regex=r"= (\d+)")).key("x = 42 done") == "42"
    assert AnswerKeys(Validation()).key("  Yes. ") == "yes"


def test_keys_are_stored_on_each_attempt(db, tmp_path):
    rows = [
        {"user": "Q1", "outputs": {"cheap": '{"answer": "1,000"}'}},
        {"user": "Q2", "outputs": {"cheap": '{"answer": 2.50}'}},
        {"user": "Q3", "outputs": {"cheap": "I do not know"}},
    ]
    replay = tmp_path / "replay.jsonl"
    replay.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    (tmp_path / "in.jsonl").write_bytes(
        b"".join(orjson.dumps({"id": r["user"], "prompt": r["user"]}) + b"\n" for r in rows)
    )
    spec_path = tmp_path / "job.toml"
    spec_path.write_text(
        'name = "keys"\ninput = "in.jsonl"\n[tiers]\nnano = "openai:gpt-5-nano"\n'
        '[routing]\nclassifier = "fixed:nano"\nladder = ["nano"]\n'
        '[validation]\njson = true\nanswer_field = "answer"\n'
    )
    spec = load_spec(spec_path)
    with start_sandbox(replay=str(replay), model_map={"gpt-5-nano": "cheap"}) as box:
        run_id = engine.start_run(db, spec, spec.input_file())
        engine.drive_run(db, run_id, clients=Clients.for_sandbox(box, FAST_RETRY), poll=POLL)
    keys = {a["custom_id"]: (a["status"], a["answer_key"]) for a in attempts(db, run_id)}
    assert sorted(keys.values()) == [("invalid", None), ("succeeded", "1000"), ("succeeded", "2.5")]
