"""What a planned run will cost, before a cent is spent, next to the article's baselines.

The estimate prices the planned attempts of a run from their estimated input tokens (real
offline tokenizer, counted at ingest), their output cap (`max_tokens`, an upper bound, unless
an average is given), and the expected prompt-cache use of each cache group at an assumed
hit rate. Five figures, each a technique on its own and then all together:

    frontier_sync  every request on the frontier tier, standard rates, no cache
    batch          ... at batch rates
    caching        ... with prompt caching
    routing        each request on its routed model, standard rates, no cache
    combined       routed, batch rates, with caching: the estimate itself

Requests are summed per cache group with exact per-token prices; a request long enough to
reach a long-context price tier is priced on its own (tiers apply per request).

Next to the expected cost, `worst_case` prices every escalation taken: each request on its
routed tier and again on every tier above it on the ladder (up to `retry.max_attempts`
attempts), the bound a budget must allow for the run to finish without stopping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import orjson
from sqlalchemy.engine import Connection, Engine

from batcher.errors import UsageError
from batcher.money.amounts import fmt_usd, to_pusd, to_usd
from batcher.money.prices import price_usd, unit_prices
from batcher.plan.layout import group_prefix_tokens, limits
from batcher.plan.routing import token_basis
from batcher.providers import wire_format
from batcher.providers.base import Usage
from batcher.providers.capabilities import cold_requests, expected_misses
from batcher.spec import JobSpec
from batcher.store import attempts
from batcher.store.prompts import text_of

CACHE_MODEL = "the first requests of each cache group in each batch miss ([caching] cold_requests)"
PRIMARY = "primary"  # attempt.role of an answer (others check or calibrate it)
SCENARIOS = ("frontier_sync", "batch", "caching", "routing", "combined")
SCENARIO_LABELS = {
    "frontier_sync": "all frontier, synchronous, no cache",
    "batch": "all frontier, batch",
    "caching": "all frontier, prompt caching",
    "routing": "routed tiers, synchronous, no cache",
    "combined": "routed + batch + caching (this plan)",
}


@dataclass
class Estimate:
    """The expected cost of a run's planned attempts and the five scenario figures."""

    run_id: int
    n_requests: int = 0
    input_tokens: int = 0
    cache_read_tokens: int = 0  # expected, in the combined scenario
    cache_write_tokens: int = 0
    output_tokens: int = 0
    output_basis: str = "max_tokens cap (upper bound)"
    token_basis: str = field(default_factory=token_basis)
    cache_model: str = CACHE_MODEL
    scenarios: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SCENARIOS, 0))
    worst_case_pusd: int = 0  # every escalation taken (see the module docstring)
    by_model: dict[tuple[str, str, str], dict[str, int]] = field(default_factory=dict)

    @property
    def cost_pusd(self) -> int:
        return self.scenarios["combined"]

    @property
    def cost_usd(self) -> Decimal:
        return to_usd(self.cost_pusd)

    @property
    def cached_share(self) -> Decimal:
        """Expected share of input tokens read from the cache."""
        if not self.input_tokens:
            return Decimal(0)
        return Decimal(self.cache_read_tokens) / Decimal(self.input_tokens)

    def baseline_rows(self) -> list[dict[str, object]]:
        """The scenarios for printing, each with its saving against all-frontier sync."""
        top = self.scenarios["frontier_sync"]
        return [
            {
                "scenario": SCENARIO_LABELS[name],
                "usd": fmt_usd(to_usd(pusd)),
                "saving": f"{(1 - Decimal(pusd) / top) * 100:.1f}%" if top else "",
            }
            for name, pusd in self.scenarios.items()
        ]

    def to_dict(self) -> dict[str, object]:
        return {
            "run": self.run_id,
            "requests": self.n_requests,
            "input_tokens": self.input_tokens,
            "expected_cache_read_tokens": self.cache_read_tokens,
            "expected_cache_write_tokens": self.cache_write_tokens,
            "output_tokens": self.output_tokens,
            "output_basis": self.output_basis,
            "token_basis": self.token_basis,
            "cache_model": self.cache_model,
            "expected_cached_share": f"{self.cached_share:.4f}",
            "estimate_usd": str(self.cost_usd),
            "worst_case_usd": str(to_usd(self.worst_case_pusd)),
            "scenarios_usd": {k: str(to_usd(v)) for k, v in self.scenarios.items()},
            "by_model": [
                {"provider": p, "model": m, "tier": t, **{k: v for k, v in row.items()}}
                for (p, m, t), row in self.by_model.items()
            ],
        }


def budget_refusal(estimate: Estimate, max_usd: float | Decimal | None, where: str) -> str | None:
    """Why the estimate may not be spent under `max_usd` (exact amounts), or None when it may.

    `where` names the budget's source, e.g. "--max-usd" or "job.toml: max_usd".
    """
    if max_usd is None:
        return None
    limit = to_pusd(Decimal(str(max_usd)))
    if estimate.cost_pusd <= limit:
        return None
    over = estimate.cost_pusd - limit
    return (
        f"the estimate ${_exact(estimate.cost_pusd)} is ${_exact(over)} over the budget of "
        f"${_exact(limit)} ({where}); nothing was submitted"
    )


def _exact(pusd: int) -> str:
    return f"{to_usd(pusd).normalize():f}"


def check_budget(estimate: Estimate, max_usd: float | Decimal | None, where: str) -> None:
    """Raise UsageError when the estimate exceeds `max_usd`, saying by how much."""
    refusal = budget_refusal(estimate, max_usd, where)
    if refusal:
        raise UsageError(f"{refusal}: raise the budget or send fewer items")


class _Pricer:
    """Expected usage of a group on a model, priced per scenario."""

    def __init__(self, spec: JobSpec, key_totals: dict):
        self.spec, self.key_totals = spec, key_totals
        self.limits = limits(spec)

    def cached_usage(
        self, provider: str, model: str, n: int, system: str, input_sum: int, out_sum: int
    ) -> Usage:
        """Tokens of `n` requests sharing the system prompt `system`, with the expected
        cache use: the first requests of the group in each batch miss (`cold_requests`: a
        batch's requests run concurrently) and write the prefix (Anthropic, where it is
        marked); the others read it. A prefix that "may not cache" is planned uncached."""
        usage = Usage(input_tokens=input_sum, output_tokens=out_sum)
        wire = wire_format(provider, self.spec.providers.get(provider))
        prefix = group_prefix_tokens(wire, model, system)
        batch = min(self.limits[provider][0], self.key_totals.get((provider, model), n))
        plan = wire.plan_cache(model, prefix, n, batch, self.spec)
        if not plan.certain or not plan.read_tokens:
            return usage
        cold = cold_requests(self.spec, provider, getattr(wire, "COLD_REQUESTS", 0))
        misses = expected_misses(n, cold, batch)
        usage.cache_read_tokens = (n - misses) * plan.read_tokens
        if plan.write_ttl == "1h":
            usage.cache_write_1h_tokens = misses * prefix
        elif plan.write_ttl == "5m":
            usage.cache_write_5m_tokens = misses * prefix
        return usage

    def usd(self, provider: str, model: str, usage: Usage, batch: bool) -> Decimal:
        return unit_prices(provider, model, batch=batch, spec=self.spec).cost(usage)


def escalations(spec: JobSpec, tier: str) -> list[tuple[str, str]]:
    """(provider, model) of every tier an invalid answer on `tier` can climb to, in order:
    the ladder above `tier`, at most `retry.max_attempts - 1` of them."""
    ladder = spec.routing.ladder
    if tier not in ladder:
        return []
    above = ladder[ladder.index(tier) + 1 :][: spec.retry.max_attempts - 1]
    return [spec.model_of(t) for t in above]


def reads_attempts(spec: JobSpec, facts: InputFacts) -> bool:
    """Whether `estimate_run` of a fresh plan with these `facts` reads its attempts back (a
    request priced alone past a long-context tier, an item with a max_tokens of its own, no
    sums), so that the plan must be laid out before it can be estimated."""
    if facts.groups is None or facts.own_max_tokens:
        return True
    models = {(g[0], g[1]) for g in facts.groups} | {spec.model_of(spec.frontier_tier)}
    threshold = _long_threshold(spec, models)
    return threshold is not None and facts.max_input_tokens > threshold


def _long_threshold(spec: JobSpec, models: set[tuple[str, str]]) -> int | None:
    starts = [
        unit_prices(p, m, batch=b, spec=spec).tier_start for p, m in models for b in (True, False)
    ]
    starts = [s for s in starts if s is not None]
    return min(starts) if starts else None


def _output_caps(
    conn: Connection, run_id: int, spec: JobSpec, threshold: int | None, statuses: tuple[str, ...]
) -> dict:
    """Sum of max_tokens of the items (or attempts: a truncated answer's retry) that set their
    own, by group key; others use the spec default. Only rows that set one are read."""
    extra: dict[tuple, int] = {}
    default = spec.defaults.max_tokens
    rows = attempts.planned_own_max_tokens(conn, run_id, threshold, statuses)
    for *key, request_json, attempt_cap in rows:
        own = attempt_cap or orjson.loads(request_json).get("max_tokens", default)
        extra[tuple(key)] = extra.get(tuple(key), 0) + own - default
    return extra


@dataclass(frozen=True)
class InputFacts:
    """What a fresh plan knows of its items from the one read of the input, so that the
    estimate skips the queries that would find nothing: no request past a long-context price
    tier (each would be priced alone), no item with a max_tokens of its own (each read back)."""

    max_input_tokens: int
    own_max_tokens: bool
    # the plan's attempts by cache group, as attempts.planned_groups reads them, summed while
    # the plan was laid out (None: read them back)
    groups: list[tuple] | None = None


def estimate_run(
    db: Engine,
    run_id: int,
    spec: JobSpec,
    *,
    output_tokens: int | None = None,
    statuses: tuple[str, ...] = attempts.PLANNED,
    facts: InputFacts | None = None,
) -> Estimate:
    """Estimate the cost of the run's planned attempts (see the module docstring).

    `output_tokens` assumes that many output tokens a request instead of the max_tokens cap;
    `statuses` widens what is estimated (e.g. submitted attempts, not billed yet); `facts`
    (of a plan just made from its input) spares reading back what cannot change the figures.
    Raises UsageError when a model cannot be priced.
    """
    est = Estimate(run_id=run_id)
    if output_tokens is not None:
        est.output_basis = f"{output_tokens} tokens a request (assumed)"
    top = spec.model_of(spec.frontier_tier)
    with db.connect() as conn:
        summed = facts.groups if facts is not None and statuses == attempts.PLANNED else None
        if summed is not None:
            key_totals: dict[tuple[str, str], int] = {}
            for provider, model, _, _, n, _, _ in summed:
                key_totals[(provider, model)] = key_totals.get((provider, model), 0) + n
        else:
            key_totals = attempts.planned_by_model(conn, run_id, statuses)
        threshold = _long_threshold(spec, set(key_totals) | {top})
        if facts is not None and threshold is not None and facts.max_input_tokens <= threshold:
            threshold = None  # no request reaches the long-context tier
        if threshold is not None:
            summed = None  # the sums hold requests that are priced one by one
        pricer = _Pricer(spec, key_totals)
        read_caps = output_tokens is None and (facts is None or facts.own_max_tokens)
        caps = _output_caps(conn, run_id, spec, threshold, statuses) if read_caps else {}
        prompts: dict[str, str] = {}
        groups = (
            summed
            if summed is not None
            else attempts.planned_groups(conn, run_id, threshold, statuses)
        )
        for provider, model, tier, system_hash, n, input_sum, role in groups:
            per_request = output_tokens if output_tokens is not None else spec.defaults.max_tokens
            out_sum = n * per_request + caps.get((provider, model, tier, system_hash), 0)
            system = text_of(conn, system_hash, prompts)
            prefix = system or ""
            _add_group(
                est, pricer, top, (provider, model, tier), n, prefix, int(input_sum), out_sum,
                extra=role != PRIMARY,
            )  # fmt: skip
        if threshold is not None:
            _add_long(conn, est, spec, top, run_id, threshold, output_tokens, statuses)
    return est


def _add_group(
    est: Estimate,
    pricer: _Pricer,
    top: tuple[str, str],
    key: tuple[str, str, str],
    n: int,
    prefix: str,
    input_sum: int,
    out_sum: int,
    *,
    extra: bool = False,
) -> None:
    provider, model, _ = key
    plain = Usage(input_tokens=input_sum, output_tokens=out_sum)
    routed_cached = pricer.cached_usage(provider, model, n, prefix, input_sum, out_sum)
    top_cached = pricer.cached_usage(*top, n, prefix, input_sum, out_sum)
    figures = {
        "frontier_sync": pricer.usd(*top, plain, batch=False),
        "batch": pricer.usd(*top, plain, batch=True),
        "caching": pricer.usd(*top, top_cached, batch=False),
        "routing": pricer.usd(provider, model, plain, batch=False),
        "combined": pricer.usd(provider, model, routed_cached, batch=True),
    }
    if extra:
        _no_baseline(figures)
    _add(est, key, n, routed_cached, figures)
    est.worst_case_pusd += to_pusd(figures["combined"])
    for up in escalations(pricer.spec, key[2]):
        up_cached = pricer.cached_usage(*up, n, prefix, input_sum, out_sum)
        est.worst_case_pusd += to_pusd(pricer.usd(*up, up_cached, batch=True))


def _no_baseline(figures: dict[str, Decimal]) -> None:
    """A second opinion or a calibration answer is asked on top of an item's answer: the
    all-frontier scenarios would not ask it (the report gives it no baseline either)."""
    for name in ("frontier_sync", "batch", "caching"):
        figures[name] = Decimal(0)


def _add(est: Estimate, key: tuple, n: int, usage: Usage, figures: dict[str, Decimal]) -> None:
    est.n_requests += n
    est.input_tokens += usage.input_tokens
    est.output_tokens += usage.output_tokens
    est.cache_read_tokens += usage.cache_read_tokens
    est.cache_write_tokens += usage.cache_write_5m_tokens + usage.cache_write_1h_tokens
    for name, usd in figures.items():
        est.scenarios[name] += to_pusd(usd)
    row = est.by_model.setdefault(
        key, {"requests": 0, "input_tokens": 0, "cache_read_tokens": 0, "cost_pusd": 0}
    )
    row["requests"] += n
    row["input_tokens"] += usage.input_tokens
    row["cache_read_tokens"] += usage.cache_read_tokens
    row["cost_pusd"] += to_pusd(figures["combined"])


def _add_long(
    conn: Connection,
    est: Estimate,
    spec: JobSpec,
    top: tuple[str, str],
    run_id: int,
    threshold: int,
    output_tokens: int | None,
    statuses: tuple[str, ...],
) -> None:
    """Requests past a long-context tier, priced one by one and without cache (an upper
    bound: caching only lowers them)."""
    for provider, model, tier, tokens, request_json, role in attempts.planned_long(
        conn, run_id, threshold, statuses
    ):
        out = output_tokens
        if out is None:
            out = orjson.loads(request_json).get("max_tokens", spec.defaults.max_tokens)
        usage = Usage(input_tokens=tokens, output_tokens=out)

        def usd(p: str, m: str, batch: bool, usage: Usage = usage) -> Decimal:
            return price_usd(p, m, usage, batch=batch, spec=spec)

        figures = {
            "frontier_sync": usd(*top, False),
            "batch": usd(*top, True),
            "caching": usd(*top, False),
            "routing": usd(provider, model, False),
            "combined": usd(provider, model, True),
        }
        if role != PRIMARY:
            _no_baseline(figures)
        _add(est, (provider, model, tier), 1, usage, figures)
        est.worst_case_pusd += to_pusd(figures["combined"])
        for up in escalations(spec, tier):
            est.worst_case_pusd += to_pusd(usd(*up, True))
