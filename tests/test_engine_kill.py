"""Kill tests: `batcher run` in a subprocess is killed with SIGKILL at each step boundary (the
BATCHER_CRASH_AT seam, see batcher.run.crash); `batcher resume` then finishes the run. The sandbox
lives in this process, so it outlives the killed runner and its audit sees both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from engine_helpers import (  # noqa: F401 - fixtures
    DEEPSEEK_SPEC,
    GEMINI_SPEC,
    XAI_SPEC,
    attempts,
    batches,
    check_accounted,
    compatible_spec,
    sandbox_fixture,
    served_fixture,
    write_job,
)

from batcher.store import open_store

BATCHER = str(Path(sys.executable).parent / "batcher")
N = 12
CASES = [
    ("after_intent", "fixed:nano"),
    ("after_intent", "fixed:frontier"),
    ("after_upload", "fixed:nano"),  # only OpenAI uploads a file first
    ("after_create", "fixed:nano"),
    ("after_create", "fixed:frontier"),
    ("after_record", "fixed:nano"),
    ("while_polling", "fixed:nano"),
    ("while_polling", "fixed:frontier"),
    ("mid_reconcile", "fixed:nano"),
    ("mid_reconcile", "fixed:frontier"),
    ("mid_layout", "fixed:nano"),  # `run` writes the next batches while the first goes out
    ("mid_layout", "fixed:frontier"),
]
SMALL_BATCHES = "[batching]\nopenai_max_lines = 5\nanthropic_max_requests = 5\n"


def batcher(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([BATCHER, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("step,classifier", CASES)
def test_resume_after_a_kill_loses_nothing_and_sends_nothing_twice(
    sandbox, tmp_path, state_dir, step, classifier
):
    spec = write_job(tmp_path, N, classifier)
    if step == "mid_layout":  # three batches, the first killed as the second is written
        spec.write_text(spec.read_text() + SMALL_BATCHES)
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    env = {**os.environ, **sandbox.env(), "BATCHER_STATE_DIR": str(state_dir)}
    poll = ["--db", url, "--poll-interval", "0.03"]

    killed = batcher(["run", str(spec), *poll], {**env, "BATCHER_CRASH_AT": step})
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    resumed = batcher(["resume", "1", *poll], env)
    assert resumed.returncode == 0, resumed.stderr

    db = open_store(url)
    check_accounted(db, 1, sandbox, N)
    provider = "openai" if classifier == "fixed:nano" else "anthropic"
    sent = sandbox.stats()["submissions"][provider]
    reached = {b["id"] for b in batches(db, 1) if b["provider_batch_id"]}
    expected = Counter(a["custom_id"] for a in attempts(db, 1) if a["batch_id"] in reached)
    assert sent == dict(expected)  # each attempt's custom_id submitted exactly once
    assert sandbox.stats()["batches_created"][provider] == len(reached)


def test_gemini_killed_at_each_step_in_turn_loses_nothing_and_sends_nothing_twice(
    sandbox, tmp_path, state_dir
):
    """One run on Gemini killed after the upload, then its resume killed after the create (the
    first create never happened: the job is looked up by display name, found missing, and
    created from the uploaded file); a last resume finds that job by its display name, adopts
    it and reads it. One job, each key sent once. (Killing mid-reconcile is provider-neutral
    and covered above.)"""
    spec = write_job(tmp_path, N, "fixed:nano", spec=GEMINI_SPEC)
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    env = {**os.environ, **sandbox.env(), "BATCHER_STATE_DIR": str(state_dir)}
    poll = ["--db", url, "--poll-interval", "0.03"]
    steps = ["after_upload", "after_create"]
    for index, step in enumerate(steps):
        args = ["run", str(spec), *poll] if index == 0 else ["resume", "1", *poll]
        killed = batcher(args, {**env, "BATCHER_CRASH_AT": step})
        assert killed.returncode == -signal.SIGKILL, (step, killed.stderr)
    resumed = batcher(["resume", "1", *poll], env)
    assert resumed.returncode == 0, resumed.stderr

    db = open_store(url)
    check_accounted(db, 1, sandbox, N)
    stats = sandbox.stats()
    assert stats["batches_created"]["google"] == 1
    assert stats["submissions"]["google"] == {a["custom_id"]: 1 for a in attempts(db, 1)}
    (batch,) = batches(db, 1)
    assert batch["provider_batch_id"].startswith("batches/")


# The steps where xAI's own calls matter (killing before any call or mid-reconcile is
# provider-neutral and covered above).
XAI_CHAINS = [
    ["after_upload", "after_record", "while_polling"],
    ["after_create"],  # the resume finds the batch by its name and adopts it
]


# The same chains with nano on a named OpenAI-compatible provider in batch mode (the OpenAI
# module under its own name; its base_url is the sandbox, its key from GATEWAY_KEY): a batch
# created but not recorded is found by its metadata and adopted.
# One chain covers its calls: the create from the recorded upload, then the adoption, then a
# poll of the recorded batch (the state after_record leaves, as OpenAI's case above shows).
CHAINS = [(XAI_SPEC, "xai", steps) for steps in XAI_CHAINS] + [
    ("gateway", "openai", ["after_upload", "after_create", "while_polling"])
]


def nano_spec(spec: str, sandbox, mode: str = "batch", extra: str = "") -> str:
    """`spec`, or for "gateway" nano on the named provider at the sandbox's OpenAI routes."""
    if spec != "gateway":
        return spec
    return compatible_spec(mode, base_url=sandbox.openai_base_url, extra=extra)


@pytest.mark.parametrize(
    "spec,seen_as,steps",
    CHAINS,
    ids=["xai-record", "xai-adopt", "openai-compatible"],
)
def test_killed_at_every_step_in_turn_loses_nothing_and_sends_nothing_twice(
    sandbox, tmp_path, state_dir, spec, seen_as, steps
):
    """One run on xAI (or a named OpenAI-compatible provider) killed at step boundaries in
    turn, each resume getting one step further (the batch is created from the recorded upload;
    a batch created but not recorded is found and adopted). One batch, each request sent
    once."""
    spec = write_job(tmp_path, N, "fixed:nano", spec=nano_spec(spec, sandbox))
    if "while_polling" in steps:  # still running when first polled, however slow the machine
        sandbox.configure(faults=f"slow:count=1:factor=1000:provider={seen_as}")
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    env = {**os.environ, **sandbox.env(), "BATCHER_STATE_DIR": str(state_dir)}
    env["GATEWAY_KEY"] = "gw-sandbox"
    poll = ["--db", url, "--poll-interval", "0.03"]
    for index, step in enumerate(steps):
        args = ["run", str(spec), *poll] if index == 0 else ["resume", "1", *poll]
        killed = batcher(args, {**env, "BATCHER_CRASH_AT": step})
        assert killed.returncode == -signal.SIGKILL, (step, killed.stderr)
    sandbox.advance_clock(3600)  # the slow batch finishes
    resumed = batcher(["resume", "1", *poll], env)
    assert resumed.returncode == 0, resumed.stderr

    db = open_store(url)
    check_accounted(db, 1, sandbox, N)
    stats = sandbox.stats()
    assert stats["batches_created"][seen_as] == 1
    assert stats["submissions"][seen_as] == {a["custom_id"]: 1 for a in attempts(db, 1)}
    assert {b["provider"] for b in batches(db, 1)} == {"xai" if seen_as == "xai" else "gateway"}


@pytest.mark.parametrize(
    "spec,seen_as", [(DEEPSEEK_SPEC, "deepseek"), ("gateway", "openai")],
    ids=["deepseek", "openai-compatible"],
)  # fmt: skip
def test_direct_mode_killed_at_each_step_resends_at_most_concurrency_each_time(
    sandbox, tmp_path, state_dir, spec, seen_as
):
    """A DeepSeek (or named OpenAI-compatible, direct) run (direct mode, 3 requests in flight
    at most, 0.1 s each) killed at each step in turn while requests are in flight; each resume
    sends what has no result yet, and what was in flight at the kill again. Nothing is lost;
    every repeat the sandbox saw is counted in the report as possibly billed twice, at most
    `concurrency` per kill."""
    from batcher.report.build import build_report, select_runs

    # Killing before the intent or mid-reconcile is provider-neutral (covered above); after
    # the create and after recording the ids a direct batch is in the same state (its worker
    # sending), so the chain kills after the create (the journal is found and adopted) and
    # while polling.
    concurrency, steps = 3, ["after_create", "while_polling"]
    limit = f"concurrency = {concurrency}\n"
    if spec == "gateway":
        spec = nano_spec(spec, sandbox, "direct", extra=limit)
    else:
        spec += "[providers.deepseek]\n" + limit
    spec = write_job(tmp_path, N, "fixed:nano", spec=spec)
    sandbox.configure(chat_latency_s=0.1)
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    env = {**os.environ, **sandbox.env(), "BATCHER_STATE_DIR": str(state_dir)}
    env["GATEWAY_KEY"] = "gw-sandbox"
    poll = ["--db", url, "--poll-interval", "0.03"]
    for index, step in enumerate(steps):
        args = ["run", str(spec), *poll] if index == 0 else ["resume", "1", *poll]
        killed = batcher(args, {**env, "BATCHER_CRASH_AT": step})
        assert killed.returncode == -signal.SIGKILL, (step, killed.stderr)
    resumed = batcher(["resume", "1", *poll], env)
    assert resumed.returncode == 0, resumed.stderr

    db = open_store(url)
    assert {a["status"] for a in attempts(db, 1)} == {"succeeded"}
    assert len(attempts(db, 1)) == N  # nothing lost, one attempt an item
    sent = sandbox.stats()["submissions"][seen_as]
    repeats = sum(n - 1 for n in sent.values())
    (row,) = build_report(db, select_runs(db, 1)).direct
    assert repeats <= row.resent <= concurrency * len(steps)
    assert len(sandbox.billed()) == N + repeats
