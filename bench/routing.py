"""Benchmark: what each routing strategy buys per correct answer, on replays of real answers.

Run: .venv/bin/python bench/routing.py [--limit N] [--labels N] [--split-seed N]
     .venv/bin/python bench/routing.py --speed [--speed-items N]

Two replays go through the sandbox's replay responder, each strategy as a real run (engine,
batches over HTTP through the SDKs, a fresh SQLite file), priced from the reported usage:

- math: ../shared/data/math-l5-replay.jsonl, recorded answers of six models to hard maths
  problems with gold answers. Tiers map onto recorded models: nano -> gemma-2-2b-it (sent as
  openai:gpt-4.1-nano), second opinion -> claude-3-haiku-20240307, mid ->
  gpt-4o-mini-2024-07-18, frontier -> claude-3-5-sonnet-20240620.
- labels: seeded synthetic support tickets, with three recorded-style answer sets whose error
  rates differ per label (cheap models that agree often), and a frontier set.

For all-nano, all-mid, all-frontier, the default classifier, mid + validator and the
agreement cascade it prints accuracy against gold, cost, cost as a share of all-frontier and
cost per correct answer. As a reference in the same run, a hand-written loop over the replay
file scores each fixed tier's recorded answers directly: the runs must reproduce it.

Every strategy is a run of one job ("bench") in one database, reuse off, so the job's
history holds every tier's answer to every item. Then `batcher tune` (batcher.tune.fit)
learns a policy from that history judged by the gold answers of a seeded half of the items
only (items without a gold answer do not count, so nothing of the other half is learned
from), and the chosen policy runs on the other, held-out half: the second table compares it
with the fixed tiers on those same items.

Targets (exit 1 on a miss): each fixed tier's run reproduces the reference accuracy, so the
figures are the recorded models' and not an artefact of the pipeline; on the held-out half
of the math replay the tuned policy reaches all-frontier's accuracy minus 0.5 points at no
more than 35% of its cost; and on both replays its cost per correct answer is no worse than
the best fixed tier's. "Best fixed tier" is read as the best among the fixed tiers that
meet the same accuracy target (all-frontier's minus 0.5 points): on the labels replay
all-nano has the lowest cost per correct answer but is 12 points less accurate, and a
policy held to all-frontier's accuracy cannot be asked to undercut a tier that does not
hold to it. The strict reading (any fixed tier) is printed beside it, as information.

--speed times routing instead, per item: the annotator `batcher plan` makes (tier, reason and
sampled token count of each item of bench/plan.py's no-system workload, 200,000 items by
default), its classifier alone, and a minimal hand-written loop on the same prompts (the
article's heuristic with plain substring tests and a whole split, 4 characters a token). CPU
time, best of five rounds, the three interleaved in each round. It also times the keyword
search against one alternation regex, by prompt length.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from batcher.money.amounts import to_usd
from batcher.providers import Clients
from batcher.providers.calls import RetryPolicy
from batcher.run import engine
from batcher.run.answers import AnswerKeys, normalise
from batcher.sandbox import start_sandbox
from batcher.spec import Validation, load_spec
from batcher.store import open_store
from batcher.store.models import TABLES
from batcher.tune.fit import gather, tune
from batcher.tune.policies import Shape, score, stands_for
from batcher.tune.policy_file import write_policy

HERE = Path(__file__).resolve().parent
SPLIT_SEED = 15  # which half of the items the policy is tuned on
MATH = HERE.parent.parent / "shared" / "data" / "math-l5-replay.jsonl"
ITEM, ATTEMPT = TABLES["item"], TABLES["attempt"]
ANSWER = ATTEMPT.alias("answer")
RETRY = RetryPolicy(attempts=12, base_s=0.02, cap_s=0.5)

# sandbox model name -> recorded model (the tier refs below name the sandbox side)
MATH_MODELS = {
    "gpt-4.1-nano": "gemma-2-2b-it",
    "claude-3-haiku-20240307": "claude-3-haiku-20240307",
    "gpt-4.1-mini": "Meta-Llama-3.1-8B-Instruct",
    "gpt-4o-mini-2024-07-18": "gpt-4o-mini-2024-07-18",
    "claude-3-5-sonnet-20240620": "claude-3-5-sonnet-20240620",
}
LABEL_MODELS = {
    "gpt-4.1-nano": "nano",
    "claude-3-haiku-20240307": "check",
    "gpt-4.1-mini": "check2",
    "gpt-4o-mini-2024-07-18": "mid",
    "claude-3-5-sonnet-20240620": "frontier",
}
TIERS = """[tiers]
nano = "openai:gpt-4.1-nano"
check = "anthropic:claude-3-haiku-20240307"
llama = "openai:gpt-4.1-mini"
mid = "openai:gpt-4o-mini-2024-07-18"
frontier = "anthropic:claude-3-5-sonnet-20240620"
"""


@dataclass
class Job:
    name: str
    validation: str  # the [validation] section
    check: str  # a format check for "validator" strategies


MATH_JOB = Job("math", 'answer_field = "answer"\n', 'regex = \'"answer"\\s*:\\s*"?[^"\\s}]\'\n')
LABELS = ["billing", "technical", "account", "shipping"]
LABEL_JOB = Job(
    "labels",
    'label_field = "label"\n',
    'json = true\nlabels = ["billing", "technical", "account", "shipping"]\n',
)


def strategies(job: Job) -> dict[str, str]:
    """Strategy name -> the spec's routing and validation sections."""
    fail = 'on_invalid = "fail"\n'
    val = f"[validation]\n{job.validation}"
    checked = f"[validation]\n{job.validation}{job.check}"
    return {
        "all-nano": f'{fail}[routing]\nclassifier = "fixed:nano"\nladder = ["nano"]\n{val}',
        "all-mid": f'{fail}[routing]\nclassifier = "fixed:mid"\nladder = ["mid"]\n{val}',
        "all-frontier": f'{fail}[routing]\nclassifier = "fixed:frontier"\nladder = ["frontier"]\n'
        f"{val}",
        "default classifier": '[routing]\nladder = ["nano", "mid", "frontier"]\n' + checked,
        "mid + validator": '[routing]\nclassifier = "fixed:mid"\nladder = ["mid", "frontier"]\n'
        + checked,
        "agreement cascade": _cascade(["check"], checked),
        "cascade, 2 opinions": _cascade(["check", "llama"], checked),
    }


def _cascade(opinions: list[str], validation: str) -> str:
    return (
        '[routing]\nstrategy = "cascade"\nclassifier = "fixed:mid"\nladder = ["mid", "frontier"]\n'
        f"[routing.cascade]\nsecond_opinions = {json.dumps(opinions)}\n{validation}"
    )


@dataclass
class Row:
    strategy: str
    n: int
    correct: int
    cost_pusd: int
    per_item: dict[str, tuple[bool, int]] | None = None  # id -> (correct, cost)

    def on(self, ids: set[str], name: str | None = None) -> Row:
        """The same strategy's figures on the items `ids` only."""
        assert self.per_item is not None
        picked = [self.per_item[i] for i in ids]
        return Row(name or self.strategy, len(picked), sum(c for c, _ in picked),
                   sum(cost for _, cost in picked))  # fmt: skip

    @property
    def accuracy(self) -> Decimal:
        return Decimal(self.correct) / Decimal(self.n)

    @property
    def per_correct(self) -> Decimal | None:
        return to_usd(self.cost_pusd) / self.correct if self.correct else None


def run_strategy(
    workdir: Path,
    db,
    box,
    name: str,
    sections: str,
    rows: list[dict],
    keys: AnswerKeys,
    extra_top: str = "",
) -> Row:
    """One strategy as a run of the job "bench" in the shared database `db` (reuse off, so
    every run buys its own answers and the job's history holds them all)."""
    folder = workdir / name.replace(" ", "-").replace("+", "").replace(",", "")
    folder.mkdir()
    with open(folder / "input.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps({"id": row["id"], "prompt": row["user"]}) + "\n")
    spec_path = folder / "job.toml"
    top, rest = sections[: sections.index("[")], sections[sections.index("[") :]
    spec_path.write_text(
        f'name = "bench"\ninput = "input.jsonl"\n{top}{extra_top}{TIERS}[defaults]\n'
        f"max_tokens = 4096\n{rest}"
    )
    spec = load_spec(spec_path)
    run_id = engine.start_run(db, spec, spec.input_file())
    clients = Clients.for_sandbox(box, RETRY)
    outcome = engine.drive_run(db, run_id, clients=clients, poll=0.05, reuse=False)
    if outcome.status != "completed":
        raise SystemExit(f"{name}: the run ended {outcome.status}")
    gold = {row["id"]: normalise(row["answer"]) for row in rows}
    with db.connect() as conn:
        items = conn.execute(
            sa.select(ITEM.c.id, ITEM.c.custom_id, ANSWER.c.output)
            .outerjoin(ANSWER, ANSWER.c.id == ITEM.c.answer_attempt_id)  # answers live there
            .where(ITEM.c.run_id == run_id)
        ).all()
        costs = dict(
            conn.execute(
                sa.select(ATTEMPT.c.item_id, sa.func.sum(ATTEMPT.c.cost_pusd))
                .where(ATTEMPT.c.run_id == run_id)
                .group_by(ATTEMPT.c.item_id)
            ).all()
        )
    per_item = {
        cid: (keys.key(out) == gold[cid] is not None, int(costs.get(item_id) or 0))
        for item_id, cid, out in items
    }
    correct = sum(c for c, _ in per_item.values())
    return Row(name, len(rows), correct, sum(c for _, c in per_item.values()), per_item)


def reference(rows: list[dict], recorded: str, keys: AnswerKeys) -> int:
    """The hand-written loop: correct recorded answers of one model, straight from the file."""
    return sum(1 for r in rows if keys.key(r["outputs"][recorded]) == normalise(r["answer"]))


MODELS = ("nano", "check", "check2", "mid", "frontier")


def label_rows(n: int, seed: int = 15) -> list[dict]:
    """Seeded tickets and four answer sets; each set errs at its own rate per label."""
    rng = random.Random(seed)
    errors = {  # label -> error rate of nano, check, check2, mid, frontier
        "billing": (0.04, 0.05, 0.06, 0.02, 0.01),
        "technical": (0.30, 0.20, 0.12, 0.08, 0.02),
        "account": (0.10, 0.25, 0.08, 0.04, 0.02),
        "shipping": (0.06, 0.04, 0.10, 0.03, 0.01),
    }
    words = {
        "billing": "invoice charge refund",
        "technical": "crash error timeout",
        "account": "password login profile",
        "shipping": "parcel delivery tracking",
    }
    out = []
    for i in range(n):
        label = rng.choice(LABELS)
        outputs = {}
        for model, rate in zip(MODELS, errors[label], strict=True):
            said = label if rng.random() >= rate else rng.choice([x for x in LABELS if x != label])
            outputs[model] = json.dumps({"label": said})
        text = f"Ticket {i}: {' '.join(rng.sample(words[label].split(), 2))}. Classify it."
        out.append({"id": f"t{i}", "user": text, "answer": label, "outputs": outputs})
    return out


def bench(
    job: Job, rows: list[dict], models: dict[str, str], workdir: Path, seed: int = SPLIT_SEED
) -> list[str]:
    """Run every strategy on one replay, then tune on one half and run the tuned policy on
    the other; print the tables; return the targets missed."""
    replay = workdir / f"{job.name}-replay.jsonl"
    with open(replay, "w") as f:
        for row in rows:
            f.write(json.dumps({"user": row["user"], "outputs": row["outputs"]}) + "\n")
    keys = AnswerKeys(Validation.model_validate(_toml_section(job.validation)))
    db = open_store(f"sqlite:///{workdir / 'state.db'}")
    results: dict[str, Row] = {}
    train, held = split(rows, seed)
    with start_sandbox(replay=str(replay), model_map=models, speed=50.0) as box:
        for name, sections in strategies(job).items():
            box.reset()
            results[name] = run_strategy(workdir, db, box, name, sections, rows, keys)
        started = time.perf_counter()
        tuned, chosen = tune_and_run(job, workdir, db, box, rows, train, held, keys)
        tune_s = time.perf_counter() - started
    _print(job.name, results)
    misses = _misses(job, rows, models, keys, results)
    held_ids = {r["id"] for r in held}
    fixed = {n: results[n].on(held_ids) for n in FIXED}
    _print(f"{job.name}, held-out half", {**fixed, "tuned policy": tuned})
    print(f"tuned on {len(train)} items, chosen: {chosen} ({tune_s:.1f} s to tune and run)")
    return misses + _tuned_misses(job.name, tuned, fixed)


FIXED = ("all-nano", "all-mid", "all-frontier")
ACCURACY_SLACK = Decimal("0.005")  # the tuned policy may trail all-frontier by 0.5 points
MAX_SHARE = Decimal("0.35")  # of all-frontier's cost, on the math replay


def split(rows: list[dict], seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded half of the items to tune on, and the other half to measure on."""
    order = sorted(rows, key=lambda r: r["id"])
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    return order[:half], order[half:]


def tune_and_run(
    job: Job,
    workdir: Path,
    db,
    box,
    rows: list[dict],
    train: list[dict],
    held: list[dict],
    keys: AnswerKeys,
) -> tuple[Row, str]:
    """`batcher tune` on the job's stored runs, judged by the training half's gold answers
    only (so nothing of the held-out half is learned from), then a run of the chosen policy
    on the held-out half."""
    folder = workdir / "tune"
    folder.mkdir()
    spec_path = folder / "job.toml"
    spec_path.write_text(f'name = "bench"\n{TIERS}[routing]\nladder = ["nano", "mid", "frontier"]\n'
                         f"[validation]\n{job.validation}")  # fmt: skip
    gold = {r["id"]: normalise(r["answer"]) for r in train}
    spec = load_spec(spec_path)
    result = tune(db, spec, gold=gold)
    write_policy(workdir / "policies" / "tuned.json", result.document())
    held_gold = {r["id"]: normalise(r["answer"]) for r in held}
    policy = result.chosen.policy  # replayed on the held-out items' stored answers
    predicted = score(gather(db, spec, held_gold).records, Shape.of(policy), stands_for(policy))
    box.reset()
    routing = '[routing]\npolicy = "file:../policies/tuned.json"\n'
    sections = f"{routing}[validation]\n{job.validation}{job.check}"
    row = run_strategy(workdir, db, box, "tuned policy", sections, held, keys)
    if (predicted.correct, predicted.cost_pusd) != (row.correct, row.cost_pusd):
        raise SystemExit(
            f"{job.name}: the policy's run ({row.correct} correct, {row.cost_pusd} pUSD) is not "
            f"what its replay on the same answers says ({predicted.correct}, "
            f"{predicted.cost_pusd})"
        )
    chosen = result.chosen
    share = chosen.score.cost_pusd / result.frontier_cost_pusd
    cv = f"cross-validated on the training half: {float(chosen.accuracy):.1%} at {share:.1%}"
    return row, f"{chosen.policy.describe()}; {cv} of all-frontier"


def _tuned_misses(name: str, tuned: Row, fixed: dict[str, Row]) -> list[str]:
    """The issue's targets on the held-out half. "Best fixed tier" is read as the cheapest
    per correct answer among the fixed tiers that meet the accuracy target (all-frontier's
    accuracy minus 0.5 points): a tier that misses it by far (all-nano on labels) is no
    alternative to a policy that must meet it. The strict reading (any fixed tier) is
    printed too, as information."""
    frontier = fixed["all-frontier"]
    floor = frontier.accuracy - ACCURACY_SLACK
    share = Decimal(tuned.cost_pusd) / Decimal(frontier.cost_pusd)
    misses = []
    print(f"{name}: tuned accuracy {tuned.accuracy:.1%} against all-frontier "
          f"{frontier.accuracy:.1%} (floor {floor:.1%}), cost {share:.1%} of it")  # fmt: skip
    if name == "math":
        if tuned.accuracy < floor:
            misses.append(f"math/tuned: accuracy {tuned.accuracy:.1%} < {floor:.1%}")
        if share > MAX_SHARE:
            misses.append(f"math/tuned: cost {share:.1%} of all-frontier > {MAX_SHARE:.0%}")
    eligible = [r for r in fixed.values() if r.accuracy >= floor]
    best = min(eligible, key=lambda r: r.per_correct or Decimal("Infinity"))
    strict = min(fixed.values(), key=lambda r: r.per_correct or Decimal("Infinity"))
    mine = tuned.per_correct or Decimal("Infinity")
    print(f"{name}: tuned USD/correct {mine:.6f}; best fixed tier meeting the accuracy target "
          f"{best.strategy} {best.per_correct:.6f}; best fixed tier at any accuracy "
          f"{strict.strategy} {strict.per_correct:.6f} "
          f"({'met' if mine <= strict.per_correct else 'not met'}, information only)")  # fmt: skip
    if mine > best.per_correct:
        misses.append(f"{name}/tuned: USD/correct {mine:.6f} > {best.strategy}'s "
                      f"{best.per_correct:.6f}")  # fmt: skip
    return misses


def _toml_section(text: str) -> dict:
    return tomllib.loads(text)


def _print(title: str, results: dict[str, Row]) -> None:
    frontier = results["all-frontier"].cost_pusd
    print(f"\n{title} ({results['all-frontier'].n} items)")
    print(
        f"{'strategy':<20} {'accuracy':>9} {'cost USD':>11} {'of frontier':>12} {'USD/correct':>12}"
    )
    for row in results.values():
        share = Decimal(row.cost_pusd) / Decimal(frontier) if frontier else Decimal(0)
        per = f"{row.per_correct:.6f}" if row.per_correct is not None else "-"
        print(
            f"{row.strategy:<20} {row.accuracy:>9.1%} {to_usd(row.cost_pusd):>11.4f} "
            f"{share:>12.1%} {per:>12}"
        )


def _misses(
    job: Job, rows: list[dict], models: dict[str, str], keys: AnswerKeys, results: dict[str, Row]
) -> list[str]:
    misses = []
    tier_model = {"all-nano": "gpt-4.1-nano", "all-mid": "gpt-4o-mini-2024-07-18",
                  "all-frontier": "claude-3-5-sonnet-20240620"}  # fmt: skip
    for name, model in tier_model.items():
        expected = reference(rows, models[model], keys)
        if results[name].correct != expected:
            misses.append(
                f"{job.name}/{name}: {results[name].correct} correct, reference {expected}"
            )
    cascade, frontier = results["agreement cascade"], results["all-frontier"]
    fixed = [results[n] for n in tier_model]
    best = min(fixed, key=lambda r: r.per_correct or Decimal("Infinity"))
    verdict = "beats" if (cascade.per_correct or 0) <= (best.per_correct or 0) else "loses to"
    print(
        f"{job.name}: the cascade {verdict} the best fixed tier per correct answer "
        f"({best.strategy}); accuracy "
        f"{cascade.accuracy - frontier.accuracy:+.1%} against all-frontier"
    )
    return misses


# --- speed: the annotator per item next to a minimal loop ------------------------------------

ROUNDS = 5


def cpu_us_per_item(work: Callable[[], object], n: int) -> float:
    """CPU microseconds per item of one call of `work` (which handles n items)."""
    start = time.process_time()
    work()
    return (time.process_time() - start) / n * 1e6


def minimal_route(prompt: str, high: tuple[str, ...], low: tuple[str, ...]) -> tuple[str, int]:
    """The article's heuristic in the fewest lines: keywords as plain substrings of the
    lowercased prompt, the words of a whole split, 4 characters a token."""
    lowered = prompt.lower()
    n_high = sum(k in lowered for k in high)
    words = len(prompt.split())
    if n_high >= 2 or (n_high and words > 200):
        return "frontier", len(prompt) // 4
    if words < 50 and any(k in lowered for k in low):
        return "nano", len(prompt) // 4
    return "mid", len(prompt) // 4


def keyword_regex(keywords: tuple[str, ...]) -> re.Pattern:
    """One alternation of the keywords, each where no word character precedes it."""
    longest_first = sorted(keywords, key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, longest_first)) + ")")


def speed(n_items: int) -> None:
    import plan  # bench/plan.py: the planning bench's job and workload

    from batcher.plan import routing
    from batcher.plan.inputs import ParsedItem, parse_lines
    from batcher.plan.routing import make_annotator, make_classifier

    spec = plan._spec()
    path = plan.workload("no-system", n_items)
    with open(path, "rb") as stream:
        items = [p for p in parse_lines(stream) if isinstance(p, ParsedItem)]
    prompts = [item.prompt_text() for item in items]
    system = spec.defaults.system  # what ingest passes for an item without its own
    classifier = make_classifier(spec)
    high = tuple(k.lower() for k in spec.routing.high_keywords)
    low = tuple(k.lower() for k in spec.routing.low_keywords)
    n = len(items)
    rows: dict[str, list[float]] = {"annotate": [], "classify": [], "minimal": []}
    for _ in range(ROUNDS):
        annotate = make_annotator(spec, input_path=path)  # a fresh token sample each round
        rows["annotate"].append(
            cpu_us_per_item(lambda annotate=annotate: [annotate(i, system) for i in items], n)
        )
        rows["classify"].append(
            cpu_us_per_item(lambda: [classifier.classify(p) for p in prompts], n)
        )
        rows["minimal"].append(
            cpu_us_per_item(lambda: [minimal_route(p, high, low) for p in prompts], n)
        )
    best = {name: min(times) for name, times in rows.items()}
    chars = sum(map(len, prompts)) / n
    print(f"routing {n:,} items of {path.name} (prompts of {chars:.0f} characters on average),")
    print(f"CPU us per item, best of {ROUNDS} rounds; load average {os.getloadavg()[0]:.1f}")
    print(f"  annotator (tier, reason, tokens)   {best['annotate']:6.2f}")
    print(f"  its classifier alone               {best['classify']:6.2f}")
    print(f"  minimal loop                       {best['minimal']:6.2f}")
    print(f"  annotator / minimal loop, rate     {best['minimal'] / best['annotate']:6.2f}")
    if hasattr(routing, "Keywords"):  # not in the versions before it, which --speed may time
        _keyword_search(prompts, routing.Keywords(high), keyword_regex(high))


def _keyword_search(prompts: list[str], keywords, regex: re.Pattern) -> None:
    """Keywords.count against one regex over the same lowercased prompts, by length."""
    print("  keyword search (high keywords, counting to 2), us per prompt: find / regex")
    for least, most in ((100, 500), (500, 1000), (1000, 2500)):
        texts = [p.lower() for p in prompts if least <= len(p) < most][:20_000]
        if not texts:
            continue
        found = min(cpu_us_per_item(lambda t=texts: [keywords.count(x, 2) for x in t], len(texts))
                    for _ in range(ROUNDS))  # fmt: skip
        searched = min(cpu_us_per_item(lambda t=texts: [regex.search(x) for x in t], len(texts))
                       for _ in range(ROUNDS))  # fmt: skip
        print(f"    {least:>5}-{most:<5} chars ({len(texts):>6} prompts)"
              f"   {found:5.2f} / {searched:5.2f} (one search only)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=0, help="math items (0: all)")
    parser.add_argument("--labels", type=int, default=600, help="synthetic tickets")
    parser.add_argument(
        "--split-seed", type=int, default=SPLIT_SEED, help="which half the policy is tuned on"
    )
    parser.add_argument("--speed", action="store_true", help="time routing per item instead")
    parser.add_argument("--speed-items", type=int, default=200_000)
    args = parser.parse_args()
    if args.speed:
        speed(args.speed_items)
        return 0
    math_rows = [json.loads(line) for line in MATH.read_text().splitlines() if line.strip()]
    if args.limit:
        math_rows = math_rows[: args.limit]
    with tempfile.TemporaryDirectory(prefix="bench-routing-") as tmp:
        workdir = Path(tmp)
        os.environ["BATCHER_STATE_DIR"] = str(workdir / "state")  # batch files go there
        (workdir / "math").mkdir()
        (workdir / "labels").mkdir()
        seed = args.split_seed
        misses = bench(MATH_JOB, math_rows, MATH_MODELS, workdir / "math", seed)
        labels = label_rows(args.labels)
        misses += bench(LABEL_JOB, labels, LABEL_MODELS, workdir / "labels", seed)
    for miss in misses:
        print(f"MISS: {miss}")
    print("\nall targets met" if not misses else f"\n{len(misses)} target(s) missed")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
