"""The sandbox's xAI batch API and chat completions, through the openai SDK over HTTP, and
direct mode's off-peak hold."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import openai
import pytest

from batcher.providers.direct import DirectProvider, DirectSettings, deepseek_peak_ends
from batcher.sandbox import start_sandbox


@pytest.fixture(scope="module")
def box():
    with start_sandbox(speed=4.0) as sandbox:
        yield sandbox


def lines(n: int, model: str = "grok-4-1-fast") -> bytes:
    rows = [{"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": model, "messages": [{"role": "user", "content": f"hi {i}"}]}}
            for i in range(n)]  # fmt: skip
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_xai_batch_counters_results_pages_and_a_refused_file(box):
    box.reset()
    xai = openai.OpenAI(base_url=box.xai_base_url, api_key="k", max_retries=0)
    file_id = xai.files.create(file=("in.jsonl", lines(5)), purpose="batch").id
    batch = xai.post("/batches", body={"name": "b1", "input_file_id": file_id}, cast_to=object)
    assert batch["state"]["num_requests"] == 0  # still reading the file
    deadline = time.monotonic() + 10
    while (got := xai.get(f"/batches/{batch['batch_id']}", cast_to=object))["state"][
        "num_pending"
    ] or not got["state"]["num_requests"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert got["state"] == {"num_requests": 5, "num_pending": 0, "num_success": 5,
                                 "num_error": 0, "num_cancelled": 0}  # fmt: skip
    path = f"/batches/{batch['batch_id']}/results"
    first = xai.get(path, cast_to=object, options={"params": {"limit": 2}})
    assert len(first["results"]) == 2 and first["pagination_token"]
    after = {"limit": 10, "pagination_token": first["pagination_token"]}
    rest = xai.get(path, cast_to=object, options={"params": after})
    ids = {r["batch_request_id"] for r in first["results"] + rest["results"]}
    assert ids == {f"c{i}" for i in range(5)} and rest["pagination_token"] is None
    body = rest["results"][0]["batch_result"]["response"]["chat_get_completion"]
    assert body["object"] == "chat.completion" and "cached_tokens" in json.dumps(body["usage"])

    bad = xai.files.create(file=("bad.jsonl", b'{"custom_id": "x"}\n'), purpose="batch").id
    refused = xai.post("/batches", body={"name": "b2", "input_file_id": bad}, cast_to=object)
    while not (got := xai.get(f"/batches/{refused['batch_id']}", cast_to=object))["cancel_time"]:
        time.sleep(0.02)
    assert got["cancel_by_xai_message"] and got["state"]["num_requests"] == 0


def test_deepseek_chat_reports_cache_hits_and_misses_only_its_own_way(box):
    box.reset()
    box.configure(chat_rpm={})
    ds = openai.OpenAI(base_url=box.deepseek_base_url, api_key="k", max_retries=0)
    system = "Answer briefly. " * 400  # over the caching minimum
    usages = []
    for i in range(2):
        reply = ds.chat.completions.create(
            model="deepseek-chat",
            messages=[{"role": "system", "content": system}, {"role": "user", "content": f"{i}"}],
        )
        usages.append(reply.usage.model_dump())
    first, second = usages
    assert first["prompt_cache_hit_tokens"] == 0 and second["prompt_cache_hit_tokens"] > 0
    assert (
        second["prompt_cache_hit_tokens"] + second["prompt_cache_miss_tokens"]
        == (second["prompt_tokens"])
    )
    assert second.get("prompt_tokens_details") is None  # DeepSeek's fields, not OpenAI's
    assert len(box.billed(provider="deepseek")) == 2


def test_peak_windows_and_a_held_batch_sends_nothing(box, tmp_path):
    box.reset()
    monday = datetime(2026, 11, 30, tzinfo=UTC)
    assert deepseek_peak_ends(monday.replace(hour=2, minute=30)) == monday.replace(hour=4)
    assert deepseek_peak_ends(monday.replace(hour=9, minute=59)) == monday.replace(hour=10)
    assert deepseek_peak_ends(monday.replace(hour=4)) is None
    assert deepseek_peak_ends(monday.replace(hour=12)) is None
    assert deepseek_peak_ends(monday + timedelta(days=5, hours=2)) is None  # a Saturday

    path = tmp_path / "state" / "held.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lines(3, "deepseek-chat"))
    held = DirectSettings(hold_until=lambda now: now + timedelta(hours=1))
    provider = DirectProvider(
        "deepseek", base_url=box.deepseek_base_url, api_key="k", settings=held
    )
    state = provider.submit("held", path, "deepseek-chat")
    deadline = time.monotonic() + 5
    while state.raw_status != "held":
        assert time.monotonic() < deadline
        time.sleep(0.02)
        state = provider.poll(state.provider_batch_id)
    assert box.billed() == [] and box.stats()["submissions"]["deepseek"] == {}
    state = provider.cancel(state.provider_batch_id)
    assert state.ended and state.raw_status == "cancelled" and list(provider.results(state)) == []
