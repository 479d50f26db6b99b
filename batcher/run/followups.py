"""What happens after an attempt fails: retry, escalate, or end the item; and reuse.

The decision is data and one pure function: `FollowupPolicy.from_spec(spec)` reads the
spec's `retry`, `routing.ladder` and `on_invalid`, and `policy.decide(chain)` looks at an
item's attempts (oldest first) and says what comes next. `plan_followups` applies it to every
item of a run whose latest attempt is final, in chunks, one transaction each: new attempts are
inserted (never overwriting old ones) in the same transaction that queues their items, so a
crash or a second call never makes an attempt twice.

Answers reused from earlier runs are `batcher.run.reuse`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from sqlalchemy.engine import Connection, Engine

from batcher.plan.requests import defaults_fingerprint, request_hash, resolve
from batcher.plan.routing import Acceptor, AnswerSignals
from batcher.providers.base import INVALID, TOO_LONG
from batcher.providers.limits import context_window, max_output_tokens
from batcher.spec import JobSpec
from batcher.store import attempts, history, items
from batcher.store.attempts import ChainStep
from batcher.store.states import ATTEMPT_FINAL, AttemptStatus, ItemStatus
from batcher.tune.policies import make_acceptor

CHUNK = 5000
TRUNCATED_GROWTH = 2  # a truncated answer's retry asks for this many times the tokens
TRANSIENT = {AttemptStatus.ERRORED, AttemptStatus.EXPIRED}
# Refusals of the whole batch that say nothing about this request: wait and send it again.
# A batch the provider lost (batch_lost) is the provider's failure, not the request's.
FREE_CODES = frozenset({"token_limit_exceeded", "batch_failed", "batch_lost"})
# Errors that are the request's own fault: the same request would be refused again.
PERMANENT_CODES = frozenset(
    {
        "invalid_request_error",
        "invalid_request",
        "invalid_json_line",
        "duplicate_custom_id",
        "url_mismatch",
        "model_mismatch",
    }
)

Kind = Literal["succeed", "retry", "escalate", "fail", "cancel", "wait"]


@dataclass(frozen=True, slots=True)
class Step:
    """One attempt of an item's chain, as the policy sees it."""

    seq: int
    tier: str
    status: str
    error_code: str | None = None
    error_class: str | None = None  # transient, too_long, invalid (from the provider module)
    max_tokens: int | None = None  # the cap it was sent with, when not the item's own


@dataclass(frozen=True, slots=True)
class Decision:
    kind: Kind
    tier: str | None = None  # the tier of the next attempt (retry, escalate)
    free: bool = False  # a retry that does not use the budget
    reason: str = ""
    larger: bool = False  # a retry of a truncated answer with a larger max_tokens
    role: str = "primary"  # of the next attempt: "opinion" retries a second opinion


@dataclass(frozen=True, slots=True)
class FollowupPolicy:
    """Retries and escalation as data.

    - A transient failure (errored as transient, missing_result) is retried on the same tier
      while that tier has had at most `transient_retries` transient failures.
    - An expiry (the provider ran out of time for the request) is retried on the same tier
      while the item has expired at most `expired_retries` times. It is the provider's
      capacity, not the request's fault, so it uses neither `transient_retries` nor
      `max_attempts`.
    - A batch-level refusal (`token_limit_exceeded`, `batch_failed`) is retried without using
      any budget, at most `free_retries` times, so a request that can never fit cannot loop.
    - An error that is the request's own fault (invalid request, bad line) ends the item at
      once: the same request would be refused again.
    - A request too long for the model's context moves to the next tier of `ladder` whose
      context window (`windows`, by tier; None unknown) is larger, else the item fails.
    - An invalid answer moves to the next tier of `ladder` when `escalate_invalid`.
    - A truncated answer (cut off at max_tokens) follows `on_truncated`: "retry_larger" sends
      it once more on the same tier with a larger max_tokens, then escalates; "escalate";
      "fail".
    - No item gets more than `max_attempts` attempts that use the budget.
    """

    max_attempts: int
    transient_retries: int
    ladder: tuple[str, ...]
    escalate_invalid: bool = True
    free_retries: int = 10
    on_truncated: str = "retry_larger"
    windows: dict[str, int | None] = field(default_factory=dict)
    expired_retries: int = 5

    def __post_init__(self) -> None:
        limits = (self.transient_retries, self.free_retries, self.expired_retries)
        if self.max_attempts < 1 or min(limits) < 0:
            raise ValueError(f"retry limits must be positive: {self}")

    @classmethod
    def from_spec(cls, spec: JobSpec) -> FollowupPolicy:
        return cls(
            max_attempts=spec.retry.max_attempts,
            transient_retries=spec.retry.transient_retries,
            ladder=tuple(spec.routing.ladder),
            escalate_invalid=spec.on_invalid == "escalate",
            on_truncated=spec.retry.on_truncated,
            windows={tier: context_window(*spec.model_of(tier)) for tier in spec.tiers},
            expired_retries=spec.retry.expired_retries,
        )

    def next_tier(self, tier: str) -> str | None:
        """The tier above `tier` on the ladder (None at the top or off the ladder)."""
        if tier not in self.ladder:
            return None
        index = self.ladder.index(tier)
        return self.ladder[index + 1] if index + 1 < len(self.ladder) else None

    def larger_context(self, tier: str) -> str | None:
        """The first tier above `tier` on the ladder whose context window is larger (a tier
        whose window is unknown is tried: the provider then says whether it fits)."""
        own = self.windows.get(tier)
        above = self.next_tier(tier)
        while above is not None:
            window = self.windows.get(above)
            if own is None or window is None or window > own:
                return above
            above = self.next_tier(above)
        return None

    def decide(self, chain: Sequence[Step]) -> Decision:
        """What comes after the last attempt of `chain` (the item's attempts, oldest first)."""
        last = chain[-1]
        if last.status in (AttemptStatus.SUCCEEDED, AttemptStatus.REUSED):
            return Decision("succeed")
        if last.status == AttemptStatus.CANCELLED:
            return Decision("cancel", reason="cancelled before it ran")
        if last.status not in ATTEMPT_FINAL:
            return Decision("wait")
        used = sum(1 for step in chain if _budgeted(step))
        if last.status == AttemptStatus.EXPIRED:
            return self._after_expiry(chain, last)
        if last.status == AttemptStatus.INVALID:
            return self._after_invalid(last, used)
        if last.status == AttemptStatus.TRUNCATED:
            return self._after_truncated(last, used)
        return self._after_error(chain, last, used)

    def _after_invalid(self, last: Step, used: int) -> Decision:
        if not self.escalate_invalid:
            return Decision("fail", reason="invalid answer (on_invalid = fail)")
        return self._escalate(last, used, "invalid answer")

    def _escalate(self, last: Step, used: int, what: str) -> Decision:
        tier = self.next_tier(last.tier)
        if tier is None:
            return Decision("fail", reason=f"{what} and no tier above {last.tier!r}")
        if used >= self.max_attempts:
            return Decision("fail", reason=f"{what} after {used} attempts (max_attempts)")
        return Decision("escalate", tier=tier)

    def _after_truncated(self, last: Step, used: int) -> Decision:
        if self.on_truncated == "fail":
            return Decision("fail", reason="answer cut off at max_tokens (on_truncated = fail)")
        # An attempt sent with its own cap is already the larger retry: the next step climbs.
        if self.on_truncated == "retry_larger" and last.max_tokens is None:
            if used >= self.max_attempts:
                return Decision("fail", reason=f"truncated after {used} attempts (max_attempts)")
            return Decision("retry", tier=last.tier, larger=True)
        return self._escalate(last, used, "answer cut off at max_tokens")

    def _after_expiry(self, chain: Sequence[Step], last: Step) -> Decision:
        expired = sum(1 for step in chain if step.status == AttemptStatus.EXPIRED)
        if expired > self.expired_retries:
            return Decision("fail", reason=f"expired {expired} times (expired_retries)")
        return Decision("retry", tier=last.tier, free=True, reason="expired")

    def _after_error(self, chain: Sequence[Step], last: Step, used: int) -> Decision:
        code = last.error_code or last.status
        if last.error_class == INVALID or code in PERMANENT_CODES:
            return Decision("fail", reason=f"{code}: the provider refuses this request")
        if last.error_class == TOO_LONG:
            tier = self.larger_context(last.tier)
            if tier is None:
                return Decision("fail", reason=f"{code}: no tier above has a larger context")
            if used >= self.max_attempts:
                return Decision("fail", reason=f"{code} after {used} attempts (max_attempts)")
            return Decision("escalate", tier=tier)
        if _free(last):
            n_free = sum(1 for step in chain if _free(step))
            if n_free > self.free_retries:
                return Decision("fail", reason=f"{code} {n_free} times")
            return Decision("retry", tier=last.tier, free=True)
        on_tier = sum(1 for s in chain if s.tier == last.tier and _transient(s) and _budgeted(s))
        if on_tier > self.transient_retries:
            return Decision("fail", reason=f"{code}: transient retries on {last.tier!r} used up")
        if used >= self.max_attempts:
            return Decision("fail", reason=f"{code} after {used} attempts (max_attempts)")
        return Decision("retry", tier=last.tier)


# --- the agreement cascade ------------------------------------------------------------------

PRIMARY, OPINION, CALIBRATION = "primary", "opinion", "calibration"  # attempt.role
ANSWERED = (AttemptStatus.SUCCEEDED, AttemptStatus.REUSED)


def decide_item(
    policy: FollowupPolicy,
    chain: Sequence[ChainStep],
    acceptor: Acceptor | None = None,
    item: tuple[str | None, str | None] | None = None,
) -> Decision:
    """What comes next for an item none of whose attempts is unfinished. Without second
    opinions or an acceptor (or once the item climbed past its first tier), the policy's
    usual decision on its primary attempts; with an `acceptor` (a learned policy's scorer),
    `_decide_accepted`, which reads `item` (route reason, metadata JSON) as
    well; in the agreement cascade, `_decide_agreement`."""
    chain = [a for a in chain if a.role != CALIBRATION]  # evidence, never part of a decision
    primaries = [_step(a) for a in chain if a.role == PRIMARY]
    opinions = [a for a in chain if a.role == OPINION]
    climbed = any(p.tier != primaries[0].tier for p in primaries)
    if climbed or (not opinions and acceptor is None):
        return policy.decide(primaries)
    if primaries[-1].status not in ANSWERED:  # the first tier failed: retry or escalate it
        return policy.decide(primaries)
    answer = next(a for a in reversed(chain) if a.role == PRIMARY)
    if acceptor is not None:
        return _decide_accepted(policy, primaries, answer, opinions, acceptor, item)
    return _decide_agreement(policy, primaries, answer, opinions)


def _decide_accepted(
    policy: FollowupPolicy,
    primaries: list[Step],
    answer: ChainStep,
    opinions: list[ChainStep],
    acceptor: Acceptor,
    item: tuple[str | None, str | None] | None,
) -> Decision:
    """Once every second opinion is in (an opinion lost to a transient error is asked again
    within the usual budget), the acceptor decides whether the valid answer stands."""
    if policy.next_tier(primaries[-1].tier) is None:
        return Decision("succeed", reason="nothing above: accepted on validity")
    keys: dict[str, str | None] = {}
    retry: Decision | None = None
    for tier, opinion in {a.tier: a for a in opinions}.items():  # the latest of each tier
        if opinion.status == AttemptStatus.CANCELLED:
            return Decision("cancel", reason="a second opinion was cancelled before it ran")
        if opinion.status in ANSWERED:
            keys[tier] = opinion.answer_key
            continue
        if opinion.status not in (AttemptStatus.INVALID, AttemptStatus.TRUNCATED):
            again = policy.decide([_step(a) for a in opinions if a.tier == tier])
            if again.kind == "retry":
                retry = retry or Decision("retry", tier=tier, free=again.free, role=OPINION)
                continue
        keys[tier] = None  # no valid opinion: it agrees with nothing
    if retry is not None:
        return retry
    route_reason, metadata = item or (None, None)
    signals = AnswerSignals(
        tier=answer.tier, answer_key=answer.answer_key, stop_reason=answer.stop_reason,
        output_tokens=answer.output_tokens, opinions=keys, input_tokens=answer.input_tokens,
        route_reason=route_reason, metadata=orjson.loads(metadata) if metadata else {},
    )  # fmt: skip
    stands, reason = acceptor.accept(signals)
    return Decision("succeed", reason=reason) if stands else _escalate(policy, primaries, reason)


def _decide_agreement(
    policy: FollowupPolicy, primaries: list[Step], answer: ChainStep, opinions: list[ChainStep]
) -> Decision:
    """A valid first-tier answer stands when every second opinion (the latest of each
    opinion tier) gives the same answer key; a different or missing key, or an invalid or
    truncated opinion, escalates the primary; an opinion lost to a transient error is asked
    again within the usual retry budget."""
    latest = {a.tier: a for a in opinions}  # opinions come oldest first
    retry: Decision | None = None
    for tier, opinion in latest.items():
        if opinion.status == AttemptStatus.CANCELLED:
            return Decision("cancel", reason="a second opinion was cancelled before it ran")
        if opinion.status in ANSWERED:
            if answer.answer_key is None or opinion.answer_key != answer.answer_key:
                return _escalate(policy, primaries, f"disagreement: {tier} answered otherwise")
            continue
        if opinion.status in (AttemptStatus.INVALID, AttemptStatus.TRUNCATED):
            reason = f"disagreement: {tier}'s answer is {opinion.status}"
            return _escalate(policy, primaries, reason)
        again = policy.decide([_step(a) for a in opinions if a.tier == tier])
        if again.kind != "retry":
            return _escalate(policy, primaries, f"no second opinion from {tier}: {again.reason}")
        retry = retry or Decision("retry", tier=tier, free=again.free, role=OPINION)
    return retry or Decision("succeed", reason="the second opinions agree")


def _escalate(policy: FollowupPolicy, primaries: list[Step], reason: str) -> Decision:
    """The next tier for a valid answer the opinions did not confirm; with no tier or budget
    left, the answer is accepted on its validity."""
    tier = policy.next_tier(primaries[-1].tier)
    used = sum(1 for step in primaries if not _free(step))
    if tier is None or used >= policy.max_attempts:
        return Decision("succeed", reason=f"{reason}; accepted on validity (nothing above)")
    return Decision("escalate", tier=tier, reason=reason)


def _step(attempt: ChainStep) -> Step:
    return Step(
        attempt.seq, attempt.tier, attempt.status, attempt.error_code, attempt.error_class,
        attempt.max_tokens,
    )  # fmt: skip


def _transient(step: Step) -> bool:
    return step.status in TRANSIENT


def _free(step: Step) -> bool:
    return step.status == AttemptStatus.ERRORED and step.error_code in FREE_CODES


def _budgeted(step: Step) -> bool:
    """True when the attempt counts against max_attempts and transient_retries."""
    return not _free(step) and step.status != AttemptStatus.EXPIRED


@dataclass
class FollowupSummary:
    """Items by what `plan_followups` did with them."""

    retried: int = 0  # new attempt on the same tier (free retries included)
    free_retries: int = 0  # of which did not use the budget
    escalated: int = 0  # new attempt on the next tier
    failed: int = 0
    cancelled: int = 0
    succeeded: int = 0  # latest attempt had succeeded but the item was not marked yet

    @property
    def new_attempts(self) -> int:
        return self.retried + self.escalated


class _Round:
    """The rows one chunk of decisions writes."""

    def __init__(self, conn: Connection, run_id: int, spec: JobSpec, summary: FollowupSummary):
        self.conn, self.run_id, self.spec, self.summary = conn, run_id, spec, summary
        self.new: list[dict[str, Any]] = []
        # item status -> (answer's attempt, verdict, final attempt, id)
        self.ends: dict[str, list[tuple]] = {}

    def apply(self, item_id: int, chain: list[ChainStep], decision: Decision) -> None:
        last = chain[-1]
        primaries = [a for a in chain if a.role == PRIMARY]  # opinions, calibration: no answer
        ending = primaries[-1]
        provider, model = ending.provider, ending.model
        verdict = ending.verdict
        answer = ending.id if ending.output is not None else None
        if decision.kind in ("retry", "escalate"):
            if decision.kind == "escalate" or decision.role == OPINION:
                provider, model = self.spec.model_of(decision.tier)
            if decision.kind == "escalate":
                provider, model = self.spec.model_of(decision.tier)
                self.summary.escalated += 1
            else:
                self.summary.retried += 1
                self.summary.free_retries += decision.free
            seq = last.seq + 1
            self.new.append(
                {
                    "run_id": self.run_id,
                    "item_id": item_id,
                    "seq": seq,
                    "tier": decision.tier,
                    "provider": provider,
                    "model": model,
                    "custom_id": f"i{item_id}-a{seq}",
                    "max_tokens": None,
                    "larger": decision.larger,  # set from the item's cap in _insert_attempts
                    "role": decision.role,
                }
            )
            return
        status = {
            "succeed": ItemStatus.SUCCEEDED,
            "fail": ItemStatus.FAILED,
            "cancel": ItemStatus.CANCELLED,
        }[decision.kind]
        setattr(self.summary, status.value, getattr(self.summary, status.value) + 1)
        # A failed item keeps its last paid answer and the verdict that refused it (an
        # answer bought before later attempts errored counts): the reader needs it to judge
        # the check or the prompt.
        answered = [a for a in primaries if a.output is not None]
        if answered and answer is None:
            answer, verdict = answered[-1].id, answered[-1].verdict
        self.ends.setdefault(status, []).append((answer, verdict, ending.id, item_id))

    def write(self) -> None:
        if self.new:
            self._insert_attempts()
        for status, rows in self.ends.items():
            items.finish(self.conn, status, rows)

    def _insert_attempts(self) -> None:
        requests = items.requests_of(self.conn, [a["item_id"] for a in self.new])
        fingerprint = defaults_fingerprint(self.spec)
        for attempt in self.new:
            _, system_hash, request_json = requests[attempt["item_id"]]
            attempt["request_hash"] = request_hash(
                attempt["provider"], attempt["model"], system_hash, request_json, fingerprint
            )
            if attempt.pop("larger"):
                attempt["max_tokens"] = self._larger_cap(attempt, request_json)
        attempts.plan_next(self.conn, self.new)

    def _larger_cap(self, attempt: dict[str, Any], request_json: str) -> int:
        """Twice the item's max_tokens, bounded by the model's output limit."""
        cap = resolve(orjson.loads(request_json), self.spec)[0]
        limit = max_output_tokens(attempt["provider"], attempt["model"])
        return min(cap * TRUNCATED_GROWTH, limit) if limit else cap * TRUNCATED_GROWTH


def plan_followups(
    db: Engine,
    run_id: int,
    spec: JobSpec,
    *,
    chunk: int = CHUNK,
    batch_ids: Sequence[str] | None = None,
) -> FollowupSummary:
    """Decide the next step of every open item of run `run_id` whose latest attempt is final
    (with `batch_ids`, of those with an attempt in one of these batches: what the batches
    that just ended can have changed, without reading the rest of a large run).

    Retries and escalations become new planned attempts without a batch (seq + 1, custom id
    "i{item}-a{seq}", request_hash as the planner computes it) and their items are queued;
    `planner.lay_out_batches` then puts them into batches. Items out of options end `failed`
    (their final_attempt_id points at the attempt holding the last error), items whose attempt
    was cancelled end `cancelled`. Idempotent: a second call finds nothing to do.
    """
    policy = FollowupPolicy.from_spec(spec)
    acceptor = make_acceptor(spec)
    reads_items = acceptor is not None and acceptor.reads_items
    summary = FollowupSummary()
    after = 0
    while True:
        with db.begin() as conn:
            item_ids = attempts.followup_candidates(conn, run_id, after, chunk, batch_ids)
            if not item_ids:
                return summary
            after = item_ids[-1]
            work = _Round(conn, run_id, spec, summary)
            found = attempts.chains(conn, item_ids)
            signals = history.item_signals(conn, list(found)) if reads_items else {}
            for item_id, chain in found.items():
                decision = decide_item(policy, chain, acceptor, signals.get(item_id))
                work.apply(item_id, chain, decision)
            work.write()
