"""`batcher tune`: the cheapest policy whose cross-validated accuracy meets the target.

Evidence: every stored run of the job (calibration samples, all-frontier runs, cascades,
any run whose attempts answered the items). An item counts when its truth is known (a gold
answer from `--gold`, else the frontier tier's valid answer key) and the frontier tier
answered it for its own sake: as its first tier, or as a calibration sample. Frontier answers
bought only because a cascade escalated are a biased sample (the hard items), so they do not
count. A tier is a candidate when it answered every counted item.

The family: `fixed` for every tier; `validator` (the first tier's valid answer stands, else
the frontier); `agreement` with one or two second opinions; and, with scikit-learn
installed, `scorer`: a logistic regression over the answer's signals (see
batcher.tune.signals) with a threshold. Fixed, validator and agreement have nothing to fit,
so their cross-validated accuracy is their accuracy on the counted items; the scorer's is
out-of-fold (seeded folds): each item is scored by a model fitted without it, each fold is
judged at the threshold chosen on the other folds, and the policy's threshold is the one
whose out-of-fold figures on every item are the cheapest that meet the target.

The target is `[routing.tune] target_accuracy`, else the frontier tier's own accuracy on the
same items. Both are measured on a sample, so a policy meets the target when its accuracy is
within `tolerance_se` standard errors of it (the bar): on a few hundred items the frontier's
own accuracy moves by a point or more from one sample to the next, and asking a cheaper tier
to beat it to the item would pick a near-frontier-cost scorer on one half of a job and the
cheap tier on the other. Cost is the sum of the stored, billed cost of each tier's attempts
on each item.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from itertools import combinations
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.engine import Engine

from batcher.errors import UsageError
from batcher.money.amounts import to_usd
from batcher.run.answers import normalise
from batcher.spec import JobSpec
from batcher.store import history
from batcher.store.history import HistoryRow
from batcher.tune.policies import (
    MAX_OPINIONS,
    Candidate,
    Shape,
    policy_of,
    score,
    stands_for,
)
from batcher.tune.policy_file import policy_document
from batcher.tune.signals import ItemRecord, Outcome

ANSWERED = ("succeeded", "reused")
FINAL = ("succeeded", "reused", "invalid", "truncated", "errored", "expired", "cancelled")
PICO = Decimal("1e-12")
SKLEARN_NOTE = "scorer family skipped: it needs scikit-learn (pip install 'batcher[tune]')"


# --- evidence -------------------------------------------------------------------------------


def read_gold(path: str | Path) -> dict[str, str]:
    """id -> normalised gold answer, from JSONL ({"id": ..., "answer": ...} a line) or CSV
    (`id,answer` a line, a header line of those two names allowed). UsageError naming the
    file and line otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--gold {path}: cannot read it: {exc}") from None
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    rows = _gold_jsonl(path, lines) if first.lstrip().startswith("{") else _gold_csv(path, lines)
    gold: dict[str, str] = {}
    for line_no, item_id, answer in rows:
        key = normalise(answer)
        if key is None:
            raise UsageError(f"{path} line {line_no}: the answer is empty")
        if item_id in gold:
            raise UsageError(f"{path} line {line_no}: id {item_id!r} appears twice")
        gold[item_id] = key
    if not gold:
        raise UsageError(f"{path}: no gold answers in it: write `id,answer` lines or JSONL")
    return gold


def _gold_jsonl(path: Path, lines: list[str]) -> Iterable[tuple[int, str, Any]]:
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"{path} line {line_no}: not valid JSON: {exc}") from None
        if not isinstance(row, dict) or "id" not in row or "answer" not in row:
            raise UsageError(f'{path} line {line_no}: write {{"id": ..., "answer": ...}}')
        yield line_no, str(row["id"]), row["answer"]


def _gold_csv(path: Path, lines: list[str]) -> Iterable[tuple[int, str, Any]]:
    for line_no, cells in enumerate(csv.reader(lines), 1):
        if not cells or not any(c.strip() for c in cells):
            continue
        if len(cells) != 2:
            raise UsageError(f"{path} line {line_no}: write `id,answer` ({len(cells)} cells)")
        item_id, answer = (c.strip() for c in cells)
        if line_no == 1 and (item_id.lower(), answer.lower()) == ("id", "answer"):
            continue
        yield line_no, item_id, answer


@dataclass
class Evidence:
    records: list[ItemRecord]  # the counted items
    runs: list[int]
    notes: list[str] = field(default_factory=list)


def gather(db: Engine, spec: JobSpec, gold: dict[str, str] | None = None) -> Evidence:
    """The job's counted items (see the module docstring), each with its tiers' outcomes."""
    records: dict[str, ItemRecord] = {}
    runs: set[int] = set()
    with db.connect() as conn:
        for (run_id, custom_id), rows in _by_item(history.job_history(conn, spec.name)):
            runs.add(run_id)
            record = records.setdefault(custom_id, ItemRecord(custom_id))
            _merge(record, rows)
    if not records:
        raise UsageError(
            f"job {spec.name!r} has no stored runs in this database: run it first "
            "(with [routing] calibrate, or an all-frontier run, for evidence)"
        )
    frontier, notes = spec.frontier_tier, []
    if gold is not None:
        unknown = sum(1 for item_id in gold if item_id not in records)
        if unknown:
            notes.append(f"{unknown} gold ids are no item of the job's runs")
    counted = []
    for record in records.values():
        top = record.outcomes.get(frontier)
        if top is None or not top.unbiased:
            continue
        record.truth = gold.get(record.custom_id) if gold is not None else (
            top.key if top.valid else None)  # fmt: skip
        if record.truth is not None:
            counted.append(record)
    if not counted:
        raise UsageError(
            f"job {spec.name!r}: no item has a frontier ({frontier}) answer asked for its own "
            "sake" + ("" if gold is None else " and a gold answer") + ": run it with "
            "[routing] calibrate = 0.05, or once with the frontier tier for every item"
        )
    notes.append(
        f"{len(counted)} of {len(records)} items counted (truth: "
        + ("gold" if gold is not None else f"{frontier}'s answers")
        + f"; {len(runs)} runs)"
    )
    counted.sort(key=lambda r: r.custom_id)
    return Evidence(counted, sorted(runs), notes)


def _by_item(rows: Iterable[HistoryRow]) -> Iterable[tuple[tuple[int, str], list[HistoryRow]]]:
    group: list[HistoryRow] = []
    for row in rows:
        if group and (row.run_id, row.custom_id) != (group[0].run_id, group[0].custom_id):
            yield (group[0].run_id, group[0].custom_id), group
            group = []
        group.append(row)
    if group:
        yield (group[0].run_id, group[0].custom_id), group


def _merge(record: ItemRecord, rows: list[HistoryRow]) -> None:
    """One run's attempts of the item into its record: a later run's outcome of a tier
    replaces an earlier one, except that an unbiased outcome is never replaced by a biased."""
    head = rows[0]
    record.route_reason = head.route_reason
    record.metadata = orjson.loads(head.metadata_json) if head.metadata_json else {}
    first_tier = next((r.tier for r in rows if r.role == "primary"), None)
    chains: dict[tuple[str, str], list[HistoryRow]] = {}
    for row in rows:
        chains.setdefault((row.tier, row.role), []).append(row)
    # Primary chains last: the frontier's calibration answer (unbiased) comes first, and the
    # same run's escalation to the frontier (biased) does not replace it.
    for (tier, role), chain in sorted(chains.items(), key=lambda kv: kv[0][1] == "primary"):
        if any(a.status not in FINAL for a in chain):
            continue  # still in flight
        last = chain[-1]
        outcome = Outcome(
            valid=last.status in ANSWERED,
            key=last.answer_key,
            cost_pusd=sum(a.cost_pusd for a in chain),
            stop_reason=last.stop_reason,
            input_tokens=last.input_tokens,
            output_tokens=last.output_tokens,
            unbiased=role != "primary" or tier == first_tier,
        )
        known = record.outcomes.get(tier)
        if known is None or outcome.unbiased or not known.unbiased:
            record.outcomes[tier] = outcome


# --- the family -----------------------------------------------------------------------------


@dataclass
class TuneResult:
    chosen: Candidate
    candidates: list[Candidate]  # every one evaluated, cheapest first
    target: Fraction
    bar: Fraction  # the accuracy that meets the target (see accuracy_bar)
    frontier_cost_pusd: int
    evidence: Evidence
    folds: int
    seed: int
    truth: str
    notes: list[str] = field(default_factory=list)

    def meets(self, candidate: Candidate) -> bool:
        return candidate.accuracy >= self.bar

    def rows(self) -> list[dict[str, Any]]:
        """The table: one row per candidate, cheapest first."""
        out = []
        for c in self.candidates:
            share = Decimal(c.score.cost_pusd) / Decimal(self.frontier_cost_pusd or 1)
            per = to_usd(c.score.cost_pusd) / c.score.correct if c.score.correct else None
            out.append(
                {
                    "policy": c.policy.describe(),
                    "cv accuracy": f"{float(c.accuracy):.1%}",
                    "cost USD": f"{to_usd(c.score.cost_pusd):.6f}",
                    "of frontier": f"{share:.1%}",
                    "USD/correct": f"{per:.8f}" if per is not None else "-",
                    "target": self._verdict(c),
                }
            )
        return out

    def _verdict(self, candidate: Candidate) -> str:
        if candidate is self.chosen:
            return "chosen"
        return "met" if self.meets(candidate) else "-"

    def document(self) -> dict[str, Any]:
        """The policy file's JSON object."""
        ids = "\n".join(r.custom_id for r in self.evidence.records).encode()
        return policy_document(
            self.chosen.policy,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            target_accuracy=str(round(float(self.target), 6)),
            accuracy_bar=str(round(float(self.bar), 6)),
            truth=self.truth,
            cv={
                **_figures(self.chosen, self.frontier_cost_pusd),
                "folds": self.folds,
                "seed": self.seed,
            },  # fmt: skip
            alternatives=[
                {
                    "policy": c.policy.describe(),
                    "kind": c.policy.kind,
                    "meets_target": self.meets(c),
                    **_figures(c, self.frontier_cost_pusd),
                }
                for c in self.candidates
                if c is not self.chosen
            ],  # fmt: skip
            learned_from={
                "runs": self.evidence.runs,
                "items": len(self.evidence.records),
                "items_sha256": hashlib.sha256(ids).hexdigest(),
            },
            notes=self.notes,
        )


def _figures(c: Candidate, frontier_cost: int) -> dict[str, Any]:
    cost = to_usd(c.score.cost_pusd)
    return {
        "accuracy": str(round(float(c.accuracy), 6)),
        "correct": c.score.correct,
        "items": c.score.n,
        "escalated": c.score.escalated,
        "cost_usd": str(cost),
        "share_of_frontier": str(round(c.score.cost_pusd / (frontier_cost or 1), 6)),
        "usd_per_correct": str((cost / c.score.correct).quantize(PICO))
        if c.score.correct
        else None,
    }


def shapes(tiers: Sequence[str], frontier: str) -> list[Shape]:
    """Every fixed, validator and agreement policy over `tiers` (the frontier among them)."""
    out = [Shape("fixed", t, frontier) for t in tiers]
    below = [t for t in tiers if t != frontier]
    for first in below:
        out.append(Shape("validator", first, frontier))
        others = [t for t in below if t != first]
        for k in range(1, MAX_OPINIONS + 1):
            out += [Shape("agreement", first, frontier, o) for o in combinations(others, k)]
    return out


def tune(
    db: Engine,
    spec: JobSpec,
    *,
    gold: dict[str, str] | None = None,
    target: float | None = None,
    scorer: bool | None = None,
) -> TuneResult:
    """Evaluate the family on the job's evidence and choose (see the module docstring).
    `scorer`: fit the scorer family (default: when scikit-learn is installed)."""
    evidence = gather(db, spec, gold)
    records, frontier = evidence.records, spec.frontier_tier
    settings = spec.routing.tune
    notes = list(evidence.notes)
    tiers = [t for t in spec.tiers if all(t in r.outcomes for r in records)]
    missing = [t for t in spec.tiers if t not in tiers]
    if missing:
        notes.append(f"not candidates (no answer on every counted item): {', '.join(missing)}")
    candidates = []
    for shape in shapes(tiers, frontier):
        policy = policy_of(shape)
        candidates.append(Candidate(policy, score(records, shape, stands_for(policy))))
    top = next(c for c in candidates if c.policy.kind == "fixed" and c.policy.tier == frontier)
    wanted = target if target is not None else settings.target_accuracy
    stated = Fraction(str(wanted)) if wanted is not None else top.accuracy
    goal = accuracy_bar(stated, len(records), settings.tolerance_se)
    if scorer is None:
        scorer = _has_sklearn()
        if not scorer:
            notes.append(SKLEARN_NOTE)
    if scorer:
        from batcher.tune.learn import fit_scorers

        candidates += fit_scorers(records, tiers, frontier, goal, settings)
    candidates.sort(key=lambda c: (c.score.cost_pusd, -c.accuracy))
    good = [c for c in candidates if c.accuracy >= goal]
    if good:
        chosen = good[0]
    else:
        chosen = max(candidates, key=lambda c: (c.accuracy, -c.score.cost_pusd))
        notes.append(f"no policy reaches the target {float(goal):.1%}: the most accurate chosen")
    truth = "gold" if gold is not None else f"{frontier}'s answers"
    return TuneResult(chosen, candidates, stated, goal, top.score.cost_pusd, evidence,
                      settings.folds, settings.seed, truth, notes)  # fmt: skip


def accuracy_bar(target: Fraction, n: int, tolerance_se: float) -> Fraction:
    """The accuracy that meets `target` measured on `n` items: `tolerance_se` standard errors
    of a proportion, sqrt(t(1-t)/n), below it."""
    margin = tolerance_se * math.sqrt(float(target * (1 - target)) / max(n, 1))
    return max(Fraction(0), target - Fraction(str(round(margin, 9))))


def _has_sklearn() -> bool:
    try:
        import sklearn  # noqa: F401 - the optional extra 'batcher[tune]'
    except ImportError:
        return False
    return True
