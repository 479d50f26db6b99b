"""Crash-safe submission of one batch: intent, provider call, provider ids, each committed.

1. the batch moves `planned -> submitting` with the time of the intent (`submitted_at`);
2. the provider call runs (OpenAI: upload, whose file id is committed at once, then create);
3. the provider ids are committed (`submitting -> submitted`, attempts `submitted`; their
   items are in flight by that, without their rows being written again).

A create is never repeated blindly: after an unclear answer, and on resume for every batch
left in `submitting`, the provider is asked (`find`) whether the batch exists. One match is
adopted; none means the create never happened and the batch goes back to `planned`; anything
else stops the run with `SubmissionUndecided`, which says what to check and how to go on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from batcher.errors import BatcherError
from batcher.providers.base import BatchState, Provider
from batcher.providers.calls import CreateRefused, CreateUncertain, ProviderError
from batcher.run.crash import crash_point
from batcher.store import batches
from batcher.store.states import BatchStatus


class SubmissionUndecided(BatcherError):
    """The provider's answers cannot settle whether a batch was created."""


def _aware(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def mark_intent(db: Engine, batch_id: str) -> bool:
    """`planned -> submitting`, stamped with the time; False when it was not planned."""
    with db.begin() as conn:
        return batches.begin_submit(conn, batch_id)


def record_upload(db: Engine, batch_id: str, file_id: str) -> None:
    with db.begin() as conn:
        batches.record_upload(conn, batch_id, file_id)


def adopt(db: Engine, batch_id: str, state: BatchState) -> None:
    """Record that the provider holds `batch_id` as `state`; its attempts and items follow."""
    with db.begin() as conn:
        batches.adopt(
            conn, batch_id, state.provider_batch_id, state.raw_status, state.input_file_id
        )


def unsubmit(db: Engine, batch_id: str, reason: str) -> None:
    """The create provably never happened: back to `planned`, to be submitted again."""
    with db.begin() as conn:
        batches.unsubmit(conn, batch_id, reason)


def refuse(db: Engine, batch_id: str, message: str) -> None:
    """The provider refused the create: keep the reason (fail_batch then settles it)."""
    with db.begin() as conn:
        batches.note_error(conn, batch_id, message)


def submit_batch(
    db: Engine, provider: Provider, batch: Any, *, grace_s: float = 0.0
) -> tuple[str, Any]:
    """Submit one planned batch row. Returns (outcome, detail):

    ("submitted", BatchState), ("refused", errors list: settle it with reconcile.fail_batch),
    ("retry", reason: back to `planned`), ("wait", reason: still `submitting`, see `settle`).
    Raises SubmissionUndecided.
    """
    if not mark_intent(db, batch.id):
        return "retry", "not planned any more"
    crash_point("after_intent")

    def uploaded(file_id: str) -> None:
        record_upload(db, batch.id, file_id)
        crash_point("after_upload")

    try:
        state = provider.submit(
            batch.id,
            Path(batch.path),
            batch.model,
            input_file_id=batch.input_file_id,
            on_uploaded=uploaded,
        )
    except CreateRefused as exc:
        refuse(db, batch.id, str(exc))
        return "refused", exc.errors
    except CreateUncertain as exc:
        return settle(db, provider, batch.id, cause=str(exc), grace_s=grace_s)
    except ProviderError as exc:  # the upload failed, or the create never left: none was made
        unsubmit(db, batch.id, str(exc))
        return "retry", exc
    crash_point("after_create")
    adopt(db, batch.id, state)
    crash_point("after_record")
    return "submitted", state


def settle(
    db: Engine, provider: Provider, batch_id: str, cause: str = "", *, grace_s: float = 0.0
) -> tuple[str, Any]:
    """Decide a batch left in `submitting`: adopt the provider's batch, or re-plan it.

    A create that timed out may still be running at the provider, so a batch that is not
    listed within `grace_s` seconds of the intent is looked up again later ("wait") rather
    than declared never created. Raises SubmissionUndecided (the batch stays `submitting`)
    when the provider cannot be asked or gives more than one candidate.
    """
    with db.connect() as conn:
        batch = batches.get(conn, batch_id)
    if batch.status != BatchStatus.SUBMITTING:
        return "retry", f"batch {batch_id} is {batch.status}, not submitting"
    since = _aware(batch.submitted_at)
    why = f" after: {cause}" if cause else ""
    try:
        found = provider.find(batch.id, created_after=since, n_requests=batch.n_requests)
    except ProviderError as exc:
        raise SubmissionUndecided(
            _undecided(batch, f"looking it up at {batch.provider} failed ({exc})" + why)
        ) from exc
    with db.connect() as conn:
        taken = batches.known_provider_ids(conn, batch.provider)
    found = [s for s in found if s.provider_batch_id not in taken]
    if len(found) == 1:
        adopt(db, batch.id, found[0])
        return "submitted", found[0]
    if not found and (datetime.now(UTC) - since).total_seconds() < grace_s:
        return "wait", f"batch {batch.id} is not listed at {batch.provider} yet{why}"
    if not found:
        unsubmit(db, batch.id, f"the create did not reach {batch.provider}{why}")
        return "retry", f"batch {batch.id} was not created at {batch.provider}"
    ids = ", ".join(s.provider_batch_id for s in found)
    raise SubmissionUndecided(
        _undecided(batch, f"{len(found)} provider batches could be it ({ids})" + why)
    )


def _undecided(batch: Any, problem: str) -> str:
    return (
        f"batch {batch.id} of run {batch.run_id} ({batch.n_requests} requests to "
        f"{batch.provider}:{batch.model}, intent at {_aware(batch.submitted_at):%H:%M:%S} UTC) "
        f"may or may not exist at {batch.provider}: {problem}. Check the provider's batch "
        f"list; then `batcher resume {batch.run_id}` asks again, `batcher resume "
        f"{batch.run_id} --adopt {batch.id}=PROVIDER_BATCH_ID` takes the one you found, or "
        f"`--not-created {batch.id}` submits it again"
    )


def resolve(db: Engine, provider: Provider, batch_id: str, provider_batch_id: str | None) -> None:
    """The user's decision about a `submitting` batch: adopt `provider_batch_id`, or (None)
    declare that it was never created."""
    with db.connect() as conn:
        batch = batches.get(conn, batch_id)
    if batch is None or batch.status != BatchStatus.SUBMITTING:
        status = batch.status if batch else "unknown"
        raise SubmissionUndecided(
            f"batch {batch_id} is {status}, not submitting: nothing to settle"
        )
    if provider_batch_id is None:
        unsubmit(db, batch_id, "declared not created by the user")
        return
    adopt(db, batch_id, provider.poll(provider_batch_id))
