"""Ingest benchmark: batcher.plan.ingest.ingest next to a minimal hand-written loop, same file.

    .venv/bin/python bench/ingest.py                   # 1,000,000 items (about 860 MB)
    .venv/bin/python bench/ingest.py --items 100000    # a quicker run
    .venv/bin/python bench/ingest.py --input work.jsonl
    .venv/bin/python bench/ingest.py --items 100000 --parsers   # also orjson vs jsonlines
    .venv/bin/python bench/ingest.py --repeat 3        # alternate the phases, keep each best
    .venv/bin/python bench/ingest.py --postgres postgresql+psycopg://postgres@127.0.0.1/test

The workload is `../shared/tools/make_workload.py --items N --no-system` (generated once into
state/bench/ and reused). Each phase runs in its own subprocess so that its peak RSS
(resource.getrusage) is its own. Both phases write a fresh SQLite file in WAL mode with
synchronous=NORMAL; the minimal loop's table has the same unique (run_id, custom_id) index and
the same secondary indexes as batcher's `item` table, so both pay for the same index upkeep.

The items carry no system prompt, so the job's default one (about 2,000 tokens) applies, as
in the nightly job this models. Each phase also prints the CPU seconds of its timed part: on a
busy machine the wall time stretches while the CPU time does not; --repeat N alternates the
phases and keeps each one's best run.

Targets (issue 2): at least 30,000 items/s, at least half the minimal loop's rate, and under
256 MB peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import workloads  # bench/workloads.py: finds ../shared from any clone

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SYSTEM = "You label support tickets. " * 300  # a long shared default, as in real jobs
TARGET_RATE, TARGET_RATIO, TARGET_RSS_MB = 30_000, 0.5, 256


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Timed:
    """Wall and CPU seconds of the block (CPU shows when a busy machine stretched the wall)."""

    def __enter__(self) -> Timed:
        self.start, self.cpu_start = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
        self.cpu = cpu_seconds() - self.cpu_start

    def figures(self, items: int) -> dict:
        return {"items": items, "seconds": self.seconds, "cpu_seconds": self.cpu}


def workload(items: int) -> Path:
    return workloads.workload(items, "--no-system", name="no-system")


# --- phases (each runs in a subprocess and prints one JSON line) ---------------------------


def phase_batcher(input_path: str, db: str) -> dict:
    """batcher.plan.ingest.ingest into a fresh database: a SQLite path, or a PostgreSQL URL."""
    from batcher.plan.ingest import ingest
    from batcher.spec import parse_spec
    from batcher.store import open_store

    spec = parse_spec(
        {
            "name": "bench",
            "tiers": {
                "nano": "openai:gpt-5-nano",
                "mid": "openai:gpt-5-mini",
                "frontier": "anthropic:claude-sonnet-4-5",
            },
            "defaults": {"system": DEFAULT_SYSTEM},
        },
        "bench.toml",
    )
    if "://" not in db:
        engine = open_store(f"sqlite:///{db}")
        with Timed() as timed:
            result = ingest(engine, spec, input_path)
        return timed.figures(result.n_items)
    with fresh_pg_schema(db) as url:
        engine = open_store(url)
        with Timed() as timed:
            result = ingest(engine, spec, input_path)
        engine.dispose()
    return timed.figures(result.n_items)


@contextlib.contextmanager
def fresh_pg_schema(url: str) -> Iterator[str]:
    """A URL whose search_path is a new schema of `url`'s database, dropped afterwards."""
    import sqlalchemy as sa

    schema = f"bench_{os.getpid()}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


MINIMAL_SCHEMA = """
CREATE TABLE item (
    id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, line_no INTEGER NOT NULL,
    custom_id TEXT NOT NULL, system_hash TEXT, request_json TEXT NOT NULL,
    metadata_json TEXT, status TEXT NOT NULL, UNIQUE (run_id, custom_id));
CREATE INDEX ix_item_run_id ON item (run_id);
CREATE INDEX ix_item_status ON item (status);
"""


def phase_minimal(input_path: str, db_path: str) -> dict:
    """The least code that stores these items: orjson per line, sqlite3 executemany."""
    import hashlib
    import sqlite3

    import orjson

    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(MINIMAL_SCHEMA)
    system_hash = hashlib.sha256(DEFAULT_SYSTEM.encode()).hexdigest()[:32]
    sql = "INSERT INTO item (run_id, line_no, custom_id, system_hash, request_json, "
    sql += "metadata_json, status) VALUES (?, ?, ?, ?, ?, ?, ?)"
    with Timed() as timed:
        rows, n = [], 0
        with open(input_path, "rb") as f:
            for n, line in enumerate(f, 1):
                obj = orjson.loads(line)
                request = {"messages": [{"role": "user", "content": obj["prompt"]}]}
                rows.append(
                    (
                        1,
                        n,
                        obj["id"],
                        system_hash,
                        orjson.dumps(request).decode(),
                        orjson.dumps(obj["metadata"]).decode(),
                        "pending",
                    )
                )
                if len(rows) == 5000:
                    conn.executemany(sql, rows)
                    rows.clear()
        conn.executemany(sql, rows)
        conn.commit()
    conn.close()
    return timed.figures(n)


def phase_parse_orjson(input_path: str, _db: str) -> dict:
    import orjson

    n = 0
    with Timed() as timed, open(input_path, "rb") as f:
        for line in f:
            orjson.loads(line)
            n += 1
    return timed.figures(n)


def _jsonlines_phase(input_path: str, loads) -> dict:  # noqa: ANN001
    import jsonlines

    n = 0
    with Timed() as timed, open(input_path, "rb") as f:
        reader = jsonlines.Reader(f, loads=loads) if loads else jsonlines.Reader(f)
        for _obj in reader:
            n += 1
    return timed.figures(n)


def phase_parse_jsonlines(input_path: str, _db: str) -> dict:
    return _jsonlines_phase(input_path, None)


def phase_parse_jsonlines_orjson(input_path: str, _db: str) -> dict:
    import orjson

    return _jsonlines_phase(input_path, orjson.loads)


PHASES = {
    "batcher": phase_batcher,
    "minimal": phase_minimal,
    "parse-orjson": phase_parse_orjson,
    "parse-jsonlines": phase_parse_jsonlines,
    "parse-jsonlines+orjson": phase_parse_jsonlines_orjson,
}


def run_phase(name: str, input_path: Path, workdir: Path, db: str | None = None) -> dict:
    if db is None:
        db = str(workdir / f"{name}.db")
        for suffix in ("", "-wal", "-shm"):  # a fresh database every time
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, __file__, "--phase", name, "--input", str(input_path), "--db", db],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    if proc.returncode != 0:
        sys.exit(f"phase {name} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.splitlines()[-1])


def best(old: dict | None, new: dict) -> dict:
    return new if old is None or new["seconds"] < old["seconds"] else old


def report(name: str, fig: dict) -> float:
    rate = fig["items"] / fig["seconds"]
    print(
        f"{name:24} {fig['items']:>10,} items {fig['seconds']:8.2f} s "
        f"{rate:>10,.0f} items/s  peak RSS {fig['peak_rss_mb']:6.1f} MB  "
        f"(CPU {fig['cpu_seconds']:.2f} s)"
    )
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1_000_000, help="workload size to generate")
    ap.add_argument("--input", help="an existing JSONL file to ingest instead")
    ap.add_argument("--parsers", action="store_true", help="also time orjson vs jsonlines")
    ap.add_argument(
        "--postgres",
        metavar="URL",
        help="also ingest into a fresh schema of this PostgreSQL database (no target)",
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="run each phase N times, alternating; keep the best"
    )
    ap.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.phase:  # child process: one phase, one JSON line
        figures = PHASES[args.phase](args.input, args.db)
        figures["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(figures))
        return

    input_path = Path(args.input) if args.input else workload(args.items)
    size_mb = input_path.stat().st_size / 1e6
    print(f"input: {input_path} ({size_mb:,.0f} MB)")
    with tempfile.TemporaryDirectory(prefix="batcher-bench-") as tmp:
        ours = minimal = None
        for _ in range(args.repeat):  # alternate, so that a busy moment hits both alike
            ours = best(ours, run_phase("batcher", input_path, Path(tmp)))
            minimal = best(minimal, run_phase("minimal", input_path, Path(tmp)))
        postgres = None
        if args.postgres:
            for _ in range(args.repeat):
                phase = run_phase("batcher", input_path, Path(tmp), db=args.postgres)
                postgres = best(postgres, phase)
        parsers = {}
        if args.parsers and importlib.util.find_spec("jsonlines") is None:
            sys.exit(
                "--parsers needs jsonlines: .venv/bin/pip install jsonlines (not a dependency)"
            )
        if args.parsers:
            for name in ("parse-orjson", "parse-jsonlines", "parse-jsonlines+orjson"):
                for _ in range(args.repeat):
                    parsers[name] = best(parsers.get(name), run_phase(name, input_path, Path(tmp)))
    ours_rate = report("batcher.plan.ingest", ours)
    minimal_rate = report("minimal loop", minimal)
    ratio = ours_rate / minimal_rate
    cpu_ratio = minimal["cpu_seconds"] / ours["cpu_seconds"]
    print(f"ratio batcher/minimal: {ratio:.2f} by wall time, {cpu_ratio:.2f} by CPU time")
    checks = [
        (ours_rate >= TARGET_RATE, f"rate >= {TARGET_RATE:,} items/s"),
        (ratio >= TARGET_RATIO, f"ratio >= {TARGET_RATIO}"),
        (ours["peak_rss_mb"] < TARGET_RSS_MB, f"peak RSS < {TARGET_RSS_MB} MB"),
    ]
    for ok, what in checks:
        print(f"  {'ok  ' if ok else 'MISS'} {what}")
    if postgres:
        report("batcher.plan.ingest PostgreSQL", postgres)
    if parsers:
        print("streaming parse only (no storage):")
        for name, fig in parsers.items():
            report(name, fig)


if __name__ == "__main__":
    main()
