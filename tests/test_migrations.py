"""Upgrading a database made by an older release keeps every row and adds what is new."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from test_store import migration_names, schema_differences  # same folder, on sys.path

from batcher.store import TABLES, open_store
from batcher.store.db import create_engine, migrate
from batcher.store.migrations import MIGRATIONS

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# Rows as the first release (m001_initial) wrote them: only the columns it had.
OLD_ROWS = {
    "run": {
        "id": 1,
        "job_name": "labels",
        "spec_path": "jobs/labels.toml",
        "spec_json": "{}",
        "input_path": "/data/in.jsonl",
        "input_sha256": "ab" * 32,
        "status": "running",
        "n_items": 1,
        "n_rejected": 0,
        "created_at": WHEN,
    },
    "prompt": {"hash": "p" * 32, "text": "You label."},
    "item": {
        "id": 10,
        "run_id": 1,
        "line_no": 1,
        "custom_id": "t-1",
        "system_hash": "p" * 32,
        "request_json": '{"messages":[{"role":"user","content":"hi"}]}',
        "status": "in_flight",
    },
    "batch": {
        "id": "b-1",
        "run_id": 1,
        "round": 1,
        "provider": "openai",
        "model": "gpt-5-nano",
        "tier": "nano",
        "status": "submitted",
        "path": "state/batches/run-1/b-1.jsonl",
        "n_requests": 1,
        "n_bytes": 120,
        "provider_batch_id": "batch_abc",
        "n_succeeded": 0,
        "n_errored": 0,
        "n_expired": 0,
        "n_cancelled": 0,
        "created_at": WHEN,
    },
    "attempt": {
        "id": 100,
        "run_id": 1,
        "item_id": 10,
        "seq": 1,
        "tier": "nano",
        "provider": "openai",
        "model": "gpt-5-nano",
        "batch_id": "b-1",
        "custom_id": "i10-a1",
        "request_hash": "r" * 64,
        "status": "submitted",
        "input_tokens": 1234,
        "cost_pusd": 987_654_321_000,
    },
}

OLDER_VERSIONS = [name for name, _ in MIGRATIONS[:-1]]


def _insert_old_rows(engine) -> None:
    with engine.begin() as conn:
        for table, row in OLD_ROWS.items():
            columns = [sa.column(name) for name in row]
            conn.execute(sa.table(table, *columns).insert().values(**row))


def _read(engine, table: str, key: str, value) -> dict:  # noqa: ANN001
    t = TABLES[table]
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(t).where(t.c[key] == value)).one()._mapping)


def _naive_utc(value):  # noqa: ANN001, ANN202
    """SQLite hands datetimes back naive (in UTC), PostgreSQL aware: compare them alike."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


@pytest.mark.parametrize("version", OLDER_VERSIONS)
def test_upgrade_from_an_older_version_keeps_rows(db_url, version):
    old = create_engine(db_url)
    applied = migrate(old, upto=version)
    assert applied[-1] == version
    assert migration_names(old) == sorted(applied)
    _insert_old_rows(old)
    old.dispose()

    engine = open_store(db_url)
    assert migration_names(engine) == sorted(name for name, _ in MIGRATIONS)
    assert schema_differences(engine) == []
    keys = {"run": "id", "prompt": "hash", "item": "id", "batch": "id", "attempt": "id"}
    for table, row in OLD_ROWS.items():
        stored = _read(engine, table, keys[table], row[keys[table]])
        for column, value in row.items():
            assert _naive_utc(stored[column]) == _naive_utc(value), (table, column)
    # columns added after m001 exist, with their defaults for the old rows
    run = _read(engine, "run", "id", 1)
    assert (run["lease_owner"], run["lease_expires_at"], run["schedule_name"]) == (None, None, None)
    assert run["options_json"] is None  # m009: an older run resumes with the default options
    attempt = _read(engine, "attempt", "id", 100)
    assert (attempt["cache_read_tokens"], attempt["baseline_pusd"]) == (0, 0)
    engine.dispose()


def test_upgraded_database_takes_new_rows(db_url):
    old = create_engine(db_url)
    migrate(old, upto=MIGRATIONS[0][0])
    _insert_old_rows(old)
    old.dispose()
    engine = open_store(db_url)
    with engine.begin() as conn:
        conn.execute(
            sa.update(TABLES["run"]).where(TABLES["run"].c.id == 1).values(lease_owner="host-1")
        )
        conn.execute(
            TABLES["item"]
            .insert()
            .values(
                id=11, run_id=1, line_no=2, custom_id="t-2", request_json="{}", status="pending"
            )
        )
    assert _read(engine, "run", "id", 1)["lease_owner"] == "host-1"
    assert _read(engine, "item", "id", 11)["custom_id"] == "t-2"
    engine.dispose()


def test_m013_keeps_every_answer_once_on_its_attempt_and_exports_it(db_url, tmp_path):
    """A database from before m013 held each answer twice (item.output and attempt.output):
    upgraded, each item points at the attempt holding its answer, and the export is as
    before: the final attempt's answer, a failed item's last paid answer (an earlier attempt),
    and an answer only the item held moves onto its final attempt."""
    import orjson

    from batcher.report.exports import export_run

    old = create_engine(db_url)
    migrate(old, upto="m012_run_options")
    spec = orjson.dumps({"name": "labels", "tiers": {"nano": "openai:gpt-5-nano"}}).decode()
    run = {**OLD_ROWS["run"], "status": "completed", "n_items": 3, "spec_json": spec}
    mine = ("id", "custom_id", "line_no", "item_id", "seq", "status")
    item = {k: v for k, v in OLD_ROWS["item"].items() if k not in mine}
    attempt = {k: v for k, v in OLD_ROWS["attempt"].items() if k not in mine}
    # (item id, status, item.output, [(attempt id, seq, status, attempt.output)])
    plan = [
        (10, "succeeded", "billing", [(100, 1, "succeeded", "billing")]),
        (11, "failed", "sales", [(110, 1, "invalid", "sales"), (111, 2, "errored", None)]),
        (12, "succeeded", "legacy", [(120, 1, "succeeded", None)]),
    ]
    with old.begin() as conn:
        conn.execute(TABLES_AT_M012["run"].insert().values(**run))
        conn.execute(TABLES_AT_M012["prompt"].insert().values(**OLD_ROWS["prompt"]))
        conn.execute(TABLES_AT_M012["batch"].insert().values(**OLD_ROWS["batch"]))
        for line, (item_id, status, output, chain) in enumerate(plan, 1):
            conn.execute(
                TABLES_AT_M012["item"]
                .insert()
                .values(
                    **item, id=item_id, custom_id=f"t-{line}", line_no=line, status=status,
                    output=output, final_attempt_id=chain[-1][0],
                )
            )  # fmt: skip
            for attempt_id, seq, a_status, a_output in chain:
                conn.execute(
                    TABLES_AT_M012["attempt"]
                    .insert()
                    .values(
                        **attempt, id=attempt_id, item_id=item_id, seq=seq, status=a_status,
                        output=a_output, custom_id=f"i{item_id}-a{seq}",
                    )
                )  # fmt: skip
    old.dispose()

    engine = open_store(db_url)
    assert schema_differences(engine) == []
    answers = {i: _read(engine, "item", "id", i)["answer_attempt_id"] for i in (10, 11, 12)}
    assert answers == {10: 100, 11: 110, 12: 120}
    assert _read(engine, "attempt", "id", 120)["output"] == "legacy"
    assert "output" not in _read(engine, "item", "id", 10)
    export_run(engine, 1, tmp_path / "out.jsonl")
    rows = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert [(r["id"], r["status"], r["output"]) for r in rows] == [
        ("t-1", "succeeded", "billing"),
        ("t-2", "failed", "sales"),
        ("t-3", "succeeded", "legacy"),
    ]
    engine.dispose()


# The tables as m012 left them: item still had `output` (dropped by m013).
_M012 = sa.MetaData()
TABLES_AT_M012 = {
    name: sa.Table(name, _M012, *(sa.Column(c.name, c.type) for c in table.columns))
    for name, table in TABLES.items()
    if name in OLD_ROWS
}
TABLES_AT_M012["item"].append_column(sa.Column("output", sa.String))
