"""The state machine: allowed transitions only, and repeating a transition changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from batcher.store import open_store
from batcher.store.models import TABLES
from batcher.store.states import BatchStatus, allowed_sources, set_status, set_status_many

RUN, BATCH = TABLES["run"], TABLES["batch"]


@pytest.fixture
def db(db_url):
    engine = open_store(db_url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        run_id = conn.execute(
            RUN.insert()
            .values(
                job_name="j",
                spec_path="j.toml",
                spec_json="{}",
                input_path="in.jsonl",
                input_sha256="0" * 64,
                status="running",
                n_items=0,
                n_rejected=0,
                created_at=now,
            )  # fmt: skip
            .returning(RUN.c.id)
        ).scalar_one()
        for n in range(3):
            conn.execute(
                BATCH.insert().values(
                    id=f"b{n}",
                    run_id=run_id,
                    provider="openai",
                    model="m",
                    tier="nano",
                    status="submitted",
                    path="f",
                    n_requests=1,
                    n_bytes=1,
                    created_at=now,
                )  # fmt: skip
            )
    yield engine
    engine.dispose()


def statuses(db) -> dict[str, str]:
    with db.connect() as conn:
        return dict(conn.execute(sa.select(BATCH.c.id, BATCH.c.status)).all())


def test_only_allowed_transitions_move_and_repeats_change_nothing(db):
    with db.begin() as conn:
        assert set_status(conn, BATCH, BatchStatus.ENDED, BATCH.c.id == "b0") == 1
        assert set_status(conn, BATCH, BatchStatus.ENDED, BATCH.c.id == "b0") == 0
        # reconciled only from ended: b1 is still submitted and stays so
        assert set_status(conn, BATCH, BatchStatus.RECONCILED, BATCH.c.id.in_(["b0", "b1"])) == 1
    assert statuses(db) == {"b0": "reconciled", "b1": "submitted", "b2": "submitted"}


def test_bulk_moves_allowed_rows_with_their_values_once(db):
    rows = [("completed", "b1"), ("expired", "b2"), ("completed", "b0")]
    with db.begin() as conn:
        set_status(conn, BATCH, BatchStatus.ENDED, BATCH.c.id == "b0")
        set_status(conn, BATCH, BatchStatus.RECONCILED, BATCH.c.id == "b0")
        assert set_status_many(conn, BATCH, BatchStatus.ENDED, ["raw_status"], rows) == 2
        assert set_status_many(conn, BATCH, BatchStatus.ENDED, ["raw_status"], rows) == 0
    assert statuses(db) == {"b0": "reconciled", "b1": "ended", "b2": "ended"}
    with db.connect() as conn:
        raw = dict(conn.execute(sa.select(BATCH.c.id, BATCH.c.raw_status)).all())
    assert raw == {"b0": None, "b1": "completed", "b2": "expired"}


def test_a_status_no_transition_leads_to_is_refused(db):
    assert allowed_sources("batch", "nonsense") == set()
    with db.begin() as conn, pytest.raises(ValueError, match="no transition of batch"):
        set_status(conn, BATCH, "nonsense", BATCH.c.id == "b0")
