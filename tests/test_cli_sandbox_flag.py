"""--sandbox on every command that talks to a provider: it reuses the sandbox recorded in
the state folder (by `batcher sandbox`, or by another command's in-process one while it
lives), else starts one in this process; a run started on the sandbox resumes there."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from cli_helpers import (  # noqa: F401 - fixtures
    cli_db_url_fixture,
    invoke,
)
from engine_helpers import (  # noqa: F401 - fixtures
    sandbox_fixture,
    served_fixture,
    write_job,
)

from batcher.sandbox.running import record_path, recorded, running_sandbox


@pytest.fixture
def no_keys(monkeypatch):
    """Nothing but --sandbox can reach a provider: no keys, no base URLs."""
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def recorded_sandbox(sandbox, no_keys):
    with recorded(sandbox.url):
        yield sandbox


def test_submit_with_sandbox_needs_one_that_outlives_it(tmp_path, db_url, no_keys):
    result = invoke("submit", str(write_job(tmp_path, 2)), "--sandbox", "--db", db_url)
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: no sandbox is running, and one started by this command would end with it, "
        "taking the batches along: start `batcher sandbox` in another terminal first\n"
    )


def test_submit_then_resume_on_the_recorded_sandbox(tmp_path, db_url, recorded_sandbox):
    spec = str(write_job(tmp_path, 3))
    assert invoke("submit", spec, "--sandbox", "--db", db_url).exit_code == 3
    # no flag: the run was started on the sandbox and its options say so
    resumed = invoke("resume", "1", "--db", db_url, "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["succeeded"] == 3
    assert recorded_sandbox.stats()["batches_created"]["openai"] == 1


def test_cancel_and_retry_with_sandbox(tmp_path, db_url, recorded_sandbox):
    recorded_sandbox.configure(faults="slow:count=1:factor=5")
    spec = write_job(tmp_path, 2)
    assert invoke("submit", str(spec), "--sandbox", "--db", db_url).exit_code == 3
    cancelled = invoke("cancel", "1", "--sandbox", "--db", db_url, "--json")
    assert cancelled.exit_code == 4 and json.loads(cancelled.stdout)["cancelled"] == 2
    retried = invoke("retry", "1", "--sandbox", "--db", db_url, "--json")
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.stdout)["succeeded"] == 2


def test_run_now_with_sandbox_starts_one_in_process(tmp_path, db_url, no_keys):
    spec = write_job(tmp_path, 2)
    added = invoke("schedule", "add", "often", "--job", str(spec), "--every", "1d",
                   "--db", db_url)  # fmt: skip
    assert added.exit_code == 0, added.output
    fired = invoke("schedule", "run-now", "often", "--sandbox", "--db", db_url, "--json")
    assert fired.exit_code == 0, fired.output
    assert [r["outcome"] for r in json.loads(fired.stdout)] == ["completed"]
    assert not record_path().exists()  # the in-process sandbox went, and so did its record


def test_batcher_sandbox_records_itself_while_it_serves(tmp_path, state_dir):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "BATCHER_STATE_DIR": str(state_dir)}
    server = subprocess.Popen(
        [sys.executable, "-c", "from batcher.cli import main; main()", "sandbox",
         "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while running_sandbox() is None:
            assert time.monotonic() < deadline, "the sandbox did not record itself"
            time.sleep(0.05)
        assert running_sandbox().url == f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert not record_path().exists()
