"""Uploaded batch files do not pile up at the provider: deleted once their batch is
reconciled (OpenAI files.delete, Gemini files.delete of the upload), or with
batching.uploaded_files = "expire" given an expiry at upload (expires_after)."""

from __future__ import annotations

import openai
import pytest
from engine_helpers import (  # noqa: F401 - fixtures
    GEMINI_SPEC,
    POLL,
    clients_fixture,
    db_fixture,
    sandbox_fixture,
    served_fixture,
    write_job,
)
from google import genai
from google.genai import errors, types

from batcher.run import engine
from batcher.spec import load_spec


def _run(db, clients, tmp_path, n: int, extra: str = "", spec_text: str | None = None):
    path = write_job(tmp_path, n, **({"spec": spec_text} if spec_text else {}))
    path.write_text(path.read_text() + extra)
    spec = load_spec(path)
    run_id = engine.start_run(db, spec, spec.input_file())
    outcome = engine.drive_run(db, run_id, clients=clients, poll=POLL)
    assert outcome.items == {"succeeded": n}


def _openai_files(sandbox) -> list:
    client = openai.OpenAI(base_url=sandbox.openai_base_url, api_key="sk-test")
    return list(client.files.list().data)


def test_openai_files_are_deleted_after_reconcile(db, sandbox, clients, tmp_path):
    _run(db, clients, tmp_path, 3)
    assert _openai_files(sandbox) == []  # input and output files both gone


def test_files_get_an_expiry_instead_when_the_spec_says_so(db, sandbox, clients, tmp_path):
    extra = '[batching]\nuploaded_files = "expire"\nuploaded_files_expire_s = 7200\n'
    _run(db, clients, tmp_path, 2, extra)
    uploads = [f for f in _openai_files(sandbox) if f.purpose == "batch"]
    assert len(uploads) == 1
    assert uploads[0].expires_at - uploads[0].created_at == 7200


def test_gemini_uploads_are_deleted_after_reconcile(db, sandbox, clients, tmp_path):
    _run(db, clients, tmp_path, 2, spec_text=GEMINI_SPEC)
    client = genai.Client(
        api_key="test", http_options=types.HttpOptions(base_url=sandbox.gemini_base_url)
    )
    with db.connect() as conn:
        (name,) = conn.exec_driver_sql("SELECT input_file_id FROM batch").scalars()
    assert name.startswith("files/")
    with pytest.raises(errors.ClientError) as gone:
        client.files.get(name=name)
    assert gone.value.code == 404
