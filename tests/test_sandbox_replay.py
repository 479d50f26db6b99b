"""The replay responder: recorded outputs by last user message and model map, through both SDKs."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import openai
import pytest
from sandbox_fixtures import ant_request, chat_line, read_file, results, submit, wait_anthropic
from sandbox_fixtures import wait_openai as wait

from batcher.sandbox import start_sandbox
from batcher.sandbox.server import SandboxOptionError

HERE = Path(__file__).resolve().parent
SMALL = HERE / "data" / "replay-small.jsonl"
SHARED = HERE.parent.parent / "shared" / "data" / "math-l5-replay.jsonl"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def replay_box():
    model_map = {"gpt-5-nano": "small-model", "claude-sonnet-4-6": "big-model"}
    with start_sandbox(replay=str(SMALL), model_map=model_map, speed=4.0) as box:
        yield box


def test_openai_gets_each_recorded_text(replay_box):
    replay_box.reset()
    client = openai.OpenAI(base_url=replay_box.openai_base_url, api_key="k")
    rows = _rows(SMALL)[:12]
    lines = [chat_line(row["id"], row["user"], system="Be accurate.") for row in rows]
    batch = wait(client, submit(client, lines).id)
    out = read_file(client, batch.output_file_id)
    assert len(out) == 12
    for row in rows:
        body = out[row["id"]]["response"]["body"]
        assert body["choices"][0]["message"]["content"] == row["outputs"]["small-model"]
        assert body["usage"]["completion_tokens"] > 0


def test_anthropic_gets_the_mapped_models_text(replay_box):
    replay_box.reset()
    client = anthropic.Anthropic(base_url=replay_box.anthropic_base_url, api_key="k")
    rows = _rows(SMALL)
    batch = client.messages.batches.create(
        requests=[ant_request(row["id"], row["user"], max_tokens=200) for row in rows]
    )
    wait_anthropic(client, batch.id)
    got = results(client, batch.id)
    for row in rows:
        assert got[row["id"]].message.content[0].text == row["outputs"]["big-model"]


def test_missing_row_or_model_is_a_per_request_error(replay_box):
    replay_box.reset()
    client = openai.OpenAI(base_url=replay_box.openai_base_url, api_key="k")
    lines = [
        chat_line("known", "What is the square root of 144?"),
        chat_line("unknown", "A question nobody recorded."),
        chat_line("no-model", "Only the big model answered this one."),
    ]
    batch = wait(client, submit(client, lines).id)
    assert batch.status == "completed" and batch.request_counts.failed == 2
    assert (
        read_file(client, batch.output_file_id)["known"]["response"]["body"]["choices"][0][
            "message"
        ]["content"]
        == "12"
    )
    errors = read_file(client, batch.error_file_id)
    assert set(errors) == {"unknown", "no-model"}
    assert errors["unknown"]["response"]["status_code"] == 400
    assert "no recorded row" in errors["unknown"]["response"]["body"]["error"]["message"]
    assert {r["custom_id"] for r in replay_box.billed()} == {"known"}


def test_last_user_message_is_what_matches(replay_box):
    replay_box.reset()
    client = anthropic.Anthropic(base_url=replay_box.anthropic_base_url, api_key="k")
    request = ant_request("multi", "Give the chemical symbol for gold.")
    request["params"]["messages"] = [
        {"role": "user", "content": "Name the capital of France."},
        {"role": "assistant", "content": "Paris."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Give the chemical symbol for gold."}],
        },
    ]
    batch = client.messages.batches.create(requests=[request])
    wait_anthropic(client, batch.id)
    assert results(client, batch.id)["multi"].message.content[0].text == "Au"


def test_bad_replay_file_is_an_option_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"user": "x"}\n')
    with pytest.raises(SandboxOptionError, match="outputs"):
        start_sandbox(replay=str(bad))


@pytest.mark.skipif(not SHARED.exists(), reason="shared replay data is not checked out here")
def test_shared_math_replay_returns_each_problems_recorded_text():
    rows = _rows(SHARED)
    with start_sandbox(
        replay=str(SHARED), model_map={"gpt-5-nano": "gemma-2-2b-it"}, speed=20.0
    ) as box:
        client = openai.OpenAI(base_url=box.openai_base_url, api_key="k")
        lines = [chat_line(row["id"], row["user"]) for row in rows]
        batch = wait(client, submit(client, lines).id, timeout=60)
        out = read_file(client, batch.output_file_id)
    assert batch.request_counts.completed == len(rows) == len(out)
    for row in rows:
        text = out[row["id"]]["response"]["body"]["choices"][0]["message"]["content"]
        assert text == row["outputs"]["gemma-2-2b-it"]
