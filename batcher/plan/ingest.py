"""Storing an input file as a new run: items streamed into the database in batched inserts.

By default a file with any problem is refused whole (nothing is stored, so nothing can be
submitted) and the error lists the first problems with `file:line` and the total. With
`skip_invalid`, bad lines go to a rejects JSONL file with their reasons and the rest is
stored. The whole ingest is one transaction, so a crash or Ctrl-C leaves no half-stored run.
Memory stays bounded whatever the input's size: lines are read one at a time and buffered
per chunk, and duplicate ids are found by the database's unique index.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import orjson
from sqlalchemy.engine import Connection, Engine

from batcher.errors import UsageError
from batcher.plan.inputs import DEFAULT_MAX_LINE_BYTES, ParsedItem, Problem, parse_lines
from batcher.spec import PROVIDERS, JobSpec
from batcher.store import items, prompts, runs
from batcher.store.db import state_dir

INSERT_CHUNK = 5000  # rows a batched insert
FLUSH_BYTES = 32 << 20  # ... or fewer when their lines hold this much: bounded memory
SHOWN_PROBLEMS = 20
# The input is read through a 1 MB buffer: with the default 8 KB, reading lines of a few KB
# (long inline system prompts) was a quarter of an ingest's time.
READ_BUFFER = 1 << 20
dumps = orjson.dumps

# (item, system text) -> (tier, route reason, estimated input tokens); see routing.py
Annotator = Callable[[ParsedItem, str | None], tuple[str, str, int]]
# (bytes read so far, file size, items stored so far), called after each batched insert
Progress = Callable[[int, int, int], None]


class ItemSink(Protocol):
    """Plans the items of an ingest as they are stored, inside its transaction.

    With a sink, items are stored queued with their cache group, under ids chosen before
    the insert (so that the sink knows them), and every row is ITEM_COLUMNS (an annotator is
    required). `take` gets each batch of stored rows with their ids, in line order; `finish`
    runs after the last, still inside the transaction: it must give every item its attempt,
    because the transaction commits when it returns (and rolls back when it raises).
    """

    def take(self, rows: list[tuple], ids: list[int]) -> None: ...

    def finish(self, conn: Connection, result: IngestResult) -> None: ...


@dataclass
class IngestResult:
    run_id: int
    n_items: int
    n_rejected: int
    input_sha256: str
    rejects_path: str | None = None
    # What the estimate may skip reading back (see estimate.InputFacts): the largest
    # estimated input of an item, and whether any item set its own max_tokens.
    max_input_tokens: int = 0
    own_max_tokens: bool = False


class InputError(UsageError):
    """The input has problems and nothing was stored."""

    def __init__(self, path: str, problems: list[Problem], total: int, headline: str = ""):
        self.path, self.problems, self.total = path, problems, total
        lines = [f"  {path}:{p.line_no}: {p.reason}" for p in problems]
        if total > len(problems):
            lines.append(f"  ... and {total - len(problems)} more")
        plural = "s" if total != 1 else ""
        headline = headline or (
            f"{path}: {total} invalid line{plural}; nothing was stored or submitted. Fix "
            "them, or pass --skip-invalid to set them aside in a rejects file and go on:"
        )
        super().__init__("\n".join([headline, *lines]))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class HashedInput(io.FileIO):
    """An input file that hashes (sha256) every byte read from it, a buffer at a time: the
    input's hash comes out of the one read of it, in a few hundred calls rather than one a
    line. (A worker thread for the hash cost more than it saved: each of its turns with
    the GIL made the parsing thread wait for it, milliseconds at a time on a busy machine.)
    """

    def __init__(self, path: str | Path):
        super().__init__(path, "rb")
        self.digest = hashlib.sha256()

    def readinto(self, buffer: bytearray | memoryview) -> int | None:
        n = super().readinto(buffer)
        if n:
            self.digest.update(memoryview(buffer)[:n])
        return n

    def readall(self) -> bytes:
        data = super().readall()
        self.digest.update(data)
        return data

    def read(self, size: int = -1) -> bytes | None:
        data = super().read(size)
        if data:
            self.digest.update(data)
        return data

    def hexdigest(self) -> str:
        """The sha256 of every byte read so far."""
        return self.digest.hexdigest()


def open_input(path: Path) -> tuple[io.BufferedReader, HashedInput]:
    """The input opened for reading lines, and the file under it that hashes them."""
    try:
        raw = HashedInput(path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the input: {exc.strerror}") from exc
    return io.BufferedReader(raw, READ_BUFFER), raw


class _Ingest:
    """One pass over the input: checks against the spec, duplicate ids, batched inserts.

    Duplicate ids are found by the database's unique (run_id, custom_id) index rather than a
    set in memory, so memory stays bounded for inputs of any size: a chunk that violates it
    is rolled back to its savepoint, its duplicates are set aside with the line that first
    used the id, and the rest is written again. Problems are held until their chunk is
    written so that they come out in line order.
    """

    def __init__(
        self,
        conn: Connection,
        spec: JobSpec,
        run_id: int,
        annotate: Annotator | None,
        on_problem: Callable[[Problem], None],
        sink: ItemSink | None = None,
    ):
        self.conn, self.spec, self.run_id, self.annotate = conn, spec, run_id, annotate
        self.on_problem, self.sink = on_problem, sink
        self.ids = items.ItemIds(conn) if sink is not None else None
        self.prompts = prompts.PromptStore(conn)
        self.default_system = spec.defaults.system
        self.default_key = self.prompts.key(self.default_system)
        self.writer = items.ItemWriter(conn, run_id, planned=sink is not None)
        self.integrity_error = conn.dialect.loaded_dbapi.IntegrityError
        self.rows: list[tuple] = []
        self.raws: list[bytes] = []  # each row's input line, for the rejects file
        self.held: list[Problem] = []
        self.held_bytes = 0
        self.n_items = 0
        self.max_input_tokens = 0
        self.own_max_tokens = False
        self.on_flush: Callable[[], None] | None = None

    def check_against_spec(self, item: ParsedItem) -> str | None:
        """The reason the item does not fit the job, or None."""
        spec = self.spec
        if item.tier is not None and item.tier not in spec.tiers:
            tiers = ", ".join(spec.tiers)
            return f'"tier" {item.tier!r} is not a tier of the job: use one of {tiers}'
        if item.model is not None and item.model.partition(":")[0] not in PROVIDERS:
            return f'"model" {item.model!r}: the provider must be one of {", ".join(PROVIDERS)}'
        if item.system_ref is not None and item.system_ref not in spec.prompts:
            names = ", ".join(spec.prompts) or "the job defines none in [prompts]"
            return (
                f'"system_ref" {item.system_ref!r} names no prompt of the job: use one of {names}'
            )
        return None

    def problem(self, problem: Problem) -> None:
        self.held.append(problem)
        self.held_bytes += len(problem.raw)
        if self.held_bytes >= FLUSH_BYTES:
            self.flush()

    def add(self, item: ParsedItem) -> None:
        """Buffer the item for insertion, or hold the Problem that keeps it out.

        This runs once per input line: the common case (no tier, model or system_ref of its
        own, the job's default system prompt) takes the fewest steps.
        """
        if item.tier is not None or item.model is not None or item.system_ref is not None:
            reason = self.check_against_spec(item)
            if reason is not None:
                self.problem(Problem(item.line_no, reason, item.raw))
                return
        system = item.system
        if system is None:
            system = self.spec.prompts[item.system_ref] if item.system_ref else self.default_system
        if system is self.default_system:
            system_key = self.default_key
        else:  # the first copy of the text stands for this one (see PromptStore)
            system, system_key = self.prompts.lookup(system)
        tier = reason_text = tokens = None
        if self.annotate is not None:
            tier, reason_text, tokens = self.annotate(item, system)
            if tokens > self.max_input_tokens:
                self.max_input_tokens = tokens
        if item.max_tokens is not None:
            self.own_max_tokens = True
        metadata = item.metadata
        request_json = dumps(item.request()).decode()
        metadata_json = dumps(metadata).decode() if metadata else None
        if self.annotate is None and item.model is None and item.tier is None:
            row = (item.line_no, item.custom_id, system_key, request_json, metadata_json)
        else:
            row = (
                item.line_no,
                item.custom_id,
                system_key,
                request_json,
                metadata_json,
                item.model,
                item.tier,
                tier,
                reason_text,
                tokens,
            )
        self.rows.append(row)  # PLAIN_COLUMNS or ITEM_COLUMNS
        raw = item.raw
        self.raws.append(raw)
        self.held_bytes += len(raw)
        if len(self.rows) >= INSERT_CHUNK or self.held_bytes >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows, then hand on the held problems in line order."""
        if self.rows:
            try:
                ids = self._write()
            except self.integrity_error:
                self._set_duplicates_aside()
                ids = self._write()
            self.n_items += len(self.rows)
            if self.sink is not None:
                self.sink.take(self.rows, ids)
        if self.held:
            self.held.sort(key=_line_of)
            for problem in self.held:
                self.on_problem(problem)
        self.rows, self.raws, self.held, self.held_bytes = [], [], [], 0
        if self.on_flush is not None:
            self.on_flush()

    def _write(self) -> list[int] | None:
        """Insert the buffered rows in a savepoint; their ids when a sink takes them."""
        ids = self.ids.take(len(self.rows)) if self.ids is not None else None
        with self.conn.begin_nested():
            self.writer.write(self.rows, ids)
        return ids

    def _set_duplicates_aside(self) -> None:
        """Move rows whose id is already stored, or used earlier in the chunk, to problems."""
        stored = items.stored_lines(self.conn, self.run_id, [row[1] for row in self.rows])
        first_in_chunk: dict[str, int] = {}
        kept = []
        for row, raw in zip(self.rows, self.raws, strict=True):
            line_no, custom_id = row[0], row[1]
            first = stored.get(custom_id) or first_in_chunk.get(custom_id)
            if first is None:
                first_in_chunk[custom_id] = line_no
                kept.append(row)
            else:
                reason = f"duplicate id {custom_id!r} (first used on line {first}): "
                self.held.append(Problem(line_no, reason + "give every item its own id", raw))
        self.rows = kept


def _line_of(problem: Problem) -> int:
    return problem.line_no


def default_rejects_path(run_id: int) -> Path:
    return state_dir() / "rejects" / f"run-{run_id}-rejects.jsonl"


class _Problems:
    """Counts the problems, keeps the first few for the error, and with `rejects_path`
    writes every one to the rejects JSONL file (opened at the first)."""

    def __init__(self, source: str, rejects_path: Path | None):
        self.source, self.rejects_path = source, rejects_path
        self.shown: list[Problem] = []
        self.total = 0
        self.file: IO[bytes] | None = None

    def __call__(self, problem: Problem) -> None:
        self.total += 1
        if len(self.shown) < SHOWN_PROBLEMS:
            self.shown.append(problem)
        if self.rejects_path is not None:
            if self.file is None:
                self.rejects_path.parent.mkdir(parents=True, exist_ok=True)
                self.file = open(self.rejects_path, "wb")  # noqa: SIM115 - closed by close()
            self.file.write(orjson.dumps(problem.to_reject(self.source)) + b"\n")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def ingest(
    engine: Engine,
    spec: JobSpec,
    input_path: str | Path,
    *,
    skip_invalid: bool = False,
    rejects_path: str | Path | None = None,
    annotate: Annotator | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    schedule_name: str | None = None,
    progress: Progress | None = None,
    sink: ItemSink | None = None,
) -> IngestResult:
    """Store the items of `input_path` as a new run of `spec` (status created, items pending).

    Raises InputError (nothing stored: no run, no items) when the input has problems and
    `skip_invalid` is false, or when it holds no valid item at all; UsageError when the file
    cannot be read. With `skip_invalid`, every bad line goes to `rejects_path` (default
    state/rejects/run-N-rejects.jsonl) as {"file", "line", "reason", "text"}. `progress`
    hears how far the reading has come after each batched insert. A `sink` plans the items
    in the same transaction (see `ItemSink`; it needs `annotate`).
    """
    if sink is not None and annotate is None:
        raise ValueError("ingest: a sink needs the routing annotator")
    path = Path(input_path)
    stream, hashed = open_input(path)
    with stream, engine.begin() as conn:
        run_id = runs.create(
            conn,
            job_name=spec.name,
            spec_path=spec.path,
            spec_json=spec.snapshot(),
            input_path=str(path.resolve()),
            schedule_name=schedule_name,
        )
        out_path = Path(rejects_path) if rejects_path else default_rejects_path(run_id)
        problems = _Problems(str(path), out_path if skip_invalid else None)
        state = _Ingest(conn, spec, run_id, annotate, problems, sink)
        if progress is not None:
            size = path.stat().st_size
            state.on_flush = lambda: progress(stream.tell(), size, state.n_items)
        try:
            for parsed in parse_lines(stream, max_line_bytes):
                if type(parsed) is Problem:
                    state.problem(parsed)
                else:
                    state.add(parsed)
            state.flush()
        finally:
            problems.close()
        n_problems = problems.total
        _refuse_if_unusable(
            str(path), state.n_items, problems.shown, n_problems, skip_invalid, out_path
        )
        sha = hashed.hexdigest()
        runs.record_ingest(conn, run_id, state.n_items, n_problems, sha)
        result = IngestResult(
            run_id=run_id,
            n_items=state.n_items,
            n_rejected=n_problems,
            input_sha256=sha,
            rejects_path=str(out_path) if n_problems else None,
            max_input_tokens=state.max_input_tokens,
            own_max_tokens=state.own_max_tokens,
        )
        if sink is not None:
            sink.finish(conn, result)
    return result


def _refuse_if_unusable(
    path: str, n_items: int, shown: list[Problem], n_problems: int, skip: bool, rejects: Path
) -> None:
    """Raise InputError (rolling the run back) when the input must not be stored."""
    if n_problems and not skip:
        raise InputError(path, shown, n_problems)
    if n_items == 0 and not n_problems:
        raise InputError(
            path,
            [],
            0,
            f"{path}: the file has no items (it is empty or blank); nothing was stored. "
            'Give one JSON object a line, e.g. {"id": "1", "prompt": "..."}.',
        )
    if n_items == 0:
        raise InputError(
            path,
            shown,
            n_problems,
            f"{path}: every line is invalid ({n_problems} set aside in {rejects}); nothing "
            "was stored. Fix the input and ingest it again:",
        )
