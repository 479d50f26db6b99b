"""OpenAI Files + Batches through the real openai SDK over HTTP: lifecycle, validation, cancel,
expiry, listing."""

from __future__ import annotations

import json

import openai
import pytest
from sandbox_fixtures import (  # noqa: F401 - fixtures
    CHAT,
    ant_fixture,
    chat_line,
    oai_fixture,
    read_file,
    sandbox_fixture,
    served_fixture,
    submit,
    wait_openai,
)


def test_batch_runs_to_completed_with_every_timestamp(oai):
    lines = [chat_line(f"r{i}", f"question {i}") for i in range(5)]
    batch = submit(oai, lines, metadata={"local_batch": "lb-1"})
    assert batch.status == "validating"
    assert batch.request_counts.total == 0
    assert isinstance(batch.created_at, int)
    assert batch.expires_at == batch.created_at + 24 * 3600
    seen = {batch.status}
    while batch.status != "completed":
        batch = oai.batches.retrieve(batch.id)
        seen.add(batch.status)
    assert {"validating", "in_progress", "completed"} <= seen
    assert batch.created_at <= batch.in_progress_at <= batch.finalizing_at <= batch.completed_at
    assert batch.failed_at is None and batch.cancelled_at is None and batch.expired_at is None
    assert batch.request_counts.model_dump() == {"total": 5, "completed": 5, "failed": 0}
    assert batch.metadata == {"local_batch": "lb-1"} and batch.model == "gpt-5-nano"
    assert batch.error_file_id is None
    out = read_file(oai, batch.output_file_id)
    assert set(out) == {f"r{i}" for i in range(5)}
    body = out["r3"]["response"]["body"]
    assert out["r3"]["response"]["status_code"] == 200 and out["r3"]["error"] is None
    assert body["object"] == "chat.completion"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert batch.usage.input_tokens == sum(
        r["response"]["body"]["usage"]["prompt_tokens"] for r in out.values()
    )
    assert oai.files.retrieve(batch.output_file_id).purpose == "batch_output"


def test_small_batch_ends_within_about_a_second(sandbox, oai):
    import time

    sandbox.configure(speed=1.0)  # the default speed
    start = time.monotonic()
    batch = wait_openai(oai, submit(oai, [chat_line("a", "hi")]).id)
    assert batch.status == "completed"
    assert time.monotonic() - start < 1.5


def test_answers_are_stable_and_usage_counts_real_tokens(oai):
    from batcher.plan.tokens import count_tokens

    system = "You are terse."
    user = "Name a colour."
    first = read_file(
        oai, wait_openai(oai, submit(oai, [chat_line("x", user, system=system)]).id).output_file_id
    )["x"]
    again = read_file(
        oai, wait_openai(oai, submit(oai, [chat_line("y", user, system=system)]).id).output_file_id
    )["y"]
    text = first["response"]["body"]["choices"][0]["message"]["content"]
    assert text == again["response"]["body"]["choices"][0]["message"]["content"]
    usage = first["response"]["body"]["usage"]
    # two messages: content + 3 framing tokens each, plus 3 priming tokens for the reply
    assert usage["prompt_tokens"] == count_tokens(system) + count_tokens(user) + 9
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert reasoning > 0  # gpt-5 models reason
    assert usage["completion_tokens"] == count_tokens(text) + reasoning


def test_output_lines_do_not_follow_input_order(oai):
    lines = [chat_line(f"r{i:02d}", f"q{i}") for i in range(30)]
    batch = wait_openai(oai, submit(oai, lines).id)
    text = oai.files.content(batch.output_file_id).text
    order = [json.loads(row)["custom_id"] for row in text.splitlines()]
    assert sorted(order) == [f"r{i:02d}" for i in range(30)] and order != sorted(order)


@pytest.mark.parametrize(
    "lines, code, line",
    [
        (["{not json", chat_line("b", "x")], "invalid_json_line", 1),
        ([chat_line("a", "x"), chat_line("a", "y")], "duplicate_custom_id", 2),
        ([chat_line("a", "x"), chat_line("b", "y", url="/v1/responses")], "url_mismatch", 2),
        ([chat_line("a", "x"), chat_line("b", "y", model="gpt-5-mini")], "model_mismatch", 2),
    ],
)
def test_bad_input_fails_the_batch_with_line_numbers(oai, lines, code, line):
    batch = wait_openai(oai, submit(oai, lines).id)
    assert batch.status == "failed"
    assert batch.failed_at is not None and batch.in_progress_at is None
    assert batch.output_file_id is None and batch.error_file_id is None
    errors = batch.errors.data
    assert errors[0].code == code and errors[0].line == line and errors[0].message


def test_too_many_lines_and_too_many_bytes(sandbox, oai):
    sandbox.configure(openai_max_lines=3)
    batch = wait_openai(oai, submit(oai, [chat_line(f"r{i}", "x") for i in range(4)]).id)
    assert batch.status == "failed" and batch.errors.data[0].code == "too_many_tasks"
    sandbox.configure(openai_max_lines=50_000, openai_max_bytes=200)
    batch = wait_openai(oai, submit(oai, [chat_line(f"r{i}", "x" * 50) for i in range(4)]).id)
    assert batch.status == "failed" and batch.errors.data[0].code == "file_too_large"


def test_empty_file_fails(oai):
    upload = oai.files.create(file=("empty.jsonl", b""), purpose="batch")
    batch = oai.batches.create(input_file_id=upload.id, endpoint=CHAT, completion_window="24h")
    batch = wait_openai(oai, batch.id)
    assert batch.status == "failed" and batch.errors.data[0].code == "empty_file"


def test_create_rejects_unknown_file_and_bad_metadata(oai):
    with pytest.raises(openai.NotFoundError):
        oai.batches.create(input_file_id="file-nope", endpoint=CHAT, completion_window="24h")
    upload = oai.files.create(file=("in.jsonl", b'{"custom_id":"a"}\n'), purpose="batch")
    with pytest.raises(openai.BadRequestError):
        oai.batches.create(
            input_file_id=upload.id,
            endpoint=CHAT,
            completion_window="24h",
            metadata={f"k{i}": "v" for i in range(17)},
        )


def test_cancel_keeps_finished_requests(sandbox, oai):
    sandbox.configure(add_faults="slow:count=1:factor=1000")  # in_progress lasts ~300 s
    lines = [chat_line(f"r{i}", f"q{i}") for i in range(10)]
    batch = submit(oai, lines)
    t = batch.created_at
    sandbox.advance_clock(150 + 0.2 * 1000 * 0.3 / 2 + 40)  # into the middle of processing
    assert oai.batches.retrieve(batch.id).status == "in_progress"
    cancelling = oai.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at >= t
    sandbox.advance_clock(1000)
    done = oai.batches.retrieve(batch.id)
    assert done.status == "cancelled" and done.cancelled_at >= done.cancelling_at
    assert done.completed_at is None
    ok = read_file(oai, done.output_file_id)
    unfinished = read_file(oai, done.error_file_id)
    assert 0 < len(ok) < 10 and len(ok) + len(unfinished) == 10
    assert {r["error"]["code"] for r in unfinished.values()} == {"batch_cancelled"}
    assert done.request_counts.completed == len(ok)
    billed = {row["custom_id"] for row in sandbox.billed(batch_id=batch.id)}
    assert billed == set(ok)


def test_cannot_cancel_a_completed_batch(oai):
    batch = wait_openai(oai, submit(oai, [chat_line("a", "x")]).id)
    with pytest.raises(openai.BadRequestError):
        oai.batches.cancel(batch.id)


def test_window_expiry_keeps_finished_and_reports_the_rest(sandbox, oai):
    # processing would take ~28 h of sandbox time, so the 24 h window ends it
    sandbox.configure(add_faults="slow:count=1:factor=336000")
    batch = submit(oai, [chat_line(f"r{i}", f"q{i}") for i in range(8)])
    sandbox.advance_clock(48 * 3600)
    done = oai.batches.retrieve(batch.id)
    assert done.status == "expired" and done.expired_at == done.expires_at
    ok, rest = read_file(oai, done.output_file_id), read_file(oai, done.error_file_id)
    assert len(ok) + len(rest) == 8 and 0 < len(ok) < 8
    assert {r["error"]["code"] for r in rest.values()} == {"batch_expired"}
    assert all(r["response"] is None for r in rest.values())
    assert len(sandbox.billed(batch_id=batch.id)) == len(ok)


def test_list_pages_with_metadata_so_a_lost_create_can_be_found(oai):
    ids = [
        submit(oai, [chat_line("a", str(i))], metadata={"local_batch": f"lb-{i}"}).id
        for i in range(5)
    ]
    first = oai.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[::-1][:2] and first.has_more
    everything = list(oai.batches.list(limit=2))  # the SDK pages with after=last id
    assert [b.id for b in everything] == ids[::-1]
    found = [b for b in everything if (b.metadata or {}).get("local_batch") == "lb-3"]
    assert [b.id for b in found] == [ids[3]]


def test_files_list_retrieve_delete(oai):
    upload = oai.files.create(file=("in.jsonl", b"{}\n"), purpose="batch")
    assert upload.bytes == 3 and upload.filename == "in.jsonl"
    assert upload.id in [f.id for f in oai.files.list(purpose="batch")]
    assert oai.files.content(upload.id).content == b"{}\n"
    assert oai.files.delete(upload.id).deleted
    with pytest.raises(openai.NotFoundError):
        oai.files.retrieve(upload.id)


def test_responses_endpoint(oai):
    line = {
        "custom_id": "r",
        "method": "POST",
        "url": "/v1/responses",
        "body": {"model": "gpt-4.1-mini", "input": "Say hi", "instructions": "Be brief."},
    }
    batch = wait_openai(oai, submit(oai, [line], endpoint="/v1/responses").id)
    body = read_file(oai, batch.output_file_id)["r"]["response"]["body"]
    assert body["object"] == "response" and body["output"][0]["content"][0]["text"]
    assert body["usage"]["input_tokens"] > 0
    assert body["usage"]["output_tokens_details"]["reasoning_tokens"] == 0


def test_max_tokens_truncates_with_finish_reason_length(oai):
    batch = wait_openai(
        oai, submit(oai, [chat_line("a", "x", model="gpt-4o-mini", max_completion_tokens=3)]).id
    )
    body = read_file(oai, batch.output_file_id)["a"]["response"]["body"]
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


def test_missing_api_key_is_401(sandbox):
    import httpx

    response = httpx.get(sandbox.openai_base_url + "/batches")
    assert response.status_code == 401
    assert response.json()["error"]["message"]
