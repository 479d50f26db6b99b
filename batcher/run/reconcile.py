"""Storing a batch's results: text, usage, cost, verdict, and the status of each attempt.

`reconcile_batch` reads the batch's attempts once (custom_id -> ids and status), then streams
its results in chunks. Each chunk is one transaction: one executemany per target status, one
for the items that succeeded. A crash keeps the finished chunks; running it
again skips the results already stored (their attempts are no longer `submitted`, and the state
machine refuses to move them twice), so nothing is stored or billed twice. Only when the whole
stream has been read are the attempts without a result marked `missing_result` and the batch
moved to `reconciled`, with counts taken from the database rather than from this pass.

`fail_batch` settles a batch that the provider refused as a whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batcher.errors import StateError
from batcher.money.prices import AttemptCosts
from batcher.money.rate_cache import Pricer
from batcher.providers.base import Result, Usage
from batcher.run.answers import AnswerKeys, answer_keys_for
from batcher.run.validation import Validator, validator_for
from batcher.spec import JobSpec
from batcher.store.bulk import db_value, placeholder, tune_for_bulk
from batcher.store.models import TABLES
from batcher.store.states import AttemptStatus, BatchStatus, ItemStatus, set_status, set_status_many

# Results a transaction, at most. Results arrive in any order, so each transaction rewrites
# most pages of its batch's rows (and of the reuse index): fewer, bigger transactions rewrite
# them less often (1M results: 35k/s at 20,000 a transaction, 42k/s at 50,000). A chunk is
# also cut at CHUNK_TEXT_CHARS of answer text, so long answers keep memory bounded (~200 MB
# for a million short ones). A crash loses at most one chunk of stored results, redone.
CHUNK = 50_000
CHUNK_TEXT_CHARS = 32 << 20
MISSING_RESULT = "missing_result"
BATCH_FAILED = "batch_failed"  # the batch was refused for other lines, not this one: retry free
SHOWN_UNMATCHED = 20
STORED = "stored in this pass"  # marks an attempt whose result a chunk has taken

ATTEMPT = TABLES["attempt"]
ITEM = TABLES["item"]
BATCH = TABLES["batch"]

# Every attempt update writes all of these, so one statement serves every row of a status.
ATTEMPT_COLUMNS = [
    "output",
    "verdict",
    "error_code",
    "error_message",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_pusd",
    "standard_pusd",
    "uncached_pusd",
    "baseline_pusd",
    "finished_at",
    "answer_key",
]
NOTHING_BILLED = (0,) * 10
ITEM_COLUMNS = ["output", "verdict", "final_attempt_id"]
OUTCOME_STATUS = {
    "errored": AttemptStatus.ERRORED,
    "expired": AttemptStatus.EXPIRED,
    "cancelled": AttemptStatus.CANCELLED,
}


@dataclass
class ReconcileSummary:
    """What one call stored. A repeated call on a reconciled batch stores nothing."""

    batch_id: str
    already_reconciled: bool = False  # nothing was read or changed
    n_results: int = 0  # result records read
    n_skipped: int = 0  # results of attempts already stored by an earlier, interrupted pass
    n_unmatched: int = 0  # results whose custom_id is no attempt of this batch (not stored)
    unmatched: list[str] = field(default_factory=list)  # the first few such custom_ids
    stored: dict[str, int] = field(default_factory=dict)  # attempt status -> attempts stored
    n_missing: int = 0  # attempts without a result line: errored, missing_result
    cost_pusd: int = 0  # billed cost stored by this call
    # the batch's final counts, from the database
    n_succeeded: int = 0
    n_errored: int = 0
    n_expired: int = 0
    n_cancelled: int = 0


class _Chunk:
    """One transaction's worth of results, turned into rows per target status."""

    def __init__(
        self, validator: Validator, price: Callable[[Usage], AttemptCosts], keys: AnswerKeys
    ):
        self.validator, self.price, self.keys = validator, price, keys
        self.rows: dict[str, list[tuple[Any, ...]]] = {}
        self.items: list[tuple[Any, ...]] = []
        self.cost_pusd = 0

    def add(self, attempt_id: int, item_id: int, result: Result, now: Any) -> None:
        usage = result.usage
        billed = NOTHING_BILLED
        if usage is not None:  # billed only when the provider reported usage
            costs = self.price(usage)
            self.cost_pusd += costs.cost_pusd
            billed = (
                usage.input_tokens,
                usage.cache_read_tokens,
                usage.cache_write_5m_tokens,
                usage.cache_write_1h_tokens,
                usage.output_tokens,
                usage.reasoning_tokens,
                *costs,  # cost, standard, uncached, baseline
            )
        verdict = key = None
        if result.outcome == "succeeded":
            key = self.keys.key(result.text)
            checked = self.validator.check(result.text)
            verdict = checked.reason
            ok = checked.ok
            if result.stop_reason == "max_tokens":  # a cut-off answer is never a success
                ok, verdict = False, "truncated: the answer was cut off at max_tokens"
            status = AttemptStatus.SUCCEEDED if ok else AttemptStatus.INVALID
            if ok:
                self.items.append((result.text, verdict, attempt_id, item_id))
        else:
            status = OUTCOME_STATUS[result.outcome]
        row = (
            result.text,
            verdict,
            result.error_code,
            result.error_message,
            *billed,
            now,
            key,
            attempt_id,
        )
        self.rows.setdefault(status, []).append(row)

    def write(self, conn: Connection, summary: ReconcileSummary) -> None:
        for status, rows in self.rows.items():
            moved = set_status_many(conn, ATTEMPT, status, ATTEMPT_COLUMNS, rows)
            summary.stored[str(status)] = summary.stored.get(str(status), 0) + moved
        set_status_many(conn, ITEM, ItemStatus.SUCCEEDED, ITEM_COLUMNS, self.items)
        summary.cost_pusd += self.cost_pusd


def _chunks(results: Iterable[Result], size: int) -> Iterator[list[Result]]:
    """Lists of at most `size` results, or fewer when their texts reach CHUNK_TEXT_CHARS."""
    chunk: list[Result] = []
    chars = 0
    for result in results:
        chunk.append(result)
        if result.text is not None:
            chars += len(result.text)
        if len(chunk) >= size or chars >= CHUNK_TEXT_CHARS:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


def _attempts_of(conn: Connection, batch_id: str) -> dict[str, tuple[int, int, str]]:
    """custom_id -> (attempt id, item id, status) of every attempt of the batch.

    One indexed scan per batch rather than a lookup per chunk: a batch holds at most 100,000
    requests (the providers' limit), so this stays a few tens of MB."""
    cursor = conn.connection.cursor()  # plain tuples: no Row objects on the bulk path
    try:
        cursor.execute(
            f"SELECT custom_id, id, item_id, status FROM attempt WHERE batch_id = "
            f"{placeholder(conn)}",
            (batch_id,),
        )
        return {row[0]: row[1:] for row in cursor}
    finally:
        cursor.close()


def _batch(conn: Connection, batch_id: str) -> sa.Row:
    """(status, provider, model, path) of the batch; StateError when there is none."""
    row = conn.execute(
        sa.select(BATCH.c.status, BATCH.c.provider, BATCH.c.model, BATCH.c.path).where(
            BATCH.c.id == batch_id
        )
    ).first()
    if row is None:
        raise StateError(f"no batch {batch_id!r} in the state database")
    return row


def _store_chunk(
    db: Engine,
    chunk: list[Result],
    attempts: dict[str, tuple[int, int, str]],
    make: _Chunk,
    summary: ReconcileSummary,
) -> None:
    """One transaction: the chunk's results stored on their attempts (and items)."""
    with db.begin() as conn:
        tune_for_bulk(conn)
        now = db_value(conn, ATTEMPT.c.finished_at, datetime.now(UTC))
        for result in chunk:
            attempt = attempts.get(result.custom_id)
            if attempt is None:
                summary.n_unmatched += 1
                if len(summary.unmatched) < SHOWN_UNMATCHED:
                    summary.unmatched.append(result.custom_id)
            elif attempt[2] != AttemptStatus.SUBMITTED:
                summary.n_skipped += 1  # stored before (or a duplicate line): never twice
            else:
                attempts[result.custom_id] = (*attempt[:2], STORED)
                make.add(attempt[0], attempt[1], result, now)
        make.write(conn, summary)


def _finish(conn: Connection, batch_id: str, summary: ReconcileSummary, error: str | None) -> None:
    """Attempts left without a result become errors; the batch gets its counts."""
    summary.n_missing = set_status(
        conn,
        ATTEMPT,
        AttemptStatus.ERRORED,
        ATTEMPT.c.batch_id == batch_id,
        {
            "error_code": MISSING_RESULT,
            "error_message": "the provider returned no result for this request",
            "finished_at": datetime.now(UTC),
        },
    )
    counts = _counts(conn, batch_id)
    for name, value in counts.items():
        setattr(summary, name, value)
    values: dict[str, Any] = {**counts, "reconciled_at": datetime.now(UTC)}
    if error is not None:
        values["error"] = error
    set_status(conn, BATCH, BatchStatus.RECONCILED, BATCH.c.id == batch_id, values)


def _counts(conn: Connection, batch_id: str) -> dict[str, int]:
    """Batch counts as the provider sees them: an invalid answer is a succeeded request."""
    by_status = dict(
        conn.execute(
            sa.select(ATTEMPT.c.status, sa.func.count())
            .where(ATTEMPT.c.batch_id == batch_id)
            .group_by(ATTEMPT.c.status)
        ).all()
    )
    return {
        "n_succeeded": by_status.get(AttemptStatus.SUCCEEDED, 0)
        + by_status.get(AttemptStatus.INVALID, 0),
        "n_errored": by_status.get(AttemptStatus.ERRORED, 0),
        "n_expired": by_status.get(AttemptStatus.EXPIRED, 0),
        "n_cancelled": by_status.get(AttemptStatus.CANCELLED, 0),
    }


def _already(conn: Connection, batch_id: str) -> ReconcileSummary:
    row = conn.execute(
        sa.select(
            BATCH.c.n_succeeded, BATCH.c.n_errored, BATCH.c.n_expired, BATCH.c.n_cancelled
        ).where(BATCH.c.id == batch_id)
    ).one()
    return ReconcileSummary(batch_id, True, **row._asdict())


def reconcile_batch(
    db: Engine, batch_id: str, results: Iterable[Result], spec: JobSpec, *, chunk: int = CHUNK
) -> ReconcileSummary:
    """Store every result of the ended batch `batch_id`; move the batch to `reconciled`.

    Idempotent: a reconciled batch is left alone (`results` is not read), and a pass that
    stopped halfway is finished by calling again with the full results. Raises StateError
    when the batch is unknown or has not ended.
    """
    with db.connect() as conn:
        status, provider, model, _ = _batch(conn, batch_id)
        if status == BatchStatus.RECONCILED:
            return _already(conn, batch_id)
    if status != BatchStatus.ENDED:
        raise StateError(
            f"batch {batch_id} is {status}: only an ended batch can be reconciled "
            "(poll it until the provider reports it ended)"
        )
    with db.begin() as conn:  # the batch reached the provider, so every attempt of it did
        set_status(conn, ATTEMPT, AttemptStatus.SUBMITTED, ATTEMPT.c.batch_id == batch_id)
    summary = ReconcileSummary(batch_id)
    with db.connect() as conn:
        attempts = _attempts_of(conn, batch_id)
    # A batch holds one model (the planner groups by it), so one price list serves it all.
    validator, price = validator_for(spec.validation), Pricer(spec).for_model(provider, model)
    keys = answer_keys_for(spec.validation)
    for part in _chunks(results, chunk):
        summary.n_results += len(part)
        _store_chunk(db, part, attempts, _Chunk(validator, price, keys), summary)
    with db.begin() as conn:
        _finish(conn, batch_id, summary, None)
    return summary


def _custom_ids_by_line(path: str) -> dict[int, str]:
    """1-based line number -> custom_id of the batch file as it was sent."""
    by_line: dict[int, str] = {}
    try:
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                try:
                    custom_id = orjson.loads(line).get("custom_id")
                except (orjson.JSONDecodeError, AttributeError):
                    continue  # the refused line itself may not parse; its error still counts
                if isinstance(custom_id, str):
                    by_line[number] = custom_id
    except OSError:
        pass  # file gone: every attempt gets the batch-level error
    return by_line


def _error_text(error: dict[str, Any]) -> str:
    where = f"line {error['line']}: " if error.get("line") is not None else ""
    return f"{where}{error.get('code') or 'error'}: {error.get('message') or ''}".strip()


def _failure_rows(
    attempts: list[sa.Row], errors: list[dict[str, Any]], by_line: dict[int, str], now: Any
) -> list[tuple[Any, ...]]:
    """Each attempt's error: its own line's, else the batch-level one, else `batch_failed`."""
    line_errors = {
        by_line[e["line"]]: e for e in errors if e.get("line") is not None and e["line"] in by_line
    }
    batch_level = [e for e in errors if e.get("line") is None]
    if batch_level:
        code = batch_level[0].get("code") or BATCH_FAILED
        message = "; ".join(_error_text(e) for e in batch_level)
    else:
        code = BATCH_FAILED
        first = _error_text(errors[0]) if errors else "no reason given"
        message = f"the batch was refused for other lines ({len(errors)}; first: {first})"
    rows = []
    for attempt_id, custom_id in attempts:
        own = line_errors.get(custom_id)
        if own is not None:
            rows.append((own.get("code") or "invalid_request", _error_text(own), now, attempt_id))
        else:
            rows.append((code, message, now, attempt_id))
    return rows


def fail_batch(db: Engine, batch_id: str, errors: list[dict[str, Any]], spec: JobSpec) -> int:
    """Settle a batch the provider refused: every open attempt errored, the batch closed.

    `errors` are the provider's reasons `{code, message, line}`; `line` (1-based, in the batch
    file) pins an error to one request, `line` None applies to every request of the batch
    (e.g. `token_limit_exceeded`, or a create refused with `invalid_request_error`), whose
    attempts get that code; `plan_followups` decides from it (see FollowupPolicy). Attempts
    hit only by another line's error get `batch_failed`, retried without using the budget.
    An ended batch becomes `reconciled`; one the provider never accepted (planned or
    submitting) becomes `abandoned`.
    Idempotent; returns how many attempts it errored. Raises StateError for an unknown batch.
    """
    now = datetime.now(UTC)
    summary_error = "; ".join(_error_text(e) for e in errors[:5]) or "refused by the provider"
    with db.begin() as conn:
        status, _, _, path = _batch(conn, batch_id)
        if status in (BatchStatus.RECONCILED, BatchStatus.ABANDONED):
            return 0
        attempts = conn.execute(
            sa.select(ATTEMPT.c.id, ATTEMPT.c.custom_id).where(
                ATTEMPT.c.batch_id == batch_id,
                ATTEMPT.c.status.in_([AttemptStatus.PLANNED, AttemptStatus.SUBMITTED]),
            )
        ).all()
        needs_lines = any(e.get("line") is not None for e in errors)
        by_line = _custom_ids_by_line(path) if needs_lines else {}
        rows = _failure_rows(attempts, errors, by_line, db_value(conn, ATTEMPT.c.finished_at, now))
        columns = ["error_code", "error_message", "finished_at"]
        moved = set_status_many(conn, ATTEMPT, AttemptStatus.ERRORED, columns, rows)
        if status == BatchStatus.SUBMITTED:  # failed at the provider: it has ended
            set_status(conn, BATCH, BatchStatus.ENDED, BATCH.c.id == batch_id, {"ended_at": now})
            status = BatchStatus.ENDED
        if status == BatchStatus.ENDED:
            summary = ReconcileSummary(batch_id)
            _finish(conn, batch_id, summary, summary_error[:2000])
        else:
            counts = {"n_errored": moved, "error": summary_error[:2000]}
            set_status(conn, BATCH, BatchStatus.ABANDONED, BATCH.c.id == batch_id, counts)
    return moved
