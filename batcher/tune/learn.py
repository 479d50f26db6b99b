"""The scorer family: a logistic regression (scikit-learn, an optional extra imported only
here) over the first tier's answer signals, and the threshold on its out-of-fold
probabilities that is the cheapest to meet the accuracy target. Its figures are judged fold
by fold at the threshold chosen on the other folds."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from fractions import Fraction
from itertools import combinations

import numpy as np
from sklearn.linear_model import LogisticRegression

from batcher.spec import Tune
from batcher.tune.policies import MAX_OPINIONS, Candidate, Score, Shape, policy_of, score
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
    """The scorer of `shape`, and its figures cross-validated twice over: each item's
    probability comes from a model fitted without its fold, and each fold is judged at the
    threshold chosen on the other folds (a threshold chosen on the items it is judged on
    would flatter a scorer that accepts a handful of lucky answers)."""
    fold = folds_of(records, settings.folds, settings.seed)
    picked = [i for i, r in enumerate(records) if r.outcomes[shape.tier].valid]
    if len(picked) < 2 * settings.folds:
        return None
    valid = [records[i] for i in picked]
    names, rows = features_for(valid, shape, settings.metadata)
    if not names:
        return None
    x = np.asarray(rows, dtype=float)
    y = np.asarray([r.outcomes[shape.tier].key == r.truth for r in valid], dtype=int)
    valid_fold = np.asarray([fold[i] for i in picked])
    oof = np.zeros(len(valid))
    for k in range(settings.folds):
        held = valid_fold == k
        if held.any():
            oof[held] = _probabilities(x[~held], y[~held], x[held])
    p = {r.custom_id: float(q) for r, q in zip(valid, oof, strict=True)}
    figures = Score()
    for k in range(settings.folds):
        others = [r for r, f in zip(records, fold, strict=True) if f != k]
        threshold = _sweep(others, p, shape, goal)
        mine = [r for r, f in zip(records, fold, strict=True) if f == k]
        figures.merge(score(mine, shape, lambda r, t=threshold: p[r.custom_id] >= t))
    threshold = min(_sweep(records, p, shape, goal), 1.0)
    means, scales, coef, intercept = _final(x, y)
    params = Scorer(features=names, means=means, scales=scales, coefficients=coef,
                    intercept=intercept, threshold=threshold)  # fmt: skip
    return Candidate(policy_of(shape, params), figures)


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
    records: Sequence[ItemRecord], p: dict[str, float], shape: Shape, goal: Fraction
) -> float:
    """The threshold (accept a valid first answer when its p >= it; inf: accept none) whose
    figures on `records` are the cheapest that meet `goal`; the most accurate one when none
    does. Accepting the k most likely valid answers: each of the others pays for and ends
    with the frontier's answer, as an invalid first answer always does."""
    first, top = shape.tier, shape.frontier
    n = len(records)
    base = sum(r.outcomes[first].cost_pusd + sum(r.outcomes[o].cost_pusd for o in shape.opinions)
               for r in records)  # fmt: skip
    valid = sorted((r for r in records if r.custom_id in p), key=lambda r: -p[r.custom_id])
    # accepting none: every item ends with the frontier's answer (an invalid one at any p)
    correct = sum(r.outcomes[top].key == r.truth for r in records)
    cost = base + sum(r.outcomes[top].cost_pusd for r in records)
    best: tuple[int, float] | None = None  # (cost, threshold)
    fallback = (correct, -cost, math.inf)
    if Fraction(correct, n) >= goal:
        best = (cost, math.inf)
    for k, record in enumerate(valid):
        own, up = record.outcomes[first], record.outcomes[top]
        correct += (own.key == record.truth) - (up.key == record.truth)
        cost -= up.cost_pusd
        threshold = p[record.custom_id]
        if k + 1 < len(valid) and p[valid[k + 1].custom_id] == threshold:
            continue  # a threshold accepts every answer of the same p
        if Fraction(correct, n) >= goal and (best is None or cost < best[0]):
            best = (cost, threshold)
        fallback = max(fallback, (correct, -cost, threshold))
    return best[1] if best is not None else fallback[2]
