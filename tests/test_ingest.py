"""Storing an input as a run: refusal by default, rejects with --skip-invalid, exact lines.

Runs on SQLite and on PostgreSQL (the `db_url` fixture).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from batcher.errors import UsageError
from batcher.plan import ingest as ingest_module
from batcher.plan.ingest import InputError, ingest
from batcher.spec import parse_spec
from batcher.store import TABLES, open_store
from batcher.store.prompts import prompt_hash

SYSTEM = "You label support tickets. Answer with one label."


@pytest.fixture
def spec():
    return parse_spec(
        {
            "name": "labels",
            "tiers": {
                "nano": "openai:gpt-5-nano",
                "mid": "openai:gpt-5-mini",
                "frontier": "anthropic:claude-sonnet-4-5",
            },
            "prompts": {"billing": "You handle billing tickets."},
            "defaults": {"system": SYSTEM},
        },
        "jobs/labels.toml",
    )


@pytest.fixture
def engine(db_url):
    engine = open_store(db_url)
    yield engine
    engine.dispose()


def write(tmp_path: Path, lines: list, name: str = "in.jsonl") -> Path:
    path = tmp_path / name
    with open(path, "wb") as f:
        for line in lines:
            f.write((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n")
    return path


def rows(engine, table: str) -> list[dict]:
    with engine.connect() as conn:
        t = TABLES[table]
        return [
            dict(r._mapping)
            for r in conn.execute(sa.select(t).order_by(t.c[t.primary_key.columns.keys()[0]]))
        ]


def test_items_are_stored_with_their_request_and_prompt_once(engine, spec, tmp_path):
    path = write(
        tmp_path,
        [
            {"id": "a", "prompt": "Refund please", "metadata": {"queue": "billing"}},
            {"id": "b", "prompt": "Login fails", "max_tokens": 20, "temperature": 0.5},
            {"id": "c", "prompt": "Invoice?", "system_ref": "billing", "tier": "nano"},
            {
                "id": "d",
                "prompt": "Hello",
                "system": "Inline system",
                "model": "anthropic:claude-haiku-4-5",
            },
            {"id": "e", "prompt": "Again", "system": "Inline system"},
        ],
    )
    result = ingest(engine, spec, path)
    assert (result.n_items, result.n_rejected, result.rejects_path) == (5, 0, None)
    assert result.input_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()

    [run] = rows(engine, "run")
    assert run["id"] == result.run_id
    assert (run["status"], run["n_items"], run["n_rejected"]) == ("created", 5, 0)
    assert run["input_sha256"] == result.input_sha256
    assert run["input_path"] == str(path.resolve())
    assert run["job_name"] == "labels" and run["spec_path"] == "jobs/labels.toml"

    items = rows(engine, "item")
    assert [(i["custom_id"], i["line_no"], i["status"]) for i in items] == [
        ("a", 1, "pending"),
        ("b", 2, "pending"),
        ("c", 3, "pending"),
        ("d", 4, "pending"),
        ("e", 5, "pending"),
    ]
    assert orjson.loads(items[0]["request_json"]) == {
        "messages": [{"role": "user", "content": "Refund please"}]
    }
    assert orjson.loads(items[0]["metadata_json"]) == {"queue": "billing"}
    assert orjson.loads(items[1]["request_json"]) == {
        "messages": [{"role": "user", "content": "Login fails"}],
        "max_tokens": 20,
        "temperature": 0.5,
    }
    assert items[1]["metadata_json"] is None
    assert (items[2]["explicit_tier"], items[3]["explicit_model"]) == (
        "nano",
        "anthropic:claude-haiku-4-5",
    )
    assert items[0]["system_hash"] == prompt_hash(SYSTEM)
    assert items[2]["system_hash"] == prompt_hash("You handle billing tickets.")
    assert items[3]["system_hash"] == items[4]["system_hash"] == prompt_hash("Inline system")
    prompts = {p["hash"]: p["text"] for p in rows(engine, "prompt")}
    assert prompts == {
        prompt_hash(SYSTEM): SYSTEM,
        prompt_hash("You handle billing tickets."): "You handle billing tickets.",
        prompt_hash("Inline system"): "Inline system",
    }


def test_a_second_ingest_reuses_stored_prompts(engine, spec, tmp_path):
    path = write(tmp_path, [{"prompt": "x"}, {"prompt": "y", "system": "Shared"}])
    first = ingest(engine, spec, path)
    second = ingest(engine, spec, path)
    assert second.run_id != first.run_id
    assert len(rows(engine, "prompt")) == 2
    assert len(rows(engine, "item")) == 4


BAD_FILE = [
    {"id": "a", "prompt": "fine"},  # 1
    b'{"id": "broken", "prompt": ',  # 2 invalid JSON
    b"[]",  # 3 not an object
    {"id": "n"},  # 4 no prompt/messages
    {"prompt": 42},  # 5 wrong type
    {"id": "a", "prompt": "again"},  # 6 duplicate of line 1
    b"",  # 7 blank: skipped, still counted
    b'{"prompt": "\xff"}',  # 8 not UTF-8
    {"id": "t", "prompt": "x", "tier": "huge"},  # 9 unknown tier
    {"id": "r", "prompt": "x", "system_ref": "nope"},  # 10 unknown system_ref
    {"id": "m", "prompt": "x", "model": "mistral:large"},  # 11 unknown provider
    {"id": "ok2", "prompt": "fine too"},  # 12
]
BAD_REASONS = [
    (2, "invalid JSON: the line ends inside a value"),
    (3, "expected a JSON object, got an array"),
    (4, 'no "prompt" or "messages": every item needs one of them'),
    (5, '"prompt" must be a non-empty string, got a number'),
    (6, "duplicate id 'a' (first used on line 1): give every item its own id"),
    (8, "bytes that are not UTF-8 at byte 13: save the file as UTF-8"),
    (9, "\"tier\" 'huge' is not a tier of the job: use one of nano, mid, frontier"),
    (10, "\"system_ref\" 'nope' names no prompt of the job: use one of billing"),
    (
        11,
        "\"model\" 'mistral:large': the provider must be one of openai, anthropic, google, xai, "
        "deepseek",
    ),
]


def test_default_refuses_the_whole_input_and_stores_nothing(engine, spec, tmp_path):
    path = write(tmp_path, BAD_FILE)
    with pytest.raises(InputError) as caught:
        ingest(engine, spec, path)
    error = caught.value
    assert error.exit_code == 2
    assert error.total == len(BAD_REASONS)
    assert [(p.line_no, p.reason) for p in error.problems] == BAD_REASONS
    assert str(error).splitlines()[0] == (
        f"{path}: 9 invalid lines; nothing was stored or submitted. Fix them, or pass "
        "--skip-invalid to set them aside in a rejects file and go on:"
    )
    assert str(error).splitlines()[1:] == [f"  {path}:{n}: {r}" for n, r in BAD_REASONS]
    assert rows(engine, "run") == [] and rows(engine, "item") == [] and rows(engine, "prompt") == []
    assert not (Path(ingest_module.state_dir()) / "rejects").exists()


def test_refusal_lists_the_first_problems_and_the_total(engine, spec, tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_module, "SHOWN_PROBLEMS", 3)
    path = write(tmp_path, [{"id": i} for i in range(10)] + [{"prompt": "ok"}])
    with pytest.raises(InputError) as caught:
        ingest(engine, spec, path)
    lines = str(caught.value).splitlines()
    assert lines[0].startswith(f"{path}: 10 invalid lines; nothing was stored")
    assert lines[1:] == [
        f'  {path}:1: no "prompt" or "messages": every item needs one of them',
        f'  {path}:2: no "prompt" or "messages": every item needs one of them',
        f'  {path}:3: no "prompt" or "messages": every item needs one of them',
        "  ... and 7 more",
    ]
    assert rows(engine, "run") == []


def test_skip_invalid_writes_rejects_and_stores_the_rest(engine, spec, tmp_path):
    path = write(tmp_path, BAD_FILE)
    rejects = tmp_path / "out" / "rejects.jsonl"
    result = ingest(engine, spec, path, skip_invalid=True, rejects_path=rejects)
    assert (result.n_items, result.n_rejected, result.rejects_path) == (2, 9, str(rejects))
    assert [(i["custom_id"], i["line_no"]) for i in rows(engine, "item")] == [("a", 1), ("ok2", 12)]
    [run] = rows(engine, "run")
    assert (run["n_items"], run["n_rejected"]) == (2, 9)

    records = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert [(r["file"], r["line"], r["reason"]) for r in records] == [
        (str(path), n, reason) for n, reason in BAD_REASONS
    ]
    # each record holds the original line, so the rejects can be fixed and fed again
    assert records[1]["text"] == "[]\n"
    assert records[4]["text"] == '{"id":"a","prompt":"again"}\n'
    assert records[5]["text"] == '{"prompt": "\ufffd"}\n'


def test_skip_invalid_default_rejects_path_is_in_the_state_folder(
    engine, spec, tmp_path, state_dir
):
    path = write(tmp_path, [{"prompt": "ok"}, b"nope"])
    result = ingest(engine, spec, path, skip_invalid=True)
    expected = state_dir / "rejects" / f"run-{result.run_id}-rejects.jsonl"
    assert result.rejects_path == str(expected)
    [record] = [orjson.loads(line) for line in expected.read_bytes().splitlines()]
    assert record["line"] == 2


def test_skip_invalid_without_problems_writes_no_rejects_file(engine, spec, tmp_path, state_dir):
    result = ingest(engine, spec, write(tmp_path, [{"prompt": "ok"}]), skip_invalid=True)
    assert result.rejects_path is None
    assert not (state_dir / "rejects").exists()


def test_duplicates_are_found_across_insert_chunks(engine, spec, tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_module, "INSERT_CHUNK", 3)  # the first copy is already written
    lines = [{"id": f"i{n}", "prompt": "p"} for n in range(10)]
    lines += [{"id": "i1", "prompt": "again"}, {"id": "i8", "prompt": "again"}]
    with pytest.raises(InputError) as caught:
        ingest(engine, spec, write(tmp_path, lines))
    assert [(p.line_no, p.reason) for p in caught.value.problems] == [
        (11, "duplicate id 'i1' (first used on line 2): give every item its own id"),
        (12, "duplicate id 'i8' (first used on line 9): give every item its own id"),
    ]


def test_duplicates_name_the_line_that_first_used_the_id(engine, spec, tmp_path, monkeypatch):
    """In one chunk, across chunks, and repeated: always the line that was stored."""
    monkeypatch.setattr(ingest_module, "INSERT_CHUNK", 4)
    lines = [
        {"id": "a", "prompt": "p"},  # 1  stored
        {"id": "b", "prompt": "p"},  # 2  stored
        {"id": "a", "prompt": "p"},  # 3  same chunk as line 1
        {"id": "c", "prompt": "p"},  # 4  stored
        {"id": "b", "prompt": "p"},  # 5  next chunk: line 2 is already written
        {"id": "b", "prompt": "p"},  # 6  again: still line 2, not line 5
        b"oops",  # 7  a parse problem between duplicates keeps its place
        {"id": "d", "prompt": "p"},  # 8  stored
        {"id": "d", "prompt": "p"},  # 9
    ]
    result = ingest(engine, spec, write(tmp_path, lines), skip_invalid=True)
    assert [(i["custom_id"], i["line_no"]) for i in rows(engine, "item")] == [
        ("a", 1),
        ("b", 2),
        ("c", 4),
        ("d", 8),
    ]
    assert (result.n_items, result.n_rejected) == (4, 5)
    records = [orjson.loads(line) for line in Path(result.rejects_path).read_bytes().splitlines()]
    assert [(r["line"], r["reason"]) for r in records] == [
        (3, "duplicate id 'a' (first used on line 1): give every item its own id"),
        (5, "duplicate id 'b' (first used on line 2): give every item its own id"),
        (6, "duplicate id 'b' (first used on line 2): give every item its own id"),
        (7, "invalid JSON at column 1: unexpected character, expected a JSON value"),
        (9, "duplicate id 'd' (first used on line 8): give every item its own id"),
    ]
    [run] = rows(engine, "run")
    assert (run["n_items"], run["n_rejected"]) == (4, 5)


def test_memory_stays_bounded_by_flushing_on_bytes(engine, spec, tmp_path, monkeypatch):
    """Big lines flush before the row count is reached; nothing is lost or reordered."""
    monkeypatch.setattr(ingest_module, "FLUSH_BYTES", 2000)
    lines = [{"id": f"i{n}", "prompt": "x" * 500} for n in range(20)] + [
        {"id": "i3", "prompt": "y"}
    ]
    result = ingest(engine, spec, write(tmp_path, lines), skip_invalid=True)
    assert (result.n_items, result.n_rejected) == (20, 1)
    assert [i["line_no"] for i in rows(engine, "item")] == list(range(1, 21))


def test_an_id_defaulting_to_its_line_number_can_clash(engine, spec, tmp_path):
    lines = [{"prompt": "first"}, {"id": "1", "prompt": "second"}]
    with pytest.raises(InputError) as caught:
        ingest(engine, spec, write(tmp_path, lines))
    [problem] = caught.value.problems
    assert (problem.line_no, problem.reason) == (
        2,
        "duplicate id '1' (first used on line 1): give every item its own id",
    )


def test_a_rejected_line_does_not_claim_its_id(engine, spec, tmp_path):
    lines = [{"id": "x", "prompt": "p", "tier": "huge"}, {"id": "x", "prompt": "p"}]
    result = ingest(engine, spec, write(tmp_path, lines), skip_invalid=True)
    assert (result.n_items, result.n_rejected) == (1, 1)
    assert [(i["custom_id"], i["line_no"]) for i in rows(engine, "item")] == [("x", 2)]


def test_line_over_the_size_cap(engine, spec, tmp_path):
    path = write(tmp_path, [{"prompt": "short"}, {"prompt": "x" * 500}, {"prompt": "short"}])
    with pytest.raises(InputError) as caught:
        ingest(engine, spec, path, max_line_bytes=200)
    [problem] = caught.value.problems
    assert (problem.line_no, problem.reason) == (
        2,
        "line longer than the 200-byte cap: shorten the item "
        "(lines are capped to keep memory bounded)",
    )


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_file_is_refused(engine, spec, tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        ingest(engine, spec, path)
    assert str(caught.value) == (
        f"{path}: the file has no items (it is empty or blank); nothing was stored. "
        'Give one JSON object a line, e.g. {"id": "1", "prompt": "..."}.'
    )
    assert rows(engine, "run") == []


def test_every_line_invalid_with_skip_invalid_is_refused(engine, spec, tmp_path):
    path = write(tmp_path, [b"x", b"y"])
    rejects = tmp_path / "rej.jsonl"
    with pytest.raises(InputError) as caught:
        ingest(engine, spec, path, skip_invalid=True, rejects_path=rejects)
    assert str(caught.value).splitlines()[0] == (
        f"{path}: every line is invalid (2 set aside in {rejects}); nothing was stored. "
        "Fix the input and ingest it again:"
    )
    assert len(rejects.read_bytes().splitlines()) == 2
    assert rows(engine, "run") == []


def test_missing_input_file(engine, spec, tmp_path):
    with pytest.raises(UsageError, match=r"missing\.jsonl: cannot read the input: No such file"):
        ingest(engine, spec, tmp_path / "missing.jsonl")


def test_batch_line_form_is_stored(engine, spec, tmp_path):
    line = {
        "custom_id": "req-1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gpt-5-mini",
            "messages": [{"role": "system", "content": "Sys"}, {"role": "user", "content": "Q"}],
            "max_completion_tokens": 30,
        },
    }
    ingest(engine, spec, write(tmp_path, [line]))
    [item] = rows(engine, "item")
    assert (item["custom_id"], item["explicit_model"]) == ("req-1", "openai:gpt-5-mini")
    assert item["system_hash"] == prompt_hash("Sys")
    assert orjson.loads(item["request_json"]) == {
        "messages": [{"role": "user", "content": "Q"}],
        "max_tokens": 30,
    }


def test_annotate_hook_fills_routing_columns(engine, spec, tmp_path):
    seen = []

    def annotate(item, system):
        seen.append((item.custom_id, system))
        return "nano", "rule 0", 12

    ingest(engine, spec, write(tmp_path, [{"id": "a", "prompt": "p"}]), annotate=annotate)
    [item] = rows(engine, "item")
    assert (item["tier"], item["route_reason"], item["est_input_tokens"]) == ("nano", "rule 0", 12)
    assert seen == [("a", SYSTEM)]


def test_many_items_in_several_chunks(engine, spec, tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_module, "INSERT_CHUNK", 100)
    lines = [{"id": f"item-{n:05d}", "prompt": f"text {n}"} for n in range(1050)]
    result = ingest(engine, spec, write(tmp_path, lines))
    assert result.n_items == 1050
    with engine.connect() as conn:
        item = TABLES["item"]
        count, low, high = conn.execute(
            sa.select(sa.func.count(), sa.func.min(item.c.line_no), sa.func.max(item.c.line_no))
        ).one()
    assert (count, low, high) == (1050, 1, 1050)


def test_nul_characters_are_stored_escaped_or_refused(engine, spec, tmp_path):
    """PostgreSQL refuses NUL in text: JSON-encoded columns keep it escaped, others refuse it."""
    lines = [
        {"id": "a", "prompt": "before \x00 after", "metadata": {"k": "\x00"}},
        {"id": "b\x00", "prompt": "x"},
    ]
    result = ingest(engine, spec, write(tmp_path, lines), skip_invalid=True)
    assert (result.n_items, result.n_rejected) == (1, 1)
    [item] = rows(engine, "item")
    assert orjson.loads(item["request_json"])["messages"][0]["content"] == "before \x00 after"
    assert orjson.loads(item["metadata_json"]) == {"k": "\x00"}


def test_progress_is_reported_after_each_batched_insert(engine, spec, tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_module, "INSERT_CHUNK", 10)
    path = write(tmp_path, [{"id": f"i{n}", "prompt": "p"} for n in range(25)])
    calls = []
    ingest(
        engine, spec, path, progress=lambda done, total, items: calls.append((done, total, items))
    )
    size = path.stat().st_size
    assert [items for _, _, items in calls] == [10, 20, 25]
    assert all(total == size for _, total, _ in calls)
    assert calls[-1][0] == size
    assert [done for done, _, _ in calls] == sorted(done for done, _, _ in calls)


def test_a_failure_mid_ingest_leaves_no_run(engine, spec, tmp_path, monkeypatch):
    """One transaction: an error after some chunks were written rolls all of them back."""
    monkeypatch.setattr(ingest_module, "INSERT_CHUNK", 2)

    def annotate(item, system):
        if item.line_no == 5:
            raise RuntimeError("router crashed")
        return "nano", "fixed", 1

    path = write(tmp_path, [{"prompt": f"p{n}"} for n in range(8)])
    with pytest.raises(RuntimeError, match="router crashed"):
        ingest(engine, spec, path, annotate=annotate)
    assert rows(engine, "run") == [] and rows(engine, "item") == []


def test_schedule_name_is_recorded(engine, spec, tmp_path):
    result = ingest(engine, spec, write(tmp_path, [{"prompt": "p"}]), schedule_name="nightly")
    [run] = rows(engine, "run")
    assert (run["id"], run["schedule_name"]) == (result.run_id, "nightly")


def test_the_input_hash_is_of_every_byte_read_once(engine, spec, tmp_path):
    """The sha256 comes out of the one read: a BOM, blank lines, a line over the cap (read
    in pieces and set aside) and a last line without a newline are all in it."""
    path = tmp_path / "odd.jsonl"
    long_line = orjson.dumps({"prompt": "x" * (3 << 20)})
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "a"}\n\n  \n' + long_line + b'\n{"prompt": "b"}')
    result = ingest(engine, spec, path, skip_invalid=True, max_line_bytes=1 << 20)
    assert (result.n_items, result.n_rejected) == (2, 1)
    assert result.input_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_input_is_hashed_whichever_way_it_is_read(tmp_path):
    """The input's sha256 is made from what the reader reads, whichever way: lines
    through the buffer, a large read straight from the file, or the rest in one read."""
    path = tmp_path / "big.jsonl"
    data = b"".join(b'{"prompt": "%d"}\n' % i for i in range(200_000))  # several buffers
    path.write_bytes(data)
    stream, hashed = ingest_module.open_input(path)
    with stream:
        assert stream.readline() == b'{"prompt": "0"}\n'
        stream.read(3 << 20)
        hashed.read(10)
        stream.read()
        assert hashed.hexdigest() == hashlib.sha256(data).hexdigest()


def test_prompt_store_knows_a_copy_of_a_prompt_by_comparing_it(engine):
    """Each line holds its own copy of a shared prompt: the store hands back the first copy
    and its key, tells apart texts of one length, and stores each text once."""
    from batcher.store.prompts import PromptStore

    first, same_length = "A" * 5000 + "x", "A" * 5000 + "y"
    with engine.begin() as conn:
        store = PromptStore(conn)
        copy = "".join(["A" * 5000, "x"])
        assert copy is not first
        assert store.lookup(first) == (first, prompt_hash(first))
        known, key = store.lookup(copy)
        assert known is first and key == prompt_hash(first)
        assert store.lookup(same_length) == (same_length, prompt_hash(same_length))
        assert store.key(None) is None
        for n in range(3 * PromptStore.MAX_CACHED):  # many of one length, then of all lengths
            text = f"{n:05d}" if n % 2 else "p" * n
            assert store.lookup(text) == (text, prompt_hash(text))
            assert store.key(text) == prompt_hash(text)
        assert store.n_cached <= PromptStore.MAX_CACHED
        assert all(len(texts) <= PromptStore.MAX_SAME_LENGTH for texts in store.by_length.values())
    stored = {row["hash"]: row["text"] for row in rows(engine, "prompt")}
    assert stored[prompt_hash(first)] == first and stored[prompt_hash(same_length)] == same_length
    assert len(stored) == 2 + 3 * PromptStore.MAX_CACHED


@pytest.mark.parametrize("planned", [False, True])
def test_rows_of_every_shape_are_stored_as_given(engine, planned):
    """The writer writes the NULLs of mostly-empty columns as literals, one statement per
    pattern of them: rows of mixed patterns in one batch are stored exactly, in order."""
    from batcher.store import items as items_store
    from batcher.store import runs

    prompts = {"h1": "first", "h2": "second"}
    full = ("h1", '{"messages": []}', '{"k": 1}', "openai:gpt-5-mini", "mid", "mid", "r", 7)
    given = [
        (1, "a", *full),
        (2, "b", None, '{"m": 1}', None, None, None, "nano", "c", 3),
        (3, "c", "h2", '{"m": 2}', None, None, "mid", "mid", "t", 4),
        (4, "d", "h2", '{"m": 3}', '{"k": 2}', None, None, "nano", "c", 5),
        (5, "e", "h1", '{"m": 4}', None, "openai:gpt-5-nano", None, "nano", "m", 6),
        (6, "f", "h1", '{"m": 5}', None, None, None, "nano", "c", 7),
    ]
    if not planned:  # an unplanned ingest also writes rows without routing columns
        given += [(7, "g", None, '{"m": 6}', None), (8, "h", "h2", '{"m": 7}', '{"x": 0}')]
    with engine.begin() as conn:
        for key, text in prompts.items():
            conn.execute(TABLES["prompt"].insert().values(hash=key, text=text))
        run_id = runs.create(conn, job_name="j", spec_path="", spec_json="{}", input_path="")
        ids = [100 + n for n in range(len(given))] if planned else None
        items_store.ItemWriter(conn, run_id, planned=planned).write(given, ids)
    stored = rows(engine, "item")
    columns = items_store.ITEM_COLUMNS
    pairs = list(zip(stored, given, strict=True))
    assert [tuple(r[c] for c in columns[: len(row)]) for r, row in pairs] == given
    assert all(r[c] is None for r, row in pairs for c in columns[len(row) :])
    assert [r["status"] for r in stored] == ["queued" if planned else "pending"] * len(given)
    if planned:
        assert [r["id"] for r in stored] == ids
        assert [r["cache_group"] for r in stored] == [row[2] for row in given]
    else:
        assert [r["cache_group"] for r in stored] == [None] * len(given)
