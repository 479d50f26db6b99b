"""The scorer family: a logistic regression (scikit-learn, an optional extra imported only
here) over the first tier's answer signals, and the threshold on its out-of-fold
probabilities that is the cheapest to meet the accuracy target."""

from __future__ import annotations

import random
from collections.abc import Sequence
from fractions import Fraction
from itertools import combinations

import numpy as np
from sklearn.linear_model import LogisticRegression

from batcher.spec import Tune
from batcher.tune.policies import MAX_OPINIONS, Candidate, Score, Shape, policy_of
from batcher.tune.policy_file import Scorer
from batcher.tune.signals import ItemRecord, matrix, vocabulary

C = 1.0  # inverse regularisation: a few hundred items, a few dozen features


def fit_scorers(
    records: Sequence[ItemRecord],
    tiers: Sequence[str],
    frontier: str,
    goal: Fraction,
    settings: Tune,
) -> list[Candidate]:
    """One scorer candidate per first tier and set of second opinions (none, or up to
    MAX_OPINIONS of the tiers below the frontier)."""
    below = [t for t in tiers if t != frontier]
    out = []
    for first in below:
        others = [t for t in below if t != first]
        sets = [()] + [o for k in range(1, MAX_OPINIONS + 1) for o in combinations(others, k)]
        for opinions in sets:
            found = _fit(records, Shape("scorer", first, frontier, opinions), goal, settings)
            if found is not None:
                out.append(found)
    return out


def _fit(
    records: Sequence[ItemRecord], shape: Shape, goal: Fraction, settings: Tune
) -> Candidate | None:
    valid = [r for r in records if r.outcomes[shape.tier].valid]
    if len(valid) < 2 * settings.folds:
        return None
    names, rows = features_for(valid, shape, settings.metadata)
    if not names:
        return None
    x = np.asarray(rows, dtype=float)
    y = np.asarray([r.outcomes[shape.tier].key == r.truth for r in valid], dtype=int)
    oof = np.zeros(len(valid))
    fold = np.asarray(folds_of(valid, settings.folds, settings.seed))
    for k in range(settings.folds):
        train = fold != k
        oof[~train] = _probabilities(x[train], y[train], x[~train])
    accepted, score = _sweep(records, valid, oof, shape, goal)
    threshold = 1.0 if accepted == 0 else float(np.sort(oof)[::-1][accepted - 1])
    means, scales, coef, intercept = _final(x, y)
    params = Scorer(features=names, means=means, scales=scales, coefficients=coef,
                    intercept=intercept, threshold=threshold)  # fmt: skip
    return Candidate(policy_of(shape, params), score)


def folds_of(records: Sequence[ItemRecord], folds: int, seed: int) -> list[int]:
    """The fold of each record: a seeded shuffle dealt round."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    fold = [0] * len(records)
    for position, index in enumerate(order):
        fold[index] = position % folds
    return fold


def features_for(
    records: Sequence[ItemRecord], shape: Shape, metadata: Sequence[str]
) -> tuple[list[str], list[list[float]]]:
    """(feature names, one row per record) of the records' signals under `shape`."""
    signals = [r.signals(shape.tier, shape.opinions) for r in records]
    names = vocabulary(signals, shape.opinions, metadata)
    return names, matrix(names, signals)


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    means = x.mean(axis=0)
    scales = x.std(axis=0)
    scales[scales == 0] = 1.0
    return means, scales


def _probabilities(x: np.ndarray, y: np.ndarray, x_new: np.ndarray) -> np.ndarray:
    """p(correct) of `x_new` from a model fitted on (x, y); one class only: its rate."""
    if len(set(y.tolist())) < 2:
        return np.full(len(x_new), float(y.mean()) if len(y) else 0.5)
    means, scales = _standardise(x)
    model = LogisticRegression(C=C, max_iter=1000).fit((x - means) / scales, y)
    return model.predict_proba((x_new - means) / scales)[:, 1]


def _final(x: np.ndarray, y: np.ndarray) -> tuple[list[float], list[float], list[float], float]:
    """(means, scales, coefficients, intercept) fitted on every valid item."""
    means, scales = _standardise(x)
    if len(set(y.tolist())) < 2:  # always right (or always wrong): a constant score
        rate = min(max(float(y.mean()), 1e-6), 1 - 1e-6)
        return means.tolist(), scales.tolist(), [0.0] * x.shape[1], float(np.log(rate / (1 - rate)))
    model = LogisticRegression(C=C, max_iter=1000).fit((x - means) / scales, y)
    return means.tolist(), scales.tolist(), model.coef_[0].tolist(), float(model.intercept_[0])


def _sweep(
    records: Sequence[ItemRecord],
    valid: Sequence[ItemRecord],
    p: np.ndarray,
    shape: Shape,
    goal: Fraction,
) -> tuple[int, Score]:
    """(how many of the valid answers to accept, by p descending, and the figures) for the
    cheapest threshold that meets `goal`; the most accurate one when none does. Accepting
    the top k of the valid answers: each of the others pays for and ends with the frontier's
    answer; an invalid first answer always does."""
    first, top = shape.tier, shape.frontier
    n = len(records)
    base = sum(r.outcomes[first].cost_pusd + sum(r.outcomes[o].cost_pusd for o in shape.opinions)
               for r in records)  # fmt: skip
    invalid = [r for r in records if not r.outcomes[first].valid]
    fixed_correct = sum(r.outcomes[top].key == r.truth for r in invalid)
    fixed_cost = base + sum(r.outcomes[top].cost_pusd for r in invalid)
    order = np.argsort(-p, kind="stable")
    own = np.asarray([valid[i].outcomes[first].key == valid[i].truth for i in order], dtype=int)
    up = np.asarray([valid[i].outcomes[top].key == valid[i].truth for i in order], dtype=int)
    up_cost = np.asarray([valid[i].outcomes[top].cost_pusd for i in order], dtype=object)
    own_sum = np.concatenate([[0], np.cumsum(own)])
    up_rest = np.concatenate([[0], np.cumsum(up)])
    cost_rest = np.concatenate([[0], np.cumsum(up_cost)]) if len(up_cost) else np.asarray([0])
    m = len(valid)
    sorted_p = p[order]
    ks = [0] + [k for k in range(1, m + 1) if k == m or sorted_p[k - 1] != sorted_p[k]]
    best: tuple[int, Score] | None = None
    fallback: tuple[int, Score] | None = None
    for k in ks:
        correct = fixed_correct + int(own_sum[k]) + int(up_rest[m] - up_rest[k])
        cost = fixed_cost + int(cost_rest[m] - cost_rest[k])
        figures = Score(n, correct, cost, len(invalid) + m - k)
        if Fraction(correct, n) >= goal and (best is None or cost < best[1].cost_pusd):
            best = (k, figures)
        if fallback is None or (correct, -cost) > (fallback[1].correct, -fallback[1].cost_pusd):
            fallback = (k, figures)
    assert fallback is not None
    return best or fallback
