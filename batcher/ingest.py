"""Storing an input file as a new run: items streamed into the database in batched inserts.

By default a file with any problem is refused whole (nothing is stored, so nothing can be
submitted) and the error lists the first problems with `file:line` and the total. With
`skip_invalid`, bad lines go to a rejects JSONL file with their reasons and the rest is
stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batcher.errors import UsageError
from batcher.items import DEFAULT_MAX_LINE_BYTES, ParsedItem, Problem, parse_lines
from batcher.spec import JobSpec
from batcher.states import ItemStatus, RunStatus
from batcher.store.db import state_dir
from batcher.store.models import TABLES

INSERT_CHUNK = 5000
SHOWN_PROBLEMS = 20

# (item, system text) -> (tier, route reason, estimated input tokens); see routing.py
Annotator = Callable[[ParsedItem, str | None], tuple[str, str, int]]


@dataclass
class IngestResult:
    run_id: int
    n_items: int
    n_rejected: int
    input_sha256: str
    rejects_path: str | None = None


class InputError(UsageError):
    """The input has problems and nothing was stored."""

    def __init__(self, path: str, problems: list[Problem], total: int):
        self.path, self.problems, self.total = path, problems, total
        lines = [f"  {path}:{p.line_no}: {p.reason}" for p in problems]
        more = f"\n  ... and {total - len(problems)} more" if total > len(problems) else ""
        super().__init__(
            f"{path}: {total} invalid line{'s' if total != 1 else ''}; nothing was stored or "
            f"submitted.\n" + "\n".join(lines) + more + "\nFix these lines, or pass "
            "--skip-invalid to set them aside in a rejects file and go on with the rest."
        )


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def prompt_hash(text: str) -> str:
    """The key of a system prompt in the `prompt` table (128 bits of sha256)."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class _PromptStore:
    """Writes each distinct system prompt once; remembers the hashes of this ingest."""

    def __init__(self, conn: Connection):
        self.conn, self.seen = conn, set[str]()
        self.table = TABLES["prompt"]

    def key(self, text: str | None) -> str | None:
        if text is None:
            return None
        key = prompt_hash(text)
        if key not in self.seen:
            exists = self.conn.execute(
                sa.select(self.table.c.hash).where(self.table.c.hash == key)
            ).first()
            if not exists:
                self.conn.execute(self.table.insert().values(hash=key, text=text))
            self.seen.add(key)
        return key


class _Ingest:
    """One pass over the input: checks against the spec, duplicate ids, batched inserts."""

    def __init__(self, conn: Connection, spec: JobSpec, run_id: int, annotate: Annotator | None):
        self.conn, self.spec, self.run_id, self.annotate = conn, spec, run_id, annotate
        self.prompts = _PromptStore(conn)
        self.id_hashes: set[int] = set()  # hashes, not strings: a million ids in little memory
        self.rows: list[dict] = []
        self.n_items = 0
        self.table = TABLES["item"]

    def check_against_spec(self, item: ParsedItem) -> str | None:
        """The item's system text; raises nothing, returns a reason string on a problem."""
        if item.tier is not None and item.tier not in self.spec.tiers:
            return f'"tier" {item.tier!r} is not a tier of the job ({", ".join(self.spec.tiers)})'
        if item.model is not None and item.model.partition(":")[0] not in ("openai", "anthropic"):
            return f'"model" {item.model!r}: the provider must be openai or anthropic'
        if item.system_ref is not None and item.system_ref not in self.spec.prompts:
            names = ", ".join(self.spec.prompts) or "none are defined"
            return f'"system_ref" {item.system_ref!r} names no prompt of the job ({names})'
        return None

    def duplicate_of(self, custom_id: str) -> int | None:
        """Line number of an earlier item with this id, or None."""
        key = hash(custom_id)
        if key not in self.id_hashes:
            self.id_hashes.add(key)
            return None
        self.flush()  # the earlier line may still be in the buffer
        return self.conn.execute(
            sa.select(self.table.c.line_no).where(
                self.table.c.run_id == self.run_id, self.table.c.custom_id == custom_id
            )
        ).scalar()

    def add(self, item: ParsedItem) -> Problem | None:
        reason = self.check_against_spec(item)
        if reason is None:
            first = self.duplicate_of(item.custom_id)
            if first is not None:
                reason = f"duplicate id {item.custom_id!r} (first used on line {first})"
        if reason is not None:
            return Problem(item.line_no, reason, orjson.dumps({"id": item.custom_id}))
        system = self.system_text(item)
        tier = reason_text = tokens = None
        if self.annotate is not None:
            tier, reason_text, tokens = self.annotate(item, system)
        self.rows.append(
            {
                "run_id": self.run_id,
                "line_no": item.line_no,
                "custom_id": item.custom_id,
                "system_hash": self.prompts.key(system),
                "request_json": orjson.dumps(item.request()).decode(),
                "metadata_json": orjson.dumps(item.metadata).decode() if item.metadata else None,
                "explicit_model": item.model,
                "explicit_tier": item.tier,
                "tier": tier,
                "route_reason": reason_text,
                "est_input_tokens": tokens,
                "status": ItemStatus.PENDING.value,
            }
        )
        self.n_items += 1
        if len(self.rows) >= INSERT_CHUNK:
            self.flush()
        return None

    def system_text(self, item: ParsedItem) -> str | None:
        if item.system is not None:
            return item.system
        if item.system_ref is not None:
            return self.spec.prompts[item.system_ref]
        return self.spec.defaults.system

    def flush(self) -> None:
        if self.rows:
            self.conn.execute(self.table.insert(), self.rows)
            self.rows = []


def _create_run(conn: Connection, spec: JobSpec, path: Path, sha: str, schedule: str | None) -> int:
    run = TABLES["run"]
    return conn.execute(
        run.insert()
        .values(
            job_name=spec.name,
            spec_path=spec.path,
            spec_json=spec.snapshot(),
            input_path=str(path.resolve()),
            input_sha256=sha,
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
) -> IngestResult:
    """Store the items of `input_path` as a new run of `spec`.

    Raises InputError (nothing stored) when the input has problems and `skip_invalid` is
    false, or when it holds no item at all; UsageError when the file cannot be read.
    """
    path = Path(input_path)
    try:
        sha = file_sha256(path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the input: {exc.strerror}") from exc
    with engine.begin() as conn:
        run_id = _create_run(conn, spec, path, sha, schedule_name)
        state = _Ingest(conn, spec, run_id, annotate)
        shown: list[Problem] = []
        n_problems = 0
        rejects: IO[bytes] | None = None
        out_path = Path(rejects_path) if rejects_path else default_rejects_path(run_id)
        try:
            with open(path, "rb") as stream:
                for parsed in parse_lines(stream, max_line_bytes):
                    problem = parsed if isinstance(parsed, Problem) else state.add(parsed)
                    if problem is None:
                        continue
                    n_problems += 1
                    if len(shown) < SHOWN_PROBLEMS:
                        shown.append(problem)
                    if skip_invalid:
                        if rejects is None:
                            out_path.parent.mkdir(parents=True, exist_ok=True)
                            rejects = open(out_path, "wb")
                        rejects.write(orjson.dumps(problem.to_reject(str(path))) + b"\n")
            state.flush()
        finally:
            if rejects is not None:
                rejects.close()
        if n_problems and not skip_invalid:
            raise InputError(str(path), shown, n_problems)
        if state.n_items == 0:
            reason = "the file has no items" if not n_problems else "every line is invalid"
            raise InputError(str(path), [Problem(1, reason)], 1)
        conn.execute(
            sa.update(TABLES["run"])
            .where(TABLES["run"].c.id == run_id)
            .values(n_items=state.n_items, n_rejected=n_problems)
        )
    return IngestResult(
        run_id=run_id,
        n_items=state.n_items,
        n_rejected=n_problems,
        input_sha256=sha,
        rejects_path=str(out_path) if n_problems else None,
    )
