"""The scheduler with a clock the test moves: cron firing, restarts, no overlap, coalescing
after downtime, grace, skipping processed inputs, failures recorded, claims across processes.

The clock drives `Scheduler.tick(now)`, which reads due jobs from the real job store and fire
times from the real triggers; firings run on the scheduler's real thread pool against the
real database. The run engine is stood in for by `LedgerDriver` at the firing's seam.
"""

from __future__ import annotations

import logging
import threading

import pytest
import sqlalchemy as sa
from schedule_fixtures import Clock, LedgerDriver, utc, write_input, write_spec

from batcher.schedule.daemon import Scheduler, run_now
from batcher.schedule.firing import Outcome
from batcher.store import open_store
from batcher.store.models import TABLES


@pytest.fixture
def spec(tmp_path):
    return write_spec(tmp_path / "jobs")


@pytest.fixture
def inbox(tmp_path):
    return tmp_path / "in"


def firings(db, name="nightly"):
    t = TABLES["schedule_firing"]
    with db.connect() as conn:
        return conn.execute(
            sa.select(t.c.input_path, t.c.run_id, t.c.outcome, t.c.error, t.c.scheduled_for)
            .where(t.c.schedule_name == name)
            .order_by(t.c.id)
        ).all()


def runs(db):
    run = TABLES["run"]
    with db.connect() as conn:
        return conn.execute(
            sa.select(run.c.id, run.c.status, run.c.schedule_name).order_by(run.c.id)
        ).all()


def make(db_url, clock, driver=None, **kw):
    return Scheduler(open_store(db_url), driver=driver or LedgerDriver(), clock=clock, **kw)


def tick_and_wait(scheduler, when=None):
    if when is not None:
        scheduler.clock.set(when)
    scheduler.tick()
    scheduler.wait_idle(timeout=30)


def test_cron_schedule_fires_at_its_time(db_url, spec, inbox):
    write_input(inbox / "day1.jsonl", ["one", "two"])
    clock = Clock(utc(2026, 3, 1, 0, 0))
    scheduler = make(db_url, clock)
    scheduler.schedules.add("nightly", job=str(spec), input=f"{inbox}/*.jsonl", cron="0 2 * * *")

    tick_and_wait(scheduler, utc(2026, 3, 1, 1, 59))
    assert scheduler.driver.calls == [] and firings(scheduler.db) == []

    tick_and_wait(scheduler, utc(2026, 3, 1, 2, 0))
    assert [c for c, _ in scheduler.driver.calls] == ["start", "drive"]
    [(path, run_id, outcome, error, scheduled_for)] = firings(scheduler.db)
    assert (outcome, error) == ("completed", None)
    assert path == str(inbox / "day1.jsonl")
    assert runs(scheduler.db) == [(run_id, "completed", "nightly")]
    info = scheduler.schedules.get("nightly")
    assert info.next_fire == utc(2026, 3, 2, 2, 0)
    assert (info.last_outcome, info.last_run_id) == ("completed", run_id)
    scheduler.close()


def test_interval_schedule_fires_every_interval(sqlite_url, spec, inbox):
    clock = Clock(utc(2026, 3, 1, 0, 0))
    scheduler = make(sqlite_url, clock)
    scheduler.schedules.add("nightly", job=str(spec), input=f"{inbox}/*.jsonl", every="6h")
    for hour, name in ((6, "a"), (12, "b"), (18, "c")):
        write_input(inbox / f"{name}.jsonl", [name])
        clock.set(utc(2026, 3, 1, hour - 1, 59))
        assert scheduler.tick() == 60.0  # seconds until the fire time
        tick_and_wait(scheduler, utc(2026, 3, 1, hour, 0))
    assert [arg for c, arg in scheduler.driver.calls if c == "start"] == [
        "a.jsonl",
        "b.jsonl",
        "c.jsonl",
    ]
    scheduler.close()


def test_schedules_survive_a_scheduler_restart(db_url, spec, inbox):
    write_input(inbox / "x.jsonl", ["hello"])
    clock = Clock(utc(2026, 3, 1, 0, 0))
    first = make(db_url, clock)
    first.schedules.add("nightly", job=str(spec), input=f"{inbox}/*.jsonl", cron="0 2 * * *")
    first.close()

    # A new scheduler on a new engine: only the database connects them.
    second = make(db_url, clock)
    tick_and_wait(second, utc(2026, 3, 1, 2, 0))
    assert [o for *_, o, _, _ in firings(second.db)] == ["completed"]
    assert second.schedules.get("nightly").next_fire == utc(2026, 3, 2, 2, 0)
    second.close()


def test_no_overlapping_firings_of_one_schedule(db_url, spec, inbox, caplog):
    write_input(inbox / "big.jsonl", ["slow"])
    gate = threading.Event()
    clock = Clock(utc(2026, 3, 1, 0, 0))
    scheduler = make(db_url, clock, LedgerDriver(gate=gate))
    scheduler.schedules.add("nightly", job=str(spec), input=f"{inbox}/*.jsonl", every="1h")

    clock.set(utc(2026, 3, 1, 1, 0))
    scheduler.tick()
    assert scheduler.driver.driving.wait(10)
    write_input(inbox / "next.jsonl", ["arrived meanwhile"])
    with caplog.at_level(logging.WARNING, logger="batcher.schedule"):
        clock.set(utc(2026, 3, 1, 2, 0))  # the next fire time, while the first still works
        scheduler.tick()
    assert "previous firing still works (no overlap)" in caplog.text
    assert scheduler.driver.count("start") == 1
    assert scheduler.schedules.get("nightly").next_fire == utc(2026, 3, 1, 3, 0)

    gate.set()
    scheduler.wait_idle(timeout=30)
    tick_and_wait(scheduler, utc(2026, 3, 1, 3, 0))  # the next firing takes the new file
    assert [arg for c, arg in scheduler.driver.calls if c == "start"] == [
        "big.jsonl",
        "next.jsonl",
    ]
    assert [s for _, s, _ in runs(scheduler.db)] == ["completed", "completed"]
    scheduler.close()


def test_stopped_run_is_resumed_by_the_next_start_not_started_again(db_url, spec, inbox):
    write_input(inbox / "x.jsonl", ["hello"])
    clock = Clock(utc(2026, 3, 1, 0, 0))
    first = make(db_url, clock, LedgerDriver(gate=threading.Event()))
    first.schedules.add("nightly", job=str(spec), input=f"{inbox}/*.jsonl", cron="0 2 * * *")
    clock.set(utc(2026, 3, 1, 2, 0))
    first.tick()
    assert first.driver.driving.wait(10)
    first.request_stop()  # what SIGTERM does
    first.close()
    [(_, run_id, outcome, _, _)] = firings(first.db)
    assert outcome == "stopped"
    assert runs(first.db) == [(run_id, "running", "nightly")]

    second = make(db_url, clock)
    tick_and_wait(second, utc(2026, 3, 2, 2, 0))
    assert second.driver.calls == [("resume", run_id)]  # same input: no second run
    assert runs(second.db) == [(run_id, "completed", "nightly")]
    assert [o for *_, o, _, _ in firings(second.db)] == ["stopped", "completed"]
    second.close()


def test_two_schedulers_on_one_database_never_start_the_same_input(db_url, spec, inbox):
    write_input(inbox / "x.jsonl", ["hello"])
    clock = Clock(utc(2026, 3, 1, 0, 0))
    gate = threading.Event()
    one = make(db_url, clock, LedgerDriver(gate=gate))
    two = make(db_url, clock, LedgerDriver(gate=gate))
    one.schedules.add("nightly", job=str(spec), input=f"{inbox}/*.jsonl", cron="0 2 * * *")
    clock.set(utc(2026, 3, 1, 2, 0))
    due_for_both = [one.schedules.due(clock()), two.schedules.due(clock())]
    assert [len(d) for d in due_for_both] == [1, 1]  # both see the fire time
    for scheduler, due in zip((one, two), due_for_both, strict=True):
        scheduler._process(due[0], clock())
    gate.set()
    one.wait_idle(30)
    two.wait_idle(30)
    assert one.driver.count("start") + two.driver.count("start") == 1
    assert len(runs(one.db)) == 1
    one.close()
    two.close()


def test_missed_fire_times_coalesce_into_one_firing(db_url, spec, inbox, caplog):
    write_input(inbox / "x.jsonl", ["hello"])
    clock = Clock(utc(2026, 3, 1, 0, 0))
    scheduler = make(db_url, clock)
    scheduler.schedules.add("nightly", job=str(spec), input=f"{inbox}/*.jsonl", every="1h")
    scheduler.close()  # down from 00:00 ...

    back = make(db_url, clock)  # ... back at 05:30: fire times 01:00 .. 05:00 were missed
    with caplog.at_level(logging.INFO, logger="batcher.schedule"):
        tick_and_wait(back, utc(2026, 3, 1, 5, 30))
    assert "5 missed fire times coalesced into one" in caplog.text
    assert back.driver.count("start") == 1
    [(_, _, outcome, _, scheduled_for)] = firings(back.db)
    assert outcome == "completed"
    assert scheduled_for.replace(tzinfo=None) == utc(2026, 3, 1, 5, 0).replace(tzinfo=None)
    assert back.schedules.get("nightly").next_fire == utc(2026, 3, 1, 6, 0)
    back.close()


def test_fire_time_older_than_the_grace_period_is_recorded_as_missed(db_url, spec, inbox):
    from datetime import timedelta

    write_input(inbox / "x.jsonl", ["hello"])
    clock = Clock(utc(2026, 3, 1, 0, 0))
    scheduler = make(db_url, clock)
    scheduler.schedules.add("nightly", job=str(spec), input=f"{inbox}/*.jsonl",
                            cron="0 2 * * *", grace=timedelta(hours=1))  # fmt: skip
    tick_and_wait(scheduler, utc(2026, 3, 1, 9, 0))  # back seven hours after 02:00
    assert scheduler.driver.calls == []
    [(_, run_id, outcome, error, _)] = firings(scheduler.db)
    assert (run_id, outcome) == (None, "missed")
    assert "missed by 7:00:00 (grace 3600s)" in error
    assert scheduler.schedules.get("nightly").next_fire == utc(2026, 3, 2, 2, 0)
    tick_and_wait(scheduler, utc(2026, 3, 2, 2, 0))
    assert scheduler.driver.count("start") == 1
    scheduler.close()


def test_already_processed_inputs_are_skipped_by_content(db_url, spec, inbox, caplog):
    write_input(inbox / "a.jsonl", ["alpha"])
    (inbox / "notes.txt").write_text("not an input")
    clock = Clock(utc(2026, 3, 1, 0, 0))
    scheduler = make(db_url, clock)
    scheduler.schedules.add("nightly", job=str(spec), input=str(inbox), cron="0 2 * * *")
    tick_and_wait(scheduler, utc(2026, 3, 1, 2, 0))
    assert scheduler.driver.count("start") == 1

    write_input(inbox / "a-copy.jsonl", ["alpha"])  # same bytes, new name: same content
    write_input(inbox / "b.jsonl", ["beta"])
    with caplog.at_level(logging.INFO, logger="batcher.schedule"):
        tick_and_wait(scheduler, utc(2026, 3, 2, 2, 0))
    assert [arg for c, arg in scheduler.driver.calls if c == "start"] == ["a.jsonl", "b.jsonl"]
    assert "a-copy.jsonl skipped: run 1 of this job completed the same content" in caplog.text

    tick_and_wait(scheduler, utc(2026, 3, 3, 2, 0))  # nothing new at all
    assert scheduler.driver.count("start") == 2
    assert firings(scheduler.db)[-1][2] == "nothing_new"
    assert scheduler.schedules.get("nightly").last_outcome == "nothing_new"

    results = run_now(scheduler.db, "nightly", reprocess=True, driver=scheduler.driver)
    assert sorted(r.input_path.rsplit("/", 1)[1] for r in results) == ["a-copy.jsonl", "b.jsonl"]
    assert {r.outcome for r in results} == {Outcome.COMPLETED}  # one run per distinct content
    scheduler.close()


def test_failures_are_recorded_with_their_reason(db_url, spec, inbox, tmp_path):
    clock = Clock(utc(2026, 3, 1, 0, 0))
    scheduler = make(db_url, clock, LedgerDriver(fail="budget: estimate $9.10 > max_usd $5"))
    scheduler.schedules.add("nightly", job=str(spec), input=f"{inbox}/*.jsonl", cron="0 2 * * *")

    tick_and_wait(scheduler, utc(2026, 3, 1, 2, 0))  # nothing matches yet
    info = scheduler.schedules.get("nightly")
    assert (info.last_outcome, info.last_error) == ("no_input", f"no file matches {inbox}/*.jsonl")

    (inbox / "bad.jsonl").parent.mkdir(exist_ok=True)
    (inbox / "bad.jsonl").write_text('{"prompt": "fine"}\n{not json\n')
    tick_and_wait(scheduler, utc(2026, 3, 2, 2, 0))
    info = scheduler.schedules.get("nightly")
    assert info.last_outcome == "failed" and "bad.jsonl: 1 invalid line" in info.last_error
    assert runs(scheduler.db) == []  # refused whole by ingest

    (inbox / "bad.jsonl").unlink()
    write_input(inbox / "good.jsonl", ["fine"])
    tick_and_wait(scheduler, utc(2026, 3, 3, 2, 0))
    info = scheduler.schedules.get("nightly")
    assert (info.last_outcome, info.last_error) == ("failed", "budget: estimate $9.10 > max_usd $5")
    [(run_id, status, _)] = runs(scheduler.db)
    assert status == "failed"

    # A failed run is open: the next firing resumes it rather than starting it again.
    scheduler.driver.fail = None
    tick_and_wait(scheduler, utc(2026, 3, 4, 2, 0))
    assert scheduler.driver.calls[-1] == ("resume", run_id)
    assert runs(scheduler.db) == [(run_id, "completed", "nightly")]

    spec.write_text("not toml [")
    tick_and_wait(scheduler, utc(2026, 3, 5, 2, 0))
    info = scheduler.schedules.get("nightly")
    assert info.last_outcome == "failed" and "not valid TOML" in info.last_error
    scheduler.close()


def test_one_log_line_per_firing_and_input(sqlite_url, spec, inbox, caplog):
    write_input(inbox / "a.jsonl", ["alpha"])
    clock = Clock(utc(2026, 3, 1, 0, 0))
    scheduler = make(sqlite_url, clock)
    scheduler.schedules.add("nightly", job=str(spec), input=f"{inbox}/*.jsonl", cron="0 2 * * *")
    with caplog.at_level(logging.INFO, logger="batcher.schedule"):
        tick_and_wait(scheduler, utc(2026, 3, 1, 2, 0))
    lines = [r.getMessage() for r in caplog.records if "outcome=" in r.getMessage()]
    assert lines == [
        f"schedule=nightly input={inbox / 'a.jsonl'} run=1 outcome=completed items=1 succeeded=1"
    ]
    scheduler.close()


def test_a_run_refused_at_start_is_recorded_and_resumed_next_time(db_url, spec, inbox):
    write_input(inbox / "a.jsonl", ["alpha"])
    clock = Clock(utc(2026, 3, 1, 0, 0))
    scheduler = make(db_url, clock, LedgerDriver(refuse_start="over the budget of $5.00"))
    scheduler.schedules.add("nightly", job=str(spec), input=f"{inbox}/*.jsonl", cron="0 2 * * *")
    tick_and_wait(scheduler, utc(2026, 3, 1, 2, 0))
    [(_, run_id, outcome, error, _)] = firings(scheduler.db)
    assert (outcome, error) == ("failed", "over the budget of $5.00")
    assert runs(scheduler.db) == [(run_id, "failed", "nightly")]

    scheduler.driver.refuse_start = None
    tick_and_wait(scheduler, utc(2026, 3, 2, 2, 0))
    assert scheduler.driver.calls[-1] == ("resume", run_id)
    assert runs(scheduler.db) == [(run_id, "completed", "nightly")]
    scheduler.close()


def test_fire_times_are_recorded_in_utc(sqlite_url, spec, inbox):
    write_input(inbox / "a.jsonl", ["alpha"])
    clock = Clock(utc(2026, 3, 1, 0, 0))
    scheduler = make(sqlite_url, clock)
    scheduler.schedules.add("nightly", job=str(spec), input=f"{inbox}/*.jsonl",
                            cron="0 2 * * *", tz="Europe/Berlin")  # fmt: skip
    tick_and_wait(scheduler, utc(2026, 3, 1, 1, 0))  # 02:00 in Berlin (UTC+1 in March)
    [(_, _, outcome, _, scheduled_for)] = firings(scheduler.db)
    assert outcome == "completed"
    assert scheduled_for.replace(tzinfo=None) == utc(2026, 3, 1, 1, 0).replace(tzinfo=None)
    scheduler.close()
