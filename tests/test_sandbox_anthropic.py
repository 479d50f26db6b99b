"""Anthropic Message Batches through the real anthropic SDK over HTTP: lifecycle, validation,
cancel, expiry, delete, listing."""

from __future__ import annotations

import anthropic
import httpx
import pytest
from sandbox_fixtures import (  # noqa: F401 - fixtures
    ant_fixture,
    ant_request,
    oai_fixture,
    results,
    sandbox_fixture,
    served_fixture,
    wait_anthropic,
)


def test_batch_ends_with_results_and_rfc3339_times(sandbox, ant):
    batch = ant.messages.batches.create(
        requests=[ant_request(f"a123-{i}", f"question {i}") for i in range(4)]
    )
    assert batch.id.startswith("msgbatch_") and batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 4 and batch.request_counts.succeeded == 0
    assert batch.results_url is None and batch.ended_at is None
    assert (batch.expires_at - batch.created_at).total_seconds() == 24 * 3600
    done = wait_anthropic(ant, batch.id)
    assert done.processing_status == "ended" and done.ended_at >= done.created_at
    counts = done.request_counts
    assert (counts.processing, counts.succeeded, counts.errored) == (0, 4, 0)
    assert done.results_url.startswith(sandbox.url)
    got = results(ant, batch.id)
    assert set(got) == {f"a123-{i}" for i in range(4)}
    message = got["a123-2"].message
    assert message.role == "assistant" and message.content[0].text
    assert message.usage.service_tier == "batch" and message.usage.input_tokens > 0
    raw = httpx.get(done.results_url, headers={"x-api-key": "k"}).text
    assert raw.endswith("\n") and "\n\n" not in raw  # newline-terminated, no blank lines


@pytest.mark.parametrize(
    "requests, fragment",
    [
        ([ant_request("bad id!", "x")], "custom_id"),
        ([ant_request("a-1", "x"), ant_request("a-1", "y")], "Duplicate"),
        ([ant_request("a-1", "x", max_tokens=0)], "max_tokens"),
        ([], "at least 1"),
        ([ant_request("x" * 65, "x")], "custom_id"),
    ],
)
def test_invalid_create_is_a_400_envelope(ant, requests, fragment):
    with pytest.raises(anthropic.BadRequestError) as info:
        ant.messages.batches.create(requests=requests)
    body = info.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert fragment in body["error"]["message"] and body["request_id"]


def test_stream_is_rejected(ant):
    request = ant_request("a-1", "x")
    request["params"]["stream"] = True
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.batches.create(requests=[request])


def test_too_many_requests_and_too_large(sandbox, ant):
    sandbox.configure(anthropic_max_requests=2)
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.batches.create(requests=[ant_request(f"a-{i}", "x") for i in range(3)])
    sandbox.configure(anthropic_max_requests=100_000, anthropic_max_bytes=500)
    with pytest.raises(anthropic.APIStatusError) as info:
        ant.messages.batches.create(requests=[ant_request(f"a-{i}", "x" * 300) for i in range(3)])
    assert info.value.status_code == 413
    assert info.value.body["error"]["type"] == "request_too_large"


def test_accepts_x_api_key_and_old_version_header(sandbox):
    response = httpx.get(
        sandbox.url + "/v1/messages/batches",
        headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 200 and response.json()["data"] == []
    assert httpx.get(sandbox.url + "/v1/messages/batches").status_code == 401


def test_cancel_gives_partial_results_and_only_succeeded_are_billed(sandbox, ant):
    sandbox.configure(add_faults="slow:count=1:factor=1000")
    batch = ant.messages.batches.create(
        requests=[ant_request(f"a1-{i}", f"q{i}") for i in range(10)]
    )
    sandbox.advance_clock(150 + 150)  # validating (150 s) then half of processing
    canceling = ant.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at
    assert canceling.request_counts.processing == 10
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.batches.delete(batch.id)  # still processing
    sandbox.advance_clock(1000)
    done = ant.messages.batches.retrieve(batch.id)
    counts = done.request_counts
    assert done.processing_status == "ended" and done.ended_at >= done.cancel_initiated_at
    assert counts.canceled > 0 and counts.succeeded > 0
    assert counts.succeeded + counts.canceled == 10 and counts.processing == 0
    got = results(ant, batch.id)
    kinds = {cid: r.type for cid, r in got.items()}
    assert sorted(set(kinds.values())) == ["canceled", "succeeded"]
    billed = {row["custom_id"] for row in sandbox.billed(batch_id=batch.id)}
    assert billed == {cid for cid, kind in kinds.items() if kind == "succeeded"}


def test_expiry_reports_expired_requests(sandbox, ant):
    sandbox.configure(add_faults="slow:count=1:factor=336000")
    batch = ant.messages.batches.create(
        requests=[ant_request(f"a1-{i}", f"q{i}") for i in range(8)]
    )
    sandbox.advance_clock(30 * 3600)
    done = ant.messages.batches.retrieve(batch.id)
    assert done.processing_status == "ended" and done.ended_at == done.expires_at
    assert done.request_counts.expired > 0 and done.request_counts.succeeded > 0
    kinds = {r.type for r in results(ant, batch.id).values()}
    assert kinds == {"expired", "succeeded"}
    assert len(sandbox.billed(batch_id=batch.id)) == done.request_counts.succeeded


def test_delete_after_end_and_list_pages_newest_first(ant):
    ids = [ant.messages.batches.create(requests=[ant_request(f"b{i}-1", "x")]).id for i in range(5)]
    page = ant.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    assert page.first_id == ids[4] and page.last_id == ids[3]
    assert [b.id for b in ant.messages.batches.list(limit=2)] == ids[::-1]  # auto-paging
    older = ant.messages.batches.list(limit=2, before_id=ids[2])
    assert [b.id for b in older.data] == [ids[4], ids[3]]
    wait_anthropic(ant, ids[0])
    deleted = ant.messages.batches.delete(ids[0])
    assert deleted.id == ids[0] and deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        ant.messages.batches.retrieve(ids[0])


def test_cancel_after_end_is_rejected(ant):
    batch = ant.messages.batches.create(requests=[ant_request("a-1", "x")])
    wait_anthropic(ant, batch.id)
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.batches.cancel(batch.id)


def test_max_tokens_stops_the_answer(ant):
    batch = ant.messages.batches.create(requests=[ant_request("a-1", "x", max_tokens=2)])
    wait_anthropic(ant, batch.id)
    message = results(ant, batch.id)["a-1"].message
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 2
