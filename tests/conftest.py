"""Shared fixtures: every test gets its own state folder; store tests run on SQLite and on
PostgreSQL (a fresh schema per test in database `test` on 127.0.0.1:5432).

PostgreSQL tests skip when the server is unreachable, unless BATCHER_REQUIRE_POSTGRES=1
(set by .ci/run), which turns an unreachable server into a failure.
"""

from __future__ import annotations

import compileall
import os
import tempfile
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get(
    "BATCHER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REPO = Path(__file__).resolve().parent.parent

# Many tests start `batcher` as a subprocess. Where PYTHONDONTWRITEBYTECODE is set (as on CI's
# machine) each of them would compile the whole package from source again (~0.5 s a start);
# compiled once here, every subprocess reads the bytecode instead.
compileall.compile_dir(str(REPO / "batcher"), quiet=1)


def pytest_configure(config) -> None:
    """Fixtures wider than one test run before `state_dir` below sets the test's folder: give
    them a private one too, so nothing a test starts writes into ./state of the checkout (where
    another test process may write files of the same names)."""
    os.environ["BATCHER_STATE_DIR"] = tempfile.mkdtemp(prefix="batcher-tests-state-")


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch) -> Path:
    """A private state folder; no test reads the developer's database or environment."""
    folder = tmp_path / "state"
    monkeypatch.setenv("BATCHER_STATE_DIR", str(folder))
    monkeypatch.delenv("BATCHER_DB", raising=False)
    for var in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    return folder


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'test.db'}"


def _pg_reachable() -> str | None:
    try:
        engine = sa.create_engine(PG_ADMIN_URL)
        with engine.connect():
            pass
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return str(exc).splitlines()[0]


@pytest.fixture
def pg_url():
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    problem = _pg_reachable()
    if problem:
        if os.environ.get("BATCHER_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL is required here but unreachable: {problem}")
        pytest.skip(f"PostgreSQL unreachable: {problem}")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    yield f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request) -> str:
    """Each store test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")
