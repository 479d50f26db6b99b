"""The providers' batch clients against the sandbox, over HTTP through the official SDKs."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from batcher.providers import Clients, connect
from batcher.providers.base import Request
from batcher.providers.calls import CreateRefused, CreateUncertain, ProviderError, RetryPolicy
from batcher.sandbox import start_sandbox

FAST = RetryPolicy(attempts=6, base_s=0.01, cap_s=0.2)


@pytest.fixture(scope="module")
def served():
    with start_sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def sandbox(served):
    served.reset()
    return served


def client(sandbox, name: str):
    return connect(name, Clients.for_sandbox(sandbox, FAST))


def write_batch(
    path: Path, provider, model: str, n: int, system: str | None = None, max_tokens: int = 512
) -> Path:
    with open(path, "wb") as f:
        for i in range(n):
            request = Request(
                custom_id=f"i{i}-a1",
                model=model,
                messages=[{"role": "user", "content": f"Say something about item {i}."}],
                max_tokens=max_tokens,
                system=system,
                params={"reasoning_effort": "low"},  # medium would spend the 512 on reasoning
            )
            f.write(provider.render_line(request))
    return path


def wait_ended(provider, batch_id: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        state = provider.poll(batch_id)
        if state.ended or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


@pytest.mark.parametrize(
    "name,model", [("openai", "gpt-5-nano"), ("anthropic", "claude-sonnet-4-6")]
)
def test_submit_poll_results_round_trip(sandbox, tmp_path, name, model):
    provider = client(sandbox, name)
    path = write_batch(tmp_path / "b.jsonl", provider, model, 5)
    uploaded = []
    state = provider.submit("b-1", path, model, on_uploaded=uploaded.append)
    assert state.provider_batch_id
    assert bool(uploaded) == (name == "openai")  # only OpenAI has an upload step
    ended = wait_ended(provider, state.provider_batch_id)
    assert ended.ended and ended.total == 5 and ended.done == 5
    results = sorted(provider.results(ended), key=lambda r: r.custom_id)
    assert [r.custom_id for r in results] == [f"i{i}-a1" for i in range(5)]
    assert all(r.outcome == "succeeded" and r.text for r in results)
    billed = {row["custom_id"]: row["tokens"] for row in sandbox.billed(provider=name)}
    for result in results:
        tokens = billed[result.custom_id]
        usage = result.usage
        assert (
            usage.input_tokens
            == tokens["input"]
            + tokens["cache_read"]
            + tokens["cache_write_5m"]
            + tokens["cache_write_1h"]
        )
        assert usage.output_tokens == tokens["output"]
        assert usage.reasoning_tokens == tokens["reasoning"]


@pytest.mark.parametrize(
    "name,model", [("openai", "gpt-5-nano"), ("anthropic", "claude-sonnet-4-6")]
)
def test_stop_reason_normalised_from_finish_and_stop_reason(sandbox, tmp_path, name, model):
    provider = client(sandbox, name)
    ends = {}
    for max_tokens in (2, 512):
        path = write_batch(tmp_path / f"b{max_tokens}.jsonl", provider, model, 2, None, max_tokens)
        state = provider.submit(f"b-{max_tokens}", path, model)
        ended = wait_ended(provider, state.provider_batch_id)
        ends[max_tokens] = {r.stop_reason for r in provider.results(ended)}
    assert ends == {2: {"max_tokens"}, 512: {"end"}}


def test_openai_find_matches_metadata_only(sandbox, tmp_path):
    provider = client(sandbox, "openai")
    before = datetime.now(UTC)
    a = provider.submit("local-a", write_batch(tmp_path / "a.jsonl", provider, "gpt-5-nano", 3), "")
    provider.submit("local-b", write_batch(tmp_path / "b.jsonl", provider, "gpt-5-nano", 3), "")
    found = provider.find("local-a", created_after=before, n_requests=3)
    assert [s.provider_batch_id for s in found] == [a.provider_batch_id]
    assert provider.find("local-c", created_after=before, n_requests=3) == []


def test_anthropic_find_matches_time_and_count(sandbox, tmp_path):
    provider = client(sandbox, "anthropic")
    model = "claude-sonnet-4-6"
    old = provider.submit("x", write_batch(tmp_path / "x.jsonl", provider, model, 2), model)
    assert old.provider_batch_id
    # Batches created long before the intent are out of the window.
    assert (
        provider.find("y", created_after=datetime.now(UTC) + timedelta(hours=1), n_requests=2) == []
    )
    before = datetime.now(UTC)
    new = provider.submit("y", write_batch(tmp_path / "y.jsonl", provider, model, 4), model)
    found = provider.find("y", created_after=before, n_requests=4)
    assert [s.provider_batch_id for s in found] == [new.provider_batch_id]


def test_reads_ride_through_bursts_of_429_and_500(sandbox, tmp_path):
    provider = client(sandbox, "openai")
    state = provider.submit("b", write_batch(tmp_path / "b.jsonl", provider, "gpt-5-nano", 2), "")
    sandbox.configure(faults="http429:count=3:route=retrieve,http500:count=2:route=retrieve")
    assert provider.poll(state.provider_batch_id).provider_batch_id == state.provider_batch_id
    fired = {f["kind"]: f["fired"] for f in sandbox.configure()["faults"]}
    assert fired == {"http429": 3, "http500": 2}


def test_reads_give_up_with_a_provider_error(sandbox):
    provider = client(sandbox, "anthropic")
    sandbox.configure(faults="http500:count=50:route=retrieve")
    with pytest.raises(ProviderError, match="gave up after 6 tries"):
        provider.poll("msgbatch_nope")


@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_create_is_never_retried_blindly(sandbox, tmp_path, name):
    provider = client(sandbox, name)
    model = "gpt-5-nano" if name == "openai" else "claude-sonnet-4-6"
    path = write_batch(tmp_path / "b.jsonl", provider, model, 3)
    sandbox.configure(faults="create_lost:count=1")
    with pytest.raises(CreateUncertain):
        provider.submit("b-lost", path, model)
    assert sandbox.stats()["batches_created"][name] == 1  # created once, answered 500


@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_create_waits_through_429(sandbox, tmp_path, name):
    provider = client(sandbox, name)
    model = "gpt-5-nano" if name == "openai" else "claude-sonnet-4-6"
    path = write_batch(tmp_path / "b.jsonl", provider, model, 2)
    sandbox.configure(faults="http429:count=2:route=create")
    assert provider.submit("b", path, model).provider_batch_id
    assert sandbox.stats()["batches_created"][name] == 1


def test_anthropic_refused_create_names_the_request(sandbox, tmp_path):
    provider = client(sandbox, "anthropic")
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"custom_id": "ok-1", "params": {"model": "m", "max_tokens": 5, '
        '"messages": [{"role": "user", "content": "hi"}]}}\n'
        '{"custom_id": "bad id!", "params": {"model": "m", "max_tokens": 5, '
        '"messages": [{"role": "user", "content": "hi"}]}}\n'
    )
    with pytest.raises(CreateRefused) as caught:
        provider.submit("b", path, "m")
    assert caught.value.errors[0]["line"] == 2
    assert sandbox.stats()["batches_created"]["anthropic"] == 0


def test_openai_expired_batch_keeps_finished_results(sandbox, tmp_path):
    provider = client(sandbox, "openai")
    sandbox.configure(faults="expire:count=1:after=0.5")
    state = provider.submit("b", write_batch(tmp_path / "b.jsonl", provider, "gpt-5-nano", 10), "")
    ended = wait_ended(provider, state.provider_batch_id)
    assert ended.raw_status == "expired"
    outcomes = [r.outcome for r in provider.results(ended)]
    assert outcomes.count("succeeded") == 5 and outcomes.count("expired") == 5


def test_cancel_keeps_what_finished(sandbox, tmp_path):
    provider = client(sandbox, "anthropic")
    model = "claude-sonnet-4-6"
    sandbox.configure(faults="slow:count=1:factor=200")
    state = provider.submit("b", write_batch(tmp_path / "b.jsonl", provider, model, 4), model)
    assert provider.cancel(state.provider_batch_id).raw_status == "canceling"
    sandbox.advance_clock(60)  # the cancel takes a while at the provider
    ended = wait_ended(provider, state.provider_batch_id)
    assert ended.ended
    assert {r.outcome for r in provider.results(ended)} == {"cancelled"}


def test_missing_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ProviderError, match="OPENAI_API_KEY"):
        connect("openai")


def test_reads_wait_as_long_as_retry_after_says(sandbox, tmp_path):
    import openai

    from batcher.providers.calls import with_retries

    sdk = openai.OpenAI(base_url=sandbox.openai_base_url, api_key="sk-test", max_retries=0)
    sandbox.configure(
        faults="http429:count=2:route=list:retry_after=1.5,http500:count=1:route=list"
    )
    waits: list[float] = []
    page = with_retries(
        lambda: sdk.batches.list(limit=1),
        provider="openai",
        operation="batch list",
        policy=RetryPolicy(attempts=5, base_s=0.01, cap_s=0.02),
        connection_errors=(openai.APIConnectionError,),
        sleep=waits.append,
    )
    assert page.data == []
    assert waits[:2] == [1.5, 1.5]  # the server's word, not our 10 ms backoff
    assert len(waits) == 3 and waits[2] <= 0.02 * 1.25


def test_anthropic_create_body_streams_in_slices_of_the_file(tmp_path):
    """The create's body is the file's requests as one JSON object, sent in slices of about
    BODY_SLICE bytes (not one write a line once the first slice is out)."""
    from batcher.providers.anthropic import BODY_SLICE, request_body

    path = tmp_path / "batch.jsonl"
    lines = [
        orjson.dumps({"custom_id": f"r{i}", "params": {"max_tokens": 8, "text": "x" * 1000}})
        for i in range(3000)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n\n")
    length, stream = request_body(path)
    chunks = list(stream())
    body = b"".join(chunks)
    assert len(body) == length
    assert orjson.loads(body) == {"requests": [orjson.loads(line) for line in lines]}
    assert len(chunks) == -(-len(body) // BODY_SLICE)  # 3 MB: 4 slices, not 3,000
    assert list(stream()) == chunks  # each try streams the body again from the start
