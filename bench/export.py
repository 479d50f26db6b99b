"""Export benchmark: batcher.report.exports.export_run beside a minimal hand-written loop.

    .venv/bin/python bench/export.py                   # 1,000,000 items
    .venv/bin/python bench/export.py --items 100000    # a quicker run
    .venv/bin/python bench/export.py --items 100000 \
        --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test   # also from PostgreSQL

The database (generated once into state/bench/ and reused) is a reconciled run built with
batcher's own schema: N items with a shared system prompt, a two-message request and
metadata, and 1.3 attempts an item on average (every third item escalated once). Each phase
runs in its own subprocess so that its peak RSS (resource.getrusage) is its own. The minimal
loop runs the same join and aggregate through sqlite3 and writes the same JSON lines with
orjson, so the difference is what batcher adds around it.

With --postgres the same rows are copied once into a schema of that database and exported
from there too (a server-side cursor), to show the memory stays bounded on PostgreSQL.

Targets (issue 6): peak RSS bounded (under 256 MB for a million items: nothing scales with
the run), and JSONL at least half the minimal loop's rate.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_RATIO, TARGET_RSS_MB = 0.5, 256
SYSTEM = "You label support tickets for the billing queue. " * 40


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def build_db(items: int) -> Path:
    """A reconciled run of `items` items, written straight into batcher's tables."""
    path = REPO / "state" / "bench" / f"export-{items}.db"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"building {path} ...", file=sys.stderr)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    sys.path.insert(0, str(REPO))
    from batcher.plan.ingest import prompt_hash
    from batcher.store import open_store

    open_store(f"sqlite:///{tmp}").dispose()  # batcher's schema, migrated
    conn = sqlite3.connect(tmp)
    key = prompt_hash(SYSTEM)
    conn.execute("INSERT INTO prompt (hash, text) VALUES (?, ?)", (key, SYSTEM))
    conn.execute(
        "INSERT INTO run (id, job_name, spec_path, spec_json, input_path, input_sha256, status,"
        " n_items, n_rejected, created_at) VALUES (1, 'bench', 'b.toml', '{}', 'in.jsonl', '',"
        " 'completed', ?, 0, '2026-11-01 02:00:00.000000')",
        (items,),
    )
    attempt_sql = (
        "INSERT INTO attempt (run_id, item_id, seq, tier, provider, model, custom_id,"
        " request_hash, status, input_tokens, cache_read_tokens, output_tokens, cost_pusd,"
        " standard_pusd, uncached_pusd, baseline_pusd) VALUES (1,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
    )
    item_sql = (
        "INSERT INTO item (id, run_id, line_no, custom_id, system_hash, request_json,"
        " metadata_json, tier, cache_group, status, output, final_attempt_id)"
        " VALUES (?,1,?,?,?,?,?,?,'g1','succeeded',?,?)"
    )
    attempt_id = 0
    chunk = 20_000
    for start in range(1, items + 1, chunk):
        item_rows, attempt_rows = [], []
        for n in range(start, min(start + chunk, items + 1)):
            request = json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"Ticket {n}: I was charged twice in May."},
                        {"role": "assistant", "content": "Understood."},
                    ],
                    "max_tokens": 64,
                }
            )
            tiers = [("nano", "openai", "gpt-5-nano")]
            if n % 3 == 0:
                tiers.append(("mid", "openai", "gpt-5-mini"))
            for seq, (tier, provider, model) in enumerate(tiers, 1):
                attempt_id += 1
                final = seq == len(tiers)
                attempt_rows.append(
                    (n, seq, tier, provider, model, f"i{n}-a{seq}", f"h{n}-{seq}",
                     "succeeded" if final else "invalid", 420, 400, 9, 31_000 * seq,
                     62_000 * seq, 90_000 * seq, 2_000_000)
                )  # fmt: skip
            item_rows.append(
                (n, n, f"t-{n}", key, request, json.dumps({"queue": "billing", "n": n}),
                 tiers[-1][0], "refund", attempt_id)
            )  # fmt: skip
        conn.executemany(item_sql, item_rows)
        conn.executemany(attempt_sql, attempt_rows)
        conn.commit()
    conn.close()
    tmp.rename(path)
    return path


def copy_to_postgres(source: Path, url: str, items: int) -> str:
    """The bench run copied into schema bench_export_N of `url` (once); returns its URL."""
    import sqlalchemy as sa

    sys.path.insert(0, str(REPO))
    from batcher.store import open_store
    from batcher.store.models import TABLES

    schema = f"bench_export_{items}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    admin.dispose()
    target_url = f"{url}?options=-csearch_path%3D{schema}"
    target = open_store(target_url)
    with target.connect() as conn:
        if conn.execute(sa.select(sa.func.count()).select_from(TABLES["item"])).scalar():
            return target_url
    print(f"copying the run into PostgreSQL schema {schema} ...", file=sys.stderr)
    src = sa.create_engine(f"sqlite:///{source}")
    with src.connect() as read, target.begin() as write:
        for name in ("prompt", "run", "item", "attempt"):
            table = TABLES[name]
            result = read.execution_options(yield_per=20_000).execute(sa.select(table))
            for part in result.partitions():
                write.execute(table.insert(), [dict(r._mapping) for r in part])
    return target_url


# --- phases (each runs in a subprocess and prints one JSON line) ---------------------------


def _batcher(fmt: str):  # noqa: ANN202
    def phase(db: str, out: str) -> dict:
        from batcher.report.exports import export_run
        from batcher.store import open_store

        engine = open_store(db if "://" in db else f"sqlite:///{db}")
        start = time.perf_counter()
        n = export_run(engine, 1, out, fmt)
        return {"items": n, "seconds": time.perf_counter() - start}

    return phase


MINIMAL_SQL = """
SELECT i.custom_id, i.line_no, p.text, i.request_json, i.metadata_json, i.status, i.output,
       f.tier, f.provider, f.model, s.n, s.input_tokens, s.cache_read_tokens,
       s.output_tokens, s.cost
FROM item i
LEFT JOIN prompt p ON p.hash = i.system_hash
LEFT JOIN attempt f ON f.id = i.final_attempt_id
LEFT JOIN (SELECT item_id, count(*) AS n, sum(input_tokens) AS input_tokens,
                  sum(cache_read_tokens) AS cache_read_tokens,
                  sum(output_tokens) AS output_tokens, sum(cost_pusd) AS cost
           FROM attempt WHERE run_id = 1 GROUP BY item_id) s ON s.item_id = i.id
WHERE i.run_id = 1 ORDER BY i.line_no
"""


def phase_minimal(db: str, out: str) -> dict:
    """The least code that writes the same JSON lines: sqlite3 fetchmany, orjson per row."""
    from decimal import Decimal

    import orjson

    conn = sqlite3.connect(db)
    start = time.perf_counter()
    n = 0
    with open(out, "wb") as f:
        cur = conn.execute(MINIMAL_SQL)
        while rows := cur.fetchmany(5000):
            for r in rows:
                req = orjson.loads(r[3])
                row = {
                    "id": r[0], "line_no": r[1], "system": r[2], "messages": req["messages"],
                    "max_tokens": req.get("max_tokens"), "metadata": orjson.loads(r[4]),
                    "status": r[5], "output": r[6], "tier": r[7], "provider": r[8],
                    "model": r[9], "attempts": r[10], "input_tokens": r[11],
                    "cache_read_tokens": r[12], "output_tokens": r[13],
                    "cost_usd": format(Decimal(r[14]).scaleb(-12), "f"),
                }  # fmt: skip
                f.write(orjson.dumps(row) + b"\n")
            n += len(rows)
    return {"items": n, "seconds": time.perf_counter() - start}


def phase_minimal_csv(db: str, out: str) -> dict:
    """The same rows through csv.writer: the floor for CSV, which the csv module sets."""
    import csv
    import io
    from decimal import Decimal

    conn = sqlite3.connect(db)
    start = time.perf_counter()
    n = 0
    with open(out, "wb") as f:
        cur = conn.execute(MINIMAL_SQL)
        while rows := cur.fetchmany(5000):
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerows(
                [*r[:14], format(Decimal(r[14]).scaleb(-12), "f")] for r in rows
            )
            f.write(text.getvalue().encode())
            n += len(rows)
    return {"items": n, "seconds": time.perf_counter() - start}


PHASES = {
    "batcher-jsonl": _batcher("jsonl"),
    "batcher-csv": _batcher("csv"),
    "batcher-parquet": _batcher("parquet"),
    "minimal-jsonl": phase_minimal,
    "minimal-csv": phase_minimal_csv,
}
PG_PHASES = {"batcher-jsonl-pg": _batcher("jsonl"), "batcher-parquet-pg": _batcher("parquet")}


def run_phase(name: str, db: Path | str, workdir: Path) -> dict:
    out = workdir / f"{name}.out"
    proc = subprocess.run(
        [sys.executable, __file__, "--phase", name, "--db", str(db), "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    if proc.returncode != 0:
        sys.exit(f"phase {name} failed:\n{proc.stderr}")
    figures = json.loads(proc.stdout.splitlines()[-1])
    figures["mb"] = out.stat().st_size / 1e6
    return figures


def show(name: str, fig: dict) -> float:
    rate = fig["items"] / fig["seconds"]
    print(
        f"{name:18} {fig['items']:>10,} items {fig['seconds']:8.2f} s {rate:>10,.0f} items/s"
        f"  peak RSS {fig['peak_rss_mb']:6.1f} MB  file {fig['mb']:8.1f} MB"
    )
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1_000_000, help="run size to generate")
    ap.add_argument("--postgres", metavar="URL", help="also export from this PostgreSQL")
    ap.add_argument("--phase", choices=[*PHASES, *PG_PHASES], help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.phase:  # child process: one phase, one JSON line
        figures = {**PHASES, **PG_PHASES}[args.phase](args.db, args.out)
        figures["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(figures))
        return

    db = build_db(args.items)
    print(f"database: {db} ({db.stat().st_size / 1e6:,.0f} MB)")
    with tempfile.TemporaryDirectory(prefix="batcher-bench-") as tmp:
        figures = {name: run_phase(name, db, Path(tmp)) for name in PHASES}
        if args.postgres:
            pg = copy_to_postgres(db, args.postgres, args.items)
            figures.update({name: run_phase(name, pg, Path(tmp)) for name in PG_PHASES})
    rates = {name: show(name, fig) for name, fig in figures.items()}
    ratio = rates["batcher-jsonl"] / rates["minimal-jsonl"]
    print(f"ratio batcher-jsonl/minimal-jsonl: {ratio:.2f}")
    print(f"ratio batcher-csv/minimal-csv: {rates['batcher-csv'] / rates['minimal-csv']:.2f}")
    worst_rss = max(fig["peak_rss_mb"] for n, fig in figures.items() if n.startswith("batcher"))
    checks = [
        (ratio >= TARGET_RATIO, f"jsonl ratio >= {TARGET_RATIO}"),
        (worst_rss < TARGET_RSS_MB, f"peak RSS < {TARGET_RSS_MB} MB in every format"),
    ]
    for ok, what in checks:
        print(f"  {'ok  ' if ok else 'MISS'} {what}")


if __name__ == "__main__":
    main()
