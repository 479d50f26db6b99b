"""Append-only schema migrations, applied in order when the store opens.

Each migration is a function that receives alembic `Operations` (portable DDL for SQLite and
PostgreSQL) and runs in the same transaction as the row that records it in
`schema_migrations`, so a crash leaves either both or neither. Never edit a migration that has
shipped: add a new one at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:  # Alembic loads only when a migration is pending (see db.migrate)
    from alembic.operations import Operations

TZ = sa.DateTime(timezone=True)


def _money(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger, nullable=False, server_default="0")


def m001_initial(op: Operations) -> None:
    op.create_table(
        "run",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_name", sa.String, nullable=False),
        sa.Column("spec_path", sa.String, nullable=False),
        sa.Column("spec_json", sa.String, nullable=False),
        sa.Column("input_path", sa.String, nullable=False),
        sa.Column("input_sha256", sa.String, nullable=False),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("n_items", sa.Integer, nullable=False),
        sa.Column("n_rejected", sa.Integer, nullable=False),
        sa.Column("error", sa.String),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("started_at", TZ),
        sa.Column("finished_at", TZ),
    )
    for col in ("job_name", "input_sha256", "status"):
        op.create_index(f"ix_run_{col}", "run", [col])

    op.create_table(
        "prompt",
        sa.Column("hash", sa.String, primary_key=True),
        sa.Column("text", sa.String, nullable=False),
    )

    op.create_table(
        "item",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("run.id"), nullable=False),
        sa.Column("line_no", sa.Integer, nullable=False),
        sa.Column("custom_id", sa.String, nullable=False),
        sa.Column("system_hash", sa.String, sa.ForeignKey("prompt.hash")),
        sa.Column("request_json", sa.String, nullable=False),
        sa.Column("metadata_json", sa.String),
        sa.Column("explicit_model", sa.String),
        sa.Column("explicit_tier", sa.String),
        sa.Column("tier", sa.String),
        sa.Column("route_reason", sa.String),
        sa.Column("cache_group", sa.String),
        sa.Column("est_input_tokens", sa.Integer),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("output", sa.String),
        sa.Column("final_attempt_id", sa.Integer),
        sa.UniqueConstraint("run_id", "custom_id", name="uq_item_run_custom_id"),
    )
    op.create_index("ix_item_run_id", "item", ["run_id"])
    op.create_index("ix_item_status", "item", ["status"])

    op.create_table(
        "batch",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("run.id"), nullable=False),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("provider", sa.String, nullable=False),
        sa.Column("model", sa.String, nullable=False),
        sa.Column("tier", sa.String, nullable=False),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("raw_status", sa.String),
        sa.Column("path", sa.String, nullable=False),
        sa.Column("n_requests", sa.Integer, nullable=False),
        sa.Column("n_bytes", sa.Integer, nullable=False),
        sa.Column("provider_batch_id", sa.String),
        sa.Column("input_file_id", sa.String),
        sa.Column("output_file_id", sa.String),
        sa.Column("error_file_id", sa.String),
        sa.Column("n_succeeded", sa.Integer, nullable=False),
        sa.Column("n_errored", sa.Integer, nullable=False),
        sa.Column("n_expired", sa.Integer, nullable=False),
        sa.Column("n_cancelled", sa.Integer, nullable=False),
        sa.Column("error", sa.String),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("submitted_at", TZ),
        sa.Column("ended_at", TZ),
        sa.Column("reconciled_at", TZ),
    )
    for col in ("run_id", "status", "provider_batch_id"):
        op.create_index(f"ix_batch_{col}", "batch", [col])

    op.create_table(
        "attempt",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("run.id"), nullable=False),
        sa.Column("item_id", sa.Integer, sa.ForeignKey("item.id"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("tier", sa.String, nullable=False),
        sa.Column("provider", sa.String, nullable=False),
        sa.Column("model", sa.String, nullable=False),
        sa.Column("batch_id", sa.String, sa.ForeignKey("batch.id")),
        sa.Column("custom_id", sa.String, nullable=False),
        sa.Column("request_hash", sa.String, nullable=False),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("output", sa.String),
        sa.Column("verdict", sa.String),
        sa.Column("error_code", sa.String),
        sa.Column("error_message", sa.String),
        *(
            _money(name)
            for name in (
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
            )
        ),
        sa.Column("reused_from", sa.Integer),
        sa.Column("finished_at", TZ),
    )
    for col in ("run_id", "item_id", "batch_id", "request_hash", "status"):
        op.create_index(f"ix_attempt_{col}", "attempt", [col])


def m002_run_lease_and_schedule(op: Operations) -> None:
    """A lease so that one process drives a run; the schedule that started a run."""
    op.add_column("run", sa.Column("lease_owner", sa.String))
    op.add_column("run", sa.Column("lease_expires_at", TZ))
    op.add_column("run", sa.Column("schedule_name", sa.String))
    op.create_index("ix_run_schedule_name", "run", ["schedule_name"])


def m003_attempt_batch_custom_id(op: Operations) -> None:
    """Reconcile matches results by (batch, custom_id): one index probe each, and a custom_id
    can never appear twice in one batch."""
    op.create_index("ux_attempt_batch_custom_id", "attempt", ["batch_id", "custom_id"], unique=True)


def m004_schedule_firing(op: Operations) -> None:
    """What each firing of a schedule did: one row per input it worked on (or per failure
    before any input), claimed by (schedule, fire time, input hash) so two scheduler
    processes sharing a database never both start the same input for the same fire time."""
    op.create_table(
        "schedule_firing",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("schedule_name", sa.String, nullable=False),
        sa.Column("scheduled_for", TZ, nullable=False),
        sa.Column("fired_at", TZ, nullable=False),
        sa.Column("finished_at", TZ),
        sa.Column("input_path", sa.String),
        sa.Column("input_sha256", sa.String, nullable=False),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("run.id")),
        sa.Column("outcome", sa.String),
        sa.Column("error", sa.String),
        sa.UniqueConstraint(
            "schedule_name", "scheduled_for", "input_sha256", name="uq_schedule_firing_claim"
        ),
    )
    op.create_index("ix_schedule_firing_schedule_name", "schedule_firing", ["schedule_name"])
    op.create_index("ix_schedule_firing_run_id", "schedule_firing", ["run_id"])


def m005_bulk_write_indexes(op: Operations) -> None:
    """Indexes the million-row write paths do not pay for needlessly.

    Every query on a status also names a run or a batch, so the global single-column status
    indexes of item and attempt served none of them, while every status change rewrote an
    entry (~10% of reconcile's time for 1M results); ix_attempt_batch_id duplicated the
    first column of ux_attempt_batch_custom_id. Reuse looks earlier answers up by
    request_hash among succeeded attempts only: indexing just those spares planning a random
    B-tree insert per attempt (the hashes are uniformly spread)."""
    op.drop_index("ix_attempt_status", table_name="attempt")
    op.drop_index("ix_item_status", table_name="item")
    # ux_attempt_batch_custom_id starts with batch_id and serves every lookup by batch.
    op.drop_index("ix_attempt_batch_id", table_name="attempt")
    op.drop_index("ix_attempt_request_hash", table_name="attempt")
    op.create_index(
        "ix_attempt_request_hash",
        "attempt",
        ["request_hash"],
        sqlite_where=sa.text("status = 'succeeded'"),
        postgresql_where=sa.text("status = 'succeeded'"),
    )


def m006_attempt_item_seq(op: Operations) -> None:
    """An item's attempts are numbered 1, 2, 3...: unique, so that two planners can never both
    make an item's first attempt (the planner queues items once per run, not per batch, and
    relies on this), nor two follow-up rounds its next one. It also serves every lookup by
    item_id, so it replaces ix_attempt_item_id at the same cost per insert."""
    op.drop_index("ix_attempt_item_id", table_name="attempt")
    op.create_index("ux_attempt_item_seq", "attempt", ["item_id", "seq"], unique=True)


def m007_item_verdict(op: Operations) -> None:
    """An item keeps the verdict of its final answer next to the answer itself, so a failed
    item shows what was bought and why it was refused without a join."""
    op.add_column("item", sa.Column("verdict", sa.String))


def m008_attempt_answer_key(op: Operations) -> None:
    """Each answer's normalised key (batcher.run.answers), so that answers of different models to
    the same item can be compared in SQL: agreement, and accuracy against a frontier answer."""
    op.add_column("attempt", sa.Column("answer_key", sa.String(), nullable=True))


def m009_attempt_stop_and_error_class(op: Operations) -> None:
    """Why each answer ended (stop_reason: end, max_tokens, ...), what an errored request's
    error says about sending it again (error_class: transient, too_long, invalid), and the
    max_tokens an attempt was sent with when it differs from its item's (a truncated answer's
    retry), so follow-ups decide from stored facts."""
    op.add_column("attempt", sa.Column("stop_reason", sa.String(), nullable=True))
    op.add_column("attempt", sa.Column("error_class", sa.String(), nullable=True))
    op.add_column("attempt", sa.Column("max_tokens", sa.Integer(), nullable=True))


def m010_attempt_role(op: Operations) -> None:
    """Which part an attempt plays: "primary" (the answer an item may end with) or
    "opinion" (a second opinion of the agreement cascade, compared with the primary's
    answer key but never the item's answer)."""
    op.add_column(
        "attempt", sa.Column("role", sa.String(), nullable=False, server_default="primary")
    )


def m011_worker_pool(op: Operations) -> None:
    """The worker pool: each `batcher worker` and its heartbeat, and when a run's lease holder
    took it and last renewed it (`batcher workers` shows both)."""
    op.create_table(
        "worker",
        sa.Column("owner", sa.String, primary_key=True),
        sa.Column("host", sa.String, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("slots", sa.Integer, nullable=False),
        sa.Column("ttl_s", sa.Float, nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("heartbeat_at", TZ, nullable=False),
    )
    op.add_column("run", sa.Column("lease_since", TZ))
    op.add_column("run", sa.Column("lease_renewed_at", TZ))


def m012_run_options(op: Operations) -> None:
    """The options a run was started with (--no-reuse, --poll-interval, --sandbox) as JSON, so
    that `resume` carries on as the run began instead of with its own defaults."""
    op.add_column("run", sa.Column("options_json", sa.String(), nullable=True))


def m013_answers_once(op: Operations) -> None:
    """Answers are stored once, on their attempt: `item.output` (a copy of an attempt's
    output) gives way to `item.answer_attempt_id`, the attempt that holds the item's answer.
    Each stored answer is matched to its attempt: the final one when it holds the same text,
    else the item's latest attempt that does; an answer no attempt holds (none is written so)
    moves onto the item's final attempt when that has no output of its own."""
    op.add_column("item", sa.Column("answer_attempt_id", sa.Integer))
    op.execute(
        "UPDATE item SET answer_attempt_id = final_attempt_id WHERE output IS NOT NULL"
        " AND output = (SELECT a.output FROM attempt a WHERE a.id = item.final_attempt_id)"
    )
    op.execute(
        "UPDATE item SET answer_attempt_id = (SELECT a.id FROM attempt a WHERE a.item_id ="
        " item.id AND a.output = item.output ORDER BY a.seq DESC LIMIT 1)"
        " WHERE output IS NOT NULL AND answer_attempt_id IS NULL"
    )
    op.execute(
        "UPDATE attempt SET output = (SELECT i.output FROM item i WHERE i.final_attempt_id ="
        " attempt.id AND i.answer_attempt_id IS NULL AND i.output IS NOT NULL) WHERE output IS"
        " NULL AND id IN (SELECT final_attempt_id FROM item WHERE answer_attempt_id IS NULL"
        " AND output IS NOT NULL)"
    )
    op.execute(
        "UPDATE item SET answer_attempt_id = final_attempt_id WHERE answer_attempt_id IS NULL"
        " AND output IS NOT NULL AND final_attempt_id IS NOT NULL"
    )
    op.drop_column("item", "output")


MIGRATIONS: list[tuple[str, Callable[[Operations], None]]] = [
    ("m001_initial", m001_initial),
    ("m002_run_lease_and_schedule", m002_run_lease_and_schedule),
    ("m003_attempt_batch_custom_id", m003_attempt_batch_custom_id),
    ("m004_schedule_firing", m004_schedule_firing),
    ("m005_bulk_write_indexes", m005_bulk_write_indexes),
    ("m006_attempt_item_seq", m006_attempt_item_seq),
    ("m007_item_verdict", m007_item_verdict),
    ("m008_attempt_answer_key", m008_attempt_answer_key),
    ("m009_attempt_stop_and_error_class", m009_attempt_stop_and_error_class),
    ("m010_attempt_role", m010_attempt_role),
    ("m011_worker_pool", m011_worker_pool),
    ("m012_run_options", m012_run_options),
    ("m013_answers_once", m013_answers_once),
]
