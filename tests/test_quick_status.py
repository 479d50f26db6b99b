"""`batcher status` reads a SQLite file without the run engine (batcher.run.outcome): the same
answer as `engine.run_status`, for finished, half-done and planned runs, and the same refusal
for an unknown run."""

from __future__ import annotations

import subprocess
import sys

import pytest
from engine_helpers import (  # noqa: F401 - fixtures
    POLL,
    clients_fixture,
    db_fixture,
    sandbox_fixture,
    served_fixture,
    write_job,
)

from batcher.errors import UsageError
from batcher.run import engine
from batcher.run.outcome import quick_status
from batcher.spec import load_spec
from batcher.store import open_store


def test_quick_status_matches_the_engine(db, sandbox, clients, tmp_path):
    check_quick_status_matches_the_engine(db, clients, tmp_path)


def test_quick_status_matches_the_engine_on_postgresql(pg_url, sandbox, clients, tmp_path):
    """psycopg alone, with the URL's search_path: the same answer as through SQLAlchemy."""
    check_quick_status_matches_the_engine(open_store(pg_url), clients, tmp_path)


def check_quick_status_matches_the_engine(db, clients, tmp_path):
    spec = load_spec(write_job(tmp_path, 5, classifier="heuristic"))
    done = engine.start_run(db, spec, spec.input_file())
    engine.drive_run(db, done, clients=clients, poll=POLL)
    submitted = engine.start_run(db, spec, spec.input_file())
    engine.drive_run(db, submitted, clients=clients, reuse=False, submit_only=True)
    engine.start_run(db, spec, spec.input_file())  # planned, nothing sent
    url = db.url.render_as_string(hide_password=False)
    assert quick_status(url) is not None
    assert quick_status(url) == engine.run_status(db)
    assert engine.run_status(db, submitted)["in_flight"] == 5
    for run_id in (1, 2, 3):
        assert quick_status(url, run_id) == engine.run_status(db, run_id)
    with pytest.raises(UsageError, match="no run 9 in the state database"):
        quick_status(url, 9)


def test_quick_status_leaves_other_databases_to_the_engine(tmp_path, pg_url):
    assert quick_status(f"sqlite:///{tmp_path / 'missing.db'}") is None
    assert quick_status("postgresql+psycopg://u@127.0.0.1/test") is None  # no such role
    assert quick_status("mysql+pymysql://root@127.0.0.1/test") is None
    assert quick_status(pg_url) is None  # a server that answers, without the tables yet
    (tmp_path / "old.db").write_bytes(b"")  # a file without the tables: the usual path
    assert quick_status(str(tmp_path / "old.db")) is None


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_status_imports_no_sqlalchemy(database, db, request):
    """The point of the quick path: `batcher status` starts without SQLAlchemy."""
    if database == "postgresql":
        db = open_store(request.getfixturevalue("pg_url"))  # the tables, made beforehand
    url = db.url.render_as_string(hide_password=False)
    code = (
        "import sys; from click.testing import CliRunner; from batcher.cli import cli;"
        f"r = CliRunner().invoke(cli, ['status', '--db', {url!r}]);"
        "assert r.exit_code == 0, r.output; print('sqlalchemy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
