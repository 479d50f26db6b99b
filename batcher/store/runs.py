"""The `run` table: a run's status transitions and reads, and whole runs as one unit (find
the ones a prune would remove, delete them with every row and batch file they own)."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batcher.store.db import state_dir
from batcher.store.models import TABLES
from batcher.store.states import RUN_TERMINAL, ItemStatus, RunStatus, set_status

RUN, ITEM, ATTEMPT, BATCH = TABLES["run"], TABLES["item"], TABLES["attempt"], TABLES["batch"]
FIRING = TABLES["schedule_firing"]


def find_runs(
    db: Engine, *, before: datetime | None = None, statuses: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Runs created before `before` (any time when None) whose status is one of `statuses`
    (any when empty), oldest first: id, job, status, items, created."""
    query = sa.select(RUN.c.id, RUN.c.job_name, RUN.c.status, RUN.c.n_items, RUN.c.created_at)
    if before is not None:
        query = query.where(RUN.c.created_at < before)
    if statuses:
        query = query.where(RUN.c.status.in_(list(statuses)))
    with db.connect() as conn:
        rows = conn.execute(query.order_by(RUN.c.id)).all()
    return [
        {"run": r.id, "job": r.job_name, "status": r.status, "items": r.n_items,
         "created": r.created_at}
        for r in rows
    ]  # fmt: skip


def delete_runs(db: Engine, run_ids: Iterable[int]) -> int:
    """Delete the runs with their items, attempts and batches in one transaction, then their
    batch files. Answers other runs reused keep their copies (a reused attempt holds the
    output itself); a schedule firing keeps its record, without its run. Returns how many
    runs were deleted."""
    ids = list(run_ids)
    if not ids:
        return 0
    with db.begin() as conn:
        # A reused attempt names its source only for the audit trail: it outlives the source.
        sources = sa.select(ATTEMPT.c.id).where(ATTEMPT.c.run_id.in_(ids)).scalar_subquery()
        conn.execute(
            sa.update(ATTEMPT)
            .where(ATTEMPT.c.run_id.not_in(ids), ATTEMPT.c.reused_from.in_(sources))
            .values(reused_from=None)
        )
        conn.execute(sa.update(FIRING).where(FIRING.c.run_id.in_(ids)).values(run_id=None))
        for table in (ATTEMPT, BATCH, ITEM):
            conn.execute(sa.delete(table).where(table.c.run_id.in_(ids)))
        deleted = conn.execute(sa.delete(RUN).where(RUN.c.id.in_(ids))).rowcount
    for run_id in ids:
        shutil.rmtree(state_dir() / "batches" / f"run-{run_id}", ignore_errors=True)
    return deleted


def runs_at_provider(db: Engine, run_ids: Iterable[int]) -> set[int]:
    """Those of `run_ids` with a batch the provider may still be working on (submitting or
    submitted): deleting them would lose answers that are being paid for."""
    ids = list(run_ids)
    if not ids:
        return set()
    with db.connect() as conn:
        return set(
            conn.execute(
                sa.select(BATCH.c.run_id)
                .where(BATCH.c.run_id.in_(ids), BATCH.c.status.in_(["submitting", "submitted"]))
                .distinct()
            ).scalars()
        )


def was_submitted() -> sa.ColumnElement[bool]:
    """A condition on `run`: it got past planning. Runs only ingested or planned, and failed
    runs of which nothing left (a budget refusal, a missing key), fail it, so job-level
    reports do not count their items as missing answers."""
    moved = sa.exists().where(ATTEMPT.c.run_id == RUN.c.id, ATTEMPT.c.status != "planned")
    sent = sa.exists().where(
        BATCH.c.run_id == RUN.c.id, BATCH.c.status.not_in(["planned", "abandoned"])
    )
    return sa.and_(
        RUN.c.status.not_in(["created", "planned"]),
        sa.or_(RUN.c.status != "failed", moved, sent),
    )


# --- reads --------------------------------------------------------------------------------


def get(conn: Connection, run_id: int) -> sa.Row | None:
    """The run row, or None."""
    return conn.execute(sa.select(RUN).where(RUN.c.id == run_id)).first()


def status(conn: Connection, run_id: int) -> str | None:
    """The run's status, or None for an unknown run."""
    return conn.execute(sa.select(RUN.c.status).where(RUN.c.id == run_id)).scalar()


def spec_snapshot(conn: Connection, run_id: int) -> str | None:
    """The spec the run was planned with, as stored (None for an unknown run)."""
    return conn.execute(sa.select(RUN.c.spec_json).where(RUN.c.id == run_id)).scalar()


def recent(conn: Connection, limit: int = 50) -> list[sa.Row]:
    """The newest runs first: id, job name, status, items, created."""
    query = (
        sa.select(RUN.c.id, RUN.c.job_name, RUN.c.status, RUN.c.n_items, RUN.c.created_at)
        .order_by(RUN.c.id.desc())
        .limit(limit)
    )
    return list(conn.execute(query))


# --- writes -------------------------------------------------------------------------------


def create(conn: Connection, **values: Any) -> int:
    """A new run, `created`, with nothing ingested yet; returns its id."""
    values = {"input_sha256": "", "n_items": 0, "n_rejected": 0, **values}
    query = RUN.insert().values(status=RunStatus.CREATED.value, created_at=_now(), **values)
    return conn.execute(query.returning(RUN.c.id)).scalar_one()


def record_ingest(conn: Connection, run_id: int, n_items: int, n_rejected: int, sha: str) -> None:
    """What the ingest stored: item and rejected-line counts, and the input's sha256."""
    values = {"n_items": n_items, "n_rejected": n_rejected, "input_sha256": sha}
    conn.execute(sa.update(RUN).where(RUN.c.id == run_id).values(**values))


def set_spec(conn: Connection, run_id: int, snapshot: str) -> None:
    """A new spec snapshot for the run (a raised budget is kept with it)."""
    conn.execute(sa.update(RUN).where(RUN.c.id == run_id).values(spec_json=snapshot))


def mark_planned(conn: Connection, run_id: int) -> None:
    set_status(conn, RUN, RunStatus.PLANNED, RUN.c.id == run_id)


def start(conn: Connection, run_id: int) -> None:
    """`running`, its last error cleared; started_at keeps the first start."""
    values = {"error": None, "started_at": sa.func.coalesce(RUN.c.started_at, _now())}
    set_status(conn, RUN, RunStatus.RUNNING, RUN.c.id == run_id, values)


def complete(conn: Connection, run_id: int) -> None:
    set_status(conn, RUN, RunStatus.COMPLETED, RUN.c.id == run_id, {"finished_at": _now()})


def fail(conn: Connection, run_id: int, message: str) -> None:
    """Stopped on something that needs a person; `message` says what to do."""
    set_status(conn, RUN, RunStatus.FAILED, RUN.c.id == run_id, {"error": message})


def cancel(conn: Connection, run_id: int) -> None:
    """Cancelled by the user: its driver drains it (see batcher.run.driver)."""
    set_status(conn, RUN, RunStatus.CANCELLED, RUN.c.id == run_id)


def finish_cancelled(conn: Connection, run_id: int) -> None:
    """A cancelled run is drained: its unfinished items end `cancelled`."""
    set_status(conn, ITEM, ItemStatus.CANCELLED, ITEM.c.run_id == run_id)
    conn.execute(sa.update(RUN).where(RUN.c.id == run_id).values(finished_at=_now()))


def _now() -> datetime:
    return datetime.now(UTC)


# --- schedules ----------------------------------------------------------------------------

_TERMINAL = [s.value for s in RUN_TERMINAL]


def open_of_schedule(conn: Connection, schedule_name: str) -> list[sa.Row]:
    """Runs started by this schedule that have not ended (failed ones included)."""
    query = (
        sa.select(RUN.c.id, RUN.c.input_path, RUN.c.input_sha256)
        .where(RUN.c.schedule_name == schedule_name, RUN.c.status.not_in(_TERMINAL))
        .order_by(RUN.c.id)
    )
    return list(conn.execute(query))


def latest_open_of_schedule(conn: Connection, schedule_name: str, sha: str) -> int | None:
    """The newest open run of this schedule over this content, if any."""
    query = sa.select(sa.func.max(RUN.c.id)).where(
        RUN.c.schedule_name == schedule_name,
        RUN.c.input_sha256 == sha,
        RUN.c.status.not_in(_TERMINAL),
    )
    return conn.execute(query).scalar()


def best_of_job(conn: Connection, job_name: str, sha: str) -> sa.Row | None:
    """(id, status) of the job's run over this content that matters most: a completed one,
    else the newest not cancelled; None when there is none."""
    query = (
        sa.select(RUN.c.id, RUN.c.status)
        .where(
            RUN.c.job_name == job_name,
            RUN.c.input_sha256 == sha,
            RUN.c.status != RunStatus.CANCELLED.value,
        )
        .order_by((RUN.c.status == RunStatus.COMPLETED.value).desc(), RUN.c.id.desc())
        .limit(1)
    )
    return conn.execute(query).first()


def set_options(conn: Connection, run_id: int, options_json: str) -> None:
    """Keep the run's options (batcher.run.options) with the run."""
    conn.execute(sa.update(RUN).where(RUN.c.id == run_id).values(options_json=options_json))


def options_json(conn: Connection, run_id: int) -> str | None:
    return conn.execute(sa.select(RUN.c.options_json).where(RUN.c.id == run_id)).scalar()
