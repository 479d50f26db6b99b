"""The calibration sample: a seeded share of items also answered by the frontier tier.

`calibrate = 0.05` in `[routing]` sends that share of the items whose first tier is below the
frontier (stratified by route reason, so every reason keeps its share) to the frontier tier
as well, in the first round. The frontier's answer is never the item's: it is evidence, kept
so that each run measures how often each tier agrees with the frontier (a drift signal in the
report) and what a learned policy can be fitted on. Which items are drawn depends only on the
seed and their ids in the input, so a rerun of the same input draws the same items.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from fractions import Fraction

from sqlalchemy.engine import Connection

from batcher.spec import JobSpec
from batcher.store import attempts


def calibration_sample(
    rows: Iterable[tuple[int, str, str | None]], share: float, seed: int
) -> list[int]:
    """Ids of the items drawn from `rows` (item id, id in the input, route reason).

    round(share x items) are drawn in all, split over the route reasons by largest remainder;
    within a reason, the items whose seeded hash of their input id is lowest."""
    groups: dict[str, list[tuple[bytes, int]]] = defaultdict(list)
    for item_id, custom_id, reason in rows:
        digest = hashlib.sha256(f"{seed}\x00{custom_id}".encode()).digest()
        groups[reason or ""].append((digest, item_id))
    exact = Fraction(share)
    total = sum(len(m) for m in groups.values())
    wanted = int(exact * total + Fraction(1, 2))
    quotas = {reason: exact * len(members) for reason, members in groups.items()}
    counts = {reason: int(q) for reason, q in quotas.items()}
    by_remainder = sorted(quotas, key=lambda r: (-(quotas[r] - counts[r]), r))
    for reason in by_remainder[: wanted - sum(counts.values())]:
        counts[reason] += 1
    picked = []
    for reason, members in groups.items():
        picked += [item_id for _, item_id in sorted(members)[: counts[reason]]]
    return sorted(picked)


def add_calibration(conn: Connection, run_id: int, spec: JobSpec) -> int:
    """Planned frontier attempts (role "calibration", no batch yet) for the run's sample."""
    share = spec.routing.calibrate
    if not share:
        return 0
    frontier = spec.frontier_tier
    candidates = attempts.calibration_candidates(conn, run_id, frontier)
    drawn = set(calibration_sample(((r[0], r[1], r[2]) for r in candidates), share,
                                   spec.routing.calibrate_seed))  # fmt: skip
    rows = [(r[0], r[3] + 1) for r in candidates if r[0] in drawn]
    provider, model = spec.model_of(frontier)
    return attempts.plan_calibration(conn, run_id, rows, frontier, provider, model)
