"""The state store: migrations build exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from batcher.errors import StoreError
from batcher.store import TABLES, db, migrations, open_store, resolve_url
from batcher.store.db import migrate


def schema_differences(engine) -> list:
    """What alembic would change to make the database match the SQLModel models."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        diffs = compare_metadata(context, SQLModel.metadata)
    return [d for d in diffs if not _is_migrations_table(d)]


def _is_migrations_table(diff) -> bool:
    return diff[0] == "remove_table" and diff[1].name == "schema_migrations"


def migration_names(engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(sa.text("SELECT name FROM schema_migrations ORDER BY name")).scalars()
        )


def test_migrations_build_the_schema_of_the_models(db_url):
    engine = open_store(db_url)
    assert schema_differences(engine) == []
    assert migration_names(engine) == sorted(name for name, _ in migrations.MIGRATIONS)
    assert set(TABLES) <= set(sa.inspect(engine).get_table_names())
    engine.dispose()


def test_the_comparison_would_see_a_difference(db_url):
    """Guard for the test above: a column the migrations lack is reported."""
    engine = open_store(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE run ADD COLUMN stray INTEGER"))
    diffs = schema_differences(engine)
    assert [(d[0], d[3].name) for d in diffs] == [("remove_column", "stray")]
    engine.dispose()


def test_reopening_is_a_no_op_and_keeps_rows(db_url):
    engine = open_store(db_url)
    with engine.begin() as conn:
        conn.execute(TABLES["prompt"].insert().values(hash="h1", text="kept"))
    engine.dispose()

    again = open_store(db_url)
    assert migrate(again) == []
    assert schema_differences(again) == []
    with again.connect() as conn:
        assert conn.execute(sa.select(TABLES["prompt"].c.text)).scalars().all() == ["kept"]
        count = conn.execute(sa.text("SELECT count(*) FROM schema_migrations")).scalar()
    assert count == len(migrations.MIGRATIONS)
    again.dispose()


def test_a_failing_migration_leaves_neither_its_ddl_nor_its_record(db_url, monkeypatch):
    engine = open_store(db_url)

    def broken(op):
        op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
        raise RuntimeError("crash in the middle of a migration")

    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, ("m999", broken)])
    monkeypatch.setattr(db, "MIGRATIONS", migrations.MIGRATIONS)
    with pytest.raises(RuntimeError, match="crash in the middle"):
        migrate(engine)
    assert "half_done" not in sa.inspect(engine).get_table_names()
    assert "m999" not in migration_names(engine)

    def fixed(op):
        op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))

    monkeypatch.setattr(db, "MIGRATIONS", [*migrations.MIGRATIONS[:-1], ("m999", fixed)])
    assert migrate(engine) == ["m999"]
    assert "half_done" in sa.inspect(engine).get_table_names()
    engine.dispose()


def test_sqlite_is_in_wal_mode_with_foreign_keys(sqlite_url):
    engine = open_store(sqlite_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    engine.dispose()


def test_a_new_sqlite_store_has_16_kb_pages_and_an_old_one_keeps_its_own(tmp_path):
    import sqlite3

    new = open_store(f"sqlite:///{tmp_path / 'new.db'}")
    with new.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA page_size").scalar() == db.PAGE_SIZE == 16384
    new.dispose()
    old_path = tmp_path / "old.db"
    with sqlite3.connect(old_path) as conn:  # as an earlier version made it: 4 KB, WAL
        conn.execute("PRAGMA page_size=4096")
        conn.execute("PRAGMA journal_mode=WAL")
    old = open_store(f"sqlite:///{old_path}")
    with old.begin() as conn:
        assert conn.exec_driver_sql("PRAGMA page_size").scalar() == 4096
        assert conn.exec_driver_sql("SELECT count(*) FROM run").scalar() == 0
    old.dispose()


def test_default_database_is_in_the_state_folder(state_dir):
    assert resolve_url() == f"sqlite:///{state_dir / 'batcher.db'}"
    engine = open_store()
    assert (state_dir / "batcher.db").exists()
    engine.dispose()


def test_url_from_argument_environment_or_bare_path(monkeypatch, tmp_path):
    assert resolve_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert resolve_url(str(tmp_path / "x.db")) == f"sqlite:///{tmp_path / 'x.db'}"
    monkeypatch.setenv("BATCHER_DB", str(tmp_path / "env.db"))
    assert resolve_url() == f"sqlite:///{tmp_path / 'env.db'}"
    assert resolve_url("sqlite:///other.db") == "sqlite:///other.db"


def test_unreachable_database_is_a_store_error():
    url = "postgresql+psycopg://postgres:secret@127.0.0.1:1/test"
    with pytest.raises(StoreError) as caught:
        open_store(url)
    message = str(caught.value)
    assert message.startswith("cannot open the state database postgresql+psycopg://postgres:***@")
    assert "secret" not in message
    assert caught.value.exit_code == 1
