"""Where a run stands (`RunOutcome`), and `batcher status` read without the run engine.

`quick_status` answers `batcher status` through `batcher.store.peek` (sqlite3, or psycopg
alone), without importing SQLAlchemy, the price table or the SDKs (about a second of start-up
otherwise); the engine's `run_status` gives the same answer for any database.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from batcher.errors import UsageError
from batcher.money.amounts import to_usd
from batcher.run.options import RunOptions
from batcher.store import peek
from batcher.store.states import ItemStatus, RunStatus

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_RUNNING, EXIT_CANCELLED = 0, 1, 2, 3, 4


@dataclass
class RunOutcome:
    """Where a run stands after a call: status, items by status, money."""

    run_id: int
    status: str  # a RunStatus value
    items: dict[str, int] = field(default_factory=dict)
    cost_pusd: int = 0
    baseline_pusd: int = 0
    message: str | None = None  # why the run stopped, when it did
    nothing_to_cancel: bool = False  # a cancel found every item already finished

    @property
    def n_items(self) -> int:
        return sum(self.items.values())

    @property
    def exit_code(self) -> int:
        if self.nothing_to_cancel:
            return EXIT_OK
        if self.status == RunStatus.COMPLETED:
            ok = self.items.get(ItemStatus.SUCCEEDED, 0) == self.n_items
            return EXIT_OK if ok else EXIT_FAILED
        if self.status == RunStatus.CANCELLED:
            return EXIT_CANCELLED
        if self.status == RunStatus.FAILED:
            return EXIT_FAILED
        return EXIT_RUNNING

    def summary(self) -> dict[str, Any]:
        """Items by status and money, as plain values (for tables and JSON)."""
        succeeded = self.items.get(ItemStatus.SUCCEEDED, 0)
        per_success = to_usd(self.cost_pusd) / succeeded if succeeded else None
        return {
            "run": self.run_id,
            "status": self.status,
            "items": self.n_items,
            **{str(s): self.items.get(s, 0) for s in ItemStatus},
            "cost_usd": to_usd(self.cost_pusd),
            "baseline_usd": to_usd(self.baseline_pusd),
            "cost_per_success_usd": per_success.quantize(Decimal("1e-9")) if per_success else None,
            "message": self.message,
        }


def quick_status(url: str | None, run_id: int | None = None) -> Any:
    """What `engine.run_status` returns, read without the engine; None when the database is
    not an existing SQLite file or a reachable PostgreSQL one whose schema these queries fit
    (the caller then opens the store as usual)."""
    conn = peek.open_peek(url)
    if conn is None:
        return None
    try:
        return _status(conn, run_id)
    except conn.errors:
        return None
    finally:
        conn.close()


def _outcome(conn: peek.Peek, run_id: int, run: dict[str, Any]) -> RunOutcome:
    cost, baseline = peek.cost_totals(conn, run_id)
    by_status = peek.counts_by_status(conn, run_id)
    return RunOutcome(run_id, run["status"], by_status, cost, baseline, run["error"])


def _status(conn: peek.Peek, run_id: int | None) -> Any:
    if run_id is None:
        rows = []
        for rid, job, status, created in peek.recent(conn):
            summary = _outcome(conn, rid, {"status": status, "error": None}).summary()
            rows.append(
                {
                    "run": rid,
                    "job": job,
                    "status": status,
                    "items": summary["items"],
                    "succeeded": summary["succeeded"],
                    "failed": summary["failed"],
                    "cost_usd": summary["cost_usd"],
                    "created": f"{created:%Y-%m-%d %H:%M}",
                }
            )
        return rows
    run = peek.run(conn, run_id)
    if run is None:
        raise UsageError(f"no run {run_id} in the state database (see `batcher status`)")
    summary = _outcome(conn, run_id, run).summary()
    options = asdict(RunOptions.from_json(run["options_json"]))
    shown = peek.batches_for_status(conn, run_id)
    return {**summary, "lease_owner": run["lease_owner"], "options": options, "batches": shown}
