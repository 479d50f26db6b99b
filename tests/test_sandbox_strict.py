"""The sandbox refuses what the services refuse and honours structured output and
reasoning effort, through the official SDKs (facts and sources: docs/providers.md)."""

from __future__ import annotations

import json

import httpx
import jsonschema
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

SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["a", "b"]}, "n": {"type": "integer"}},
    "required": ["label", "n"],
    "additionalProperties": False,
}


def fmt(schema: dict, strict: bool = True) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": strict}}


def test_openai_refuses_per_line_what_the_model_does_not_take(oai):
    lines = [
        chat_line("temp0", "hi", temperature=0),
        chat_line("temp1", "hi", temperature=1, max_completion_tokens=600),
        chat_line("stop", "hi", stop=["\n"]),
        chat_line("old-max", "hi", max_tokens=50),
        chat_line("loose", "hi", response_format=fmt({**SCHEMA, "required": ["label"]})),
    ]
    gpt4o = [  # one model a batch file
        chat_line("gpt4o-temp", "hi", model="gpt-4o-mini", temperature=0),
        chat_line("gpt4o-effort", "hi", model="gpt-4o-mini", reasoning_effort="low"),
    ]
    done, errors = {}, {}
    for batch in [submit(oai, lines), submit(oai, gpt4o)]:
        batch = wait_openai(oai, batch.id)
        done |= read_file(oai, batch.output_file_id)
        errors |= read_file(oai, batch.error_file_id)
    assert set(done) == {"temp1", "gpt4o-temp"}
    codes = {k: v["response"]["body"]["error"] for k, v in errors.items()}
    assert (
        codes["temp0"]["code"] == "unsupported_value" and codes["temp0"]["param"] == "temperature"
    )
    assert "Only the default (1) value is supported" in codes["temp0"]["message"]
    assert {codes[k]["code"] for k in ("stop", "old-max", "gpt4o-effort")} == {
        "unsupported_parameter"
    }
    assert "'required' is required" in codes["loose"]["message"]
    assert all(v["response"]["status_code"] == 400 for v in errors.values())


def test_openai_strict_structured_output_always_satisfies_the_schema(oai, sandbox):
    sandbox.configure(malformed={"gpt-5-nano": 1.0})  # every free answer would be bad
    lines = [
        chat_line(f"s{i}", f"item {i}", response_format=fmt(SCHEMA), reasoning_effort="low")
        for i in range(6)
    ] + [
        chat_line(
            "loose", "item", response_format=fmt(SCHEMA, strict=False), reasoning_effort="low"
        )
    ]
    batch = wait_openai(oai, submit(oai, lines).id)
    done = read_file(oai, batch.output_file_id)
    texts = {k: v["response"]["body"]["choices"][0]["message"]["content"] for k, v in done.items()}
    validator = jsonschema.Draft202012Validator(SCHEMA)
    assert all(validator.is_valid(json.loads(texts[f"s{i}"])) for i in range(6))
    try:  # without strict, best effort: the malformed rate applies
        assert not validator.is_valid(json.loads(texts["loose"]))
    except json.JSONDecodeError:
        pass


def test_reasoning_tokens_follow_reasoning_effort(oai):
    lines = [
        chat_line(f"{effort}-{i}", f"q{i}", reasoning_effort=effort, max_completion_tokens=20_000)
        for effort in ("minimal", "low", "high")
        for i in range(4)
    ] + [chat_line(f"default-{i}", f"q{i}", max_completion_tokens=20_000) for i in range(4)]
    batch = wait_openai(oai, submit(oai, lines).id)
    done = read_file(oai, batch.output_file_id)

    def spent(prefix: str) -> list[int]:
        usage = [v["response"]["body"]["usage"] for k, v in done.items() if k.startswith(prefix)]
        return [u["completion_tokens_details"]["reasoning_tokens"] for u in usage]

    assert max(spent("minimal")) <= 32 < min(spent("low"))
    assert max(spent("low")) <= 256 < min(spent("default")) <= max(spent("default")) <= 1024
    assert min(spent("high")) >= 1024
    # The default (medium) effort spends a 512-token budget on reasoning: cut off, empty.
    batch = wait_openai(oai, submit(oai, [chat_line("cut", "q", max_completion_tokens=300)]).id)
    body = read_file(oai, batch.output_file_id)["cut"]["response"]["body"]
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"] == ""


def test_anthropic_refuses_unknown_fields_and_honours_structured_output(ant, sandbox):
    sandbox.configure(malformed={"claude-sonnet-4-6": 1.0, "claude-3-5-haiku-latest": 1.0})
    unknown = ant_request("unknown", "hi")
    unknown["params"]["response_format"] = {"type": "json_object"}
    structured = ant_request("structured", "hi", max_tokens=300)
    structured["params"]["output_config"] = {"format": {"type": "json_schema", "schema": SCHEMA}}
    tool = ant_request("tool", "hi", model="claude-3-5-haiku-latest", max_tokens=300)
    tool["params"]["tools"] = [{"name": "answer", "input_schema": SCHEMA}]
    tool["params"]["tool_choice"] = {"type": "tool", "name": "answer"}
    opus = ant_request("opus47", "hi", model="claude-opus-4-7")
    opus["params"]["temperature"] = 0
    batch = ant.messages.batches.create(requests=[unknown, structured, tool, opus])
    wait_anthropic(ant, batch.id)
    got = results(ant, batch.id)
    assert got["unknown"].type == "errored"
    error = got["unknown"].error.error
    assert (error.type, error.message) == (
        "invalid_request_error",
        "response_format: Extra inputs are not permitted",
    )
    assert got["opus47"].error.error.message == "`temperature` is deprecated for this model."
    answer = json.loads(got["structured"].message.content[0].text)
    jsonschema.validate(answer, SCHEMA)  # constrained decoding: never malformed
    block = got["tool"].message.content[0]
    assert (block.type, block.name, got["tool"].message.stop_reason) == (
        "tool_use",
        "answer",
        "tool_use",
    )
    assert isinstance(block.input, dict)  # a forced tool is not constrained: may miss fields


def test_anthropic_forced_tool_input_keeps_the_schema_s_numbers_as_json_reads_them(ant, sandbox):
    # enum values come from the request: NaN (json reads it; the SDK would not send it)
    # and an integer past 64 bits come back as they went in, whatever writes the results
    def forced(custom_id: str, prop: dict) -> dict:
        schema = {"type": "object", "properties": {"x": prop}}
        tool = ant_request(custom_id, "hi", model="claude-3-5-haiku-latest", max_tokens=300)
        tool["params"]["tools"] = [{"name": "answer", "input_schema": schema}]
        tool["params"]["tool_choice"] = {"type": "tool", "name": "answer"}
        return tool

    requests = [forced("nan", {"enum": [float("nan")]}), forced("big", {"const": 2**70})]
    body = json.dumps({"requests": [*requests, ant_request("plain", "hi")]}).encode()
    headers = {"x-api-key": "sk-ant-test"}
    url = f"{sandbox.anthropic_base_url}/v1/messages/batches"
    batch_id = httpx.post(url, content=body, headers=headers).json()["id"]
    wait_anthropic(ant, batch_id)
    raw = httpx.get(f"{url}/{batch_id}/results", headers=headers).content
    lines = {row["custom_id"]: row for row in map(json.loads, raw.splitlines())}
    nan, big = (lines[k]["result"]["message"]["content"][0]["input"]["x"] for k in ("nan", "big"))
    assert nan != nan and big == 2**70  # NaN, and the exact integer
    assert lines["plain"]["result"]["type"] == "succeeded"
