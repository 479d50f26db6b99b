"""What the CLI tests share: `invoke` (click's runner, exceptions raised), the SDKs pointed at
the test's sandbox through the environment as in production, and one SQLite file a test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from batcher.cli import cli


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(name="env_sandbox")
def env_sandbox_fixture(sandbox, monkeypatch):
    """The sandbox, with its base URLs and keys in the environment."""
    for key, value in sandbox.env().items():
        monkeypatch.setenv(key, value)
    return sandbox


@pytest.fixture(name="db_url")
def cli_db_url_fixture(tmp_path) -> str:
    """One SQLite file (in place of conftest's db_url, which runs on both databases)."""
    return f"sqlite:///{tmp_path / 'cli.db'}"


@contextmanager
def own_state_dir(folder: Path) -> Iterator[None]:
    """BATCHER_STATE_DIR for a module-scoped fixture, which runs before conftest's per-test
    state folder exists: without it the run writes its batch files into ./state, where
    another test process may be writing files of the same names."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BATCHER_STATE_DIR", str(folder / "state"))
        yield
