"""Statuses that say what happened: a run that failed after submitting says "failed:" and
why in its report (not "still in flight"); `status RUN` lists provider batch ids."""

from __future__ import annotations

from cli_helpers import (  # noqa: F401 - fixtures
    cli_db_url_fixture,
    invoke,
)
from engine_helpers import (  # noqa: F401 - fixtures
    POLL,
    db_fixture,
    sandbox_fixture,
    served_fixture,
    write_job,
)

from batcher.providers import Clients
from batcher.providers.calls import RetryPolicy
from batcher.report.build import build_report, select_runs
from batcher.report.formats import render_report
from batcher.run import engine
from batcher.spec import load_spec
from batcher.store import open_store


def test_the_report_of_a_failed_run_says_failed_and_why(db, sandbox, tmp_path):
    # The create's answer is lost and the batch list cannot be read: undecided, run failed.
    sandbox.configure(faults="create_lost:count=1,http500:route=list:count=50")
    clients = Clients.for_sandbox(sandbox, RetryPolicy(attempts=2, base_s=0.01, cap_s=0.01))
    spec = load_spec(write_job(tmp_path, 2))
    run_id = engine.start_run(db, spec, spec.input_file())
    outcome = engine.drive_run(db, run_id, clients=clients, poll=POLL)
    assert outcome.status == "failed"
    text = render_report(build_report(db, select_runs(db, run_id)), "table")
    assert "still in flight" not in text
    warning = " ".join(text[text.index(f"Run {run_id} failed: ") :].split())
    assert warning.startswith(f"Run {run_id} failed: {' '.join(outcome.message.split())}")
    assert "(2 of 2 items unfinished; these figures change when it is resumed)." in warning


def test_status_of_a_run_lists_its_provider_batch_ids(tmp_path, db_url):
    assert invoke("run", str(write_job(tmp_path, 2)), "--sandbox", "--db", db_url).exit_code == 0
    batch = (
        open_store(db_url)
        .connect()
        .exec_driver_sql("SELECT id, provider_batch_id FROM batch")
        .one()
    )
    out = invoke("status", "1", "--db", db_url).stdout
    assert f"batch {batch.id} is {batch.provider_batch_id} at openai\n" in out
    wide = invoke("status", "1", "--wide", "--db", db_url).stdout
    assert batch.provider_batch_id in wide and "provider batch id" in wide
