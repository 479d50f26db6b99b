"""Result files written by orjson read back as the lines json.dumps wrote."""

import json

from batcher.sandbox.jsonl import jsonl


def _read(data: bytes) -> list:
    return [json.loads(line) for line in data.split(b"\n")[:-1]]  # (U+2028 is no line end)


def test_lines_parse_to_what_json_wrote():
    lines = [
        {"id": "a", "text": 'café ✓ \u2028 "quoted" \\ \n', "n": 3, "ok": True, "none": None},
        {"nested": [{"x": [1, 2.5, -0.125]}, []], "emoji": "😀"},
    ]
    data = jsonl(lines)
    assert data.endswith(b"\n") and data.count(b"\n") == 2
    assert _read(data) == _read("".join(json.dumps(line) + "\n" for line in lines).encode())


def test_lines_orjson_refuses_are_written_by_json():
    lines = [{"big": 2**70}, {"lone": "\ud800"}, {1: "int key"}, {"plain": 1}]
    expected = "".join(json.dumps(line) + "\n" for line in lines[:3]).encode()
    data = jsonl(lines)
    assert data.startswith(expected)
    assert json.loads(data.splitlines()[3]) == {"plain": 1}


def test_lines_that_echo_a_request_keep_json_s_nan():
    lines = [{"input": {"x": float("nan")}}, {"input": {"x": 1.5}}]
    data = jsonl(lines, echoes=lambda line: "x" in line["input"] and line["input"]["x"] != 1.5)
    assert data.splitlines()[0] == b'{"input": {"x": NaN}}'
    assert data.splitlines()[1] == b'{"input":{"x":1.5}}'
    assert jsonl(lines[:1]) == b'{"input":{"x":null}}\n'  # why a caller must say which echo
