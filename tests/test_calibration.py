"""The calibration sample: its share, its seeding and stratification, and a run with it."""

from __future__ import annotations

from engine_helpers import (  # noqa: F401 - fixtures
    POLL,
    SPEC,
    attempts,
    batches,
    check_accounted,
    clients_fixture,
    db_fixture,
    items_by_status,
    sandbox_fixture,
    served_fixture,
    write_job,
)

from batcher.plan.calibration import calibration_sample
from batcher.report.build import build_report
from batcher.run import engine
from batcher.spec import load_spec


def _rows(n: int, reasons: dict[str, int]) -> list[tuple[int, str, str]]:
    rows, i = [], 0
    for reason, count in reasons.items():
        for _ in range(count):
            rows.append((i, f"id-{i}", reason))
            i += 1
    return rows[:n] if n else rows


def test_the_sample_has_its_share_of_every_route_reason():
    rows = _rows(0, {"rule:0": 60, "classifier:heuristic:nano": 40})
    picked = calibration_sample(rows, 0.1, seed=3)
    assert len(picked) == 10
    reasons = [rows[i][2] for i in picked]
    assert reasons.count("rule:0") == 6 and reasons.count("classifier:heuristic:nano") == 4
    # largest remainder: 5% of 30 + 5% of 10 = 2 items, to the larger remainder first
    small = _rows(0, {"a": 30, "b": 10})
    assert len(calibration_sample(small, 0.05, seed=0)) == 2
    assert calibration_sample(rows, 0.0, seed=3) == []
    assert len(calibration_sample(rows, 1.0, seed=3)) == 100


def test_the_sample_depends_on_the_seed_and_the_ids_only():
    rows = _rows(0, {"r": 200})
    first = calibration_sample(rows, 0.05, seed=1)
    assert calibration_sample(list(reversed(rows)), 0.05, seed=1) == first
    assert calibration_sample(rows, 0.05, seed=2) != first
    # the same input ids under other item ids (another run) draw the same items
    shifted = [(item_id + 1000, custom, r) for item_id, custom, r in rows]
    assert [i - 1000 for i in calibration_sample(shifted, 0.05, seed=1)] == first


def test_a_run_with_calibration_keeps_the_first_tier_answers(db, sandbox, clients, tmp_path):
    calibrated = SPEC.replace(
        'classifier = "{classifier}"\n',
        'classifier = "{classifier}"\ncalibrate = 0.25\ncalibrate_seed = 7\n',
    )
    spec = load_spec(write_job(tmp_path, 20, "fixed:nano", spec=calibrated))
    run_id = engine.start_run(db, spec, spec.input_file())
    assert {(b["round"], b["tier"]) for b in batches(db, run_id)} == {(1, "nano"), (1, "frontier")}
    outcome = engine.drive_run(db, run_id, clients=clients, poll=POLL)
    assert outcome.status == "completed"
    check_accounted(db, run_id, sandbox, 20)
    rows = attempts(db, run_id)
    sample = [a for a in rows if a["role"] == "calibration"]
    assert len(sample) == 5 and {a["tier"] for a in sample} == {"frontier"}
    finals = {a["id"]: a for a in rows}
    with db.connect() as conn:
        ends = conn.exec_driver_sql("SELECT final_attempt_id FROM item").scalars().all()
    assert {finals[i]["role"] for i in ends} == {"primary"}  # the frontier answer is evidence

    report = build_report(db, [run_id])  # check_report: the parts add up
    (row,) = report.calibration
    assert row.tier == "nano" and 0 < row.sampled <= 5
    costs = report.total.costs
    assert costs.calibration_sample == -sum(a["uncached_pusd"] for a in sample) < 0
    assert costs.baseline == sum(a["baseline_pusd"] for a in rows if a["role"] == "primary")
