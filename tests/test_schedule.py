"""Schedules kept in the job store: triggers, add/pause/resume/remove, persistence, schema."""

from __future__ import annotations

import pickle
from datetime import timedelta

import pytest
import sqlalchemy as sa
from schedule_fixtures import Clock, utc, write_spec

from batcher.errors import UsageError
from batcher.schedule.schedules import Schedules, make_trigger, parse_every
from batcher.store import open_store
from batcher.store.models import TABLES


@pytest.fixture
def spec(tmp_path):
    return write_spec(tmp_path / "jobs")


def test_parse_every():
    assert parse_every("6h") == timedelta(hours=6)
    assert parse_every("1h30m") == timedelta(minutes=90)
    assert parse_every("1d") == timedelta(days=1)
    assert parse_every("90s") == timedelta(seconds=90)
    for bad in ("", "6", "h", "6 hours", "1h-5m", "0s"):
        with pytest.raises(UsageError, match="--every"):
            parse_every(bad)


def test_durations_read_and_print_the_same_way():
    from batcher.schedule.schedules import format_duration

    for text in ("45s", "30m", "6h", "1h30m", "1d", "1d2h3m4s"):
        assert format_duration(parse_every(text)) == text


def test_crontab_weekdays_mean_what_crontab_means():
    # 2026-01-05 is a Monday. In crontab 1-5 is Monday..Friday and 0 (or 7) is Sunday;
    # APScheduler 3 would read the raw numbers with 0 = Monday.
    monday = utc(2026, 1, 5, 0, 0)
    weekdays = make_trigger(cron="0 2 * * 1-5", every=None, tz="UTC", now=monday)
    fires, when = [], None
    for _ in range(6):
        when = weekdays.get_next_fire_time(when, when or monday)
        fires.append(when.strftime("%a"))
        when += timedelta(seconds=1)
    assert fires == ["Mon", "Tue", "Wed", "Thu", "Fri", "Mon"]
    for expr in ("0 2 * * 0", "0 2 * * 7"):
        sunday = make_trigger(cron=expr, every=None, tz="UTC", now=monday)
        assert sunday.get_next_fire_time(None, monday) == utc(2026, 1, 11, 2, 0)
    split = make_trigger(cron="0 2 * * 0-2", every=None, tz="UTC", now=monday)
    assert split.get_next_fire_time(None, utc(2026, 1, 7)) == utc(2026, 1, 11, 2, 0)  # Wed->Sun


def test_bad_trigger_options_name_the_value_and_fix():
    now = utc(2026, 1, 1)
    with pytest.raises(UsageError, match=r'--cron "0 2 \* \*": 4 fields'):
        make_trigger(cron="0 2 * *", every=None, tz="UTC", now=now)
    with pytest.raises(UsageError, match=r'--cron "0 25 \* \* \*"'):
        make_trigger(cron="0 25 * * *", every=None, tz="UTC", now=now)
    with pytest.raises(UsageError, match="--tz 'Mars/Olympus'"):
        make_trigger(cron="0 2 * * *", every=None, tz="Mars/Olympus", now=now)
    with pytest.raises(UsageError, match="exactly one of --cron"):
        make_trigger(cron="0 2 * * *", every="6h", tz="UTC", now=now)


def test_cron_in_a_time_zone(db_url, spec):
    clock = Clock(utc(2026, 7, 1, 12, 0))  # summer: Berlin is UTC+2
    schedules = Schedules(open_store(db_url), clock=clock)
    info = schedules.add(
        "berlin", job=str(spec), input="in/*.jsonl", cron="0 2 * * *", tz="Europe/Berlin"
    )
    assert info.next_fire == utc(2026, 7, 2, 0, 0)
    assert info.trigger == "0 2 * * * Europe/Berlin"
    schedules.close()


def test_schedules_persist_and_change_in_the_database(db_url, spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clock = Clock(utc(2026, 1, 1, 0, 0))
    first = Schedules(open_store(db_url), clock=clock)
    first.add("nightly", job=str(spec), input="in/*.jsonl", cron="0 2 * * *")
    first.add("sweep", job=str(spec), input=str(tmp_path / "drop/*.jsonl"), every="6h",
              grace=timedelta(minutes=30), reprocess=True)  # fmt: skip
    first.close()

    # A new process: a new engine and a new Schedules object on the same database.
    again = Schedules(open_store(db_url), clock=clock)
    by_name = {s.name: s for s in again.list()}
    assert sorted(by_name) == ["nightly", "sweep"]
    assert by_name["nightly"].next_fire == utc(2026, 1, 1, 2, 0)
    assert by_name["nightly"].input == str(tmp_path / "in/*.jsonl")  # anchored at add time
    assert by_name["nightly"].job == str(spec.resolve())
    assert by_name["sweep"].next_fire == utc(2026, 1, 1, 6, 0)
    assert (by_name["sweep"].grace_s, by_name["sweep"].reprocess) == (1800, True)

    again.pause("nightly")
    assert Schedules(open_store(db_url), clock=clock).get("nightly").paused
    assert [j.id for j in again.due(utc(2026, 1, 9))] == ["sweep"]  # paused: never due

    clock.set(utc(2026, 1, 3, 5, 0))
    resumed = again.resume("nightly")
    assert resumed.next_fire == utc(2026, 1, 4, 2, 0)  # from now on; paused days are skipped

    again.remove("sweep")
    assert [s.name for s in Schedules(open_store(db_url), clock=clock).list()] == ["nightly"]
    again.close()


def test_the_job_store_keeps_only_plain_values(sqlite_url, spec):
    db = open_store(sqlite_url)
    schedules = Schedules(db, clock=Clock(utc(2026, 1, 1)))
    schedules.add("nightly", job=str(spec), input="in/*.jsonl", cron="0 2 * * *")
    schedules.close()
    with db.connect() as conn:
        blob = conn.execute(sa.text("SELECT job_state FROM apscheduler_jobs")).scalar_one()
    state = pickle.loads(blob)
    assert state["func"] == "batcher.schedule.firing:fire"
    assert state["args"] == ("nightly", f"sqlite:///{db.url.database}")
    assert set(state["kwargs"]) == {"job", "input", "reprocess"}
    assert (state["coalesce"], state["max_instances"]) == (True, 1)


def test_url_in_the_job_store_has_no_password(pg_url, spec):
    from batcher.schedule.schedules import storable_url

    db = open_store(pg_url)
    with_password = db.url.set(password="s3cret")
    assert "s3cret" not in storable_url(sa.create_engine(with_password))


def test_add_refuses_bad_names_duplicates_and_broken_specs(sqlite_url, spec, tmp_path):
    schedules = Schedules(open_store(sqlite_url), clock=Clock(utc(2026, 1, 1)))
    schedules.add("nightly", job=str(spec), input="in/*.jsonl", cron="0 2 * * *")
    with pytest.raises(UsageError, match="a schedule named 'nightly' exists"):
        schedules.add("nightly", job=str(spec), input="x", cron="0 3 * * *")
    with pytest.raises(UsageError, match="schedule name 'no spaces'"):
        schedules.add("no spaces", job=str(spec), input="x", cron="0 3 * * *")
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "x"\n')
    with pytest.raises(UsageError, match="broken.toml: tiers"):
        schedules.add("other", job=str(broken), input="x", cron="0 3 * * *")
    with pytest.raises(UsageError, match="no schedule named 'ghost'"):
        schedules.pause("ghost")
    with pytest.raises(UsageError, match="no schedule named 'ghost'"):
        schedules.remove("ghost")
    schedules.close()


def test_firing_table_matches_its_model(db_url):
    db = open_store(db_url)
    columns = {c["name"]: c for c in sa.inspect(db).get_columns("schedule_firing")}
    model = TABLES["schedule_firing"]
    assert set(columns) == {c.name for c in model.columns}
    for column in model.columns:
        assert columns[column.name]["nullable"] == column.nullable, column.name
    uniques = sa.inspect(db).get_unique_constraints("schedule_firing")
    assert [u["column_names"] for u in uniques] == [
        ["schedule_name", "scheduled_for", "input_sha256"]
    ]
