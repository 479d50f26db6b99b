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
from sqlalchemy.engine import Connection, Engine

from batcher.errors import StateError
from batcher.money.prices import AttemptCosts
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
STORED = "stored in this pass"  # marks an attempt whose result a chunk has taken

NOTHING_BILLED = (0,) * 10
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
        self,
        validator: Validator,
        price: Callable[[Usage], AttemptCosts],
        keys: AnswerKeys,
        finish_items: bool = True,
    ):
        self.validator, self.price, self.keys = validator, price, keys
        # False in the agreement cascade: a valid answer alone does not end an item there;
        # the follow-up step decides once all of its attempts are in (batcher.run.cascade).
        self.finish_items = finish_items
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
            checked, parsed = self.validator.check_parsed(result.text)
            key = self.keys.key(result.text, parsed)
            verdict = checked.reason
            ok = checked.ok
            status = AttemptStatus.SUCCEEDED if ok else AttemptStatus.INVALID
            if result.stop_reason == "max_tokens":  # a cut-off answer is never a success
                ok, verdict = False, "truncated: the answer was cut off at max_tokens"
                status = AttemptStatus.TRUNCATED
            if ok and self.finish_items:  # the answer stays on the attempt: stored once
                self.items.append((attempt_id, verdict, attempt_id, item_id))
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
            result.stop_reason,
            result.error_class,
            attempt_id,
        )
        self.rows.setdefault(status, []).append(row)

    def write(self, conn: Connection, summary: ReconcileSummary) -> None:
        for status, rows in self.rows.items():
            moved = attempts.record_results(conn, status, rows)
            summary.stored[str(status)] = summary.stored.get(str(status), 0) + moved
        items.finish(conn, ItemStatus.SUCCEEDED, self.items)
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


def _batch(conn: Connection, batch_id: str) -> Any:
    """The batch row; StateError when there is none."""
    row = batches.get(conn, batch_id)
    if row is None:
        raise StateError(f"no batch {batch_id!r} in the state database")
    return row


def _store_chunk(
    db: Engine,
    chunk: list[Result],
    by_custom_id: dict[str, tuple[int, int, str]],
    make: _Chunk,
    summary: ReconcileSummary,
) -> None:
    """One transaction: the chunk's results stored on their attempts (and items)."""
    with db.begin() as conn:
        tune_for_bulk(conn)
        now = db_value(conn, attempts.ATTEMPT.c.finished_at, datetime.now(UTC))
        for result in chunk:
            attempt = by_custom_id.get(result.custom_id)
            if attempt is None:
                summary.n_unmatched += 1
                if len(summary.unmatched) < SHOWN_UNMATCHED:
                    summary.unmatched.append(result.custom_id)
            elif attempt[2] != AttemptStatus.SUBMITTED:
                summary.n_skipped += 1  # stored before (or a duplicate line): never twice
            else:
                by_custom_id[result.custom_id] = (*attempt[:2], STORED)
                make.add(attempt[0], attempt[1], result, now)
        make.write(conn, summary)


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
        by_custom_id = attempts.by_custom_id(conn, batch_id)
    # A batch holds one model (the planner groups by it), so one price list serves it all.
    validator, price = validator_for(spec.validation), Pricer(spec).for_model(provider, model)
    keys = answer_keys_for(spec.validation)
    finish_items = not spec.ends_in_followups
    for part in _chunks(results, chunk):
        summary.n_results += len(part)
        make = _Chunk(validator, price, keys, finish_items)
        _store_chunk(db, part, by_custom_id, make, summary)
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
