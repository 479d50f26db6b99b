"""Gemini batch mode through the real google-genai SDK over HTTP: resumable upload, job states,
the responses file, implicit caching and thinking usage, expiry, cancel, errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from google import genai
from google.genai import errors, types
from sandbox_fixtures import sandbox_fixture, served_fixture  # noqa: F401 - fixtures

from batcher.providers.base import Request
from batcher.providers.google import parse_result, render_line

LONG_SYSTEM = "You label support tickets.\nAllowed labels: a, b, c\n" + "Be precise. " * 900


@pytest.fixture(name="gem")
def gem_fixture(sandbox) -> genai.Client:
    options = types.HttpOptions(base_url=sandbox.gemini_base_url)
    return genai.Client(api_key="gemini-test", http_options=options)


def line(key: str, text: str, system: str | None = None, **config) -> dict:
    request: dict = {
        "contents": [{"role": "user", "parts": [{"text": text}]}],
        "generationConfig": {"maxOutputTokens": 256, **config},
    }
    if system:
        request["systemInstruction"] = {"parts": [{"text": system}]}
    return {"key": key, "request": request}


def submit(gem: genai.Client, tmp_path: Path, lines: list, model: str = "gemini-2.5-flash"):
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    uploaded = gem.files.upload(
        file=str(path), config=types.UploadFileConfig(display_name="in", mime_type="jsonl")
    )
    return gem.batches.create(model=model, src=uploaded.name, config={"display_name": "job-1"})


def wait(gem: genai.Client, name: str, sandbox=None):
    for _ in range(200):
        job = gem.batches.get(name=name)
        if job.done:
            return job
        if sandbox is not None:
            sandbox.advance_clock(5)
        time.sleep(0.02)
    raise AssertionError(f"{name} did not end")


def output(gem: genai.Client, job) -> list[dict]:
    return [json.loads(x) for x in gem.files.download(file=job.dest.file_name).splitlines()]


def test_job_runs_and_answers_in_input_order_with_cache_and_thinking_usage(sandbox, gem, tmp_path):
    job = submit(gem, tmp_path, [line(f"k{i}", f"ticket {i}", LONG_SYSTEM) for i in range(4)])
    assert job.name.startswith("batches/") and job.display_name == "job-1"
    assert job.state == types.JobState.JOB_STATE_PENDING and job.model == "models/gemini-2.5-flash"
    done = wait(gem, job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED and done.end_time >= done.create_time
    rows = output(gem, done)
    assert [r["key"] for r in rows] == ["k0", "k1", "k2", "k3"]
    usage = [r["response"]["usageMetadata"] for r in rows]
    assert "cachedContentTokenCount" not in usage[0]  # the first request writes the prefix
    assert all(0 < u["cachedContentTokenCount"] < u["promptTokenCount"] for u in usage[1:])
    assert all(u["thoughtsTokenCount"] > 0 for u in usage)  # 2.5 Flash thinks by default
    result = parse_result(rows[1])
    assert result.outcome == "succeeded" and result.text in ("a", "b", "c")
    assert result.usage.cache_read_tokens == usage[1]["cachedContentTokenCount"]
    thoughts = usage[1]["thoughtsTokenCount"]
    assert result.usage.output_tokens == usage[1]["candidatesTokenCount"] + thoughts
    assert sandbox.stats()["batches_created"]["google"] == 1


def test_short_prompts_and_flash_lite_use_no_cache_and_no_thinking(gem, tmp_path):
    job = submit(
        gem,
        tmp_path,
        [line(f"k{i}", "hi", "short") for i in range(3)],
        model="gemini-2.5-flash-lite",
    )
    usage = [r["response"]["usageMetadata"] for r in output(gem, wait(gem, job.name))]
    assert all("cachedContentTokenCount" not in u and "thoughtsTokenCount" not in u for u in usage)


def test_bad_lines_fail_alone_with_google_status(gem, tmp_path):
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "additionalProperties": False,
    }
    lines = [
        line("ok", "hi"),
        {"key": "unknown", "request": {"contents": [], "colour": 1}},
        line("schema", "hi", responseMimeType="application/json", responseSchema=schema),
        line("json", "hi", responseMimeType="application/json", responseJsonSchema=schema),
        line("cut", "hi", maxOutputTokens=3, thinkingConfig={"thinkingBudget": 0}),
    ]
    rows = {r["key"]: r for r in output(gem, wait(gem, submit(gem, tmp_path, lines).name))}
    assert "response" in rows["ok"] and "response" in rows["json"]
    assert json.loads(rows["json"]["response"]["candidates"][0]["content"]["parts"][0]["text"])
    assert rows["unknown"]["error"]["status"] == "INVALID_ARGUMENT"
    assert "colour" in rows["unknown"]["error"]["message"]
    assert "additionalProperties" in rows["schema"]["error"]["message"]
    cut = rows["cut"]["response"]["candidates"][0]
    assert cut["finishReason"] == "MAX_TOKENS"
    assert parse_result(rows["cut"]).error_code is None


def test_expired_job_has_no_results_unless_partial_results_are_set(sandbox, gem, tmp_path):
    sandbox.configure(faults="expire:count=1:after=0.5")
    job = wait(gem, submit(gem, tmp_path, [line(f"k{i}", "hi") for i in range(4)]).name)
    assert job.state == types.JobState.JOB_STATE_EXPIRED and job.dest is None
    assert sandbox.billed() == []
    sandbox.configure(faults="expire:count=1:after=0.5", gemini_partial_results=True)
    job = wait(gem, submit(gem, tmp_path, [line(f"k{i}", "hi") for i in range(4)]).name)
    assert [r["key"] for r in output(gem, job)] == ["k0", "k1"]
    assert len(sandbox.billed()) == 2


def test_cancel_stops_a_running_job_and_refuses_an_ended_one(sandbox, gem, tmp_path):
    sandbox.configure(faults="slow:count=1:factor=100")
    job = submit(gem, tmp_path, [line("k0", "hi")])
    assert gem.batches.cancel(name=job.name) is None  # the API answers an empty object
    done = wait(gem, job.name, sandbox)
    assert done.state == types.JobState.JOB_STATE_CANCELLED and done.dest is None
    with pytest.raises(errors.ClientError) as info:
        gem.batches.cancel(name=job.name)
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"


def test_jobs_are_listed_newest_first_across_pages(gem, tmp_path):
    names = [submit(gem, tmp_path, [line("k", "hi")]).name for _ in range(3)]
    listed = [job.name for job in gem.batches.list(config={"page_size": 2})]
    assert listed == names[::-1]


def test_429_says_how_long_to_wait_in_retry_info(sandbox, gem):
    sandbox.configure(faults="http429:count=1:retry_after=0.25:route=retrieve")
    with pytest.raises(errors.ClientError) as info:
        gem.batches.get(name="batches/anything")
    assert info.value.code == 429 and info.value.status == "RESOURCE_EXHAUSTED"
    detail = info.value.details["error"]["details"][0]
    assert detail["retryDelay"] == "0.25s"


def test_upload_protocol_is_checked(sandbox):
    base = sandbox.gemini_base_url
    start = {
        "x-goog-api-key": "k",
        "X-Goog-Upload-Protocol": "resumable",
        "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": "10",
        "X-Goog-Upload-Header-Content-Type": "jsonl",
    }
    assert httpx.post(f"{base}/upload/v1beta/files", json={}).status_code == 403  # no key
    url = httpx.post(f"{base}/upload/v1beta/files", headers=start, json={"file": {}}).headers[
        "x-goog-upload-url"
    ]
    wrong = httpx.post(
        url,
        content=b"12345",
        headers={"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "3"},
    )
    assert wrong.status_code == 400 and wrong.json()["error"]["status"] == "INVALID_ARGUMENT"
    short = httpx.post(
        url,
        content=b"12345",
        headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"},
    )
    assert short.status_code == 400 and "10 were declared" in short.json()["error"]["message"]


def test_render_line_maps_system_roles_and_structured_output():
    schema = {"type": "object", "properties": {"label": {"type": "string"}}}
    request = Request(
        custom_id="c-1",
        model="gemini-2.5-flash",
        max_tokens=64,
        system="Be brief.",
        temperature=0.0,
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yo"},
            {"role": "user", "content": [{"type": "text", "text": "label it"}]},
        ],
        params={
            "response_format": {"type": "json_schema", "json_schema": {"schema": schema}},
            "thinkingConfig": {"thinkingBudget": 0},
        },
    )
    row = json.loads(render_line(request))
    body = row["request"]
    assert row["key"] == "c-1"
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][2]["parts"] == [{"text": "label it"}]
    assert body["generationConfig"] == {
        "maxOutputTokens": 64,
        "temperature": 0.0,
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
        "thinkingConfig": {"thinkingBudget": 0},
    }
