"""Injected faults through the SDKs: HTTP errors, lost creates, per-request errors, failed
validation, expiry, slow batches; set at start and changed at run time."""

from __future__ import annotations

import time

import anthropic
import httpx
import openai
import pytest
from sandbox_fixtures import (  # noqa: F401 - fixtures
    ant_fixture,
    ant_request,
    chat_line,
    oai_fixture,
    read_file,
    results,
    sandbox_fixture,
    served_fixture,
    submit,
    wait_anthropic,
    wait_openai,
)

from batcher.sandbox import FaultSpecError, parse_faults, start_sandbox


def test_grammar_parses_the_documented_example():
    faults = parse_faults(
        "http429:count=3:route=create|retrieve,create_lost:count=1,"
        "request_error:rate=0.1,expire:count=1:after=0.5,"
        "malformed:gpt-5-nano=0.3"
    )
    assert [f.kind for f in faults] == [
        "http429",
        "create_lost",
        "request_error",
        "expire",
        "malformed",
    ]
    assert faults[0].count == 3 and faults[0].routes == {"create", "retrieve"}
    assert faults[2].rate == 0.1 and faults[2].count is None
    assert faults[3].after == 0.5 and faults[4].models == {"gpt-5-nano": 0.3}


@pytest.mark.parametrize(
    "spec",
    ["nope", "http429:count", "http429:route=bogus", "request_error:rate=2", "slow:after=0.5"],
)
def test_grammar_rejects_bad_specs_naming_them(spec):
    with pytest.raises(FaultSpecError, match="'"):
        parse_faults(spec)


def test_429_is_retried_by_the_sdk_and_counts_down(sandbox, oai):
    sandbox.configure(faults="http429:count=2:route=list:retry_after=0.05")
    start = time.monotonic()
    assert oai.batches.list().data == []  # two 429s, then success on the SDK's third try
    assert time.monotonic() - start < 2
    assert sandbox.state.faults.describe()[0]["count_left"] == 0
    raw = httpx.get(sandbox.openai_base_url + "/batches", headers={"authorization": "Bearer k"})
    assert raw.status_code == 200


def test_429_carries_retry_after_headers(sandbox, oai):
    sandbox.configure(faults="http429:count=1:retry_after=2")
    response = httpx.get(
        sandbox.openai_base_url + "/batches", headers={"authorization": "Bearer k"}
    )
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2" and response.headers["retry-after-ms"] == "2000"
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_http_faults_are_scoped_by_route_and_provider(sandbox, oai, ant):
    sandbox.configure(faults="http500:count=5:route=retrieve:provider=anthropic")
    assert oai.batches.list().data == []
    batch = ant.messages.batches.create(requests=[ant_request("a-1", "x")])
    with pytest.raises(anthropic.InternalServerError):
        ant.with_options(max_retries=0).messages.batches.retrieve(batch.id)


def test_529_overloaded_envelope(sandbox, ant):
    sandbox.configure(faults="http529:count=1")
    with pytest.raises(anthropic.APIStatusError) as info:
        ant.with_options(max_retries=0).messages.batches.list()
    assert info.value.status_code == 529
    assert info.value.body["error"]["type"] == "overloaded_error"


def test_lost_create_makes_a_blind_retry_pay_twice(sandbox, oai):
    sandbox.configure(faults="create_lost:count=1:provider=openai")
    lines = [chat_line(f"r{i}", f"q{i}") for i in range(3)]
    batch = submit(oai, lines, metadata={"local_batch": "lb-9"})  # SDK retried the 500
    stats = sandbox.stats()
    assert stats["batches_created"]["openai"] == 2
    assert stats["submissions"]["openai"] == {"r0": 2, "r1": 2, "r2": 2}
    assert stats["duplicates"]["openai"] == ["r0", "r1", "r2"]
    mine = [b for b in oai.batches.list() if b.metadata == {"local_batch": "lb-9"}]
    assert len(mine) == 2 and batch.id in {b.id for b in mine}


def test_lost_create_without_retries_raises_but_the_batch_exists(sandbox, ant):
    sandbox.configure(faults="create_lost:count=1")
    with pytest.raises(anthropic.InternalServerError):
        ant.with_options(max_retries=0).messages.batches.create(requests=[ant_request("a1-1", "x")])
    assert len(ant.messages.batches.list().data) == 1
    assert sandbox.stats()["submissions"]["anthropic"] == {"a1-1": 1}


def test_request_errors_by_count_and_rate(sandbox, oai, ant):
    sandbox.configure(faults="request_error:count=2:provider=openai")
    batch = wait_openai(oai, submit(oai, [chat_line(f"r{i}", "x") for i in range(5)]).id)
    errors = read_file(oai, batch.error_file_id)
    assert len(errors) == 2 and batch.request_counts.failed == 2
    assert all(r["response"]["status_code"] == 500 for r in errors.values())
    sandbox.configure(faults="request_error:rate=0.5:provider=anthropic")
    mb = ant.messages.batches.create(requests=[ant_request(f"a-{i}", "x") for i in range(40)])
    done = wait_anthropic(ant, mb.id)
    assert 5 < done.request_counts.errored < 35
    errored = [r for r in results(ant, mb.id).values() if r.type == "errored"]
    assert errored[0].error.error.type == "api_error"
    assert len(sandbox.billed(batch_id=mb.id)) == done.request_counts.succeeded


def test_all_requests_failing_is_still_completed(sandbox, oai):
    sandbox.configure(faults="request_error:rate=1")
    batch = wait_openai(oai, submit(oai, [chat_line("a", "x"), chat_line("b", "y")]).id)
    assert batch.status == "completed"
    assert batch.output_file_id is None and batch.error_file_id is not None


def test_token_limit_and_invalid_batch_fail_validation(sandbox, oai, ant):
    sandbox.configure(faults="token_limit:count=1,invalid_batch:count=1:provider=anthropic")
    batch = wait_openai(oai, submit(oai, [chat_line("a", "x")]).id)
    assert batch.status == "failed"
    assert batch.errors.data[0].code == "token_limit_exceeded" and batch.errors.data[0].line is None
    assert wait_openai(oai, submit(oai, [chat_line("a", "x")]).id).status == "completed"
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.batches.create(requests=[ant_request("a-1", "x")])


def test_configured_enqueued_token_cap(sandbox, oai):
    sandbox.configure(openai_token_limit={"gpt-5-nano": 50})
    ok = submit(oai, [chat_line("a", "small")])
    over = submit(oai, [chat_line("b", "word " * 100)])
    assert wait_openai(oai, over.id).errors.data[0].code == "token_limit_exceeded"
    assert wait_openai(oai, ok.id).status == "completed"


def test_expire_fault_keeps_the_finished_part(sandbox, oai, ant):
    sandbox.configure(
        faults="expire:count=1:after=0.5:provider=openai,"
        "expire:count=1:after=0.25:provider=anthropic"
    )
    batch = wait_openai(oai, submit(oai, [chat_line(f"r{i}", "x") for i in range(10)]).id)
    assert batch.status == "expired" and batch.expired_at is not None
    assert len(read_file(oai, batch.output_file_id)) == 5
    assert {r["error"]["code"] for r in read_file(oai, batch.error_file_id).values()} == {
        "batch_expired"
    }
    mb = wait_anthropic(
        ant, ant.messages.batches.create(requests=[ant_request(f"a-{i}", "x") for i in range(8)]).id
    )
    assert (mb.request_counts.succeeded, mb.request_counts.expired) == (2, 6)


def test_slow_batches(sandbox, oai):
    sandbox.configure(faults="slow:count=1:factor=50")
    slow = submit(oai, [chat_line("a", "x")])
    fast = wait_openai(oai, submit(oai, [chat_line("a", "x")]).id)
    assert fast.status == "completed"
    assert oai.batches.retrieve(slow.id).status in ("validating", "in_progress")


def test_faults_set_at_start_and_switched_over_http():
    with start_sandbox(faults="http500:count=1", speed=4.0) as box:
        client = openai.OpenAI(base_url=box.openai_base_url, api_key="k", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            client.batches.list()
        assert client.batches.list().data == []
        r = httpx.post(box.url + "/_sandbox/config", json={"faults": "http429:count=1"})
        assert r.status_code == 200 and r.json()["faults"][0]["kind"] == "http429"
        with pytest.raises(openai.RateLimitError):
            client.batches.list()
        assert httpx.post(box.url + "/_sandbox/config", json={"faults": "bogus"}).status_code == 400
        httpx.post(box.url + "/_sandbox/config", json={"add_faults": "http500:count=1"})
        httpx.post(box.url + "/_sandbox/config", json={"clear_faults": True})
        assert client.batches.list().data == []
        httpx.post(box.url + "/_sandbox/reset")
        with pytest.raises(openai.InternalServerError):  # reset restores the start faults
            client.batches.list()


def test_admin_clock_endpoint_moves_batches_along(sandbox, oai):
    sandbox.configure(faults="slow:count=1:factor=1000")
    batch = submit(oai, [chat_line("a", "x")])
    before = httpx.get(sandbox.url + "/_sandbox/config").json()["now"]
    now = httpx.post(sandbox.url + "/_sandbox/clock", json={"advance": 3600}).json()["now"]
    assert now >= before + 3600
    assert oai.batches.retrieve(batch.id).status == "completed"


def test_a_forgotten_batch_answers_404_for_good_and_bills_nothing(sandbox, oai, ant):
    sandbox.configure(faults="slow:factor=20")
    batch = submit(oai, [chat_line("r0", "q0")])
    sandbox.configure(faults="forget:count=1:provider=openai")
    for _ in range(2):  # the first retrieve drops it; it stays gone
        with pytest.raises(openai.NotFoundError):
            oai.with_options(max_retries=0).batches.retrieve(batch.id)
    assert batch.id not in {b.id for b in oai.batches.list()}
    sandbox.advance_clock(60)
    stats = sandbox.stats()
    assert stats["batches_forgotten"]["openai"] == 1 and stats["requests_billed"] == 0


def test_http404_answers_not_found_for_a_batch_that_exists(sandbox, ant):
    sandbox.configure(faults="http404:count=1")
    batch = ant.messages.batches.create(requests=[ant_request("a1-1", "x")])
    with pytest.raises(anthropic.NotFoundError):
        ant.with_options(max_retries=0).messages.batches.retrieve(batch.id)
    assert ant.messages.batches.retrieve(batch.id).id == batch.id  # the next read finds it


def test_every_fires_on_each_kth_matching_call(sandbox, oai):
    sandbox.configure(faults="http500:every=3:route=list")
    client = oai.with_options(max_retries=0)
    outcomes = []
    for _ in range(6):
        try:
            client.batches.list()
            outcomes.append("ok")
        except openai.InternalServerError:
            outcomes.append("500")
    assert outcomes == ["ok", "ok", "500", "ok", "ok", "500"]
