"""The sandbox's CPU savings against the plain code each replaced: multipart parts found by
offset in the chunks received, input lines parsed in place, the cycle collector paused while
a batch runs, plain answers counted by parts, prefix chains memoized only up to a prompt's
last text, request digests hashed in one update, label lines looked for only where they
can be, prompt texts tokenized without the special-token scan."""

from __future__ import annotations

import gc
import hashlib
import json
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batcher.plan.tokens import count_tokens, encode
from batcher.sandbox.config import SandboxConfig
from batcher.sandbox.gc_pause import paused_collection
from batcher.sandbox.http import FormPart, Joined, split_parts
from batcher.sandbox.openai_batches import MAX_ERRORS, _check_line, _err, validate_input
from batcher.sandbox.prompts import (
    IM_END,
    IM_START,
    Chain,
    SharedTexts,
    chain,
    part_tokens,
    text_tokens,
)
from batcher.sandbox.responders import (
    LABELS_RE,
    DeterministicResponder,
    make_query,
    parse_labels,
    text_digest,
)


def reference_parts(raw: bytes, delimiter: bytes) -> dict[str, FormPart]:
    """The plain split that split_parts replaces (it copied the body three times)."""
    from batcher.sandbox.http import _FILENAME, _NAME

    fields = {}
    for chunk in raw.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, value = chunk.partition(b"\r\n\r\n")
        disposition = head.decode("utf-8", errors="replace")
        name = _NAME.search(disposition)
        if name:
            filename = _FILENAME.search(disposition)
            fields[name.group(1)] = FormPart(
                value.removesuffix(b"\r\n"), filename.group(1) if filename else None
            )
    return fields


DELIMITER = b"--bnd"
PIECES = st.sampled_from(
    [DELIMITER, b"--", b"\r\n", b"\r\n\r\n", b"x", b'; name="f"', b' filename="a.jsonl"', b"\xff"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(PIECES, st.binary(max_size=6)), max_size=30))
def test_multipart_by_offsets_matches_the_plain_split(pieces):
    raw = b"".join(pieces)
    assert split_parts(raw, DELIMITER) == reference_parts(raw, DELIMITER)


def chunked(raw: bytes, cuts: list[int]) -> list[bytes]:
    """`raw` cut at the offsets `cuts` (empty chunks included, as a stream may give)."""
    points = sorted(min(c, len(raw)) for c in cuts)
    return [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(PIECES, st.binary(max_size=6)), max_size=30),
    st.lists(st.integers(0, 120), max_size=12),
)
def test_multipart_read_from_chunks_matches_the_joined_body(pieces, cuts):
    raw = b"".join(pieces)
    assert split_parts(Joined(chunked(raw, cuts)), DELIMITER) == reference_parts(raw, DELIMITER)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.sampled_from([b"a", b"b", b"ab", b"\r", b"\n", b"x"]), max_size=30).map(b"".join),
    st.lists(st.integers(0, 40), max_size=10),
    st.sampled_from([b"ab", b"aba", b"\r\n", b"abab", b"b" * 5]),
    st.integers(0, 45),
    st.integers(0, 45),
)
def test_joined_chunks_read_like_the_bytes_they_make(raw, cuts, sub, start, end):
    joined = Joined(chunked(raw, cuts))
    assert len(joined) == len(raw)
    assert joined[start:end] == raw[start:end]
    assert joined.find(sub, start, end) == raw.find(sub, start, end)
    assert joined.find(sub, start) == raw.find(sub, start)
    assert joined.startswith(sub, start, end) == raw.startswith(sub, start, end)
    assert joined.endswith(sub, start, end) == raw.endswith(sub, start, end)


def test_multipart_of_a_typical_upload():
    raw = (
        b'--bnd\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
        b'{"a": 1}\n{"b": 2}\n\r\n--bnd--\r\n'
    )
    assert split_parts(raw, DELIMITER) == {
        "purpose": FormPart(b"batch", None),
        "file": FormPart(b'{"a": 1}\n{"b": 2}\n', "in.jsonl"),
    }


def test_paused_collection_nests_and_restores_the_collector():
    assert gc.isenabled()
    with paused_collection():
        assert not gc.isenabled()
        with paused_collection():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer section still runs
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_collection():
            pass
        assert not gc.isenabled()  # a collector someone else turned off stays off
    finally:
        gc.enable()


def test_paused_collection_across_threads_ends_with_the_collector_on():
    inside, release = threading.Event(), threading.Event()

    def other():
        with paused_collection():
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=other)
    thread.start()
    inside.wait(5)
    with paused_collection():
        release.set()  # the other thread's section ends while this one runs
        thread.join(5)
        assert not gc.isenabled()
    assert gc.isenabled()


def reference_input(data: bytes, endpoint: str, cfg) -> tuple[list[dict], list[dict]]:
    """validate_input as it was: the file decoded, split into strings, each json.loads'd."""
    raw = data.decode("utf-8", errors="replace").split("\n")
    while raw and not raw[-1].strip():
        raw.pop()
    if not raw:
        return [], [_err("empty_file", "The input file is empty.")]
    if len(raw) > cfg.openai_max_lines:
        return [], [
            _err(
                "too_many_tasks",
                f"The input file has {len(raw)} requests; at most "
                f"{cfg.openai_max_lines} are allowed in one batch.",
            )
        ]
    lines, errors, seen, model = [], [], set(), None
    for number, text in enumerate(raw, 1):
        line, error = _check_line(text, number, endpoint, seen, model)
        if error:
            errors.append(error)
        else:
            model = model or line["body"]["model"]
            seen.add(line["custom_id"])
            lines.append(line)
        if len(errors) >= MAX_ERRORS:
            break
    return lines, errors


CHAT = "/v1/chat/completions"


def request(custom_id: str, value: str) -> str:
    body = (
        f'{{"model": "gpt-5-nano", "messages": [{{"role": "user", "content": "x"}}], "v": {value}}}'
    )
    return f'{{"custom_id": "{custom_id}", "method": "POST", "url": "{CHAT}", "body": {body}}}'


# Values where orjson and json part ways (floats, integers past 64 bits, NaN, lone
# surrogates, deep nesting), bytes that are not UTF-8, a BOM, and whitespace json refuses.
VALUES = [
    "1", "1.5", "-0", "1e400", "18446744073709551616", "-9223372036854775809", "NaN",
    '"\\udead"', '"\\ud83d\\ude00"', "[" * 70 + "]" * 70, "[" * 5 + "]" * 5, "true", "null",
    '"a\\u0000b"', "01", "[1,]", '"\xe9"',
]  # fmt: skip
IDS = st.integers(0, 5)
LINE_BYTES = st.one_of(
    st.builds(lambda i, v: request(f"r{i}", v).encode(), IDS, st.sampled_from(VALUES)),
    st.sampled_from([b"", b"  ", b"\r", b"\xef\xbb\xbf" + request("bom", "1").encode(), b"\x0c"]),
    st.builds(lambda v: request("bad", "1").encode().replace(b'"x"', b'"' + v + b'"'),
              st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x80\xa8", b"\x85"])),
    st.binary(max_size=8),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(LINE_BYTES, max_size=12), st.sampled_from([b"\n", b"\r\n", b"\n\n", b""]))
def test_input_lines_parsed_in_place_match_the_decoded_split(lines, end):
    data = b"\n".join(lines) + end
    cfg = SandboxConfig(openai_max_lines=10)
    got = validate_input(data, CHAT, cfg)
    assert got == reference_input(data, CHAT, cfg)
    # same types too: orjson would have read a 65-bit integer as a float
    assert json.dumps(got) == json.dumps(reference_input(data, CHAT, cfg))


def test_a_line_nested_past_what_json_reads_fails_as_it_did():
    # orjson reads 1,000 levels; json.loads runs out of stack first, and the create failed
    data = request("deep", "[" * 1000 + "]" * 1000).encode() + b"\n"
    cfg = SandboxConfig()
    with pytest.raises(RecursionError):
        reference_input(data, CHAT, cfg)
    with pytest.raises(RecursionError):
        validate_input(data, CHAT, cfg)


def test_plain_answers_know_their_token_count():
    responder = DeterministicResponder(lambda model: 0.0)
    starts = set()
    for i in range(5000):
        query = make_query("gpt-5-nano", {"i": i}, "", [{"role": "user", "content": f"q{i}"}])
        reply = responder.answer(query)
        assert reply.tokens == count_tokens(reply.text), reply.text
        starts.add(reply.text[15].isdigit())  # the tag's first character: both kinds seen
    assert starts == {True, False}


# Texts long enough to fill several 128-token chunks, and short ones that leave a tail.
TEXTS = ["system", "user", "short text", " ".join(f"rule {i}" for i in range(300)), "x" * 700]
PARTS = st.lists(st.one_of(st.sampled_from([IM_START, IM_END]), st.sampled_from(TEXTS)), max_size=8)


@settings(max_examples=200, deadline=None)
@given(st.lists(PARTS.map(tuple), min_size=1, max_size=4))
def test_prefix_chains_memoized_up_to_the_last_text_match_one_pass(prompts):
    for parts in prompts + prompts:  # repeats meet the memo and the latest-result slot
        whole = tuple(token for part in parts for token in part_tokens(part))
        assert chain(parts) == Chain((), (), 0).extend(whole)


def reference_digest(model: str, body: object) -> bytes:
    """make_query's digest as it was: one blake2b update per piece of the walk."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(model.encode())

    def feed(value: object) -> None:
        if isinstance(value, str):
            digest.update(text_digest(value) if len(value) > 256 else value.encode())
        elif isinstance(value, dict):
            for key in sorted(value):
                digest.update(f"\x00{key}=".encode())
                feed(value[key])
        elif isinstance(value, list):
            digest.update(b"[")
            for item in value:
                feed(item)
                digest.update(b",")
        else:
            digest.update(repr(value).encode())

    feed(body)
    return digest.digest()


KEYS = st.text(max_size=5)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, JSON, max_size=5))
def test_request_digest_from_joined_pieces_matches_piece_by_piece(body):
    assert make_query("gpt-5-nano", body, "", []).digest == reference_digest("gpt-5-nano", body)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(["Allowed labels", "ALLOWED LABELſ", "allowed  labels", " :", ":", "a, b"])
        | st.sampled_from(["\n", "\t", " ", "x", "Allowed label", "ſ", "K"])
        | st.text(max_size=4),
        max_size=8,
    ).map("".join)
)
def test_labels_skip_the_pattern_only_where_it_cannot_match(text):
    match = LABELS_RE.search(text)
    expected = (
        ()
        if not match
        else tuple(
            label.strip().strip("\"'`") for label in match.group(1).split(",") if label.strip()
        )
    )
    assert parse_labels.__wrapped__(text) == expected


SPECIAL = ["<|endoftext|>", "<|fim_prefix|>", "<|im_start|>", "<|endofprompt|>"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(SPECIAL) | st.text(max_size=12), max_size=6).map("".join))
def test_prompt_texts_tokenize_as_the_planner_counts_them(text):
    assert text_tokens(text) == encode(text)
    assert len(text_tokens(text)) == count_tokens(text)


def test_requests_repeating_a_long_text_share_one_string():
    system = "Label the ticket. " * 100  # 1,800 characters
    lines = [
        {"custom_id": f"r{i}", "method": "POST", "url": CHAT, "body": {"model": "gpt-5-nano",
         "messages": [{"role": "system", "content": system}, {"role": "user", "content": f"q{i}"}]}}
        for i in range(3)
    ]  # fmt: skip
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    got, errors = validate_input(data, CHAT, SandboxConfig())
    assert not errors and got == lines  # the same values
    first, *others = (line["body"]["messages"][0]["content"] for line in got)
    assert all(text is first for text in others)  # one object (parsed copies were three)


def test_shared_texts_keep_what_they_are_given():
    texts = SharedTexts(size=2, minimum=4)
    a, b, c = "aaaa", "bbbbb", "ccccc"
    assert texts.shared("aa") == "aa" and texts.shared(None) is None and texts.shared(5) == 5
    assert texts.shared(a) is a and texts.shared("".join(["aa", "aa"])) is a
    assert texts.shared(b) is b and texts.shared(a) is a  # a again: the most recent
    assert texts.shared(c) is c  # b, the least recent, is dropped
    assert texts.shared("".join(["bbb", "bb"])) is not b
    blocks = [{"type": "text", "text": "".join(["cc", "ccc"])}, {"type": "image"}, "x"]
    assert texts.share_blocks(blocks) is blocks and blocks[0]["text"] is c
    messages = [{"role": "user", "content": "".join(["c", "cccc"])}, {"role": "user"}, 3]
    texts.share_messages(messages)
    assert messages[0]["content"] is c and messages[1:] == [{"role": "user"}, 3]


def test_anthropic_requests_repeating_a_long_system_share_one_string():
    from batcher.sandbox.anthropic_batches import create_batch
    from batcher.sandbox.state import SandboxState

    def request(i: int) -> dict:
        system = "".join(["Label the ticket. "] * 100)  # a new object each time
        params = {"model": "claude-sonnet-4-6", "max_tokens": 8, "messages": [{"role": "user",
                  "content": system}], "system": [{"type": "text", "text": system}]}  # fmt: skip
        return {"custom_id": f"a{i}", "params": params}

    batch = create_batch(SandboxState(SandboxConfig()), [request(i) for i in range(3)])
    texts = [r["params"]["system"][0]["text"] for r in batch.requests]
    texts += [r["params"]["messages"][0]["content"] for r in batch.requests]
    assert all(text is texts[0] for text in texts)
    assert batch.requests == [request(i) for i in range(3)]  # the same values
