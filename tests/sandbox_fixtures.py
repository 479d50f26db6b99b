"""Fixtures and helpers for the sandbox tests: a served sandbox and the real SDKs pointed at it.

Test modules import the `*_fixture` functions; pytest knows them by their short names
(`sandbox`, `oai`, `ant`), so test arguments do not shadow an import.
"""

from __future__ import annotations

import json
import time

import anthropic
import openai
import pytest

from batcher.sandbox import Sandbox, start_sandbox

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module", name="served")
def served_fixture() -> Sandbox:
    with start_sandbox(speed=4.0) as sandbox:  # 4x clock keeps the suite quick
        yield sandbox


@pytest.fixture(name="sandbox")
def sandbox_fixture(served: Sandbox) -> Sandbox:
    """A module-wide server, reset before each test (faults, clock, state back to start)."""
    served.reset()
    return served


@pytest.fixture(name="oai")
def oai_fixture(sandbox: Sandbox) -> openai.OpenAI:
    return openai.OpenAI(base_url=sandbox.openai_base_url, api_key="sk-test", max_retries=2)


@pytest.fixture(name="ant")
def ant_fixture(sandbox: Sandbox) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=sandbox.anthropic_base_url, api_key="sk-ant-test", max_retries=2
    )


def chat_line(
    custom_id: str,
    user: str,
    model: str = "gpt-5-nano",
    system: str | None = None,
    url: str = CHAT,
    **body,
) -> dict:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}
    ]
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": url,
        "body": {"model": model, "messages": messages, **body},
    }


def jsonl(lines: list) -> bytes:
    return "".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines).encode()


def submit(client: openai.OpenAI, lines: list, endpoint: str = CHAT, **kwargs):
    upload = client.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch")
    return client.batches.create(
        input_file_id=upload.id, endpoint=endpoint, completion_window="24h", **kwargs
    )


OPENAI_DONE = ("completed", "failed", "expired", "cancelled")


def wait_openai(client: openai.OpenAI, batch_id: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in OPENAI_DONE or time.monotonic() > deadline:
            return batch
        time.sleep(0.05)


def read_file(client: openai.OpenAI, file_id: str | None) -> dict[str, dict]:
    """Output or error file lines keyed by custom_id."""
    if file_id is None:
        return {}
    text = client.files.content(file_id).text
    return {row["custom_id"]: row for row in map(json.loads, text.splitlines())}


def ant_request(
    custom_id: str, user: str, model: str = "claude-sonnet-4-6", max_tokens: int = 64, system=None
) -> dict:
    params = {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": user}],
    }
    if system is not None:
        params["system"] = system
    return {"custom_id": custom_id, "params": params}


def wait_anthropic(client: anthropic.Anthropic, batch_id: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended" or time.monotonic() > deadline:
            return batch
        time.sleep(0.05)


def results(client: anthropic.Anthropic, batch_id: str) -> dict:
    return {r.custom_id: r.result for r in client.messages.batches.results(batch_id)}
