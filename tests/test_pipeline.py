"""The pipelined run: batches are submitted by a pool while the loop polls and reconciles;
a refused plan still sends nothing."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from cli_helpers import env_sandbox_fixture, invoke  # noqa: F401 - fixtures
from engine_helpers import (  # noqa: F401 - fixtures
    POLL,
    SPEC,
    attempts,
    batches,
    check_accounted,
    clients_fixture,
    db_fixture,
    sandbox_fixture,
    served_fixture,
)

from batcher.plan.onepass import lay_out_kept, layout_pending
from batcher.plan.planner import ensure_planned
from batcher.run import engine
from batcher.run.progress import QuietReporter
from batcher.spec import load_spec


def tiered_job(tmp_path, tiers: list[str], extra: str = "", tables: str = ""):
    """A job of one ticket per entry of `tiers`, each sent to that tier; `extra` top-level
    keys and `tables` after the spec's."""
    folder = tmp_path / "job"
    folder.mkdir()
    with open(folder / "input.jsonl", "wb") as f:
        for i, tier in enumerate(tiers):
            ticket = {"id": f"t{i}", "prompt": f"Ticket {i}: I cannot log in.", "tier": tier}
            f.write(orjson.dumps(ticket) + b"\n")
    path = folder / "job.toml"
    spec = SPEC.format(classifier="fixed:nano")
    path.write_text('input = "input.jsonl"\n' + extra + spec + tables)
    return load_spec(path)


class SeesStatuses(QuietReporter):
    """Records every batch's status in the database when an OpenAI batch was reconciled."""

    def __init__(self, db, run_id: int, then=None) -> None:
        self.db, self.run_id, self.then, self.seen = db, run_id, then, None

    def batch(self, batch_id, label, done, total, status):
        if self.seen is None and label.startswith("openai:"):
            statuses = {b["provider"]: b["status"] for b in batches(self.db, self.run_id)}
            if statuses["openai"] == "reconciled":
                self.seen = statuses
                if self.then:
                    self.then()


def test_a_batch_is_reconciled_while_another_is_still_being_created(db, sandbox, clients, tmp_path):
    # Anthropic answers the create with 429 (wait and ask again) until the OpenAI batch,
    # created at the same time, has ended and been reconciled: in a relay the loop would
    # sit in the Anthropic create, and reconcile nothing meanwhile.
    spec = tiered_job(tmp_path, ["nano", "frontier"] * 3)
    run_id = engine.start_run(db, spec, spec.input_file())
    sandbox.configure(faults="http429:count=10:route=create:provider=anthropic:retry_after=0.3")
    reporter = SeesStatuses(db, run_id, then=lambda: sandbox.configure(clear_faults=True))

    outcome = engine.drive_run(db, run_id, clients=clients, poll=POLL, reporter=reporter)

    assert reporter.seen == {"openai": "reconciled", "anthropic": "submitting"}
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    check_accounted(db, run_id, sandbox, 6)
    assert sandbox.stats()["batches_created"] == {
        "openai": 1, "anthropic": 1, "google": 0, "xai": 0, "deepseek": 0,
    }  # fmt: skip


def test_a_batch_is_reconciled_while_another_of_the_run_still_runs(db, sandbox, clients, tmp_path):
    spec = tiered_job(tmp_path, ["nano", "frontier"] * 3)
    run_id = engine.start_run(db, spec, spec.input_file())
    sandbox.configure(faults="slow:count=1:factor=1000:provider=anthropic")
    reporter = SeesStatuses(db, run_id, then=lambda: sandbox.advance_clock(3600))

    outcome = engine.drive_run(db, run_id, clients=clients, poll=POLL, reporter=reporter)

    assert reporter.seen == {"openai": "reconciled", "anthropic": "submitted"}
    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    check_accounted(db, run_id, sandbox, 6)


def test_a_refused_budget_submits_and_uploads_nothing(db, sandbox, clients, tmp_path):
    spec = tiered_job(tmp_path, ["nano", "mid", "frontier"] * 4, extra="max_usd = 0.000001\n")
    with pytest.raises(engine.BudgetExceeded):
        engine.start_run(db, spec, spec.input_file())
    (run,) = engine.run_status(db)
    assert run["status"] == "failed"
    # resuming re-checks the estimate before anything goes out, pool or not
    with pytest.raises(engine.BudgetExceeded):
        engine.resume_run(db, run["run"], clients=clients, poll=POLL)
    assert not any(sandbox.stats()["batches_created"].values())
    assert not sandbox.state.files
    assert {b["status"] for b in batches(db, run["run"])} == {"planned"}


def test_batch_files_go_once_reconciled(db, sandbox, clients, tmp_path, state_dir):
    spec = tiered_job(tmp_path, ["nano", "frontier"] * 3)
    run_id = engine.start_run(db, spec, spec.input_file())
    paths = [Path(b["path"]) for b in batches(db, run_id)]
    assert len(paths) == 2 and all(p.exists() for p in paths)
    outcome = engine.drive_run(db, run_id, clients=clients, poll=POLL)
    assert outcome.status == "completed", outcome.message
    assert not any(p.exists() for p in paths)
    assert not (state_dir / "batches" / f"run-{run_id}").exists()


def test_keep_files_keeps_them_for_audit(db, sandbox, clients, tmp_path):
    spec = tiered_job(tmp_path, ["nano", "frontier"], tables="[batching]\nkeep_files = true\n")
    run_id = engine.start_run(db, spec, spec.input_file())
    outcome = engine.drive_run(db, run_id, clients=clients, poll=POLL)
    assert outcome.status == "completed", outcome.message
    kept = [Path(b["path"]) for b in batches(db, run_id)]
    assert len(kept) == 2 and all(p.stat().st_size > 0 for p in kept)


def test_keep_files_flag_of_run(tmp_path, state_dir, env_sandbox):
    job = tiered_job(tmp_path, ["nano"])
    db_url = f"sqlite:///{tmp_path / 'cli.db'}"
    kept = invoke("run", str(job.path), "--sandbox", "--db", db_url, "--keep-files", "--json")
    assert kept.exit_code == 0, kept.output
    gone = invoke("run", str(job.path), "--sandbox", "--db", db_url, "--no-reuse", "--json")
    assert gone.exit_code == 0, gone.output
    assert [p.parent.name for p in (state_dir / "batches").glob("*/*")] == ["run-1"]


def test_a_bulk_page_cache_goes_with_its_connection_back_to_the_pool(tmp_path):
    from batcher.store import open_store
    from batcher.store.bulk import tune_for_bulk

    db = open_store(f"sqlite:///{tmp_path / 'cache.db'}")
    with db.begin() as conn:
        tune_for_bulk(conn)
        raised = conn.exec_driver_sql("PRAGMA cache_size").scalar()
        first = conn.connection.dbapi_connection
    with db.connect() as conn:  # the pool's one connection again, with the default cache
        assert conn.connection.dbapi_connection is first
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -2000 != raised


# --- a deferred plan: batches laid out while the first ones go out ----------------------

SMALL_BATCHES = "[batching]\nopenai_max_lines = 2\n"


def test_a_deferred_plan_is_laid_out_by_the_drive_and_its_spools_go(
    db, sandbox, clients, tmp_path, state_dir
):
    spec = tiered_job(tmp_path, ["nano"] * 7, tables=SMALL_BATCHES)
    run_id = engine.start_run(db, spec, spec.input_file(), defer_layout=True)
    assert batches(db, run_id) == [] and layout_pending(run_id)  # nothing written yet

    outcome = engine.drive_run(db, run_id, clients=clients, poll=POLL)

    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    check_accounted(db, run_id, sandbox, 7)
    assert sorted(b["n_requests"] for b in batches(db, run_id)) == [1, 2, 2, 2]
    assert sandbox.stats()["batches_created"]["openai"] == 4
    assert not (state_dir / "batches" / f"run-{run_id}").exists()  # spools and files gone


def test_each_laid_out_batch_is_committed_before_the_next_is_written(db, tmp_path):
    spec = tiered_job(tmp_path, ["nano"] * 6, tables=SMALL_BATCHES)
    run_id = engine.start_run(db, spec, spec.input_file(), defer_layout=True)
    seen = []

    def on_batch(info):  # what another connection sees of the run at each batch
        seen.append(sorted((b["id"], b["status"]) for b in batches(db, run_id)))

    layout = lay_out_kept(db, run_id, spec, on_batch)

    ids = [b.id for b in layout.batches]
    assert seen == [sorted((i, "planned") for i in ids[: n + 1]) for n in range(3)]
    assert not layout_pending(run_id)


def test_a_layout_cut_short_is_finished_from_the_database_once(db, tmp_path):
    # As a crash or a stop after the first batch: the spools would lay out its items again,
    # so the rest comes from the items that have no attempt yet.
    spec = tiered_job(tmp_path, ["nano"] * 5, tables=SMALL_BATCHES)
    run_id = engine.start_run(db, spec, spec.input_file(), defer_layout=True)

    def stop(info):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lay_out_kept(db, run_id, spec, stop)
    assert len(batches(db, run_id)) == 1 and layout_pending(run_id)

    assert ensure_planned(db, run_id, spec)
    laid_out = attempts(db, run_id)
    assert sorted(a["item_id"] for a in laid_out) == list(range(1, 6))  # each item once
    assert all(a["batch_id"] for a in laid_out) and not layout_pending(run_id)
    assert sorted(b["n_requests"] for b in batches(db, run_id)) == [1, 2, 2]


def test_a_refused_deferred_plan_is_kept_laid_out_and_sends_nothing(db, sandbox, tmp_path):
    spec = tiered_job(tmp_path, ["nano", "frontier"] * 2, extra="max_usd = 0.000001\n")
    with pytest.raises(engine.BudgetExceeded):
        engine.start_run(db, spec, spec.input_file(), defer_layout=True)
    (run,) = engine.run_status(db)
    assert run["status"] == "failed"
    assert {b["status"] for b in batches(db, run["run"])} == {"planned"}
    assert not layout_pending(run["run"])
    assert not any(sandbox.stats()["batches_created"].values()) and not sandbox.state.files


def write_tickets(path: Path, names: list[str]) -> None:
    with open(path, "wb") as f:
        for name in names:
            f.write(
                orjson.dumps({"id": name, "prompt": f"Ticket {name}: I cannot log in."}) + b"\n"
            )


def test_a_pipelined_layout_reuses_earlier_answers_batch_by_batch(db, sandbox, clients, tmp_path):
    spec = tiered_job(tmp_path, ["nano"] * 4, tables=SMALL_BATCHES)
    write_tickets(spec.input_file(), ["t0", "t1", "t2", "t3"])
    first = engine.start_run(db, spec, spec.input_file(), defer_layout=True)
    assert engine.drive_run(db, first, clients=clients, poll=POLL).status == "completed"
    # a new ticket between known ones: its batch of two is abandoned, the new one goes alone
    write_tickets(spec.input_file(), ["t0", "new", "t1", "t2", "t3"])
    again = engine.start_run(db, spec, spec.input_file(), defer_layout=True)

    outcome = engine.drive_run(db, again, clients=clients, poll=POLL)

    assert outcome.status == "completed" and outcome.exit_code == 0, outcome.message
    assert outcome.items == {"succeeded": 5} and outcome.cost_pusd > 0
    assert sandbox.stats()["batches_created"]["openai"] == 2 + 1
    ours = {a["custom_id"]: a["status"] for a in attempts(db, again)}
    (sent,) = [cid for cid, status in ours.items() if status != "reused"]
    sent_now = {c: n for c, n in sandbox.stats()["submissions"]["openai"].items() if c in ours}
    assert sent_now == {sent: 1}  # no reused request went out, the new one once
