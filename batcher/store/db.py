"""Opening the state database: URL resolution, SQLite tuning, and running migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batcher.errors import StoreError
from batcher.store.bulk import BULK_CACHE
from batcher.store.migrations import MIGRATIONS
from batcher.store.paths import DEFAULT_STATE_DIR, resolve_url, state_dir

__all__ = [  # state_dir and resolve_url live in paths.py, light enough for `batcher status`
    "DEFAULT_STATE_DIR",
    "create_engine",
    "migrate",
    "open_store",
    "resolve_url",
    "state_dir",
]

DEFAULT_CACHE_SIZE = -2000  # SQLite's own default page cache (KiB, as a negative count)
PAGE_SIZE = 16384  # bytes, for a new database

_migrations_table = sa.Table(
    "schema_migrations",
    sa.MetaData(),
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("applied_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)


def _tune_sqlite(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001 - DBAPI types vary
        cur = dbapi_conn.cursor()
        # Read only while the file is new (before WAL mode fixes it): 16 KB pages hold a
        # dozen item rows each rather than three, and a plan writes a tenth less CPU-time
        # for them (bench/plan.py; an existing database keeps its own size).
        cur.execute(f"PRAGMA page_size={PAGE_SIZE}")
        # WAL lets readers (status, report) run while the engine writes; NORMAL is durable
        # across process crashes, which is the failure we guard against.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @sa.event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_conn, record):  # noqa: ANN001 - DBAPI types vary
        if dbapi_conn is not None and record.info.pop(BULK_CACHE, False):
            cur = dbapi_conn.cursor()  # back to the default cache, its pages freed
            cur.execute(f"PRAGMA cache_size={DEFAULT_CACHE_SIZE}")
            cur.execute("PRAGMA shrink_memory")
            cur.close()


def create_engine(url: str | None = None) -> Engine:
    """An engine for `url` (see `resolve_url`), without migrating."""
    url = resolve_url(url)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        _tune_sqlite(engine)
    return engine


MIGRATION_LOCK_ID = 0x62617463  # PostgreSQL advisory lock key ("batc")


def _begin_exclusive(conn: Connection) -> None:
    """Make this transaction hold DDL too, and let one process migrate at a time.

    Python's sqlite3 opens a transaction only before INSERT/UPDATE/DELETE, so without an
    explicit BEGIN the DDL of a migration would autocommit statement by statement and a crash
    half-way would leave a schema that no record describes. IMMEDIATE also takes the write
    lock up front, so a second process waits rather than failing half-way.
    """
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_ID})


def _operations(conn: Connection) -> Any:
    """Alembic's portable DDL on `conn`. Alembic is imported here, when a migration is due:
    it takes a quarter of a second, and an up-to-date database (every command after the
    first) never needs it."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    return Operations(MigrationContext.configure(conn))


def migrate(engine: Engine, upto: str | None = None) -> list[str]:
    """Apply pending migrations (up to and including `upto`); returns the names applied.

    Each migration runs in one transaction with the row that records it, so a crash leaves
    both or neither; a migration another process applied meanwhile is skipped.
    """
    applied: list[str] = []
    with engine.begin() as conn:
        _migrations_table.create(conn, checkfirst=True)
        done = set(conn.execute(sa.select(_migrations_table.c.name)).scalars())
    for name, step in MIGRATIONS:
        if name not in done:
            with engine.begin() as conn:
                _begin_exclusive(conn)
                recorded = conn.execute(
                    sa.select(_migrations_table.c.name).where(_migrations_table.c.name == name)
                ).first()
                if recorded is None:
                    step(_operations(conn))
                    conn.execute(_migrations_table.insert().values(name=name))
                    applied.append(name)
        if name == upto:
            break
    return applied


def open_store(url: str | None = None) -> Engine:
    """Open (creating and migrating when needed) the state database and return its engine.

    Raises StoreError naming the URL when the database cannot be reached.
    """
    engine = create_engine(url)
    try:
        migrate(engine)
    except sa.exc.OperationalError as exc:
        shown = engine.url.render_as_string(hide_password=True)
        reason = " ".join(str(exc.orig).split())  # drivers' messages span lines
        raise StoreError(
            f"cannot open the state database {shown}: {reason} (check --db or BATCHER_DB)"
        ) from exc
    return engine
