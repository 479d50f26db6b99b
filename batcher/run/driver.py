"""The run loop: submit planned batches, poll open ones, settle ended ones, plan follow-ups.

One `Driver` drives one run while its process holds the run's lease. Every step reads its
work from the database and commits what it did before the next, so the loop can stop at any
point (a `stop` event, a crash, a kill) and a later `resume` picks up exactly there:

- batches left `submitting` are looked up at the provider (see batcher.run.submit);
- batches left `ended` are settled again (reconciling is idempotent);
- follow-ups are planned again (planning only looks at final attempts without a successor).

Submitting is pipelined: planned batches go to a small pool of submit threads (upload and
create, each step committed as in batcher.run.submit), while this thread goes on polling,
reconciling batches as they end and planning their follow-ups. A batch is in one thread's
hands at a time, and one create of it is in flight at most; a batch the pool holds is
`submitting` for good reason, so only batches it does not hold are settled as leftovers. The
pool is emptied (queued batches stay `planned`, running submits finish) before the loop
returns, so nothing of this process writes to the run once its lease is released.

A run whose plan was deferred (`batcher.plan.onepass`: its items are queued, its batches not
written yet) is laid out by a layout thread (batcher.run.pipeline) while this loop runs; each
batch goes to the submit pool as soon as the thread releases it.

A cancelled run is drained instead: nothing new is submitted, open batches are cancelled at
the provider, what they finished is kept, and the remaining items end `cancelled`.
"""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_any
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from batcher.errors import BatcherError
from batcher.plan.onepass import kept_spools, lay_out_kept, layout_pending
from batcher.plan.planner import ensure_planned, lay_out_batches
from batcher.providers import Registry
from batcher.providers.base import BatchState
from batcher.providers.calls import RETRYABLE, ProviderError, stopping_on
from batcher.run.budget import check_spend
from batcher.run.crash import crash_point
from batcher.run.followups import plan_followups
from batcher.run.holds import Holds, NeverFits
from batcher.run.lease import Lease
from batcher.run.pipeline import PipelinedLayout, free_tokenizers
from batcher.run.poll import TOKEN_LIMIT, Backoff, PollSettings, settle_ended, settle_refused
from batcher.run.progress import Reporter
from batcher.run.reuse import apply_reuse
from batcher.run.submit import settle, submit_batch
from batcher.spec import JobSpec
from batcher.store import attempts, batches, items, runs
from batcher.store.lost import mark_lost
from batcher.store.retries import split_after_expiry
from batcher.store.states import BatchStatus, RunStatus

MAX_CREATE_RETRIES = 5  # creates that provably did not happen, in a row, before giving up
# Polls that failed even after the client's retries, in a row, before the run stops: with the
# wait growing to polling.max_interval_s this rides out an outage of an hour or more.
MAX_POLL_FAILURES = 20
# Batches uploading or being created at once. Two keep the provider busy with one batch while
# the other's upload starts; more would only share the same link and the provider's intake.
SUBMIT_WORKERS = 2
STOP_CHECK_S = 0.25  # how often a wait for a submit to finish looks at the stop event


class RunStopped(BatcherError):
    """The loop cannot go on without a person (the message says what to do)."""


class LeaseLost(BatcherError):
    """Another process took the run's lease (ours expired): stop without touching the run,
    which is now theirs to drive."""


class BudgetReached(RunStopped):
    """The next round would take the run past its max_usd; nothing of it was sent."""


class Driver:
    def __init__(
        self,
        db: Engine,
        run_id: int,
        spec: JobSpec,
        registry: Registry,
        *,
        lease: Lease,
        stop: threading.Event,
        poll: PollSettings,
        reporter: Reporter,
        reuse: bool = True,
    ) -> None:
        self.db, self.run_id, self.spec, self.registry = db, run_id, spec, registry
        self.lease, self.stop, self.reporter, self.reuse = lease, stop, reporter, reuse
        self.backoff = Backoff(poll)
        self.holds = Holds(poll.interval_s)
        self.create_retries: dict[str, int] = {}
        self.cancel_sent: set[str] = set()
        self.poll_failures = 0
        self.silent_since: dict[str, float] = {}  # provider -> first call it did not answer
        # How long an unanswered create may take to show in the provider's list.
        self.grace_s = min(60.0, max(0.2, poll.interval_s * 4))
        self.waiting: set[str] = set()
        # Batches the provider answered "not found" for, since when (monotonic seconds). One
        # such answer is not enough to give a batch up: it is lost only when the provider
        # still does not know it `grace_s` later.
        self.missing: dict[str, float] = {}
        self.cancelling = False
        self.within_budget: set[str] = set()  # planned batches the budget allowed
        self.budget_waiting = False
        self.pool: ThreadPoolExecutor | None = None
        self.in_pool: dict[str, tuple[Any, Future]] = {}  # batch id -> (row, its submit)
        # Batches settled since the last follow-up: only their items can need one (a full
        # pass reads every open item of the run, seconds at 500,000 items).
        self.settled: set[str] = set()
        self.rescan = False  # reuse answered attempts outside any batch: look at every item
        self.wake = threading.Event()  # a submit finished, or a batch was laid out
        self.layout: PipelinedLayout | None = None  # while a deferred plan is laid out
        self.followed: set[str] = set()  # batches of follow-up rounds (reuse applied)

    # --- queries ---------------------------------------------------------------------------

    def batches(self, *statuses: str) -> list[Any]:
        with self.db.connect() as conn:
            return batches.of_run(conn, self.run_id, *statuses)

    def run_status(self) -> str:
        with self.db.connect() as conn:
            return runs.status(conn, self.run_id)

    def open_items(self) -> int:
        with self.db.connect() as conn:
            return items.count_open(conn, self.run_id)

    def report_overall(self) -> None:
        with self.db.connect() as conn:
            total, done = items.progress(conn, self.run_id)
            cost, _ = attempts.cost_totals(conn, self.run_id)
        self.reporter.overall(done, total, cost)

    # --- the loop --------------------------------------------------------------------------

    def run(self, *, submit_only: bool = False) -> str:
        """Drive until done; returns the run's status, or "running" when stopped early."""
        self.pool = ThreadPoolExecutor(SUBMIT_WORKERS, thread_name_prefix="submit")
        try:
            return self.loop(submit_only=submit_only)
        finally:
            self.stop_layout()
            # Queued submits never start (their batches stay planned); running ones finish.
            self.pool.shutdown(wait=True, cancel_futures=True)

    def loop(self, *, submit_only: bool) -> str:
        if self.run_status() == RunStatus.CANCELLED:
            return self.drain()
        self.start(background=not submit_only)
        self.settle_submitting()
        self.settle_leftovers()
        self.apply_reuse()  # before anything of this run is sent
        self.follow_up(everything=True)
        self.report_overall()
        moved = True  # the counts below are read again only after something moved
        while True:
            if self.lease.lost.is_set():
                raise LeaseLost(f"run {self.run_id}: another process took over its lease")
            if self.run_status() == RunStatus.CANCELLED:  # `batcher cancel` from elsewhere
                self.stop_layout()
                self.finish_submits()
                return self.drain()
            self.settle_submitting()
            self.submit_planned()
            if submit_only:
                self.finish_submits()
                return RunStatus.RUNNING
            was_moved = moved
            moved = self.collect_layout() | self.collect_submits()
            moved |= self.settle_leftovers() | self.poll_open()
            if moved:
                self.follow_up()
                self.backoff.moved()
                self.report_overall()
            else:
                self.backoff.idle()
            if (moved or was_moved) and self.open_items() == 0:
                self.complete()
                return RunStatus.COMPLETED
            if self.check_not_stuck():
                moved = True  # its follow-up may have ended the last items
            if self.pause(self.backoff.wait_s if not moved else 0):
                return RunStatus.RUNNING

    def pause(self, seconds: float) -> bool:
        """Wait `seconds`, less when a submit finishes (its batch is then polled at once) or
        a batch is laid out (it is submitted at once). True when the loop is to stop."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if self.wake.wait(min(max(left, 0), STOP_CHECK_S)) or left <= 0:
                self.wake.clear()
                return self.stop.is_set()
        return True

    def start(self, *, background: bool) -> None:
        """Plan what is not planned yet; a deferred plan in the layout thread when it may
        (`background`), gated by reuse when an earlier run has answers it could take."""
        ensure_planned(self.db, self.run_id, self.spec, kept=False)
        with self.db.begin() as conn:
            runs.start(conn, self.run_id)
            gated = self.reuse and attempts.any_earlier_answer(conn, self.run_id)
        if not layout_pending(self.run_id):
            return
        if not background:
            free_tokenizers(lay_out_kept(self.db, self.run_id, self.spec).n_requests)
            return

        def halt() -> bool:
            return self.stop.is_set() or self.lease.lost.is_set()

        self.layout = PipelinedLayout(
            self.db, self.run_id, self.spec, gated=gated, halt=halt, wake=self.wake
        )

    def collect_layout(self) -> bool:
        """True when the layout thread finished; raises what it raised."""
        if self.layout is None or not self.layout.collect():
            return False
        if self.layout.reused:
            self.rescan = True  # those items ended, and the rest is laid out by a follow-up
        self.within_budget |= self.layout.released
        self.layout = None
        return True

    def stop_layout(self) -> None:
        """Stop the layout thread after its current batch (the rest is laid out by the
        next drive) and wait for it."""
        if self.layout is not None:
            self.layout.stop()
            self.collect_layout()

    def apply_reuse(self) -> None:
        if not self.reuse:
            return
        reused = apply_reuse(self.db, self.run_id, self.spec)
        if reused:
            self.rescan = True
            self.reporter.note(f"{reused} requests answered from earlier runs at no cost")

    def follow_up(self, *, everything: bool = False) -> None:
        """New attempts for items whose last attempt failed, in new batches of a new round:
        of the items of the batches settled since the last call, or of `everything`."""
        everything |= self.rescan
        if not everything and not self.settled:
            return  # nothing ended: no item can need a follow-up
        scope = None if everything else sorted(self.settled)
        self.settled.clear()
        self.rescan = False
        plan_followups(self.db, self.run_id, self.spec, batch_ids=scope)
        with self.db.connect() as conn:
            waiting = attempts.count_unbatched(conn, self.run_id)
            # Follow-ups go one round after the last batch that ended; attempts freed by
            # reuse before anything ended stay in round 1.
            last_round = batches.last_settled_round(conn, self.run_id)
            limit = split_after_expiry(conn, self.run_id)
        if not waiting:
            return
        self.apply_reuse()
        spec = self.spec if limit is None else _with_batch_limit(self.spec, limit)
        new = lay_out_batches(self.db, self.run_id, spec, round=last_round + 1)
        self.followed.update(new)  # matched against earlier answers just above
        if new:
            split = f" of at most {limit} requests (expired again)" if limit else ""
            self.reporter.note(f"round {last_round + 1}: {len(new)} new batch(es){split}")

    def complete(self) -> None:
        with self.db.begin() as conn:
            runs.complete(conn, self.run_id)
        self.sweep_files()

    # --- local batch files -----------------------------------------------------------------

    def drop_file(self, batch: Any) -> None:
        """A batch that is done with (reconciled, failed, lost, abandoned) needs its local
        file no more: its answers, or its requests' new attempts, are in the database."""
        if not self.spec.batching.keep_files:
            Path(batch.path).unlink(missing_ok=True)

    def sweep_files(self) -> None:
        """The files of every batch of the run that is done with, and their folder once it
        is empty: also those a crash kept from going after their batch was reconciled."""
        if self.spec.batching.keep_files:
            return
        done = self.batches(BatchStatus.RECONCILED, BatchStatus.LOST, BatchStatus.ABANDONED)
        for batch in done:
            self.drop_file(batch)
        folders = {Path(batch.path).parent for batch in done}
        for folder in folders:
            try:
                folder.rmdir()
            except OSError:  # not empty (kept or still planned files), or gone already
                pass

    def check_not_stuck(self) -> bool:
        """With nothing planned or in flight, follow up on every item (True); RunStopped
        when items are still open without anything planned for them."""
        busy = self.batches(
            BatchStatus.PLANNED, BatchStatus.SUBMITTING, BatchStatus.SUBMITTED, BatchStatus.ENDED
        )
        if busy or self.in_pool or self.layout is not None:
            return False
        self.follow_up(everything=True)
        if not self.batches(BatchStatus.PLANNED) and self.open_items():
            raise RunStopped(
                f"run {self.run_id}: {self.open_items()} items are unfinished but nothing is "
                f"planned or in flight for them; `batcher resume {self.run_id}` plans them again"
            )
        return True

    # --- submitting ------------------------------------------------------------------------

    def settle_submitting(self) -> None:
        """Batches left `submitting` (a crash, an unanswered create): adopt, re-plan, or look
        again later; SubmissionUndecided when the provider cannot tell."""
        for batch in self.batches(BatchStatus.SUBMITTING):
            if batch.id in self.in_pool:  # being submitted right now, not left over
                continue
            provider = self.registry.get(batch.provider)
            kind, detail = settle(self.db, provider, batch.id, grace_s=self.grace_s)
            self.report_settled(batch, kind, detail)

    def report_settled(self, batch: Any, kind: str, detail: Any) -> None:
        if kind == "wait":
            if batch.id not in self.waiting:
                self.waiting.add(batch.id)
                self.reporter.note(f"{detail}; looking again")
            return
        self.waiting.discard(batch.id)
        if kind == "submitted":
            self.reporter.note(f"batch {batch.id}: adopted {detail.provider_batch_id}")
        else:
            self.reporter.note(f"batch {batch.id}: {detail}; submitting it again")

    def running(self, model: str) -> int:
        """Batches of `model` at the provider now."""
        return len([b for b in self.batches(BatchStatus.SUBMITTED) if b.model == model])

    def held(self, batch: Any) -> bool:
        if batch.model not in self.holds.by_model:
            return False
        return self.holds.blocks(batch.model, self.running(batch.model))

    def may_send(self, batch: Any) -> bool:
        """Whether a queued batch may go out now (asked by the submit thread as it starts)."""
        return not self.stop.is_set() and not self.held(batch)

    def allowed_by_budget(self, planned: list[Any]) -> bool:
        """Whether the planned batches fit under max_usd with what was spent and what is in
        flight. Over it, wait while batches are in flight (their bills may come in lower than
        estimated); with nothing in flight, stop the run (BudgetReached)."""
        if all(b.id in self.within_budget for b in planned):
            return True
        check = check_spend(self.db, self.run_id, self.spec)
        if check is None or not check.over:
            self.within_budget.update(b.id for b in planned)
            self.budget_waiting = False
            return True
        if self.batches(BatchStatus.SUBMITTED, BatchStatus.SUBMITTING, BatchStatus.ENDED):
            if not self.budget_waiting:
                self.budget_waiting = True
                self.reporter.note(
                    "the next round would pass max_usd: it waits until the batches in "
                    "flight are billed"
                )
            return False
        raise BudgetReached(check.message(self.run_id))

    def submit_planned(self) -> None:
        """Hand the planned batches the budget allows to the submit pool (each once)."""
        planned = [b for b in self.batches(BatchStatus.PLANNED) if b.id not in self.in_pool]
        if self.layout is not None:  # a batch of the layout goes once it is released
            self.within_budget |= self.layout.released  # the plan's budget check covered it
            planned = [b for b in planned if b.id in self.followed or self.layout.may_send(b.id)]
        if not planned or not self.allowed_by_budget(planned):
            return
        for batch in planned:
            if self.stop.is_set() or self.held(batch):
                continue
            provider = self.registry.get(batch.provider)  # opened here: the registry is ours
            future = self.pool.submit(self.submit_one, provider, batch)
            future.add_done_callback(lambda _: self.wake.set())
            self.in_pool[batch.id] = (batch, future)

    def submit_one(self, provider: Any, batch: Any) -> tuple[str, Any]:
        """In a submit thread: one batch, unless it may not go out any more (a stop, a hold
        that began after it was queued: it stays planned)."""
        if not self.may_send(batch):
            return "skipped", None
        with stopping_on(self.stop):
            return submit_batch(self.db, provider, batch, grace_s=self.grace_s)

    def collect_submits(self) -> bool:
        """Act on the submits that finished; True when one did. A submit's exception (e.g.
        SubmissionUndecided, Interrupted) is raised here, in the loop's thread."""
        finished = [b for b, (_, future) in self.in_pool.items() if future.done()]
        for batch_id in finished:
            batch, future = self.in_pool.pop(batch_id)
            kind, detail = future.result()
            self.submitted(batch, kind, detail)
        return bool(finished)

    def finish_submits(self) -> None:
        """Wait for every submit in the pool and act on it."""
        while self.in_pool:
            wait_for_any([future for _, future in self.in_pool.values()])
            self.collect_submits()

    def submitted(self, batch: Any, kind: str, detail: Any) -> None:
        """What one submit came to: report it, settle a refusal, count a failed create."""
        if kind == "skipped":
            return
        label = f"{batch.provider}:{batch.model}"
        if kind != "retry" or not getattr(detail, "unreachable", False):
            self.silent_since.pop(batch.provider, None)
        if kind == "wait":
            self.report_settled(batch, kind, detail)
        elif kind == "submitted":
            self.create_retries.pop(batch.id, None)
            self.reporter.batch(batch.id, label, 0, batch.n_requests, detail.raw_status)
        elif kind == "refused":
            settle_refused(self.db, batch, detail, self.spec)
            self.settled.add(batch.id)
            self.drop_file(batch)
            self.reporter.note(f"batch {batch.id} refused by {batch.provider}: {detail}")
            self.follow_up()
        elif getattr(detail, "unreachable", False):
            self.not_answering(batch.provider, detail)
            self.reporter.note(f"batch {batch.id}: will submit again ({detail})")
        else:
            tries = self.create_retries[batch.id] = self.create_retries.get(batch.id, 0) + 1
            if tries > MAX_CREATE_RETRIES:
                raise RunStopped(
                    f"batch {batch.id}: {batch.provider} did not create it in {tries} "
                    f"tries (last: {detail}); `batcher resume {self.run_id}` tries again"
                )
            self.reporter.note(f"batch {batch.id}: will submit again ({detail})")

    # --- polling and settling --------------------------------------------------------------

    def poll_open(self) -> bool:
        """Look at every submitted batch; settle those that ended. True when anything moved."""
        moved = False
        for batch in self.batches(BatchStatus.SUBMITTED):
            provider = self.registry.get(batch.provider)
            try:
                state = provider.poll(batch.provider_batch_id)
            except ProviderError as exc:
                moved |= self.poll_failed(batch, exc)
                continue
            self.poll_failures = 0
            self.missing.pop(batch.id, None)
            self.silent_since.pop(batch.provider, None)
            label = f"{batch.provider}:{batch.model}"
            self.reporter.batch(batch.id, label, state.done, batch.n_requests, state.raw_status)
            if not state.ended:
                if state.raw_status != batch.raw_status:
                    moved = True
                    with self.db.begin() as conn:
                        batches.update_raw_status(conn, batch.id, state.raw_status)
                crash_point("while_polling")
                continue
            self.mark_ended(batch.id, state)
            moved = True
            try:
                self.settle(batch, state)
            except ProviderError as exc:  # reading the results failed: settle_leftovers retries
                self.poll_failed(batch, exc)
        return moved

    def poll_failed(self, batch: Any, exc: ProviderError) -> bool:
        """A poll that failed through all retries: try again next loop, unless it is not a
        passing problem (auth), the provider has not answered at all for too long, or it has
        gone on too long. True when the batch was lost."""
        if exc.status == 404:
            return self.not_found(batch, exc)
        if exc.unreachable:
            self.not_answering(batch.provider, exc)
            self.reporter.note(f"batch {batch.id}: {exc}; trying again")
            return False
        self.poll_failures += 1
        if exc.status not in RETRYABLE | {None} or self.poll_failures > MAX_POLL_FAILURES:
            raise exc
        self.reporter.note(f"batch {batch.id}: {exc}; trying again")
        return False

    def not_found(self, batch: Any, exc: ProviderError) -> bool:
        """The provider says it does not know the batch. The first answer starts the grace
        period; still unknown after it, the batch is `lost` and its unfinished requests go
        again in a new batch (or end cancelled, when the run is being cancelled). True when
        the batch was marked lost."""
        now = time.monotonic()
        first = self.missing.setdefault(batch.id, now)
        waited = now - first
        if waited < self.grace_s:
            if first == now:
                self.reporter.note(
                    f"batch {batch.id}: {batch.provider} does not know "
                    f"{batch.provider_batch_id} ({exc}); asking again in {self.grace_s:.1f} s"
                )
            return False
        reason = (
            f"{batch.provider} no longer knows {batch.provider_batch_id} (not found for "
            f"{waited:.1f} s: archived past its retention, or deleted); its results are gone"
        )
        with self.db.begin() as conn:
            n = mark_lost(conn, batch.id, reason, cancelling=self.cancelling)
        self.settled.add(batch.id)
        self.missing.pop(batch.id, None)
        then = "they end cancelled" if self.cancelling else "they go again in a new batch"
        self.reporter.note(f"batch {batch.id} is lost: {reason}; {n} unfinished request(s): {then}")
        return True

    def not_answering(self, provider: str, exc: ProviderError) -> None:
        """`provider` gave no answer at all: RunStopped once that has lasted longer than
        polling.unreachable_after_s (retrying forever would hide a wrong base URL)."""
        from batcher.providers import base_url_of, unreachable_message

        since = min(self.silent_since.get(provider, exc.unreachable_since), exc.unreachable_since)
        self.silent_since[provider] = since
        silent_s = time.monotonic() - since
        if silent_s >= self.backoff.settings.unreachable_s:
            raise RunStopped(
                unreachable_message(
                    provider,
                    base_url_of(provider, self.registry.clients),
                    silent_s,
                    f"once it answers, `batcher resume {self.run_id}` continues",
                )
            )

    def mark_ended(self, batch_id: str, state: BatchState) -> None:
        values = {
            "raw_status": state.raw_status,
            "output_file_id": state.output_file_id,
            "error_file_id": state.error_file_id,
        }
        with self.db.begin() as conn:
            batches.mark_ended(conn, batch_id, values)

    def settle_leftovers(self) -> bool:
        """Batches that ended but are not reconciled yet: a crash, or results that could not
        be read. True when one was settled."""
        settled = False
        for batch in self.batches(BatchStatus.ENDED):
            try:
                state = self.registry.get(batch.provider).poll(batch.provider_batch_id)
                self.settle(batch, state)
                settled = True
            except ProviderError as exc:
                settled |= self.poll_failed(batch, exc)
        return settled

    def settle(self, batch: Any, state: BatchState) -> None:
        kind, note = settle_ended(
            self.db, self.registry.get(batch.provider), batch, state, self.spec
        )
        self.settled.add(batch.id)
        self.drop_file(batch)
        label = f"{batch.provider}:{batch.model}"
        self.reporter.batch(batch.id, label, state.done, batch.n_requests, state.raw_status)
        if kind == "refused" and note == TOKEN_LIMIT:
            self.hold(batch)
        elif kind == "refused":
            self.reporter.note(f"batch {batch.id} failed at {batch.provider}: {note}")
        elif kind == "gone":
            self.reporter.note(note or "")
        else:
            self.holds.accepted(batch.model)
            self.delete_files(batch, state)

    def delete_files(self, batch: Any, state: BatchState) -> None:
        """A reconciled batch's uploaded files go (batching.uploaded_files = "delete"): its
        answers are in the database. A failure to delete is noted; it never stops the run."""
        provider = self.registry.get(batch.provider)
        delete = getattr(provider, "delete_files", None)
        if self.spec.batching.uploaded_files != "delete" or delete is None:
            return
        try:
            delete(state, batch.input_file_id)
        except ProviderError as exc:
            self.reporter.note(f"batch {batch.id}: its files were not deleted ({exc})")

    def hold(self, batch: Any) -> None:
        """token_limit_exceeded: submit this model again once running batches make room."""
        running = self.running(batch.model)
        try:
            delay = self.holds.refused(batch.model, running)
        except NeverFits as exc:
            raise RunStopped(
                f"batch {batch.id}: {batch.provider} refused {batch.model} batches "
                f"{exc.strikes} times for token_limit_exceeded with nothing else of that model "
                f"running; lower batching.openai_max_lines in the spec, or wait for other "
                f"work of the organisation to finish, then `batcher resume {self.run_id}`"
            ) from None
        when = (
            f"when one of its {running} running batch(es) ends" if running else f"in {delay:.1f} s"
        )
        self.reporter.note(
            f"batch {batch.id}: {batch.model} is over the enqueued-token limit; submitting "
            f"again {when}"
        )

    # --- cancelling ------------------------------------------------------------------------

    def drain(self) -> str:
        """The run was cancelled: stop what has not started, keep what finished. A batch the
        provider no longer knows ends lost, so every unfinished item still ends cancelled."""
        self.cancelling = True
        self.settle_leftovers()
        while True:
            for batch in self.batches(BatchStatus.SUBMITTING):  # adopt it, to cancel it
                provider = self.registry.get(batch.provider)
                settle(self.db, provider, batch.id, grace_s=self.grace_s)
            self.abandon_planned()
            open_batches = self.batches(BatchStatus.SUBMITTED)
            if not open_batches and not self.batches(BatchStatus.SUBMITTING):
                break
            for batch in open_batches:
                if batch.id not in self.cancel_sent:
                    try:
                        self.registry.get(batch.provider).cancel(batch.provider_batch_id)
                    except ProviderError as exc:
                        if exc.status != 404:
                            raise
                        self.not_found(batch, exc)
                        continue  # cancelled once it is lost, or sent again next loop
                    self.cancel_sent.add(batch.id)
            if not self.poll_open():
                self.backoff.idle()
                if self.stop.wait(self.backoff.wait_s):
                    return RunStatus.RUNNING  # still draining; `cancel` or `resume` goes on
        with self.db.begin() as conn:
            runs.finish_cancelled(conn, self.run_id)
        shutil.rmtree(kept_spools(self.run_id), ignore_errors=True)  # never to be laid out
        self.sweep_files()
        self.report_overall()
        return RunStatus.CANCELLED

    def abandon_planned(self) -> None:
        """Nothing new goes out: planned batches and attempts without a batch are dropped."""
        with self.db.begin() as conn:
            batches.abandon_planned(conn, self.run_id)


def _with_batch_limit(spec: JobSpec, limit: int) -> JobSpec:
    """`spec` with no batch of more than `limit` requests, on every provider."""
    b = spec.batching
    smaller = b.model_copy(
        update={
            "openai_max_lines": min(b.openai_max_lines, limit),
            "anthropic_max_requests": min(b.anthropic_max_requests, limit),
            "google_max_requests": min(b.google_max_requests, limit),
        }
    )
    return spec.model_copy(update={"batching": smaller})
