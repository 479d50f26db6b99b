"""Reconcile benchmark: batcher.run.reconcile.reconcile_batch next to a minimal hand-written loop.

    .venv/bin/python bench/reconcile.py                  # 1,000,000 results
    .venv/bin/python bench/reconcile.py --items 100000   # a quicker run

Set-up (untimed): a fresh SQLite database (batcher's schema, WAL, synchronous=NORMAL) with a
run of N items, one submitted attempt each, in ended OpenAI batches of 50,000; and one JSONL
file of provider-neutral results per batch, in shuffled order as providers return them:
96% valid JSON label answers, 1.5% answers that fail validation, 1.5% errors, 0.5% expired,
0.5% with no result line at all. Usage varies per request (input, cache reads, output).

Both phases work on copies of the same database and the same files, each in its own
subprocess (so its peak RSS, from resource.getrusage, is its own), and do the same job:
parse each line, validate the answer, price it (billed, standard, uncached and baseline
picodollars), update the attempt by (batch_id, custom_id) and the item of each valid answer
(which points at the attempt holding it: answers are stored once),
mark the attempts without a result line, and count the batch. The minimal loop is orjson and
sqlite3 executemany with hard-coded per-token rates. At the end the two databases are
compared column by column, so the figures are for the same, correct work.

Targets (issue 16): at least 0.9 of the minimal loop's rate and under 256 MB peak RSS (the
ratio, not an absolute rate, since this machine is shared; results/s are printed too).
Exit code 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_RATIO, TARGET_RSS_MB = 0.9, 256
BATCH_SIZE = 50_000
LABELS = ["billing", "technical", "account", "other"]
TIERS = {"nano": "openai:gpt-5-nano", "frontier": "openai:gpt-5.4"}
SPEC = {
    "name": "bench-reconcile",
    "tiers": TIERS,
    "routing": {"ladder": ["nano", "frontier"]},
    "validation": {"labels": LABELS, "label_field": "label"},
}
# The connection settings of batcher's store (db.py) and of its bulk writes (bulk.py:
# checkpoints every 20,000 WAL pages), except the page cache: the minimal loop gets 64 MB,
# more than batcher's bulk cache (bulk.py), which favours the minimal loop on a million rows.
PRAGMAS = [
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=30000",
    "PRAGMA cache_size=-65536",
    "PRAGMA wal_autocheckpoint=20000",
]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cpu_seconds() -> float:
    """User + system CPU time of this process: the machine may be shared, so the figures
    also show results per CPU second, which other processes do not slow down."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def phase_figures(n: int, started: float, cpu_started: float) -> dict:
    return {
        "results": n,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": cpu_seconds() - cpu_started,
        "rss_mb": peak_rss_mb(),
    }


# --- set-up (untimed) -----------------------------------------------------------------------


def build(folder: Path, n_items: int) -> tuple[Path, list[str]]:
    """The database and the result files; returns the db path and the batch ids."""
    import orjson

    from batcher.store.db import open_store

    db_path = folder / "base.db"
    open_store(f"sqlite:///{db_path}").dispose()  # batcher's schema, migrated
    conn = sqlite3.connect(db_path)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    now = "2026-01-01 00:00:00.000000"
    conn.execute(
        "INSERT INTO run (id, job_name, spec_path, spec_json, input_path, input_sha256, status,"
        " n_items, n_rejected, created_at) VALUES (1, 'bench', '', ?, 'in.jsonl', 'x',"
        " 'running', ?, 0, ?)",
        (json.dumps(SPEC), n_items, now),
    )
    rng = random.Random(5)
    batch_ids = []
    for start in range(0, n_items, BATCH_SIZE):
        ids = range(start + 1, min(start + BATCH_SIZE, n_items) + 1)
        batch_id = f"run1-b{len(batch_ids) + 1:03d}"
        batch_ids.append(batch_id)
        conn.execute(
            "INSERT INTO batch (id, run_id, round, provider, model, tier, status, path,"
            " n_requests, n_bytes, n_succeeded, n_errored, n_expired, n_cancelled, created_at)"
            " VALUES (?, 1, 1, 'openai', 'gpt-5-nano', 'nano', 'ended', '', ?, 0, 0, 0, 0, 0, ?)",
            (batch_id, len(ids), now),
        )
        conn.executemany(
            "INSERT INTO item (id, run_id, line_no, custom_id, request_json, tier, status)"
            " VALUES (?, 1, ?, ?, ?, 'nano', 'in_flight')",
            (
                (
                    i,
                    i,
                    f"t{i}",
                    orjson.dumps({"messages": [{"role": "user", "content": f"t{i}"}]}).decode(),
                )
                for i in ids
            ),
        )
        conn.executemany(
            "INSERT INTO attempt (id, run_id, item_id, seq, tier, provider, model, batch_id,"
            " custom_id, request_hash, status) VALUES (?, 1, ?, 1, 'nano', 'openai',"
            " 'gpt-5-nano', ?, ?, ?, 'submitted')",
            ((i, i, batch_id, f"i{i}-a1", request_hash(i)) for i in ids),
        )
        write_results(folder / f"{batch_id}.jsonl", list(ids), rng)
        conn.commit()
    conn.close()
    return db_path, batch_ids


def request_hash(i: int) -> str:
    """32 hex digits of a sha256, as the planner stores (requests.request_hash): spread
    like real requests' hashes, since sequential values would make the reuse index's
    inserts look cheaper than they are."""
    return hashlib.sha256(b"request %d" % i).hexdigest()[:32]


def write_results(path: Path, ids: list[int], rng: random.Random) -> None:
    import orjson

    rng.shuffle(ids)  # providers return lines in any order
    with open(path, "wb") as f:
        for i in ids:
            roll = rng.random()
            if roll < 0.005:
                continue  # no result line
            custom_id = f"i{i}-a1"
            if roll < 0.02:
                row = {"custom_id": custom_id, "outcome": "errored", "error_code": "server_error"}
            elif roll < 0.025:
                row = {"custom_id": custom_id, "outcome": "expired", "error_code": "batch_expired"}
            else:
                label = rng.choice(LABELS) if roll >= 0.04 else "refund"  # 1.5% invalid
                cached = 1024 + 128 * rng.randrange(4) if rng.random() < 0.6 else 0
                total = cached + rng.randrange(150, 600)
                row = {
                    "custom_id": custom_id,
                    "outcome": "succeeded",
                    "text": orjson.dumps({"label": label, "why": f"ticket {i}"}).decode(),
                    "usage": {
                        "input_tokens": total,
                        "cache_read_tokens": cached,
                        "output_tokens": rng.randrange(8, 60),
                        "reasoning_tokens": 0,
                    },
                }
            f.write(orjson.dumps(row) + b"\n")


# --- phases (each runs in a subprocess and prints one JSON line) ----------------------------


def phase_batcher(db_path: str, folder: str, batch_ids: list[str], chunk: int) -> dict:
    import orjson

    from batcher.providers.base import Result, Usage
    from batcher.run.reconcile import reconcile_batch
    from batcher.spec import parse_spec
    from batcher.store.db import open_store

    def results(path: Path):
        with open(path, "rb") as f:
            for line in f:
                row = orjson.loads(line)
                usage = row.get("usage")
                yield Result(
                    row["custom_id"],
                    row["outcome"],
                    row.get("text"),
                    Usage(**usage) if usage else None,
                    row.get("error_code"),
                    row.get("error_message"),
                )

    spec = parse_spec(SPEC)
    db = open_store(f"sqlite:///{db_path}")
    started, cpu_started = time.perf_counter(), cpu_seconds()
    n = 0
    for batch_id in batch_ids:
        summary = reconcile_batch(
            db, batch_id, results(Path(folder) / f"{batch_id}.jsonl"), spec, chunk=chunk
        )
        n += summary.n_results
    return phase_figures(n, started, cpu_started)


def rates() -> dict[str, int]:
    """Whole picodollars per token, written out by hand from the published prices."""
    return {
        "batch_in": 25_000,  # gpt-5-nano $0.05/Mtok, half in batch
        "batch_read": 2_500,
        "batch_out": 200_000,
        "std_in": 50_000,
        "std_read": 5_000,
        "std_out": 400_000,
        "top_in": 2_500_000,  # gpt-5.4 $2.50/Mtok, standard
        "top_out": 15_000_000,
    }


def phase_minimal(db_path: str, folder: str, batch_ids: list[str], chunk: int) -> dict:
    import orjson

    r = rates()
    labels = set(LABELS)
    conn = sqlite3.connect(db_path)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    set_attempt = (
        "UPDATE attempt SET status=?, output=?, verdict=?, error_code=?, input_tokens=?,"
        " cache_read_tokens=?, output_tokens=?, reasoning_tokens=?, cost_pusd=?,"
        " standard_pusd=?, uncached_pusd=?, baseline_pusd=?, finished_at=?"
        " WHERE batch_id=? AND custom_id=? AND status='submitted'"
    )
    set_item = (  # the answer stays on the attempt (m013): the item points at it
        "UPDATE item SET status='succeeded', (answer_attempt_id, final_attempt_id)=(SELECT id,"
        " id FROM attempt WHERE batch_id=? AND custom_id=?) WHERE id=(SELECT item_id FROM"
        " attempt WHERE batch_id=? AND custom_id=?)"
    )
    started, cpu_started = time.perf_counter(), cpu_seconds()
    n = 0
    for batch_id in batch_ids:
        with open(Path(folder) / f"{batch_id}.jsonl", "rb") as f:
            attempts, items = [], []
            now = time.strftime("%Y-%m-%d %H:%M:%S.000000")
            for line in f:
                n += 1
                row = orjson.loads(line)
                cid, outcome, text = row["custom_id"], row["outcome"], row.get("text")
                usage = row.get("usage")
                status, verdict = outcome, None
                tokens = (0, 0, 0, 0, 0, 0, 0, 0)
                if usage:
                    total, read = usage["input_tokens"], usage["cache_read_tokens"]
                    out = usage["output_tokens"]
                    plain = total - read
                    tokens = (
                        total,
                        read,
                        out,
                        usage["reasoning_tokens"],
                        plain * r["batch_in"] + read * r["batch_read"] + out * r["batch_out"],
                        plain * r["std_in"] + read * r["std_read"] + out * r["std_out"],
                        total * r["std_in"] + out * r["std_out"],
                        total * r["top_in"] + out * r["top_out"],
                    )
                if outcome == "succeeded":
                    try:
                        label = orjson.loads(text).get("label")
                    except orjson.JSONDecodeError:
                        label = None
                    ok = label in labels
                    status = "succeeded" if ok else "invalid"
                    verdict = "ok" if ok else "bad label"
                    if ok:
                        items.append((batch_id, cid, batch_id, cid))
                attempts.append(
                    (status, text, verdict, row.get("error_code"), *tokens, now, batch_id, cid)
                )
                if len(attempts) >= chunk:
                    conn.executemany(set_attempt, attempts)
                    conn.executemany(set_item, items)
                    conn.commit()
                    attempts, items = [], []
                    now = time.strftime("%Y-%m-%d %H:%M:%S.000000")
            conn.executemany(set_attempt, attempts)
            conn.executemany(set_item, items)
        conn.execute(
            "UPDATE attempt SET status='errored', error_code='missing_result'"
            " WHERE batch_id=? AND status='submitted'",
            (batch_id,),
        )
        counts = dict(
            conn.execute(
                "SELECT status, count(*) FROM attempt WHERE batch_id=? GROUP BY status", (batch_id,)
            ).fetchall()
        )
        conn.execute(
            "UPDATE batch SET status='reconciled', n_succeeded=?, n_errored=?, n_expired=?"
            " WHERE id=?",
            (
                counts.get("succeeded", 0) + counts.get("invalid", 0),
                counts.get("errored", 0),
                counts.get("expired", 0),
                batch_id,
            ),
        )
        conn.commit()
    conn.close()
    return phase_figures(n, started, cpu_started)


PHASES = {"batcher": phase_batcher, "minimal": phase_minimal}


# --- driver ---------------------------------------------------------------------------------


def run_phase(name: str, db_path: Path, folder: Path, batch_ids: list[str], chunk: int) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--phase",
            name,
            "--db",
            str(db_path),
            "--folder",
            str(folder),
            "--batches",
            ",".join(batch_ids),
            "--chunk",
            str(chunk),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(a: Path, b: Path) -> list[str]:
    """Differences between the two reconciled databases (empty when they agree)."""
    query = {
        "attempt": "SELECT id, status, output, error_code, input_tokens, cache_read_tokens,"
        " output_tokens, cost_pusd, standard_pusd, uncached_pusd, baseline_pusd FROM attempt"
        " ORDER BY id",
        "item": "SELECT id, status, answer_attempt_id, final_attempt_id FROM item ORDER BY id",
        "batch": "SELECT id, status, n_succeeded, n_errored, n_expired FROM batch ORDER BY id",
    }
    problems = []
    with sqlite3.connect(a) as ca, sqlite3.connect(b) as cb:
        for table, sql in query.items():
            for ra, rb in zip(ca.execute(sql), cb.execute(sql), strict=True):
                if ra != rb:
                    problems.append(f"{table}: {ra} != {rb}")
                    break
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument(
        "--chunk", type=int, help="results per transaction, both loops (default: batcher's CHUNK)"
    )
    parser.add_argument("--keep", help="build in this folder and keep it")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--batches", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        batches = args.batches.split(",")
        print(json.dumps(PHASES[args.phase](args.db, args.folder, batches, args.chunk)))
        return

    if args.chunk is None:  # measure batcher as it ships; the minimal loop gets the same
        from batcher.run.reconcile import CHUNK

        args.chunk = CHUNK
    folder = Path(args.keep or tempfile.mkdtemp(prefix="bench-reconcile-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        base, batch_ids = build(folder, args.items)
        print(
            f"set-up: {args.items:,} items/attempts in {len(batch_ids)} batches, "
            f"{time.perf_counter() - t0:.1f}s (untimed); {args.chunk:,} results a transaction"
        )
        figures = {}
        for name in PHASES:
            copy = folder / f"{name}.db"
            shutil.copyfile(base, copy)
            os.sync()  # each phase starts with nothing dirty left to write back (untimed)
            figures[name] = run_phase(name, copy, folder, batch_ids, args.chunk)
        report(figures, compare(folder / "batcher.db", folder / "minimal.db"))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def report(figures: dict, problems: list[str]) -> None:
    for name, f in figures.items():
        rate = f["results"] / f["seconds"]
        f["rate"] = rate
        print(
            f"{name:>8}: {f['results']:>9,} results in {f['seconds']:6.2f}s = "
            f"{rate:>9,.0f} results/s ({f['results'] / f['cpu_seconds']:,.0f} per CPU-second), "
            f"peak RSS {f['rss_mb']:.0f} MB"
        )
    ratio = figures["batcher"]["rate"] / figures["minimal"]["rate"]
    cpu_ratio = figures["minimal"]["cpu_seconds"] / figures["batcher"]["cpu_seconds"]
    print(f"   ratio: batcher / minimal = {ratio:.2f} (per CPU-second: {cpu_ratio:.2f})")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("databases agree" if not problems else "DATABASES DIFFER:\n  " + "\n  ".join(problems))
    ok = ratio >= TARGET_RATIO and figures["batcher"]["rss_mb"] < TARGET_RSS_MB and not problems
    print(
        f"targets (>= {TARGET_RATIO} of minimal, < {TARGET_RSS_MB} MB): "
        + ("met" if ok else "NOT met")
    )
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
