"""Storing a batch's results: text, usage, cost, verdict, and the status of each attempt.

`reconcile_batch` reads the batch's attempts once (custom_id -> ids, for those still waiting
for a result), then streams its results, each turned into the row that stores it as it is
read. Each chunk of rows is one transaction: one executemany per target status, one for the
items that succeeded. A crash keeps the finished chunks; running it
again skips the results already stored (their attempts are no longer `submitted`, and the state
machine refuses to move them twice), so nothing is stored or billed twice. Only when the whole
stream has been read are the attempts without a result marked `missing_result` and the batch
moved to `reconciled`, with counts taken from the database rather than from this pass.

`fail_batch` settles a batch that the provider refused as a whole.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy.engine import Connection, Engine

from batcher.errors import StateError
from batcher.money.rate_cache import Pricer
from batcher.providers.base import Result, Usage
from batcher.run.answers import AnswerKeys, answer_keys_for
from batcher.run.validation import Validator, validator_for
from batcher.spec import JobSpec
from batcher.store import attempts, batches, items
from batcher.store.bulk import db_value, tune_for_bulk
from batcher.store.states import AttemptStatus, BatchStatus, ItemStatus

# Results a transaction, at most. Results arrive in any order, so each transaction rewrites
# most pages of its batch's rows (and of the reuse index): fewer, bigger transactions rewrite
# them less often (1M results: 35k/s at 20,000 a transaction, 42k/s at 50,000). A chunk is
# also cut at CHUNK_TEXT_CHARS of answer text, so long answers keep memory bounded (~200 MB
# for a million short ones). A crash loses at most one chunk of stored results, redone.
CHUNK = 50_000
CHUNK_TEXT_CHARS = 32 << 20
BATCH_FAILED = "batch_failed"  # the batch was refused for other lines, not this one: retry free
SHOWN_UNMATCHED = 20

NOTHING_BILLED = (0,) * 10  # tokens and costs of a result without usage (Pricer.billing)
COST = 6  # where the billed cost sits in those figures, which lead a row (attempts.BILLED_COLUMNS)
OUTCOME_STATUS = {
    "errored": AttemptStatus.ERRORED,
    "expired": AttemptStatus.EXPIRED,
    "cancelled": AttemptStatus.CANCELLED,
}
# The target of a result this pass has read (attempts.result_targets' shape, no attempt id):
# a second line for it is skipped.
TAKEN = (None, None, None)
# Looked up once: reading an enum member costs ~0.15 us on Python 3.11, per result.
SUCCEEDED, INVALID, TRUNCATED = (
    AttemptStatus.SUCCEEDED,
    AttemptStatus.INVALID,
    AttemptStatus.TRUNCATED,
)


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
        self,
        validator: Validator,
        bill: Callable[[Usage], tuple[int, ...]],
        keys: AnswerKeys,
        finish_items: bool,
        now: Any,
        size: int,
    ):
        self.validator, self.bill, self.keys = validator, bill, keys
        # False in the agreement cascade: a valid answer alone does not end an item there;
        # the follow-up step decides once all of its attempts are in (batcher.run.cascade).
        self.finish_items = finish_items
        self.now = now  # finished_at of the chunk's attempts, as the driver takes it
        self.rows: defaultdict[str, list[tuple[Any, ...]]] = defaultdict(list)
        self.items: list[tuple[Any, ...]] = []
        self.n = self.chars = 0  # results added, and the characters of their texts
        self.size = size

    def add(self, target: tuple[str, int, int], result: Result) -> bool:
        """Turn `result` into the row that stores it on attempt `target` (custom_id, id,
        item id): the values of attempts.result_columns, the trailing NULLs left out, then
        the attempt id. Returns whether the chunk is now full: `size` results or
        CHUNK_TEXT_CHARS of text."""
        usage = result.usage  # billed only when the provider reported usage
        billed = NOTHING_BILLED if usage is None else self.bill(usage)
        text = result.text
        attempt_id = target[1]
        self.n += 1
        if text is not None:
            self.chars += len(text)
        if result.outcome == "succeeded":
            (ok, verdict), parsed = self.validator.check_parsed(text)
            key, stop = self.keys.key(text, parsed), result.stop_reason
            status = SUCCEEDED if ok else INVALID
            if stop == "max_tokens":  # a cut-off answer is never a success
                ok, verdict = False, "truncated: the answer was cut off at max_tokens"
                status = TRUNCATED
            if ok and self.finish_items:  # the answer stays on the attempt: stored once
                self.items.append((attempt_id, verdict, attempt_id, target[2]))
            if stop is not None:
                row = billed + (text, verdict, self.now, key, stop, attempt_id)
            elif key is not None:
                row = billed + (text, verdict, self.now, key, attempt_id)
            else:
                row = billed + (text, verdict, self.now, attempt_id)
        else:
            status = OUTCOME_STATUS[result.outcome]
            code, error_class, message = result.error_code, result.error_class, result.error_message
            if message is not None:
                row = billed + (self.now, code, error_class, message, attempt_id)
            elif error_class is not None:
                row = billed + (self.now, code, error_class, attempt_id)
            else:
                row = billed + (self.now, code, attempt_id)
        self.rows[status].append(row)
        return self.n >= self.size or self.chars >= CHUNK_TEXT_CHARS

    def write(self, db: Engine, summary: ReconcileSummary) -> None:
        """One transaction: the chunk's rows stored on their attempts (and items)."""
        with db.begin() as conn:
            tune_for_bulk(conn)
            self._write(conn, summary)

    def _write(self, conn: Connection, summary: ReconcileSummary) -> None:
        for status, rows in self.rows.items():
            moved = attempts.record_results(conn, status, rows)
            summary.stored[str(status)] = summary.stored.get(str(status), 0) + moved
            summary.cost_pusd += sum(map(itemgetter(COST), rows))
        items.finish(conn, ItemStatus.SUCCEEDED, self.items)


def _batch(conn: Connection, batch_id: str) -> Any:
    """The batch row; StateError when there is none."""
    row = batches.get(conn, batch_id)
    if row is None:
        raise StateError(f"no batch {batch_id!r} in the state database")
    return row


def _store_results(
    db: Engine,
    results: Iterable[Result],
    targets: dict[str, tuple[str, int | None, int]],
    new_chunk: Callable[[], _Chunk],
    summary: ReconcileSummary,
) -> None:
    """Each result matched to its attempt and turned into a row as it is read; a chunk is
    written once it is full (see _Chunk.add) and the next one started. The results
    themselves are not kept: only rows of plain values, which the garbage collector skips."""
    chunk, n = new_chunk(), 0
    for result in results:
        n += 1
        target = targets.get(result.custom_id)
        if target is None:
            summary.n_unmatched += 1
            if len(summary.unmatched) < SHOWN_UNMATCHED:
                summary.unmatched.append(result.custom_id)
        elif target[1] is None:
            summary.n_skipped += 1  # stored before (or a duplicate line): never twice
        else:
            targets[result.custom_id] = TAKEN
            if chunk.add(target, result):  # full
                chunk.write(db, summary)
                chunk = new_chunk()
    if chunk.n:
        chunk.write(db, summary)
    summary.n_results = n


def _finish(conn: Connection, batch_id: str, summary: ReconcileSummary, error: str | None) -> None:
    """Attempts left without a result become errors; the batch gets its counts."""
    summary.n_missing = attempts.mark_missing(conn, batch_id)
    for name, value in batches.close(conn, batch_id, error).items():
        setattr(summary, name, value)


def _already(conn: Connection, batch_id: str) -> ReconcileSummary:
    return ReconcileSummary(batch_id, True, **batches.stored_counts(conn, batch_id))


def reconcile_batch(
    db: Engine, batch_id: str, results: Iterable[Result], spec: JobSpec, *, chunk: int = CHUNK
) -> ReconcileSummary:
    """Store every result of the ended batch `batch_id`; move the batch to `reconciled`.

    Idempotent: a reconciled batch is left alone (`results` is not read), and a pass that
    stopped halfway is finished by calling again with the full results. Raises StateError
    when the batch is unknown or has not ended.
    """
    with db.connect() as conn:
        batch = _batch(conn, batch_id)
        status, provider, model = batch.status, batch.provider, batch.model
        if status == BatchStatus.RECONCILED:
            return _already(conn, batch_id)
    if status != BatchStatus.ENDED:
        raise StateError(
            f"batch {batch_id} is {status}: only an ended batch can be reconciled "
            "(poll it until the provider reports it ended)"
        )
    with db.begin() as conn:  # the batch reached the provider, so every attempt of it did
        attempts.mark_all_submitted(conn, batch_id)
    summary = ReconcileSummary(batch_id)
    with db.connect() as conn:
        targets = attempts.result_targets(conn, batch_id)
    # A batch holds one model (the planner groups by it), so one price list serves it all.
    validator, bill = validator_for(spec.validation), Pricer(spec).billing(provider, model)
    keys = answer_keys_for(spec.validation)
    finish_items = not spec.ends_in_followups
    finished_at = attempts.ATTEMPT.c.finished_at

    def new_chunk() -> _Chunk:
        now = db_value(db, finished_at, datetime.now(UTC))
        return _Chunk(validator, bill, keys, finish_items, now, chunk)

    _store_results(db, results, targets, new_chunk, summary)
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
    open_attempts: list[tuple[int, str]],
    errors: list[dict[str, Any]],
    by_line: dict[int, str],
    now: Any,
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
    for attempt_id, custom_id in open_attempts:
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
        batch = _batch(conn, batch_id)
        status = batch.status
        if status in (BatchStatus.RECONCILED, BatchStatus.ABANDONED):
            return 0
        open_attempts = attempts.open_of_batch(conn, batch_id)
        needs_lines = any(e.get("line") is not None for e in errors)
        by_line = _custom_ids_by_line(batch.path) if needs_lines else {}
        finished = db_value(conn, attempts.ATTEMPT.c.finished_at, now)
        moved = attempts.record_errors(
            conn, _failure_rows(open_attempts, errors, by_line, finished)
        )
        if status == BatchStatus.SUBMITTED:  # failed at the provider: it has ended
            batches.mark_ended(conn, batch_id, {"ended_at": now})
            status = BatchStatus.ENDED
        if status == BatchStatus.ENDED:
            summary = ReconcileSummary(batch_id)
            _finish(conn, batch_id, summary, summary_error[:2000])
        else:
            batches.abandon(conn, batch_id, {"n_errored": moved, "error": summary_error[:2000]})
    return moved
