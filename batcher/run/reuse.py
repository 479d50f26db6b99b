"""Answering planned attempts from identical requests that succeeded in earlier runs.

A request is identical when its `request_hash` (model, system prompt, request and the spec's
defaults) matches; the earlier answer must still pass this spec's checks. A reused attempt
costs nothing and its item succeeds before anything is sent.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from batcher.run.answers import answer_keys_for
from batcher.run.reconcile import NOTHING_BILLED
from batcher.run.validation import validator_for
from batcher.spec import JobSpec
from batcher.store import attempts, batches
from batcher.store.bulk import db_value

CHUNK = 5000


def apply_reuse(
    db: Engine, run_id: int, spec: JobSpec, *, chunk: int = CHUNK, batch_id: str | None = None
) -> int:
    """Answer planned attempts of run `run_id` (of its planned batch `batch_id` only, when
    given) from earlier runs; returns how many.

    A planned attempt (not yet sent: no batch, or a batch still `planned`) whose request_hash
    equals that of a succeeded attempt of an earlier run, and whose earlier answer passes this
    spec's checks, becomes `reused`: that output, every token and cost figure 0, reused_from
    set; its item succeeds. A planned batch that held such attempts is `abandoned` (its file
    would send them again) and its other planned attempts lose their batch, so the next
    `planner.lay_out_batches` lays them out afresh. Idempotent.
    """
    validator = validator_for(spec.validation)
    keys = answer_keys_for(spec.validation)
    reused, after = 0, 0
    while True:
        with db.begin() as conn:
            todo = attempts.reusable(conn, run_id, after, chunk, batch_id)
            if not todo:
                break
            after = todo[-1][0]
            sources = attempts.earlier_answers(conn, run_id, sorted({h for _, _, h in todo}))
            now = db_value(conn, attempts.ATTEMPT.c.finished_at, datetime.now(UTC))
            answered, ended = [], []
            for attempt_id, item_id, hash_ in todo:
                source = sources.get(hash_)
                if source is None:
                    continue
                verdict = validator.check(source[1])
                if not verdict.ok:
                    continue
                reason = f"reused: {verdict.reason}"
                key = keys.key(source[1])
                answered.append(
                    (source[1], reason, source[0], now, *NOTHING_BILLED, key, attempt_id)
                )
                if not spec.ends_in_followups:  # else the follow-up step decides
                    ended.append((attempt_id, reason, attempt_id, item_id))
            reused += attempts.record_reused(conn, answered, ended)
    with db.begin() as conn:
        batches.abandon_reused(conn, run_id)
    return reused
