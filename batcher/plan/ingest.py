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
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import IO, Any, Protocol

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batcher.errors import StoreError, UsageError
from batcher.plan.inputs import DEFAULT_MAX_LINE_BYTES, ParsedItem, Problem, parse_lines
from batcher.spec import PROVIDERS, JobSpec
from batcher.store.db import state_dir
from batcher.store.models import TABLES
from batcher.store.states import ItemStatus, RunStatus

INSERT_CHUNK = 5000  # rows a batched insert
FLUSH_BYTES = 32 << 20  # ... or fewer when their lines hold this much: bounded memory
SHOWN_PROBLEMS = 20
PENDING = ItemStatus.PENDING.value
QUEUED = ItemStatus.QUEUED.value
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


class _ItemIds:
    """Ids for new item rows, chosen before they are inserted.

    SQLite: the ingest's transaction holds the write lock from its first insert (the run
    row) on, so nobody else adds items meanwhile and the ids after the largest are free.
    PostgreSQL: taken from the table's own sequence, which is safe beside other writers.
    """

    def __init__(self, conn: Connection):
        self.conn = conn
        self.sequence = conn.dialect.name == "postgresql"
        self.next_id: int | None = None

    def take(self, n: int) -> list[int]:
        if self.sequence:
            query = sa.text(
                "SELECT nextval(pg_get_serial_sequence('item', 'id')) FROM generate_series(1, :n)"
            )
            return list(self.conn.execute(query, {"n": n}).scalars())
        if self.next_id is None:
            largest = self.conn.execute(sa.select(sa.func.max(TABLES["item"].c.id))).scalar()
            self.next_id = (largest or 0) + 1
        start, self.next_id = self.next_id, self.next_id + n
        return list(range(start, start + n))


@dataclass
class IngestResult:
    run_id: int
    n_items: int
    n_rejected: int
    input_sha256: str
    rejects_path: str | None = None


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


def prompt_hash(text: str) -> str:
    """The key of a system prompt in the `prompt` table (128 bits of sha256)."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _insert_ignoring_duplicates(engine_dialect: str, table: sa.Table) -> sa.Insert:
    if engine_dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()


class _PromptStore:
    """Writes each distinct system prompt once and maps a text to its key cheaply.

    The cache is keyed by the text itself: a dict lookup hashes the string once (and not at
    all for the spec's own prompt, whose hash Python keeps), where sha256 per item was the
    most expensive step of an ingest. It is bounded for inputs where every item has its own
    system prompt.
    """

    MAX_CACHED = 256

    def __init__(self, conn: Connection):
        self.conn = conn
        self.keys: dict[str, str] = {}
        self.insert = _insert_ignoring_duplicates(conn.dialect.name, TABLES["prompt"])

    def key(self, text: str | None) -> str | None:
        if text is None:
            return None
        key = self.keys.get(text)
        if key is None:
            key = prompt_hash(text)
            self.conn.execute(self.insert.values(hash=key, text=text))
            if len(self.keys) >= self.MAX_CACHED:
                self.keys.clear()
            self.keys[text] = key
        return key


# Columns of an item row as bound per row; run_id and status are the same for every row of
# an ingest and go into the statement as literals (binding is the driver's costliest step).
ITEM_COLUMNS = (
    "line_no", "custom_id", "system_hash", "request_json", "metadata_json",
    "explicit_model", "explicit_tier", "tier", "route_reason", "est_input_tokens",
)  # fmt: skip
# Most items set none of the routing columns: their rows leave them out, because binding
# five NULLs cost more than a third of SQLite's own time per row.
PLAIN_COLUMNS = ITEM_COLUMNS[:5]
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


class _ItemWriter:
    """Batched inserts of item rows as tuples straight through the DBAPI cursor.

    SQLAlchemy's executemany builds and processes a dict per row; on a million rows that was
    a third of the ingest time. On PostgreSQL with psycopg the rows go through COPY, several
    times faster than INSERTs there. Rows are tuples of PLAIN_COLUMNS or ITEM_COLUMNS (told
    apart by length); runs of one kind are written in order, so item ids follow the lines.
    A `planned` writer stores the items queued, with the ids it is given and their system
    prompt as cache group (see `ItemSink`). The rows stay inside the caller's transaction.
    """

    def __init__(self, conn: Connection, run_id: int, planned: bool = False):
        self.conn, self.run_id, self.planned = conn, int(run_id), planned
        self.status = QUEUED if planned else PENDING
        dialect = conn.dialect
        mark = _PLACEHOLDERS.get(dialect.paramstyle)
        if mark is None:
            raise StoreError(
                f"the {dialect.driver} driver's {dialect.paramstyle!r} parameters are not "
                "supported: use SQLite or PostgreSQL with psycopg"
            )
        quote = dialect.identifier_preparer.quote
        self.use_copy = dialect.name == "postgresql" and dialect.driver == "psycopg"
        head, tail = (("id",), ("cache_group",)) if planned else ((), ())
        first, last = (f"{mark}, ", f", {mark}") if planned else ("", "")
        self.sql = {}
        for cols in (PLAIN_COLUMNS, ITEM_COLUMNS):
            names = ", ".join(map(quote, (*head, "run_id", *cols, "status", *tail)))
            if self.use_copy:
                self.sql[len(cols)] = f"COPY {quote('item')} ({names}) FROM STDIN"
            else:
                marks = ", ".join([mark] * len(cols))
                self.sql[len(cols)] = (
                    f"INSERT INTO {quote('item')} ({names}) "
                    f"VALUES ({first}{self.run_id}, {marks}, '{self.status}'{last})"
                )

    def write(self, rows: list[tuple], ids: list[int] | None = None) -> None:
        """Insert `rows`; a planned writer needs each row's id in `ids`."""
        cursor = self.conn.connection.cursor()
        try:
            for n, run in groupby(rows, key=len):
                if self.use_copy:
                    self._copy(cursor, self.sql[n], run, ids)
                elif ids is not None:  # planned rows are all of one kind (see ItemSink)
                    bound = [(i, *row, row[2]) for i, row in zip(ids, run, strict=True)]
                    cursor.executemany(self.sql[n], bound)
                else:
                    cursor.executemany(self.sql[n], list(run))
        finally:
            cursor.close()

    def _copy(self, cursor: Any, sql: str, rows: Iterable[tuple], ids: list[int] | None) -> None:
        run_id, status = self.run_id, self.status
        with cursor.copy(sql) as copy:
            if ids is None:
                for row in rows:
                    copy.write_row((run_id, *row, status))
            else:
                for i, row in zip(ids, rows, strict=True):
                    copy.write_row((i, run_id, *row, status, row[2]))


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
        self.ids = _ItemIds(conn) if sink is not None else None
        self.prompts = _PromptStore(conn)
        self.default_system = spec.defaults.system
        self.default_key = self.prompts.key(self.default_system)
        self.writer = _ItemWriter(conn, run_id, planned=sink is not None)
        self.integrity_error = conn.dialect.loaded_dbapi.IntegrityError
        self.rows: list[tuple] = []
        self.raws: list[bytes] = []  # each row's input line, for the rejects file
        self.held: list[Problem] = []
        self.held_bytes = 0
        self.n_items = 0
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
        system_key = self.default_key if system is self.default_system else self.prompts.key(system)
        tier = reason_text = tokens = None
        if self.annotate is not None:
            tier, reason_text, tokens = self.annotate(item, system)
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
        stored = self._stored_lines([row[1] for row in self.rows])
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

    def _stored_lines(self, custom_ids: list[str]) -> dict[str, int]:
        item = TABLES["item"]
        found: dict[str, int] = {}
        for start in range(0, len(custom_ids), 500):  # well under every bind-parameter limit
            query = sa.select(item.c.custom_id, item.c.line_no).where(
                item.c.run_id == self.run_id,
                item.c.custom_id.in_(custom_ids[start : start + 500]),
            )
            for custom_id, line_no in self.conn.execute(query):
                found[custom_id] = line_no
        return found


def _line_of(problem: Problem) -> int:
    return problem.line_no


def _create_run(conn: Connection, spec: JobSpec, path: Path, schedule: str | None) -> int:
    run = TABLES["run"]
    return conn.execute(
        run.insert()
        .values(
            job_name=spec.name,
            spec_path=spec.path,
            spec_json=spec.snapshot(),
            input_path=str(path.resolve()),
            input_sha256="",  # filled in at the end: it is computed alongside the parsing
            status=RunStatus.CREATED.value,
            n_items=0,
            n_rejected=0,
            created_at=datetime.now(UTC),
            schedule_name=schedule,
        )
        .returning(run.c.id)
    ).scalar_one()


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
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the input: {exc.strerror}") from exc
    # sha256 of the whole file runs in a thread beside the parsing: hashlib releases the GIL.
    with stream, ThreadPoolExecutor(1) as pool, engine.begin() as conn:
        sha_future = pool.submit(file_sha256, path)
        run_id = _create_run(conn, spec, path, schedule_name)
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
        sha = sha_future.result()
        conn.execute(
            sa.update(TABLES["run"])
            .where(TABLES["run"].c.id == run_id)
            .values(n_items=state.n_items, n_rejected=n_problems, input_sha256=sha)
        )
        result = IngestResult(
            run_id=run_id,
            n_items=state.n_items,
            n_rejected=n_problems,
            input_sha256=sha,
            rejects_path=str(out_path) if n_problems else None,
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
