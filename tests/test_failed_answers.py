"""A failed item keeps the last answer that was paid for, with the verdict that refused it,
in its item row and in exports (run end to end on the sandbox through the real SDKs)."""

from __future__ import annotations

import orjson
import sqlalchemy as sa
from engine_helpers import (  # noqa: F401 - fixtures
    ATTEMPT,
    ITEM,
    POLL,
    clients_fixture,
    db_fixture,
    sandbox_fixture,
    served_fixture,
    write_job,
)

from batcher.report.exports import export_run
from batcher.run import engine
from batcher.spec import load_spec


def test_a_failed_item_keeps_its_last_paid_answer_and_verdict(db, sandbox, clients, tmp_path):
    path = write_job(tmp_path, 3)
    # The prompt offers billing/technical/account, the check accepts none of them: every
    # answer is paid for and refused, on nano and then on mid.
    text = path.read_text().replace(
        'labels = ["billing", "technical", "account"]', 'labels = ["refund"]'
    )
    text = text.replace('ladder = ["nano", "mid", "frontier"]', 'ladder = ["nano", "mid"]')
    path.write_text(text)
    spec = load_spec(path)
    run_id = engine.start_run(db, spec, spec.input_file())
    outcome = engine.drive_run(db, run_id, clients=clients, poll=POLL)
    assert outcome.items == {"failed": 3}
    with db.connect() as conn:
        answer = ATTEMPT.alias("answer")  # the answer is stored once, on its attempt
        query = sa.select(answer.c.output, ITEM.c.verdict).join(
            answer, answer.c.id == ITEM.c.answer_attempt_id
        )
        items = conn.execute(query).all()
    for output, verdict in items:
        assert output.strip() in {"billing", "technical", "account"}, output
        assert verdict == f"label {output.strip()!r} is not one of the allowed labels"
    export_run(db, run_id, tmp_path / "out.jsonl")
    rows = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert {(r["output"], r["verdict"]) for r in rows} == set(items)
    assert all(r["status"] == "failed" and r["model"] == "gpt-5-mini" for r in rows)
