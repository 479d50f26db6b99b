"""Exporting a run: one row per input item, in input order, as JSONL, CSV or Parquet.

Rows stream from the database in chunks (a server-side cursor on PostgreSQL), ordered by line
number, and are written as they come, so a million-item run exports in bounded memory. The
file is written under a temporary name and renamed when complete: a crash or Ctrl-C never
leaves a truncated export that looks finished.

Columns, in every format: the item's id and line number; its inputs (the system prompt's
name, and its text only with `with_prompts`, since a run shares a few long prompts; messages,
max_tokens, temperature, params, metadata, the tier or model the item asked for); its outcome
(status, final output (a failed item's last paid answer too), the validation verdict on it
and its parsed answer key, error of the final attempt when it did not succeed); the tier,
provider and model of its final attempt; and what it took (attempts, tokens summed over all
its attempts, cost in exact dollars). JSONL keeps messages, params and metadata as JSON
values; CSV and Parquet carry messages and params as JSON text and metadata as one column
per key (`metadata.queue`). `columns` picks and orders any of them, metadata keys included.
Parquet stores the cost as decimal(24, 12).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batcher.errors import UsageError
from batcher.plan.groups import prompt_name, prompt_names
from batcher.report.build import usd
from batcher.spec import spec_from_snapshot
from batcher.store import items, prompts, runs
from batcher.store.states import ItemStatus

EXPORT_FORMATS = ("jsonl", "csv", "parquet")
CHUNK = 5000  # rows fetched from the database at a time
ROW_GROUP = 10_000  # Parquet rows a row group: bounds the memory (about 25 MB of text)
JSON_FIELDS = ("messages", "params", "metadata")

COLUMNS = (
    "id",
    "line_no",
    "prompt",
    "system",
    "messages",
    "max_tokens",
    "temperature",
    "params",
    "metadata",
    "requested_tier",
    "requested_model",
    "status",
    "output",
    "verdict",
    "answer_key",
    "error",
    "tier",
    "provider",
    "model",
    "attempts",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
)

PARQUET_MISSING = (
    "Parquet export needs pyarrow, which is not installed: run pip install 'batcher[parquet]' "
    "(or export --format jsonl or csv)"
)


class _Prompts:
    """System prompt texts by hash, read once each (a run has a handful)."""

    def __init__(self, conn: Connection):
        self.conn, self.texts = conn, dict[str, str]()

    def text(self, key: str | None) -> str | None:
        if key is None:
            return None
        return prompts.text_of(self.conn, key, self.texts)


def _error(status: str, code: str | None, message: str | None, verdict: str | None) -> str | None:
    if status == ItemStatus.SUCCEEDED.value:
        return None
    if code or message:
        return ": ".join(x for x in (code, message) if x)
    return verdict


def _row(row: sa.Row, texts: _Prompts, names: dict[str, str]) -> dict[str, Any]:
    # one unpacking, not twenty attribute lookups: this runs a million times
    (custom_id, line_no, system_hash, request_json, metadata_json, explicit_tier,
     explicit_model, status, output, tier, provider, model, error_code, error_message,
     verdict, answer_key, attempts, input_tokens, cache_read, cache_write, output_tokens,
     reasoning, cost) = row  # fmt: skip
    request = orjson.loads(request_json)
    system = texts.text(system_hash)
    return {
        "id": custom_id,
        "line_no": line_no,
        "prompt": prompt_name(system_hash, system, names) if system_hash else None,
        "system": system,
        "messages": request.get("messages"),
        "max_tokens": request.get("max_tokens"),
        "temperature": request.get("temperature"),
        "params": request.get("params"),
        "metadata": orjson.loads(metadata_json) if metadata_json else None,
        "requested_tier": explicit_tier,
        "requested_model": explicit_model,
        "status": status,
        "output": output,
        "verdict": verdict,
        "answer_key": answer_key,
        "error": _error(status, error_code, error_message, verdict),
        "tier": tier,
        "provider": provider,
        "model": model,
        "attempts": int(attempts or 0),
        "input_tokens": int(input_tokens or 0),
        "cache_read_tokens": int(cache_read or 0),
        "cache_write_tokens": int(cache_write or 0),
        "output_tokens": int(output_tokens or 0),
        "reasoning_tokens": int(reasoning or 0),
        "cost_usd": usd(int(cost or 0)),
    }


def iter_export_rows(db: Engine, run_id: int, chunk: int = CHUNK) -> Iterator[list[dict]]:
    """The run's items as export rows, in input order, `chunk` rows at a time.

    Raises UsageError when the run does not exist.
    """
    with db.connect() as conn:
        run = runs.get(conn, run_id)
        if run is None:
            raise UsageError(f"run {run_id} not found: `batcher status` lists the runs")
        names = prompt_names([spec_from_snapshot(run.spec_json)])
        texts = _Prompts(db.connect())
        try:
            for part in items.export_rows(conn, run_id, chunk):
                yield [_row(r, texts, names) for r in part]
        finally:
            texts.conn.close()


def export_columns(
    db: Engine,
    run_id: int,
    fmt: str,
    columns: Sequence[str] | None = None,
    *,
    with_prompts: bool = False,
) -> list[str]:
    """The columns of an export: `columns` as asked (UsageError naming the unknown ones),
    else every column, with the prompt texts only `with_prompts`, and metadata as one
    column per key except in JSONL (which keeps it one object)."""
    with db.connect() as conn:
        keys = [f"metadata.{k}" for k in items.metadata_keys(conn, run_id)]
    known = [*COLUMNS, *keys]
    if columns:
        unknown = [c for c in columns if c not in known]
        if unknown:
            raise UsageError(
                f"--columns: no column {', '.join(map(repr, unknown))}: use {', '.join(known)}"
            )
        return list(columns)
    chosen = [c for c in COLUMNS if with_prompts or c != "system"]
    if fmt != "jsonl":
        at = chosen.index("metadata")
        chosen[at : at + 1] = keys
    return chosen


def _pick(row: dict, columns: Sequence[str], *, as_text: bool = False) -> dict:
    """The row's `columns`, metadata keys looked up in its metadata; `as_text` (CSV, Parquet):
    a metadata value that is not a string as JSON text."""
    metadata = row["metadata"] if isinstance(row["metadata"], dict) else {}
    out = {}
    for name in columns:
        if not name.startswith("metadata."):
            out[name] = row[name]
            continue
        value = metadata.get(name[len("metadata.") :])
        if value is not None and not isinstance(value, str) and as_text:
            value = orjson.dumps(value).decode()
        out[name] = value
    return out


# ----------------------------------------------------------------------------- writers


class _JsonlWriter:
    def __init__(self, stream: IO[bytes], columns: Sequence[str]):
        self.stream, self.columns = stream, columns

    def write(self, rows: list[dict]) -> None:
        picked = (_pick(r, self.columns) for r in rows)
        self.stream.write(b"".join(orjson.dumps(r, default=_fixed) + b"\n" for r in picked))

    def close(self) -> None:
        pass


class _CsvWriter:
    """csv.writer into a string buffer, encoded once a chunk (far faster than per row)."""

    def __init__(self, stream: IO[bytes], columns: Sequence[str]):
        self.stream, self.columns = stream, columns
        self._write([columns])

    def _write(self, rows: Iterable[Sequence[Any]]) -> None:
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        self.stream.write(text.getvalue().encode())

    def write(self, rows: list[dict]) -> None:
        self._write(_csv_cells(_flat(_pick(r, self.columns, as_text=True))) for r in rows)

    def close(self) -> None:
        pass


def _csv_cells(row: dict) -> list[Any]:
    return [
        "" if value is None else _fixed(value) if isinstance(value, Decimal) else value
        for value in row.values()
    ]


def _fixed(value: Decimal) -> str:
    """Exact fixed-point text ('0.000000000000', never '0E-12')."""
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _flat(row: dict) -> dict:
    """Nested values as JSON text, for the formats that hold only scalars."""
    out = dict(row)
    for name in JSON_FIELDS:
        if out.get(name) is not None:
            out[name] = orjson.dumps(out[name]).decode()
    return out


def _parquet_schema(columns: Sequence[str]):  # noqa: ANN202 - pyarrow is optional
    import pyarrow as pa

    text, num = pa.string(), pa.int64()
    types = {
        "line_no": num,
        "max_tokens": num,
        "temperature": pa.float64(),
        "attempts": num,
        "input_tokens": num,
        "cache_read_tokens": num,
        "cache_write_tokens": num,
        "output_tokens": num,
        "reasoning_tokens": num,
        "cost_usd": pa.decimal128(24, 12),
    }
    return pa.schema([(name, types.get(name, text)) for name in columns])


class _ParquetWriter:
    def __init__(self, stream: IO[bytes], columns: Sequence[str]):
        import pyarrow.parquet as pq

        self.columns = columns
        self.schema = _parquet_schema(columns)
        self.writer = pq.ParquetWriter(stream, self.schema, compression="zstd")
        self.buffer: list[dict] = []

    def write(self, rows: list[dict]) -> None:
        self.buffer += (_flat(_pick(r, self.columns, as_text=True)) for r in rows)
        while len(self.buffer) >= ROW_GROUP:  # row groups of a fixed size bound the memory
            self._write(self.buffer[:ROW_GROUP])
            self.buffer = self.buffer[ROW_GROUP:]

    def _write(self, rows: list[dict]) -> None:
        import pyarrow as pa

        columns = {name: [r[name] for r in rows] for name in self.columns}
        self.writer.write_table(pa.Table.from_pydict(columns, schema=self.schema))

    def close(self) -> None:
        if self.buffer:
            self._write(self.buffer)
        self.writer.close()


WRITERS = {"jsonl": _JsonlWriter, "csv": _CsvWriter, "parquet": _ParquetWriter}


def _check_format(fmt: str) -> None:
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise UsageError(PARQUET_MISSING) from None


def write_export(
    db: Engine,
    run_id: int,
    stream: IO[bytes],
    fmt: str = "jsonl",
    *,
    progress: Callable[[int], None] | None = None,
    columns: Sequence[str] | None = None,
    with_prompts: bool = False,
) -> int:
    """Write the export of `run_id` in `fmt` to a binary stream; returns the rows written.

    `progress` is called with the running row count after every chunk; `columns` and
    `with_prompts` as in `export_columns`. Raises UsageError for an unknown run, format or
    column, or for Parquet without pyarrow installed.
    """
    _check_format(fmt)
    with db.connect() as conn:
        if runs.get(conn, run_id) is None:
            raise UsageError(f"run {run_id} not found: `batcher status` lists the runs")
    chosen = export_columns(db, run_id, fmt, columns, with_prompts=with_prompts)
    writer = WRITERS[fmt](stream, chosen)
    n = 0
    for rows in iter_export_rows(db, run_id):
        writer.write(rows)
        n += len(rows)
        if progress is not None:
            progress(n)
    writer.close()
    return n


def export_run(
    db: Engine,
    run_id: int,
    path: str | Path,
    fmt: str = "jsonl",
    *,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> int:
    """Export `run_id` to the file `path` in `fmt` (`options`: `write_export`'s columns and
    with_prompts); returns the rows written.

    Written to `path` + ".partial" and renamed when done, so `path` is complete or absent.
    """
    _check_format(fmt)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as stream:
            n = write_export(db, run_id, stream, fmt, progress=progress, **options)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return n


def count_items(db: Engine, run_id: int) -> int:
    """How many rows an export of `run_id` will have (for progress bars)."""
    with db.connect() as conn:
        return items.count(conn, run_id)
