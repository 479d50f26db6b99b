"""The `batch` table: provider batches from the local file to the reconciled results.

Every change of a batch's status is a named transition here, and each moves what depends on
it in the same call: `adopt` puts the batch's attempts at the provider and its items in
flight, `abandon_planned` drops the attempts of batches that will never be sent. Callers pass
the open transaction, so a transition and the caller's other writes commit together.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batcher.store.models import TABLES
from batcher.store.states import AttemptStatus, BatchStatus, set_status

BATCH, ATTEMPT, ITEM = TABLES["batch"], TABLES["attempt"], TABLES["item"]
AT_PROVIDER = (BatchStatus.SUBMITTING, BatchStatus.SUBMITTED)
SETTLED = (BatchStatus.ENDED, BatchStatus.RECONCILED, BatchStatus.LOST)


# --- reads --------------------------------------------------------------------------------


def get(conn: Connection, batch_id: str) -> sa.Row | None:
    """The batch row, or None."""
    return conn.execute(sa.select(BATCH).where(BATCH.c.id == batch_id)).first()


def of_run(conn: Connection, run_id: int, *statuses: str) -> list[sa.Row]:
    """The run's batches in one of `statuses` (all when none), in the order they go out."""
    query = sa.select(BATCH).where(BATCH.c.run_id == run_id)
    if statuses:
        query = query.where(BATCH.c.status.in_([str(s) for s in statuses]))
    return list(conn.execute(query.order_by(BATCH.c.round, BATCH.c.created_at, BATCH.c.id)))


def providers_of_run(conn: Connection, run_id: int) -> dict[str, str]:
    """batch id -> provider name, for every batch of the run."""
    query = sa.select(BATCH.c.id, BATCH.c.provider).where(BATCH.c.run_id == run_id)
    return dict(conn.execute(query).all())


def known_provider_ids(conn: Connection, provider: str) -> set[str]:
    """Every provider batch id already taken by a batch of `provider`."""
    query = sa.select(BATCH.c.provider_batch_id).where(
        BATCH.c.provider == provider, BATCH.c.provider_batch_id.is_not(None)
    )
    return set(conn.execute(query).scalars())


def last_settled_round(conn: Connection, run_id: int) -> int:
    """The highest round of the run with a batch that ended (0 when none has)."""
    query = sa.select(sa.func.coalesce(sa.func.max(BATCH.c.round), 0)).where(
        BATCH.c.run_id == run_id, BATCH.c.status.in_([str(s) for s in SETTLED])
    )
    return conn.execute(query).scalar_one()


def anything_sent(conn: Connection, run_id: int) -> bool:
    """Whether any batch of the run got past planning (its create may have been sent)."""
    query = sa.select(sa.func.count()).where(
        BATCH.c.run_id == run_id,
        BATCH.c.status.not_in([BatchStatus.PLANNED, BatchStatus.ABANDONED]),
    )
    return bool(conn.execute(query).scalar_one())


def counts(conn: Connection, batch_id: str) -> dict[str, int]:
    """Request counts as the provider sees them: an invalid answer is a succeeded request."""
    by_status = dict(
        conn.execute(
            sa.select(ATTEMPT.c.status, sa.func.count())
            .where(ATTEMPT.c.batch_id == batch_id)
            .group_by(ATTEMPT.c.status)
        ).all()
    )
    return {
        "n_succeeded": by_status.get(AttemptStatus.SUCCEEDED, 0)
        + by_status.get(AttemptStatus.INVALID, 0)
        + by_status.get(AttemptStatus.TRUNCATED, 0),
        "n_errored": by_status.get(AttemptStatus.ERRORED, 0),
        "n_expired": by_status.get(AttemptStatus.EXPIRED, 0),
        "n_cancelled": by_status.get(AttemptStatus.CANCELLED, 0),
    }


def stored_counts(conn: Connection, batch_id: str) -> dict[str, int]:
    """The counts a reconciled batch was closed with."""
    row = conn.execute(
        sa.select(
            BATCH.c.n_succeeded, BATCH.c.n_errored, BATCH.c.n_expired, BATCH.c.n_cancelled
        ).where(BATCH.c.id == batch_id)
    ).one()
    return row._asdict()


def for_status(conn: Connection, run_id: int) -> list[dict[str, Any]]:
    """What `batcher status RUN` shows of each batch, in the order they went out."""
    query = (
        sa.select(
            BATCH.c.id, BATCH.c.round, BATCH.c.provider, BATCH.c.model, BATCH.c.status,
            BATCH.c.raw_status, BATCH.c.n_requests, BATCH.c.n_succeeded, BATCH.c.n_errored,
            BATCH.c.n_expired, BATCH.c.n_cancelled, BATCH.c.provider_batch_id, BATCH.c.error,
        )
        .where(BATCH.c.run_id == run_id)
        .order_by(BATCH.c.round, BATCH.c.created_at, BATCH.c.id)
    )  # fmt: skip
    return [dict(r._mapping) for r in conn.execute(query)]


# --- laying out ---------------------------------------------------------------------------


def insert_planned(conn: Connection, **values: Any) -> None:
    """A new batch, `planned`: its file is written; nothing is sent."""
    status = BatchStatus.PLANNED.value
    conn.execute(BATCH.insert().values(status=status, created_at=datetime.now(UTC), **values))


# --- submitting ---------------------------------------------------------------------------


def begin_submit(conn: Connection, batch_id: str) -> bool:
    """The intent: `planned -> submitting`, stamped with the time. False when not planned."""
    values = {"submitted_at": datetime.now(UTC), "error": None}
    return set_status(conn, BATCH, BatchStatus.SUBMITTING, BATCH.c.id == batch_id, values) == 1


def record_upload(conn: Connection, batch_id: str, file_id: str) -> None:
    """The uploaded input file's id, committed before the create is sent."""
    conn.execute(sa.update(BATCH).where(BATCH.c.id == batch_id).values(input_file_id=file_id))


def adopt(
    conn: Connection,
    batch_id: str,
    provider_batch_id: str,
    raw_status: str,
    input_file_id: str | None = None,
) -> None:
    """The provider holds the batch: it is `submitted`, its attempts too (its items are in
    flight by that: see ItemStatus.IN_FLIGHT)."""
    values: dict[str, Any] = {"provider_batch_id": provider_batch_id, "raw_status": raw_status}
    if input_file_id:
        values["input_file_id"] = input_file_id
    set_status(conn, BATCH, BatchStatus.SUBMITTED, BATCH.c.id == batch_id, values)
    set_status(conn, ATTEMPT, AttemptStatus.SUBMITTED, ATTEMPT.c.batch_id == batch_id)


def unsubmit(conn: Connection, batch_id: str, reason: str) -> None:
    """The create provably never happened: back to `planned`, to be submitted again."""
    set_status(conn, BATCH, BatchStatus.PLANNED, BATCH.c.id == batch_id, {"error": reason})


def note_error(conn: Connection, batch_id: str, message: str) -> None:
    """Keep why the provider refused the batch (its status is settled by the caller)."""
    conn.execute(sa.update(BATCH).where(BATCH.c.id == batch_id).values(error=message))


# --- at the provider ----------------------------------------------------------------------


def update_raw_status(conn: Connection, batch_id: str, raw_status: str) -> None:
    """The provider's own word for where a submitted batch is."""
    values = {"raw_status": raw_status}
    set_status(conn, BATCH, BatchStatus.SUBMITTED, BATCH.c.id == batch_id, values)


def mark_ended(conn: Connection, batch_id: str, values: Mapping[str, Any]) -> None:
    """Terminal at the provider: its results can be read (`values`: raw status, file ids)."""
    values = {"ended_at": datetime.now(UTC), **values}
    set_status(conn, BATCH, BatchStatus.ENDED, BATCH.c.id == batch_id, values)


def close(conn: Connection, batch_id: str, error: str | None = None) -> dict[str, int]:
    """Every result is stored: `reconciled`, with counts from its attempts. Returns them."""
    found = counts(conn, batch_id)
    values: dict[str, Any] = {**found, "reconciled_at": datetime.now(UTC)}
    if error is not None:
        values["error"] = error
    set_status(conn, BATCH, BatchStatus.RECONCILED, BATCH.c.id == batch_id, values)
    return found


def abandon(conn: Connection, batch_id: str, values: Mapping[str, Any] | None = None) -> None:
    """The batch never reached the provider and never will (its attempts are settled)."""
    set_status(conn, BATCH, BatchStatus.ABANDONED, BATCH.c.id == batch_id, values)


def abandon_planned(conn: Connection, run_id: int) -> None:
    """Nothing new goes out: planned batches and attempts without a batch are cancelled."""
    for batch in of_run(conn, run_id, BatchStatus.PLANNED):
        set_status(conn, ATTEMPT, AttemptStatus.CANCELLED, ATTEMPT.c.batch_id == batch.id)
        abandon(conn, batch.id)
    unbatched = sa.and_(ATTEMPT.c.run_id == run_id, ATTEMPT.c.batch_id.is_(None))
    set_status(conn, ATTEMPT, AttemptStatus.CANCELLED, unbatched)


def abandon_reused(conn: Connection, run_id: int) -> None:
    """Planned batches holding attempts answered by reuse: their other planned attempts lose
    their batch (to be laid out afresh) and the batch is abandoned (its file would send the
    reused requests again)."""
    stale = conn.execute(
        sa.select(BATCH.c.id)
        .where(BATCH.c.run_id == run_id, BATCH.c.status == BatchStatus.PLANNED)
        .where(
            sa.exists().where(
                ATTEMPT.c.batch_id == BATCH.c.id, ATTEMPT.c.status == AttemptStatus.REUSED
            )
        )
    ).scalars()
    for batch_id in list(stale):
        conn.execute(
            sa.update(ATTEMPT)
            .where(ATTEMPT.c.batch_id == batch_id, ATTEMPT.c.status == AttemptStatus.PLANNED)
            .values(batch_id=None)
        )
        abandon(
            conn,
            batch_id,
            {"error": "requests answered from earlier runs; the rest laid out again"},
        )
