"""Cost and quality reports from the reconciled database: what was spent, saved and answered.

Every figure is summed in SQL from the attempt rows, in whole picodollars, so it is exact and
the same each time a run is reported. The savings against the baseline (the same input
tokens and the answer's visible output tokens, reasoning excluded, on the job's frontier
model, standard rates, no cache) split into three parts that add up to the total difference
by construction (routing can be negative when a cheap model reasons at length):

    routing  = baseline - (uncached - opinions)   (cheaper tiers instead of the frontier model)
    opinions = - second opinions' uncached cost   (the agreement cascade's checks, negative)
    caching  = uncached - standard   (prompt-cache prices on the same model)
    batch    = standard - cost       (the Batch API discount)

Second opinions have no baseline of their own (all-frontier asks once), so their cost at
standard, uncached rates is a part of its own; their cache and batch discounts stay in those
parts.

`check_report` adds the parts back and compares the per-tier rows with totals summed
separately, so a report that does not add up raises instead of being shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from itertools import groupby

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batcher.errors import BatcherError, UsageError
from batcher.money.amounts import fmt_money, to_pusd, to_usd
from batcher.money.prices import unit_prices
from batcher.plan.groups import prompt_name, prompt_names, short_id
from batcher.plan.layout import group_prefix_tokens
from batcher.plan.tokens import count_tokens
from batcher.providers import wire_format
from batcher.providers.capabilities import cold_requests
from batcher.spec import JobSpec, spec_from_snapshot
from batcher.store import prompts, reports
from batcher.store.lost import LostBatch, lost_batches
from batcher.store.states import (
    ATTEMPT_FINAL,
    ITEM_TERMINAL,
    RUN_TERMINAL,
    AttemptStatus,
    ItemStatus,
)

ANSWERED = {AttemptStatus.SUCCEEDED, AttemptStatus.REUSED}
FINAL = {str(s) for s in ATTEMPT_FINAL}
UNANSWERED = {AttemptStatus.INVALID, AttemptStatus.TRUNCATED}  # an answer that is none
FORMATS = ("table", "json", "csv", "md", "html")
PICO = Decimal(1).scaleb(-12)


class ReportMismatch(BatcherError):
    """The parts of a report do not add up to its totals: the database is inconsistent."""


def usd(pusd: int) -> Decimal:
    """Exact dollars with twelve decimals (fixed point, never scientific notation)."""
    return to_usd(pusd).quantize(PICO)


def ratio(part: int, whole: int) -> Decimal | None:
    """part / whole rounded to six decimals, or None when there is no whole."""
    if not whole:
        return None
    return (Decimal(part) / Decimal(whole)).quantize(Decimal("0.000001"), ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Costs:
    """Sums of the four cost columns of a set of attempts, in picodollars."""

    cost: int = 0
    standard: int = 0
    uncached: int = 0
    baseline: int = 0
    opinions: int = 0  # second opinions at standard, uncached rates (their baseline is 0)
    calibration: int = 0  # the calibration sample's frontier answers, the same way

    @property
    def routing(self) -> int:
        return self.baseline - (self.uncached - self.opinions - self.calibration)

    @property
    def calibration_sample(self) -> int:
        """What the calibration sample took off the savings (<= 0)."""
        return -self.calibration

    @property
    def second_opinions(self) -> int:
        """What the agreement cascade's second opinions took off the savings (<= 0)."""
        return -self.opinions

    @property
    def caching(self) -> int:
        return self.uncached - self.standard

    @property
    def batch(self) -> int:
        return self.standard - self.cost

    @property
    def saved(self) -> int:
        return self.baseline - self.cost

    @property
    def discount(self) -> Decimal | None:
        """The effective discount: share of the baseline that was not paid."""
        return ratio(self.saved, self.baseline)

    def __add__(self, other: Costs) -> Costs:
        return Costs(
            self.cost + other.cost,
            self.standard + other.standard,
            self.uncached + other.uncached,
            self.baseline + other.baseline,
            self.opinions + other.opinions,
            self.calibration + other.calibration,
        )


@dataclass
class TierRow:
    """Attempts at one (tier, provider, model), or the whole report when tier is "TOTAL".

    `items` counts the distinct items attempted there; `succeeded` the items whose final,
    successful attempt was there, so cost per success is what the tier spent per answer it
    delivered (including attempts that failed and escalated elsewhere).
    """

    tier: str
    provider: str
    model: str
    items: int = 0
    succeeded: int = 0
    attempts: int = 0
    reused: int = 0  # attempts answered from an earlier run at no cost
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    costs: Costs = field(default_factory=Costs)

    @property
    def success_rate(self) -> Decimal | None:
        return ratio(self.succeeded, self.items)

    @property
    def cost_per_success(self) -> int | None:
        """Picodollars per successful item, rounded half-even; None without a success."""
        if not self.succeeded:
            return None
        q, r = divmod(self.costs.cost, self.succeeded)
        # half-even rounding of an integer quotient, without floats
        if 2 * r > self.succeeded or (2 * r == self.succeeded and q % 2):
            q += 1
        return q


@dataclass
class CacheGroupRow:
    """Prompt-cache use of one cache group on one model."""

    cache_group: str
    provider: str
    model: str
    attempts: int  # answered attempts (those that reported usage)
    prefix_tokens: int  # tokens of the group's system prompt
    cacheable_tokens: int  # prefix tokens summed over those attempts
    cache_read_tokens: int
    expected_read_tokens: int = 0  # what the plan's cache model expected of these attempts
    name: str = ""  # the prompt's name (batcher.plan.groups)

    @property
    def label(self) -> str:
        """Name and short id, as `batcher plan` shows the same group."""
        return f"{self.name} {short_id(self.cache_group)}".strip()

    @property
    def read_low(self) -> bool:
        """The group read under half of what the cache model expected."""
        return self.expected_read_tokens > 0 and 2 * self.cache_read_tokens < (
            self.expected_read_tokens
        )

    @property
    def efficiency(self) -> Decimal | None:
        """Share of cacheable prefix tokens billed as cache reads.

        Capped at 1: a provider may count a few framing tokens into the cached prefix.
        """
        rate = ratio(min(self.cache_read_tokens, self.cacheable_tokens), self.cacheable_tokens)
        return rate


@dataclass
class RunInfo:
    """One run in the report, with its own totals (for the per-run chart)."""

    id: int
    job_name: str
    status: str
    created_at: datetime | None
    finished_at: datetime | None
    items: int
    succeeded: int
    unfinished: int  # items not yet in a terminal status
    costs: Costs
    error: str | None = None  # why it stopped, when it failed

    @property
    def in_flight(self) -> bool:
        return self.status not in RUN_TERMINAL or self.unfinished > 0


@dataclass(frozen=True)
class LostRow:
    """A batch the provider no longer knows, and the most its unfinished requests may have
    cost: the provider may have run (and billed) them before it lost the batch, and no usage
    is left to read. Counted at the estimated input tokens and the spec's max_tokens, batch
    rates; not part of the report's totals, which hold billed usage only."""

    batch: LostBatch
    may_cost_pusd: int

    def describe(self) -> str:
        b = self.batch
        return (
            f"Run {b.run_id}: batch {b.id_text} was lost at {b.provider} ({b.error}). Its "
            f"{b.n_lost} unfinished request(s) were sent again; they may have cost up to "
            f"{fmt_money(to_usd(self.may_cost_pusd))} more than these figures show."
        )


@dataclass
class DirectRow:
    """Attempts of one provider:model sent in direct mode (one by one, standard rates)."""

    provider: str
    model: str
    attempts: int
    resent: int  # sent again after a crash or an unclear answer: possibly billed twice


@dataclass
class AgreementRow:
    """The agreement cascade on one first tier: items whose valid answer was compared with
    every second opinion, how many agreed (accepted there), and how many escalated because
    an opinion differed or was invalid."""

    tier: str
    compared: int = 0
    agreed: int = 0
    escalated: int = 0  # by disagreement (or an invalid opinion)

    @property
    def rate(self) -> Decimal | None:
        return ratio(self.agreed, self.compared)


@dataclass
class CalibrationRow:
    """A first tier against the frontier on the calibration sample: items where both
    answered, and how many gave the same answer key (a drift signal, run after run)."""

    tier: str
    sampled: int = 0
    agreed: int = 0

    @property
    def rate(self) -> Decimal | None:
        return ratio(self.agreed, self.sampled)


@dataclass
class Report:
    """Everything a report shows; `render_report` turns it into table, json, csv, md or html."""

    runs: list[RunInfo]
    tiers: list[TierRow]
    total: TierRow
    cache_groups: list[CacheGroupRow]
    lost: list[LostRow] = field(default_factory=list)
    failures: list[tuple[str, int]] = field(default_factory=list)  # (reason, failed items)
    direct: list[DirectRow] = field(default_factory=list)
    agreement: list[AgreementRow] = field(default_factory=list)
    calibration: list[CalibrationRow] = field(default_factory=list)

    @property
    def in_flight(self) -> list[RunInfo]:
        return [r for r in self.runs if r.in_flight]

    def title(self) -> str:
        if len(self.runs) == 1:
            run = self.runs[0]
            return f"Run {run.id} ({run.job_name})"
        jobs = sorted({r.job_name for r in self.runs})
        return f"{len(self.runs)} runs of {', '.join(jobs)}"

    def warnings(self) -> list[str]:
        """One line a run still in flight (its figures are not final), one a lost batch."""
        return [_unfinished(r) for r in self.in_flight] + [row.describe() for row in self.lost]


def _unfinished(run: RunInfo) -> str:
    """Why a run's figures are not final: it failed (and why), or it is still going."""
    left = f"{run.unfinished} of {run.items} items unfinished"
    if run.status == "failed":
        return (
            f"Run {run.id} failed: {run.error or 'no reason was recorded'} ({left}; these "
            "figures change when it is resumed)."
        )
    return (
        f"Run {run.id} is still in flight (status {run.status}, {left}): these figures will change."
    )


# ----------------------------------------------------------------------------- selection


def _as_utc(value: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back; they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def parse_since(text: str) -> datetime:
    """An ISO date or date-time (UTC unless it says otherwise); raises UsageError."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--since {text!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM"
        ) from None
    return _as_utc(when)


def select_runs(
    db: Engine,
    run_id: int | None = None,
    *,
    job: str | None = None,
    since: datetime | None = None,
) -> list[int]:
    """Ids of the runs to report, oldest first: RUN itself; else the runs of `job` and/or
    created at or after `since`; else the latest run. Without RUN, only runs that sent
    something count (`batcher.store.runs.was_submitted`): a plan never sent is no result.

    Raises UsageError when nothing matches, or when RUN is combined with a filter.
    """
    filtered = job is not None or since is not None
    if run_id is not None and filtered:
        raise UsageError(f"give RUN ({run_id}) or --job/--since, not both")
    with db.connect() as conn:
        ids = reports.run_ids(conn, run_id, job=job, since=since)
    if ids:
        return ids
    if run_id is not None:
        raise UsageError(f"run {run_id} not found: `batcher status` lists the runs")
    if filtered:
        wanted = [f"--job {job}" if job else "", f"--since {since:%Y-%m-%d}" if since else ""]
        raise UsageError(
            f"no run matches {' '.join(w for w in wanted if w)}: widen the filter or check "
            "the job's name"
        )
    raise UsageError("no runs yet: start one with `batcher run JOB`")


# ----------------------------------------------------------------------------- queries


def _int(value) -> int:  # noqa: ANN001 - PostgreSQL sums bigints to Decimal, SQLite to int
    return int(value or 0)


def _fill(row: TierRow, sums: sa.Row) -> TierRow:
    row.attempts = _int(sums.attempts)
    row.reused = _int(sums.reused)
    row.input_tokens = _int(sums.input_tokens)
    row.cache_read_tokens = _int(sums.cache_read_tokens)
    row.cache_write_tokens = _int(sums.cache_write_tokens)
    row.output_tokens = _int(sums.output_tokens)
    row.costs = _costs(sums)
    return row


def _costs(sums: sa.Row) -> Costs:
    m = sums._mapping
    return Costs(
        _int(m["cost"]), _int(m["standard"]), _int(m["uncached"]), _int(m["baseline"]),
        _int(m["opinions"]), _int(m["calibration"]),
    )  # fmt: skip


def _tier_order(conn: Connection, run_ids: list[int]) -> list[str]:
    """Tiers in the order of the latest run's spec (cheapest first, as the user wrote them)."""
    snapshot = reports.spec_snapshot(conn, max(run_ids))
    try:
        return list(orjson.loads(snapshot).get("tiers", {}))
    except (orjson.JSONDecodeError, AttributeError):
        return []


def _tier_rows(conn: Connection, run_ids: list[int]) -> list[TierRow]:
    rows: dict[tuple[str, str, str], TierRow] = {}
    for sums in reports.by_tier(conn, run_ids):
        key = (sums.tier, sums.provider, sums.model)
        rows[key] = _fill(TierRow(*key, items=_int(sums.items)), sums)
    for win in reports.wins_by_tier(conn, run_ids):
        rows[(win.tier, win.provider, win.model)].succeeded = _int(win.n)
    order = {tier: n for n, tier in enumerate(_tier_order(conn, run_ids))}
    return sorted(rows.values(), key=lambda r: (order.get(r.tier, len(order)), r.tier, r.model))


def _total_row(conn: Connection, run_ids: list[int]) -> TierRow:
    total = _fill(TierRow("TOTAL", "", ""), reports.totals(conn, run_ids))
    counts = reports.item_totals(conn, run_ids)
    total.items, total.succeeded = _int(counts.items), _int(counts.succeeded)
    return total


def _runs(conn: Connection, run_ids: list[int]) -> list[RunInfo]:
    status_counts: dict[int, dict[str, int]] = {}
    for row in reports.items_by_run(conn, run_ids):
        status_counts.setdefault(row.run_id, {})[row.status] = _int(row.n)
    costs: dict[int, Costs] = {}
    for row in reports.sums_by_run(conn, run_ids):
        costs[row.run_id] = _costs(row)
    infos = []
    for row in reports.runs(conn, run_ids):
        counts = status_counts.get(row.id, {})
        terminal = {str(s) for s in ITEM_TERMINAL}
        infos.append(
            RunInfo(
                id=row.id,
                job_name=row.job_name,
                status=row.status,
                created_at=_as_utc(row.created_at),
                finished_at=_as_utc(row.finished_at),
                items=sum(counts.values()),
                succeeded=counts.get(ItemStatus.SUCCEEDED.value, 0),
                unfinished=sum(n for s, n in counts.items() if s not in terminal),
                costs=costs.get(row.id, Costs()),
                error=row.error,
            )
        )
    return infos


def _cache_groups(conn: Connection, run_ids: list[int]) -> list[CacheGroupRow]:
    found = reports.cache_groups(conn, run_ids)
    texts = prompts.texts(conn, sorted({row.system_hash for row in found}))
    names = prompt_names(_specs(conn, run_ids))
    # The cache model of the first run's spec (its [caching] settings and prices).
    spec = spec_from_snapshot(reports.spec_snapshot(conn, run_ids[0])) if found else None
    rows: dict[tuple[str, str, str], CacheGroupRow] = {}
    for row in found:
        key = (row.cache_group, row.provider, row.model)
        prefix = count_tokens(texts[row.system_hash])
        n = _int(row.attempts)
        name = prompt_name(row.system_hash, texts[row.system_hash], names)
        group = rows.setdefault(key, CacheGroupRow(*key, 0, prefix, 0, 0, name=name))
        group.attempts += n
        group.cacheable_tokens += n * prefix
        group.cache_read_tokens += _int(row.read)
        group.expected_read_tokens += expected_reads(
            spec, row.provider, row.model, texts[row.system_hash], n, _int(row.batches)
        )
        group.prefix_tokens = max(group.prefix_tokens, prefix)
    return [rows[k] for k in sorted(rows)]


def expected_reads(
    spec: JobSpec, provider: str, model: str, system: str, n: int, batches: int
) -> int:
    """Cache read tokens the plan's cache model expects of `n` attempts of one group sent in
    `batches` batches: the first cold requests of each batch miss, the rest read (none for
    a prefix that is too short or may not cache, or whose caching does not pay)."""
    wire = wire_format(provider, spec.providers.get(provider))
    prefix = group_prefix_tokens(wire, model, system)
    per_batch = -(-n // max(1, batches))
    plan = wire.plan_cache(model, prefix, n, per_batch, spec)
    if not plan.certain or not plan.read_tokens:
        return 0
    cold = cold_requests(spec, provider, getattr(wire, "COLD_REQUESTS", 0))
    return (n - min(n, cold * max(1, batches))) * plan.read_tokens


def _direct_rows(conn: Connection, run_ids: list[int]) -> list[DirectRow]:
    """Direct-mode batches by provider:model, with the requests their journals say were sent
    again (possibly billed twice)."""
    from batcher.providers import DIRECT_PREFIX, resent_count

    rows: dict[tuple[str, str], DirectRow] = {}
    for batch in reports.batches_with_id_prefix(conn, run_ids, DIRECT_PREFIX):
        row = rows.setdefault((batch.provider, batch.model),
                              DirectRow(batch.provider, batch.model, 0, 0))  # fmt: skip
        row.attempts += _int(batch.n)
        row.resent += resent_count(batch.id)
    return [rows[k] for k in sorted(rows)]


def _agreement(conn: Connection, run_ids: list[int]) -> list[AgreementRow]:
    rows: dict[str, AgreementRow] = {}
    for _, chain in groupby(reports.cascade_chains(conn, run_ids), key=lambda a: a.item_id):
        _count_agreement(list(chain), rows)
    return [rows[tier] for tier in sorted(rows)]


def _calibration(conn: Connection, run_ids: list[int]) -> list[CalibrationRow]:
    rows: dict[str, CalibrationRow] = {}
    for pair in reports.calibration_pairs(conn, run_ids):
        if pair.status not in ANSWERED or pair.frontier_status not in ANSWERED:
            continue
        row = rows.setdefault(pair.tier, CalibrationRow(pair.tier))
        row.sampled += 1
        row.agreed += pair.answer_key is not None and pair.answer_key == pair.key
    return [rows[tier] for tier in sorted(rows)]


def _count_agreement(chain: list[sa.Row], rows: dict[str, AgreementRow]) -> None:
    """One item's attempts into the row of its first tier."""
    primaries = [a for a in chain if a.role != reports.OPINION]
    if not primaries:
        return
    first = primaries[0].tier
    answer = [a for a in primaries if a.tier == first][-1]
    opinions = {a.tier: a for a in chain if a.role == reports.OPINION}  # latest of each
    row = rows.setdefault(first, AgreementRow(first))
    if answer.status not in ANSWERED or any(o.status not in FINAL for o in opinions.values()):
        return
    if any(o.status in UNANSWERED for o in opinions.values()):
        row.escalated += any(a.tier != first for a in primaries)
        return
    if any(o.status not in ANSWERED for o in opinions.values()):
        return  # an opinion that never came: nothing was compared
    row.compared += 1
    if answer.answer_key is not None and all(
        o.answer_key == answer.answer_key for o in opinions.values()
    ):
        row.agreed += 1
    else:
        row.escalated += any(a.tier != first for a in primaries)


def _specs(conn: Connection, run_ids: list[int]) -> list[JobSpec]:
    """The spec snapshots of the runs, newest first (their [prompts] name the groups)."""
    return [spec_from_snapshot(text) for text in reports.spec_snapshots(conn, run_ids)]


# ----------------------------------------------------------------------------- building


def check_report(report: Report) -> None:
    """Raise ReportMismatch unless the savings parts add up to the total difference and the
    per-tier rows add up to the totals summed separately from the attempts."""
    t = report.total
    c = t.costs
    parts = c.routing + c.second_opinions + c.calibration_sample + c.caching + c.batch
    if parts != t.costs.saved:
        raise ReportMismatch(
            f"savings parts add up to {parts} pusd, not the total difference {t.costs.saved}"
        )
    summed = Costs()
    for row in report.tiers:
        summed = summed + row.costs
    if summed != t.costs:
        raise ReportMismatch(f"per-tier costs {summed} differ from the totals {t.costs}")
    for name in (
        "attempts",
        "reused",
        "input_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "output_tokens",
    ):
        by_tier = sum(getattr(row, name) for row in report.tiers)
        if by_tier != getattr(t, name):
            raise ReportMismatch(f"per-tier {name} add up to {by_tier}, not {getattr(t, name)}")
    wins = sum(row.succeeded for row in report.tiers)
    if wins > t.succeeded:
        raise ReportMismatch(f"tiers report {wins} successes, the items only {t.succeeded}")


def _lost(conn: Connection, run_ids: list[int]) -> list[LostRow]:
    rows = []
    specs: dict[int, JobSpec] = {}
    for batch in lost_batches(conn, run_ids):
        if batch.run_id not in specs:
            specs[batch.run_id] = spec_from_snapshot(reports.spec_snapshot(conn, batch.run_id))
        spec = specs[batch.run_id]
        prices = unit_prices(batch.provider, batch.model, batch=True, spec=spec)
        output = batch.n_lost * spec.defaults.max_tokens
        usd_ = prices.input * batch.input_tokens + prices.output * output
        rows.append(LostRow(batch, to_pusd(usd_)))
    return rows


def build_report(db: Engine, run_ids: list[int]) -> Report:
    """The report over `run_ids` (see `select_runs`), checked with `check_report`.

    Reads in one transaction so the parts come from the same snapshot as the totals even
    while the engine is reconciling (SQLite WAL / PostgreSQL repeatable read).
    """
    if not run_ids:
        raise UsageError("no runs to report")
    with reports.snapshot(db) as conn:
        report = Report(
            runs=_runs(conn, run_ids),
            tiers=_tier_rows(conn, run_ids),
            total=_total_row(conn, run_ids),
            cache_groups=_cache_groups(conn, run_ids),
            lost=_lost(conn, run_ids),
            failures=reports.failure_reasons(conn, run_ids),
            direct=_direct_rows(conn, run_ids),
            agreement=_agreement(conn, run_ids),
            calibration=_calibration(conn, run_ids),
        )
    check_report(report)
    return report
