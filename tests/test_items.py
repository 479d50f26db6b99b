"""Input lines -> ParsedItem or Problem, with the exact line numbers and reasons."""

from __future__ import annotations

import io

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batcher.plan.inputs import ParsedItem, Problem, content_text, parse_lines

BAD_ID = '"id" must be a non-empty string or an integer'
BAD_TIER = '"tier" must be a string naming a tier of the spec'
BAD_MAX = '"max_tokens" must be an integer of at least 1'
BAD_MESSAGES = '"messages" must be a non-empty list of {"role", "content"} objects'
USE_METADATA = 'put extra data in "metadata"'
CAP_FIX = "shorten the item (lines are capped to keep memory bounded)"


def parse(text: bytes, cap: int = 4096) -> list[ParsedItem | Problem]:
    return list(parse_lines(io.BytesIO(text), max_line_bytes=cap))


def one(line: bytes | str | dict) -> ParsedItem | Problem:
    if isinstance(line, dict):
        line = orjson.dumps(line)
    if isinstance(line, str):
        line = line.encode()
    [result] = parse(line + b"\n")
    return result


def problem(line) -> str:  # noqa: ANN001 - dict, str or bytes
    result = one(line)
    assert isinstance(result, Problem), result
    return result.reason


def test_item_form_with_every_field():
    item = one(
        {
            "id": "t-1",
            "prompt": "Classify this",
            "system": "You label.",
            "tier": "nano",
            "model": "openai:gpt-5-mini",
            "max_tokens": 64,
            "temperature": 0,
            "params": {"top_p": 0.5},
            "metadata": {"queue": "billing"},
        }
    )
    assert isinstance(item, ParsedItem)
    assert (item.line_no, item.custom_id, item.system) == (1, "t-1", "You label.")
    assert item.messages == [{"role": "user", "content": "Classify this"}]
    assert (item.tier, item.model, item.max_tokens, item.temperature) == (
        "nano",
        "openai:gpt-5-mini",
        64,
        0,
    )
    assert item.request() == {
        "messages": [{"role": "user", "content": "Classify this"}],
        "max_tokens": 64,
        "temperature": 0,
        "params": {"top_p": 0.5},
    }
    assert item.metadata == {"queue": "billing"}
    assert item.prompt_text() == "Classify this"


def test_request_holds_only_what_the_item_set():
    item = one({"prompt": "hi"})
    assert item.request() == {"messages": [{"role": "user", "content": "hi"}]}


def test_id_defaults_to_the_line_number_and_integer_ids_become_strings():
    results = parse(b'{"prompt": "a"}\n\n{"id": 7, "prompt": "b"}\n{"prompt": "c"}\n')
    assert [(r.line_no, r.custom_id) for r in results] == [(1, "1"), (3, "7"), (4, "4")]


def test_messages_with_leading_system_messages_become_the_system_prompt():
    item = one(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
                {"role": "assistant", "content": "Hi"},
                {"role": "user", "content": "Label it"},
            ]
        }
    )
    assert item.system == "Be brief."
    assert [m["role"] for m in item.messages] == ["user", "assistant", "user"]
    assert item.prompt_text() == "Label it"
    assert content_text(item.messages[0]["content"]) == "Hello"


def test_openai_batch_line_form():
    item = one(
        {
            "custom_id": "req-9",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gpt-5-mini",
                "messages": [
                    {"role": "system", "content": "Sys"},
                    {"role": "user", "content": "Q"},
                ],
                "max_completion_tokens": 50,
                "max_tokens": 10,
                "temperature": 0.2,
                "response_format": {"type": "json_object"},
            },
        }
    )
    assert isinstance(item, ParsedItem)
    assert (item.custom_id, item.model, item.system) == ("req-9", "openai:gpt-5-mini", "Sys")
    assert item.messages == [{"role": "user", "content": "Q"}]
    assert (item.max_tokens, item.temperature) == (50, 0.2)
    # the legacy max_tokens does not leak into the pass-through parameters
    assert item.params == {"response_format": {"type": "json_object"}}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ({"custom_id": "x"}, '"body" must be an object with "model" and "messages"'),
        ({"custom_id": "", "body": {}}, '"custom_id" must be a non-empty string'),
        (
            {"custom_id": "x", "method": "GET", "body": {}},
            '"method" must be "POST"',
        ),
        (
            {"custom_id": "x", "url": "/v1/embeddings", "body": {}},
            '"url" must be "/v1/chat/completions" (chat completions requests only)',
        ),
        (
            {"custom_id": "x", "body": {"messages": [{"role": "user", "content": "q"}]}},
            '"body.model" must be a model name string, e.g. "gpt-5-mini"',
        ),
        (
            {"custom_id": "x", "body": {"model": "m", "messages": []}},
            '"messages" must be a non-empty list of {"role", "content"} objects',
        ),
        (
            {
                "custom_id": "x",
                "body": {
                    "model": "m",
                    "messages": [{"role": "user", "content": "q"}],
                    "max_completion_tokens": 0,
                },
            },
            '"body.max_completion_tokens" must be an integer of at least 1',
        ),
        (
            {"custom_id": "x", "body": {}, "extra": 1},
            'unknown field "extra" in a batch-request line',
        ),
    ],
)
def test_bad_batch_lines(line, reason):
    assert problem(line) == reason


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"id": "a", "prompt": ', "invalid JSON: the line ends inside a value"),
        (b"not json at all", "invalid JSON at column 1: invalid literal, expected 'null'"),
        (b'{"prompt": "a",}', "invalid JSON at column 15: trailing comma is not allowed"),
        (b"[]", "expected a JSON object, got an array"),
        (b'"just text"', "expected a JSON object, got a string"),
        (b"42", "expected a JSON object, got a number"),
        (b"null", "expected a JSON object, got null"),
        (b'{"id": "a"}', 'no "prompt" or "messages": every item needs one of them'),
        (b'{"prompt": null}', 'no "prompt" or "messages": every item needs one of them'),
        (b'{"prompt": 42}', '"prompt" must be a non-empty string, got a number'),
        (b'{"prompt": "  "}', '"prompt" is empty: give the text to send'),
        (b'{"prompt": "a", "messages": []}', 'give "prompt" or "messages", not both'),
        (b'{"id": true, "prompt": "a"}', f"{BAD_ID}, got a boolean"),
        (b'{"id": 1.5, "prompt": "a"}', f"{BAD_ID}, got a number"),
        (b'{"id": "", "prompt": "a"}', BAD_ID),
        (b'{"prompt": "a", "tier": 3}', f"{BAD_TIER}, got a number"),
        (b'{"prompt": "a", "max_tokens": "9"}', f"{BAD_MAX}, got a string"),
        (b'{"prompt": "a", "max_tokens": 0}', '"max_tokens" is 0: it must be at least 1'),
        (b'{"prompt": "a", "temperature": "hot"}', '"temperature" must be a number, got a string'),
        (b'{"prompt": "a", "temperature": -1}', '"temperature" is -1: it must be 0 or more'),
        (b'{"prompt": "a", "metadata": []}', '"metadata" must be an object, got an array'),
        (b'{"prompt": "a", "params": "x"}', '"params" must be an object, got a string'),
        (b'{"prompt": "a", "system": ["x"]}', '"system" must be a string, got an array'),
        (b'{"prompt": "a", "colour": "red"}', f'unknown field "colour": {USE_METADATA}'),
        (
            b'{"prompt": "a", "model": "gpt-5-mini"}',
            "\"model\" 'gpt-5-mini' must be PROVIDER:MODEL, e.g. \"openai:gpt-5-mini\"",
        ),
        (
            b'{"prompt": "a", "system": "s", "system_ref": "p"}',
            'give "system" or "system_ref", not both',
        ),
        (b'{"messages": "hi"}', f"{BAD_MESSAGES}, got a string"),
        (b'{"messages": []}', BAD_MESSAGES),
        (b'{"messages": [1]}', '"messages"[0] must be an object, got a number'),
        (
            b'{"messages": [{"role": "bot", "content": "x"}]}',
            '"messages"[0].role must be one of system, user, assistant',
        ),
        (
            b'{"messages": [{"role": "user", "content": 5}]}',
            '"messages"[0].content must be a string or a list of blocks',
        ),
        (
            b'{"messages": [{"role": "system", "content": "s"}]}',
            '"messages" has only system messages: add a user message',
        ),
        (
            b'{"messages": [{"role": "user", "content": "u"}, {"role": "system", "content": "s"}]}',
            '"messages": system messages may only come first',
        ),
        (
            b'{"system": "a", "messages": [{"role": "system", "content": "s"}, '
            b'{"role": "user", "content": "u"}]}',
            'give the system prompt in "system" or in "messages", not both',
        ),
        (b'{"prompt": "caf\xe9"}', "bytes that are not UTF-8 at byte 16: save the file as UTF-8"),
    ],
)  # fmt: skip
def test_bad_item_lines(line, reason):
    assert problem(line) == reason


def test_problems_carry_exact_line_numbers_and_parsing_goes_on():
    text = (
        b'{"id": "a", "prompt": "ok"}\n'  # 1
        b"\n"  # 2: blank lines are skipped but counted
        b"{oops\n"  # 3
        b"[1, 2]\n"  # 4
        b'{"id": "b"}\n'  # 5
        b'{"id": "c", "prompt": "fine"}\r\n'  # 6: CRLF endings are fine
        b'{"prompt": "\xff\xfe"}\n'  # 7
        b'{"id": "d", "prompt": "last, no newline"}'  # 8
    )
    results = parse(text)
    assert [(type(r).__name__, r.line_no) for r in results] == [
        ("ParsedItem", 1),
        ("Problem", 3),
        ("Problem", 4),
        ("Problem", 5),
        ("ParsedItem", 6),
        ("Problem", 7),
        ("ParsedItem", 8),
    ]
    assert results[1].raw == b"{oops\n"  # the line travels with its problem (rejects file)


def test_line_over_the_cap_is_a_problem_and_the_next_line_still_parses():
    fits = b'{"prompt": "' + b"x" * (100 - 14) + b'"}'
    assert len(fits) == 100
    too_long = b'{"prompt": "' + b"y" * 5000 + b'"}'
    results = parse(fits + b"\n" + too_long + b"\n" + b'{"id": "z", "prompt": "after"}\n', cap=100)
    assert isinstance(results[0], ParsedItem)  # exactly at the cap, newline not counted
    assert isinstance(results[1], Problem) and results[1].line_no == 2
    assert results[1].reason == "line longer than the 100-byte cap: " + CAP_FIX
    assert results[2].custom_id == "z" and results[2].line_no == 3


def test_line_over_the_cap_at_the_end_of_the_file_without_newline():
    results = parse(b'{"prompt": "a"}\n' + b"x" * 101, cap=100)
    assert [(type(r).__name__, r.line_no) for r in results] == [("ParsedItem", 1), ("Problem", 2)]


def test_utf8_byte_order_mark_on_the_first_line_is_ignored():
    [item] = parse(b'\xef\xbb\xbf{"id": "a", "prompt": "x"}\n')
    assert isinstance(item, ParsedItem) and item.custom_id == "a"


def test_empty_and_blank_input_yield_nothing():
    assert parse(b"") == []
    assert parse(b"\n  \n\t\n") == []


def test_reject_record():
    result = one(b'{"prompt": 42}')
    assert result.to_reject("in.jsonl") == {
        "file": "in.jsonl",
        "line": 1,
        "reason": '"prompt" must be a non-empty string, got a number',
        "text": '{"prompt": 42}\n',
    }


def test_nul_in_a_field_stored_as_text_is_a_problem():
    assert problem({"id": "a\x00b", "prompt": "x"}) == (
        '"id" contains a NUL character (\\u0000): remove it'
    )
    assert problem({"prompt": "x", "system": "s\x00"}) == (
        '"system" contains a NUL character (\\u0000): remove it'
    )
    item = one({"id": "a", "prompt": "NUL \x00 inside the prompt is stored JSON-escaped"})
    assert isinstance(item, ParsedItem)
    for field in ("system_ref", "tier", "model"):
        assert problem({"prompt": "x", field: "a:b\x00"}) == (
            f'"{field}" contains a NUL character (\\u0000): remove it'
        )
    system_message = {"role": "system", "content": "s\x00"}
    batch_line = {"custom_id": "c", "body": {"model": "m", "messages": [system_message]}}
    batch_line["body"]["messages"].append({"role": "user", "content": "hi"})
    assert problem(batch_line) == '"system" contains a NUL character (\\u0000): remove it'


def test_content_blocks_are_checked():
    line = {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}
    assert problem(line) == '"messages"[0].content[0].text must be a string'
    line = {"messages": [{"role": "user", "content": ["text"]}]}
    assert problem(line) == '"messages"[0].content[0] must be an object with a "type"'


# Property tests: whatever a line holds, parsing yields an item or a problem, never an error.
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)
MESSAGE = st.dictionaries(
    st.sampled_from(["role", "content", "name"]),
    st.sampled_from(["user", "system", "assistant", "tool"])
    | st.lists(
        st.dictionaries(st.sampled_from(["type", "text"]), st.sampled_from(["text"]) | JSON),
        max_size=2,
    )
    | JSON,
)
FIELD = st.sampled_from(
    ["id", "prompt", "messages", "system", "system_ref", "tier", "model", "max_tokens"]
    + ["temperature", "params", "metadata", "custom_id", "body", "method", "url", "other"]
)
LINE = st.dictionaries(
    FIELD,
    JSON
    | st.lists(MESSAGE, max_size=3)
    | st.fixed_dictionaries({"model": JSON, "messages": st.lists(MESSAGE, max_size=3)}),
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(LINE)
def test_any_object_is_an_item_or_a_problem(obj):
    result = one(obj)
    assert isinstance(result, ParsedItem | Problem)
    if isinstance(result, ParsedItem):
        orjson.dumps(result.request())  # what ingest stores must serialise
        assert isinstance(result.prompt_text(), str)
        assert isinstance(result.custom_id, str) and result.custom_id
        assert result.system is None or isinstance(result.system, str)
    else:
        assert result.reason and result.line_no == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_parse_without_error(raw):
    results = parse(raw, cap=64)
    line_numbers = [r.line_no for r in results]
    assert line_numbers == sorted(set(line_numbers))
    assert all(isinstance(r, ParsedItem | Problem) for r in results)
