"""The tables of the state database.

Money is stored as whole picodollars (1e-12 USD) in BIGINT columns: exact on SQLite and
PostgreSQL alike, summable in SQL, and fine enough for per-token prices of a thousandth of a
cent per million tokens. `batcher.money.amounts` converts to and from Decimal dollars.

JSON payloads (requests, metadata, spec snapshots) are TEXT written with orjson: faster than
a JSON column type on the bulk paths and identical on both databases.

These classes must match what the migrations in `migrations.py` build; a test compares them.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


def _money() -> sa.Column:
    return sa.Column(sa.BigInteger, nullable=False, server_default="0")


def _tokens() -> sa.Column:
    return sa.Column(sa.BigInteger, nullable=False, server_default="0")


class Run(SQLModel, table=True):
    """One execution of a job over one input."""

    __tablename__ = "run"

    id: int | None = Field(default=None, primary_key=True)
    job_name: str = Field(index=True)
    spec_path: str
    spec_json: str  # snapshot of the spec as loaded, so a resume uses what was planned
    input_path: str
    input_sha256: str = Field(index=True)
    status: str = Field(index=True)
    n_items: int = 0
    n_rejected: int = 0
    error: str | None = None
    created_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))
    started_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    finished_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    lease_owner: str | None = None
    lease_expires_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    schedule_name: str | None = Field(default=None, index=True)
    options_json: str | None = None  # the run's options (reuse, poll interval, sandbox)
    lease_since: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    lease_renewed_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))


class Prompt(SQLModel, table=True):
    """A system prompt, stored once by its sha256: a million items share a handful of them."""

    __tablename__ = "prompt"

    hash: str = Field(primary_key=True)
    text: str


class Item(SQLModel, table=True):
    """One input line: its provider-neutral request, routing, and final outcome."""

    __tablename__ = "item"
    __table_args__ = (sa.UniqueConstraint("run_id", "custom_id", name="uq_item_run_custom_id"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    line_no: int
    custom_id: str  # the item's id in the input (the line number when it has none)
    system_hash: str | None = Field(default=None, foreign_key="prompt.hash")
    request_json: str  # {"messages", and "max_tokens", "temperature", "params" when given}
    metadata_json: str | None = None
    explicit_model: str | None = None  # "provider:model" asked for by the item
    explicit_tier: str | None = None
    tier: str | None = None
    route_reason: str | None = None
    cache_group: str | None = None
    est_input_tokens: int | None = None
    status: str  # queried with run_id: no index of its own (see m005)
    verdict: str | None = None  # why that answer passed or failed validation
    final_attempt_id: int | None = None
    # The attempt whose output is the item's answer (kept for failed items too: their last
    # paid answer). Answers are stored once, on the attempt (m013).
    answer_attempt_id: int | None = None


class Attempt(SQLModel, table=True):
    """One submission of one item to one model. Retries and escalations add rows."""

    __tablename__ = "attempt"
    __table_args__ = (
        sa.Index("ux_attempt_batch_custom_id", "batch_id", "custom_id", unique=True),
        sa.Index("ux_attempt_item_seq", "item_id", "seq", unique=True),
        # Reuse looks up succeeded answers only; planned attempts stay out of this index.
        sa.Index(
            "ix_attempt_request_hash",
            "request_hash",
            sqlite_where=sa.text("status = 'succeeded'"),
            postgresql_where=sa.text("status = 'succeeded'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    item_id: int = Field(foreign_key="item.id")  # indexed by ux_attempt_item_seq
    seq: int  # 1 for the first attempt of the item, then 2, 3, ...
    tier: str
    provider: str
    model: str
    batch_id: str | None = Field(default=None, foreign_key="batch.id")  # indexed by the ux above
    custom_id: str  # the id on the wire, unique within its batch
    request_hash: str  # sha256 of model + request, for reuse
    status: str  # queried with run_id or batch_id: no index of its own (see m005)
    output: str | None = None
    verdict: str | None = None  # why validation passed or failed
    error_code: str | None = None
    error_message: str | None = None
    input_tokens: int = Field(sa_column=_tokens())  # all input tokens, cached ones included
    cache_read_tokens: int = Field(sa_column=_tokens())
    cache_write_5m_tokens: int = Field(sa_column=_tokens())
    cache_write_1h_tokens: int = Field(sa_column=_tokens())
    output_tokens: int = Field(sa_column=_tokens())
    reasoning_tokens: int = Field(sa_column=_tokens())
    cost_pusd: int = Field(sa_column=_money())  # what was billed: batch rates, with cache
    standard_pusd: int = Field(sa_column=_money())  # same model and tokens at standard rates
    uncached_pusd: int = Field(sa_column=_money())  # ... and without cache prices
    baseline_pusd: int = Field(sa_column=_money())  # the job's frontier model, standard, no cache
    reused_from: int | None = None  # the attempt whose answer was reused
    answer_key: str | None = None  # the normalised answer compared between models (m008)
    stop_reason: str | None = None  # why the answer ended: end, max_tokens, ... (m009)
    error_class: str | None = None  # an error's class: transient, too_long, invalid (m009)
    max_tokens: int | None = None  # sent with this cap instead of the item's (m009)
    # "primary", or "opinion": a cascade's second opinion, never the item's answer (m010)
    role: str = Field(
        default="primary", sa_column=sa.Column(sa.String, nullable=False, server_default="primary")
    )
    finished_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))


class Batch(SQLModel, table=True):
    """One provider batch, from the local file to the reconciled results."""

    __tablename__ = "batch"

    id: str = Field(primary_key=True)  # local id; travels with the batch to the provider
    run_id: int = Field(foreign_key="run.id", index=True)
    round: int = 1  # 1 for the first submission of a run, 2 for its retries, ...
    provider: str
    model: str
    tier: str
    status: str = Field(index=True)
    raw_status: str | None = None  # the provider's own word for where the batch is
    path: str  # the request file written at plan time
    n_requests: int
    n_bytes: int
    provider_batch_id: str | None = Field(default=None, index=True)
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    n_succeeded: int = 0
    n_errored: int = 0
    n_expired: int = 0
    n_cancelled: int = 0
    error: str | None = None
    created_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))
    submitted_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    ended_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    reconciled_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))


class ScheduleFiring(SQLModel, table=True):
    """What one firing of a schedule did with one input. `outcome` stays NULL while the firing
    works on it; it is written once, at the end (see batcher.schedule.firing.Outcome)."""

    __tablename__ = "schedule_firing"
    __table_args__ = (
        sa.UniqueConstraint(
            "schedule_name", "scheduled_for", "input_sha256", name="uq_schedule_firing_claim"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    schedule_name: str = Field(index=True)
    scheduled_for: datetime = Field(  # the fire time it belongs to; the claim's key
        sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False)
    )
    fired_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    input_path: str | None = None
    input_sha256: str  # "" when the firing failed before it read an input
    run_id: int | None = Field(default=None, foreign_key="run.id", index=True)
    outcome: str | None = None
    error: str | None = None


class Worker(SQLModel, table=True):
    """A `batcher worker` process of the pool: written when it starts, its heartbeat renewed
    while it lives, deleted when it stops cleanly (a killed one stays, its heartbeat old)."""

    __tablename__ = "worker"

    owner: str = Field(primary_key=True)  # host:pid:random, as in run.lease_owner
    host: str
    pid: int
    slots: int  # how many runs it drives at once
    ttl_s: float  # the lease it takes on a run: renewed every third of it
    started_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))
    heartbeat_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))


TABLES = {
    "run": Run.__table__,
    "prompt": Prompt.__table__,
    "item": Item.__table__,
    "attempt": Attempt.__table__,
    "batch": Batch.__table__,
    "schedule_firing": ScheduleFiring.__table__,
    "worker": Worker.__table__,
}
