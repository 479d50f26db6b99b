"""jobs/extract.toml: a 200-item JSON-Schema extraction job whose schema travels as
structured output, so every first answer is valid on the sandbox, even on a model that
answers a third of free-form requests badly."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import jsonschema
import orjson
from engine_helpers import (  # noqa: F401 - fixtures
    POLL,
    attempts,
    clients_fixture,
    db_fixture,
    sandbox_fixture,
    served_fixture,
)

from batcher.run import engine
from batcher.spec import load_spec

REPO = Path(__file__).resolve().parent.parent
SPEC_PATH = REPO / "jobs" / "extract.toml"
INPUT_PATH = REPO / "jobs" / "extract-input.jsonl"


def _generator():
    path = REPO / "scripts" / "make_extract_input.py"
    spec = importlib.util.spec_from_file_location("make_extract_input", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_input_is_what_the_seeded_generator_writes():
    gen = _generator()
    assert gen.generate() == INPUT_PATH.read_bytes(), (
        "jobs/extract-input.jsonl is stale: run .venv/bin/python scripts/make_extract_input.py"
    )
    assert gen.generate(20, seed=7) == gen.generate(20, seed=7) != gen.generate(20, seed=8)


def test_extract_job_gets_every_item_valid_at_first_attempt(db, sandbox, clients):
    sandbox.configure(malformed={"gpt-5-nano": 0.34})  # free-form answers would fail often
    spec = load_spec(SPEC_PATH)
    run_id = engine.start_run(db, spec, spec.input_file())
    outcome = engine.drive_run(db, run_id, clients=clients, poll=POLL)
    rows = attempts(db, run_id)
    assert outcome.n_items == 200 and len(rows) == 200  # no retries, no escalations
    assert Counter((a["seq"], a["tier"], a["status"]) for a in rows) == {
        (1, "nano", "succeeded"): 200
    }
    validator = jsonschema.Draft202012Validator(spec.validation.json_schema)
    assert all(validator.is_valid(orjson.loads(a["output"])) for a in rows)
