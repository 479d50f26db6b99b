"""Planning benchmark: `batcher plan`'s work next to a minimal hand-written loop, same data.

    .venv/bin/python bench/plan.py                    # 1,000,000 items, then 200,000 with prompts
    .venv/bin/python bench/plan.py --items 100000     # scaled down (prompt workload: items / 5)
    .venv/bin/python bench/plan.py --only prompts --prompt-items 50000

Two workloads from ../shared/tools/make_workload.py, generated once into state/bench/:
  no-system  --items N --no-system: every item uses the job's default system prompt
  prompts    --items M --prompts 8: eight inline 2,000-token system prompts, interleaved

Phases, each in its own subprocess so that its peak RSS (resource.getrusage) is its own:
  plan      what `batcher plan` does, through planner.plan_input into a fresh SQLite
            database: ingest with routing (parse, route, count tokens, store every item),
            lay out (first attempts stored, cache groups, batch files written and fsync'd),
            in one pass and one transaction, then estimate_run (timed on its own too)
  minimal   the least code that turns the input into request lines: orjson per line, sha256
            of the system prompt, one OpenAI batch line written per item; no database
  minimal_store  the same plus an item row and an attempt row per item (sqlite3 executemany,
            one transaction): the floor for a plan that must be stored (issue 16's reference)
  floor     (no-system only) the same with rows as lean as batcher's: an item row holds the
            item's own messages and its system prompt's key, the prompt is stored once;
            its ratio to the minimal loop bounds what any storing plan could reach

Targets (issue 16), peak RSS under 256 MB in every workload:
  no-system  at least 0.30 of the minimal loop's rate, and at least 1.0 of minimal_store's
  prompts    at least 0.80 of the minimal loop's rate
Exit code 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import workloads  # bench/workloads.py: finds ../shared from any clone

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SYSTEM = "You label support tickets. " * 40  # the job's shared default, ~1 KB
TARGET_RSS_MB = 256
# workload -> (least ratio to the minimal loop, least ratio to minimal_store or None)
TARGETS = {"no-system": (0.30, 1.0), "prompts": (0.80, None)}
SPEC = {
    "name": "bench",
    "tiers": {
        "nano": "openai:gpt-5-nano",
        "mid": "openai:gpt-5-mini",
        "frontier": "anthropic:claude-sonnet-4-6",
    },
    "defaults": {"system": DEFAULT_SYSTEM, "max_tokens": 256},
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cpu_seconds() -> float:
    """User + system CPU of this process: the machine is shared, so the figures also show
    items per CPU second, which other processes slow down less than the wall clock."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def workload(kind: str, items: int) -> Path:
    args = ["--no-system"] if kind == "no-system" else ["--prompts", "8"]
    return workloads.workload(items, *args, name=kind)


# --- phases (each runs in a subprocess and prints one JSON line) ---------------------------


def _spec():
    from batcher.spec import parse_spec

    return parse_spec(SPEC, "bench.toml")


def phase_plan(input_path: str, work: str) -> dict:
    os.environ["BATCHER_STATE_DIR"] = f"{work}/state"
    from batcher.plan.planner import estimate_run, plan_input
    from batcher.store import open_store

    spec = _spec()
    engine = open_store(f"sqlite:///{work}/bench.db")
    start, cpu = time.perf_counter(), cpu_seconds()
    report = plan_input(engine, spec, input_path)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    again = time.perf_counter()  # the estimate once more, alone, for the breakdown
    estimate_run(engine, report.run_id, spec)
    summary, estimate = report.plan, report.estimate
    return {
        "items": report.n_items,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "estimate_seconds": time.perf_counter() - again,
        "batches": len(summary.batches),
        "bytes": sum(b.n_bytes for b in summary.batches),
        "groups": summary.n_groups,
        "estimate_usd": str(estimate.cost_usd),
        "cached_share": f"{estimate.cached_share:.3f}",
    }


def _request_line(obj: dict, n: int) -> dict:
    """The OpenAI batch line of input object `obj` on line `n`: sha256 of its system prompt
    as the cache key, the system and user messages, the defaults."""
    import hashlib

    system = obj.get("system") or DEFAULT_SYSTEM
    key = hashlib.sha256(system.encode()).hexdigest()[:16]
    body = {
        "model": "gpt-5-nano",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": obj["prompt"]},
        ],
        "max_completion_tokens": 256,
        "prompt_cache_key": key,
    }
    return {"custom_id": f"i{n}-a1", "method": "POST", "url": "/v1/chat/completions", "body": body}


def phase_minimal(input_path: str, work: str) -> dict:
    """Parse, hash the system prompt, write a request line: nothing else."""
    import orjson

    start, cpu = time.perf_counter(), cpu_seconds()
    n = 0
    with open(input_path, "rb") as f, open(f"{work}/minimal.jsonl", "wb") as out:
        for n, line in enumerate(f, 1):
            out.write(orjson.dumps(_request_line(orjson.loads(line), n)) + b"\n")
        out.flush()
        os.fsync(out.fileno())
    return {"items": n, "seconds": time.perf_counter() - start, "cpu_seconds": cpu_seconds() - cpu}


ATTEMPT_SQL = (
    "INSERT INTO attempt (id, run_id, item_id, seq, tier, provider, model, batch_id,"
    " custom_id, request_hash, status) VALUES (?, 1, ?, 1, 'nano', 'openai', 'gpt-5-nano',"
    " 'b1', ?, ?, 'planned')"
)


def _storing_loop(
    input_path: str,
    db_path: str,
    item_sql: str,
    item_row: Callable[[Any, int, dict, dict], tuple],
) -> dict:
    """The minimal loop, plus an item row (`item_row(conn, n, obj, request)`, inserted with
    `item_sql`) and an attempt row per item, written with sqlite3 executemany into
    batcher's schema (a new database at `db_path`) in one transaction."""
    import hashlib
    import sqlite3

    import orjson

    from batcher.store import open_store

    open_store(f"sqlite:///{db_path}").dispose()  # the schema, untimed
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    start, cpu = time.perf_counter(), cpu_seconds()
    conn.execute("BEGIN")
    conn.execute(
        "INSERT INTO run (id, job_name, spec_path, spec_json, input_path, input_sha256, status,"
        " n_items, n_rejected, created_at) VALUES (1, 'b', '', '{}', '', '', 'planned', 0, 0,"
        " '2026-01-01 00:00:00')"
    )
    conn.execute(
        "INSERT INTO batch (id, run_id, round, provider, model, tier, status, path, n_requests,"
        " n_bytes, n_succeeded, n_errored, n_expired, n_cancelled, created_at) VALUES ('b1', 1,"
        " 1, 'openai', 'gpt-5-nano', 'nano', 'planned', '', 0, 0, 0, 0, 0, 0, '2026-01-01')"
    )
    items, attempts = [], []
    n = 0
    lines_path = Path(db_path).with_name("minimal.jsonl")
    with open(input_path, "rb") as f, open(lines_path, "wb") as out:
        for n, line in enumerate(f, 1):
            obj = orjson.loads(line)
            request = _request_line(obj, n)
            encoded = orjson.dumps(request)
            out.write(encoded + b"\n")
            items.append(item_row(conn, n, obj, request))
            hash_ = hashlib.sha256(encoded).hexdigest()[:32]  # as long as the planner's
            attempts.append((n, n, request["custom_id"], hash_))
            if len(items) >= 5000:
                conn.executemany(item_sql, items)
                conn.executemany(ATTEMPT_SQL, attempts)
                items, attempts = [], []
        conn.executemany(item_sql, items)
        conn.executemany(ATTEMPT_SQL, attempts)
        out.flush()
        os.fsync(out.fileno())
    conn.execute("COMMIT")
    conn.close()
    return {"items": n, "seconds": time.perf_counter() - start, "cpu_seconds": cpu_seconds() - cpu}


def phase_minimal_store(input_path: str, work: str) -> dict:
    """The minimal loop, plus what a plan must keep to be submitted and resumed: an item row
    (holding its whole request, system prompt included) and an attempt row per item: the
    floor of a plan that must be stored (issue 16)."""
    import orjson

    def item_row(conn: Any, n: int, obj: dict, request: dict) -> tuple:
        stored_request = orjson.dumps({"messages": request["body"]["messages"]}).decode()
        return (n, n, str(obj.get("id", n)), stored_request)

    item_sql = (
        "INSERT INTO item (id, run_id, line_no, custom_id, request_json, tier, status)"
        " VALUES (?, 1, ?, ?, ?, 'nano', 'queued')"
    )
    return _storing_loop(input_path, f"{work}/store.db", item_sql, item_row)


def phase_floor(input_path: str, work: str) -> dict:
    """The storing loop as lean as a plan can be: each item row holds only the item's own
    messages and the key of its system prompt, which is stored once (as batcher stores
    them), and an attempt row. Its ratio to the minimal loop is the most that any plan
    that stores its rows could reach on this machine."""
    import orjson

    stored_prompts: set[str] = set()

    def item_row(conn: Any, n: int, obj: dict, request: dict) -> tuple:
        key = request["body"]["prompt_cache_key"]
        if key not in stored_prompts:
            stored_prompts.add(key)
            conn.execute("INSERT INTO prompt (hash, text) VALUES (?, ?)", (key, "..."))
        own = orjson.dumps({"messages": request["body"]["messages"][1:]}).decode()
        return (n, n, str(obj.get("id", n)), key, own)

    item_sql = (
        "INSERT INTO item (id, run_id, line_no, custom_id, system_hash, request_json, tier,"
        " status) VALUES (?, 1, ?, ?, ?, ?, 'nano', 'queued')"
    )
    return _storing_loop(input_path, f"{work}/floor.db", item_sql, item_row)


PHASES = {
    "plan": phase_plan,
    "minimal": phase_minimal,
    "minimal_store": phase_minimal_store,
    "floor": phase_floor,
}


def run_phase(name: str, input_path: Path, work: str) -> dict:
    os.sync()  # no phase pays for writing back what the one before it left dirty (untimed)
    command = [sys.executable, __file__, "--phase", name, str(input_path), work]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"phase {name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench(kind: str, items: int) -> bool:
    path = workload(kind, items)
    size_mb = path.stat().st_size / 1e6
    print(f"\n== {kind}: {items:,} items ({size_mb:,.0f} MB), {path.name}")
    with tempfile.TemporaryDirectory(dir=REPO / "state" / "bench") as work:
        plan = run_phase("plan", path, work)
        minimal = run_phase("minimal", path, work)
        stored = run_phase("minimal_store", path, work)
        floor = run_phase("floor", path, work) if TARGETS[kind][1] is not None else None
    phases = {
        "batcher plan (ingest, lay out, estimate)": plan,
        "minimal loop": minimal,
        "minimal loop + item and attempt rows": stored,
    }
    if floor is not None:
        phases["the same, rows as lean as batcher's"] = floor
    rates = {label: items / f["seconds"] for label, f in phases.items()}
    for label, f in phases.items():
        print(
            f"  {label:<42} {rates[label]:>10,.0f} items/s"
            f" ({items / f['cpu_seconds']:,.0f} per CPU-second)"
        )
    per_cpu = minimal["cpu_seconds"] / plan["cpu_seconds"]
    per_cpu_stored = stored["cpu_seconds"] / plan["cpu_seconds"]
    print(
        f"  {plan['seconds']:.1f} s (estimate_run reading the plan back alone:"
        f" {plan['estimate_seconds']:.1f} s, not in the plan's time);"
        f" {plan['batches']} batches, {plan['bytes'] / 1e6:,.0f} MB written, {plan['groups']}"
        f" cache groups, cached share {plan['cached_share']}, estimate ${plan['estimate_usd']}"
    )
    ratio = rates["batcher plan (ingest, lay out, estimate)"] / rates["minimal loop"]
    rss = {"plan": plan["rss_mb"], "minimal": minimal["rss_mb"], "+rows": stored["rss_mb"]}
    with_rows = (
        rates["batcher plan (ingest, lay out, estimate)"]
        / rates["minimal loop + item and attempt rows"]
    )
    print(
        f"  ratio to the minimal loop: {ratio:.2f}"
        f" (to the one that also stores the rows: {with_rows:.2f});"
        f" per CPU-second {per_cpu:.2f} ({per_cpu_stored:.2f});"
        f" load average {os.getloadavg()[0]:.1f}"
    )
    if floor is not None:
        print(
            f"  the lean storing loop reaches {minimal['seconds'] / floor['seconds']:.2f} of the"
            " minimal loop (per CPU-second"
            f" {minimal['cpu_seconds'] / floor['cpu_seconds']:.2f}): the most a plan that"
            " stores its rows could reach here"
        )
    print("  peak RSS MB: " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()))
    least, least_stored = TARGETS[kind]
    checks = [(f"ratio >= {least}", ratio >= least)]
    if least_stored is not None:
        checks.append((f"ratio to the storing loop >= {least_stored}", with_rows >= least_stored))
    checks.append((f"RSS < {TARGET_RSS_MB} MB", rss["plan"] < TARGET_RSS_MB))
    print("  targets: " + "; ".join(f"{name} {'met' if ok else 'MISSED'}" for name, ok in checks))
    return all(ok for _, ok in checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--prompt-items", type=int, help="default: 200,000, or --items / 5")
    parser.add_argument("--only", choices=["no-system", "prompts"])
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        result = PHASES[args.phase](*args.rest)
        result["rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return
    prompt_items = args.prompt_items or (
        200_000 if args.items == 1_000_000 else max(1, args.items // 5)
    )
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    ok = True
    if args.only in (None, "no-system"):
        ok &= bench("no-system", args.items)
    if args.only in (None, "prompts"):
        ok &= bench("prompts", prompt_items)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
