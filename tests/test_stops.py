"""A stop request (SIGTERM, Ctrl-C) takes effect within seconds in every state, and the run
stays resumable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner
from engine_helpers import (  # noqa: F401 - fixtures
    check_accounted,
    sandbox_fixture,
    served_fixture,
    write_job,
)

from batcher.cli import cli
from batcher.store import open_store

STOP_WITHIN_S = 5.0


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_sigterm_during_an_outage_stops_within_5_s_and_resume_finishes(tmp_path, sandbox):
    db_url = f"sqlite:///{tmp_path / 'stop.db'}"
    spec = write_job(tmp_path, 4)
    env = {**os.environ, **sandbox.env(), "BATCHER_DB": db_url}
    sandbox.configure(faults="slow:factor=50")  # the batch stays open through the test
    run = subprocess.Popen(
        [str(Path(sys.executable).parent / "batcher"), "run", str(spec), "--poll-interval", "0.05"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(lambda: sandbox.stats()["batches_created"]["openai"] == 1)
    # The outage: every provider call answers 500. The client's own retries back off up to
    # 30 s a wait, more than a minute in all, before the loop would look at a stop request.
    sandbox.configure(faults="http500:rate=1")
    time.sleep(1.0)  # into the retry waits
    asked = time.monotonic()
    run.send_signal(signal.SIGTERM)
    code = run.wait(timeout=60)
    took = time.monotonic() - asked
    stderr = run.stderr.read()
    assert took < STOP_WITHIN_S, (took, stderr)
    assert code == 3, stderr
    assert "Traceback" not in stderr
    assert "batcher resume 1" in stderr

    sandbox.configure(clear_faults=True)
    sandbox.advance_clock(60)  # past the slowed batch's end
    resumed = CliRunner().invoke(
        cli, ["resume", "1", "--db", db_url, "--poll-interval", "0.05"], env=sandbox.env()
    )
    assert resumed.exit_code == 0, resumed.output
    check_accounted(open_store(db_url), 1, sandbox, 4)
