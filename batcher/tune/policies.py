"""The policy family: how each kind decides an item, and what it costs, replayed on stored
outcomes (`replay`) or live in a run (`ScorerAcceptor`, the learned scorer as an
`Acceptor`).

A replay uses the same rules a run does: the first tier's attempts and every second
opinion are paid for; an answer that is invalid or cut off escalates (except under `fixed`,
which has nothing above); an escalated item ends with the frontier tier's answer and pays
for it. Costs are the stored, billed cost of each tier's attempts on that item.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from batcher.plan.routing import Acceptor, AnswerSignals
from batcher.spec import JobSpec
from batcher.tune.policy_file import Policy, Scorer
from batcher.tune.signals import ItemRecord, compile_feature

MAX_OPINIONS = 2  # second opinions a candidate policy asks for


class ScorerAcceptor:
    """A logistic scorer over an answer's signals: the answer stands when p(correct) >=
    the threshold. Pure Python at run time: scikit-learn is needed only to fit it."""

    def __init__(self, scorer: Scorer):
        self.scorer = scorer
        self.functions = [compile_feature(name) for name in scorer.features]
        self.reads_items = any(name.startswith(("route=", "meta:")) for name in scorer.features)

    def probability(self, signals: AnswerSignals) -> float:
        s = self.scorer
        z = s.intercept
        for f, mean, scale, coef in zip(self.functions, s.means, s.scales, s.coefficients,
                                        strict=True):  # fmt: skip
            z += coef * (f(signals) - mean) / scale
        return 1 / (1 + math.exp(-z)) if z > -700 else 0.0

    def accept(self, signals: AnswerSignals) -> tuple[bool, str]:
        p, threshold = self.probability(signals), self.scorer.threshold
        if p >= threshold:
            return True, f"scorer: p(correct) {p:.2f} >= {threshold:.2f}"
        return False, f"scorer: p(correct) {p:.2f} < {threshold:.2f}"


def make_acceptor(spec: JobSpec) -> Acceptor | None:
    """The accept/escalate decision of the spec's policy, when it has one beyond validity
    and agreement (the run's existing strategies handle those)."""
    document = spec.routing.policy
    if document is None or document.policy.scorer is None:
        return None
    return ScorerAcceptor(document.policy.scorer)


@dataclass(frozen=True, slots=True)
class Shape:
    """A policy's tiers, as a replay needs them."""

    kind: str
    tier: str
    frontier: str
    opinions: tuple[str, ...] = ()

    @classmethod
    def of(cls, policy: Policy) -> Shape:
        return cls(policy.kind, policy.tier, policy.frontier, tuple(policy.opinions))

    @property
    def tiers(self) -> tuple[str, ...]:
        """Every tier whose answer a replay reads."""
        if self.kind == "fixed":
            return (self.tier,)
        return (self.tier, *self.opinions, self.frontier)


def agreed(record: ItemRecord, shape: Shape) -> bool:
    """Every second opinion is valid and gives the first tier's answer key."""
    key = record.outcomes[shape.tier].key
    return key is not None and all(
        record.outcomes[t].valid and record.outcomes[t].key == key for t in shape.opinions
    )


def stands_for(policy: Policy) -> Callable[[ItemRecord], bool] | None:
    """Whether a valid first-tier answer stands under `policy`, as a replay asks it (None:
    always, as under fixed and validator)."""
    shape = Shape.of(policy)
    if policy.kind == "agreement":
        return lambda record: agreed(record, shape)
    if policy.scorer is not None:
        acceptor = ScorerAcceptor(policy.scorer)
        return lambda record: acceptor.accept(record.signals(shape.tier, shape.opinions))[0]
    return None


def replay(
    record: ItemRecord, shape: Shape, stands: Callable[[ItemRecord], bool] | None = None
) -> tuple[bool, int, bool]:
    """(correct against the truth, cost in picodollars, escalated) of `record` under the
    policy: `stands` says whether a valid first-tier answer stands (validator: always;
    agreement: `agreed`; scorer: its probability against the threshold)."""
    first = record.outcomes[shape.tier]
    cost = first.cost_pusd
    if shape.kind == "fixed" or shape.tier == shape.frontier:
        return first.key == record.truth, cost, False
    cost += sum(record.outcomes[t].cost_pusd for t in shape.opinions)
    if first.valid and (stands is None or stands(record)):
        return first.key == record.truth, cost, False
    top = record.outcomes[shape.frontier]
    return top.key == record.truth, cost + top.cost_pusd, True


@dataclass
class Score:
    """A policy's figures on a set of items."""

    n: int = 0
    correct: int = 0
    cost_pusd: int = 0
    escalated: int = 0

    def add(self, correct: bool, cost: int, escalated: bool) -> None:
        self.n += 1
        self.correct += correct
        self.cost_pusd += cost
        self.escalated += escalated

    def merge(self, other: Score) -> None:
        self.n += other.n
        self.correct += other.correct
        self.cost_pusd += other.cost_pusd
        self.escalated += other.escalated


def score(
    records: Sequence[ItemRecord], shape: Shape, stands: Callable[[ItemRecord], bool] | None
) -> Score:
    total = Score()
    for record in records:
        total.add(*replay(record, shape, stands))
    return total


@dataclass
class Candidate:
    """A policy and its (cross-validated) figures."""

    policy: Policy
    score: Score

    @property
    def accuracy(self) -> Fraction:
        return Fraction(self.score.correct, self.score.n)


def policy_of(shape: Shape, scorer: Scorer | None = None) -> Policy:
    return Policy(kind=shape.kind, tier=shape.tier, frontier=shape.frontier,
                  opinions=list(shape.opinions), scorer=scorer)  # fmt: skip
