"""Laying requests out into batch files: cache groups kept contiguous, provider limits kept.

Rows come in group order (provider and model, tier, system prompt, id), so every cache
group arrives contiguous; a batch is cut when the model or tier changes or when the next line
would break a limit, and a group larger than a batch simply continues in the next one. Memory
holds one batch's row ids, never the run.

Each batch file is written and fsync'd before its row (and its attempts) are committed, so a
crash leaves at worst an orphan file and rows that are laid out again.

Three sources feed the same loop:
- the rows a one-pass plan spooled by cache group while ingesting (`batcher.plan.onepass`: what
  `batcher plan` and `batcher run` use); its batches go into the ingest's transaction;
- pending items of a run ingested on its own (`item_source`), whose first attempts are
  inserted with their batch already set (one write per attempt instead of an insert and an
  update). Those items are queued afterwards by `store.items.queue_laid_out`, in one UPDATE over
  the run; until then an item with an attempt stays pending and `item_source` skips it, so a
  crash in between never plans it twice, and the unique (item_id, seq) index keeps a second
  planner from doing so either;
- planned attempts without a batch (`attempt_source`): the engine's retries and escalations.
"""

from __future__ import annotations

import heapq
import os
import secrets
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batcher.errors import BatcherError, UsageError
from batcher.plan.calibration import add_calibration
from batcher.plan.groups import prompt_name, prompt_names, short_id
from batcher.plan.lines import LineTemplate
from batcher.plan.requests import (
    cache_group_id,
    defaults_fingerprint,
    request_from,
    request_hasher,
)
from batcher.plan.tokens import count_tokens
from batcher.providers import NAMES, wire_format
from batcher.providers.base import Request
from batcher.providers.capabilities import prefix_tokens
from batcher.spec import JobSpec, split_model_ref
from batcher.store import attempts, batches, items, prompts
from batcher.store.db import state_dir
from batcher.store.states import ItemStatus

SHOWN_GROUPS = 20
SAVE_CHUNK = 2_000  # attempt rows of a batch built and written at a time (10,000 held 15 MB)
PROGRESS_EVERY = 10_000
Progress = Callable[[int], None]
Begin = Callable[[], AbstractContextManager[Connection]]  # a transaction, or the caller's


@dataclass(frozen=True, slots=True)
class BatchInfo:
    id: str
    provider: str
    model: str
    tier: str
    n_requests: int
    n_bytes: int
    path: str


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """One cache group as laid out. `cache` is the TTL marked on an Anthropic group, "key"
    for an OpenAI group whose prefix is long enough to be cached, "implicit" for a Gemini
    group whose prefix reaches the model's caching minimum (or an xAI or DeepSeek group over
    1,024 tokens, cached automatically), None otherwise."""

    key: str | None
    provider: str
    model: str
    tier: str
    n_requests: int
    prefix_tokens: int
    cache: str | None
    n_batches: int
    system_hash: str | None = None  # the group's prompt
    name: str = ""  # the prompt's name (batcher.plan.groups)

    @property
    def label(self) -> str:
        """Name and short id, as every table shows a cache group."""
        return f"{self.name} {short_id(self.system_hash)}".strip()


@dataclass
class Layout:
    batches: list[BatchInfo] = field(default_factory=list)
    n_groups: int = 0
    largest_groups: list[GroupInfo] = field(default_factory=list)  # largest first
    n_requests: int = 0


def limits(spec: JobSpec) -> dict[str, tuple[int, int]]:
    """provider -> (max requests, max bytes) of one batch: the spec's, within the provider's."""
    found = {}
    for name in (*NAMES, *(n for n in spec.providers if n not in NAMES)):
        wire = wire_format(name, spec.providers.get(name))
        max_requests, max_bytes = spec.batching.limits_for(name)
        found[name] = (min(max_requests, wire.MAX_REQUESTS), min(max_bytes, wire.MAX_BYTES))
    return found


def group_prefix_tokens(wire: Any, model: str, system: str | None) -> int:
    """Tokens of a group's shared system prompt on `model`: its own encoding where the
    provider module names one that loads offline (o200k for gpt-5 / gpt-4o), else cl100k."""
    if not system:
        return 0
    caps = getattr(wire, "model_caps", None)
    return prefix_tokens(caps(model), system) if caps else count_tokens(system)


# ------------------------------------------------------------------------------ sources


Row = tuple[int, str | None, str, str, str | None, str]


@dataclass
class Source:
    """Where rows come from and how a finished batch is saved.

    `rows` yields (row id, custom id or None, "provider:model", tier, system hash, request
    json[, the attempt's own max_tokens or None]) ordered so that each key (ref, tier, system
    hash) is contiguous; `sizes` gives
    (ref, tier, system hash, count) in the same order, or is a dict of the counts by key;
    `totals` gives (ref, tier, count), or is a dict of them. A query reads the database; a
    planner that already holds the rows (see `batcher.plan.onepass`) passes them and its counts."""

    rows: sa.Select | Iterable[Row]
    sizes: sa.Select | dict[tuple, int]
    totals: sa.Select | dict[tuple[str, str], int]
    save: Callable[[Connection, _BatchFile], int]  # -> rows saved


def attempt_source(run_id: int) -> Source:
    """Planned attempts of the run that are not in a batch yet."""
    rows, sizes, totals = attempts.unbatched_queries(run_id)
    return Source(rows, sizes, totals, save=_save_attempts)


def item_source(run_id: int, spec: JobSpec, status: str = ItemStatus.PENDING) -> Source:
    """Pending (or `status`), routed items of the run without an attempt: their first
    attempts are created as they are laid out (seq 1, custom id "i{item id}-a1")."""
    rows, sizes, totals = items.unplanned_queries(run_id, spec.tiers, status)
    return Source(rows, sizes, totals, save=save_first_attempts)


def _save_attempts(conn: Connection, batch: _BatchFile) -> int:
    saved = 0
    for rows in batch.chunks():
        saved += attempts.assign_batch(conn, batch.id, [(h, row_id) for row_id, _, h in rows])
    return saved


def save_first_attempts(conn: Connection, batch: _BatchFile) -> int:
    return sum(attempts.insert_first(conn, batch, chunk) for chunk in batch.chunks())


def add_second_opinions(conn: Connection, run_id: int, spec: JobSpec) -> int:
    """The agreement cascade's second opinions on the run's first attempts, and the
    calibration sample's frontier attempts: planned attempts without a batch, which
    `attempt_source` then lays out in the same round as the first tier, so they cost no extra
    wall time and the estimate counts them. Returns how many."""
    made = 0
    for first_tier in spec.tiers:
        opinions = [(tier, *spec.model_of(tier)) for tier in spec.opinion_tiers(first_tier)]
        if opinions:
            made += attempts.plan_opinions(conn, run_id, first_tier, opinions)
    return made + add_calibration(conn, run_id, spec)


# ----------------------------------------------------------------------- batch writing


class _BatchFile:
    """One batch being written: its file, its counts and its rows (id, custom id, hash).

    A batch may hold 100,000 requests: its rows are kept packed (ids in an array, hashes as
    16 bytes each, a custom id only where it is not the first attempt's "i{id}-a1") rather
    than as a tuple of three objects each, and are saved in chunks."""

    def __init__(self, run_id: int, round_: int, provider: str, model: str, tier: str):
        self.id = "b" + secrets.token_hex(8)
        self.run_id, self.round = run_id, round_
        self.provider, self.model, self.tier = provider, model, tier
        self.key = (provider, model, tier)
        folder = state_dir() / "batches" / f"run-{run_id}"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{self.id}.jsonl"
        self.file = open(self.path, "wb", buffering=1 << 20)  # noqa: SIM115 - see close()
        self.n_requests = self.n_bytes = 0
        self.ids = array("q")
        self.hashes = bytearray()
        self.own_ids: dict[int, str] = {}  # row index -> custom id, where it is not the default

    def add(self, line: bytes, row_id: int, custom_id: str | None, req_hash: str) -> None:
        """One request line; `custom_id` None for a first attempt's ("i{row_id}-a1")."""
        self.file.write(line)
        if custom_id is not None:
            self.own_ids[self.n_requests] = custom_id
        self.n_requests += 1
        self.n_bytes += len(line)
        self.ids.append(row_id)
        self.hashes += bytes.fromhex(req_hash)

    def chunks(self, size: int = SAVE_CHUNK) -> Iterator[list[tuple[int, str, str]]]:
        """The rows (id, custom id, request hash), `size` at a time."""
        for start in range(0, self.n_requests, size):
            end = min(start + size, self.n_requests)
            yield [
                (
                    row_id,
                    self.own_ids.get(i) or f"i{row_id}-a1",
                    self.hashes[16 * i : 16 * i + 16].hex(),
                )
                for i, row_id in zip(range(start, end), self.ids[start:end], strict=True)
            ]

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def discard(self) -> None:
        self.file.close()
        Path(self.path).unlink(missing_ok=True)

    def commit(self, begin: Begin, save: Callable[[Connection, _BatchFile], int]) -> BatchInfo:
        """Close the file, then record the batch and its rows in one transaction."""
        self.close()
        with begin() as conn:
            batches.insert_planned(
                conn,
                id=self.id,
                run_id=self.run_id,
                round=self.round,
                provider=self.provider,
                model=self.model,
                tier=self.tier,
                path=str(self.path),
                n_requests=self.n_requests,
                n_bytes=self.n_bytes,
            )
            saved = save(conn, self)
            if saved != self.n_requests:
                raise BatcherError(
                    f"run {self.run_id}: rows of batch {self.id} were planned by another "
                    "process meanwhile; nothing of this batch was saved"
                )
        return BatchInfo(
            self.id, self.provider, self.model, self.tier, self.n_requests, self.n_bytes,
            str(self.path),
        )  # fmt: skip


# ------------------------------------------------------------------------------ groups


@dataclass
class _Group:
    """The group being laid out: what its requests share, and its summary."""

    key: tuple  # ("provider:model", tier, system hash)
    provider: str
    model: str
    system: str | None
    cache_key: str | None
    ttl: Literal["5m", "1h"] | None
    hasher: Any  # request_hash prefix of the group (see requests.request_hasher)
    render: Callable[[Request], bytes]  # the provider's batch-file line
    info: tuple  # GroupInfo fields but n_batches
    temperature: float | None = None  # a second opinion's own ([routing.cascade] temperature)
    batches: set[str] = field(default_factory=set)
    template: LineTemplate | None = None  # lines joined from bytes (see batcher.plan.lines)

    @property
    def batch_key(self) -> tuple[str, str, str]:
        return (self.provider, self.model, self.key[1])

    def request(self, stored: dict[str, Any], spec: JobSpec, custom_id: str) -> Request:
        """The Request of a stored request of this group."""
        request = request_from(
            stored, spec, custom_id, self.model,
            system=self.system, cache_key=self.cache_key, cache_ttl=self.ttl,
        )  # fmt: skip
        if self.temperature is not None:
            request = replace(request, temperature=self.temperature)
        return request

    def line(self, stored: dict[str, Any], spec: JobSpec, custom_id: str) -> bytes:
        """The batch-file line of a stored request of this group, rendered."""
        return self.render(self.request(stored, spec, custom_id))

    def request_hash(self, request_json: str | bytes) -> str:
        """requests.request_hash of a request of this group, from the shared prefix."""
        hasher = self.hasher.copy()
        hasher.update(request_json if type(request_json) is bytes else request_json.encode())
        return hasher.hexdigest()[:32]


def _opinion_temperature(spec: JobSpec, tier: str) -> float | None:
    cascade = spec.routing.cascade
    return cascade.temperature if tier in cascade.second_opinions else None


class _Groups:
    """Follows the stream group by group: each group's size (from a GROUP BY cursor walked
    in the same order, or the source's counts), prefix tokens and cache decision; keeps the
    largest for the summary."""

    def __init__(self, conn: Connection, spec: JobSpec, source: Source):
        self.conn, self.spec = conn, spec
        self.counts = source.sizes if isinstance(source.sizes, dict) else None
        if self.counts is None:
            self.sizes: Iterator = iter(
                conn.execution_options(yield_per=1000).execute(source.sizes)
            )
        totals = source.totals
        if not isinstance(totals, dict):
            totals = {(r[0], r[1]): r[2] for r in conn.execute(totals)}
        self.totals = totals
        self.limits = limits(spec)
        self.fingerprint = defaults_fingerprint(spec)
        self.prompts: dict[str, str] = {}
        self.names = prompt_names([spec])
        self.n_groups = 0
        self.heap: list[tuple[int, int, GroupInfo]] = []
        self.current: _Group | None = None

    def enter(self, key: tuple) -> _Group:
        self.finish()
        ref, tier, system_hash = key
        provider, model = split_model_ref(ref)
        size = self._size(key)
        system = prompts.text_of(self.conn, system_hash, self.prompts)
        wire = wire_format(provider, self.spec.providers.get(provider))
        prefix = group_prefix_tokens(wire, model, system)
        # The group id travels as OpenAI's prompt_cache_key (Anthropic's renderer ignores it).
        cache_key = cache_group_id(provider, model, system_hash)
        batch_size = min(self.limits[provider][0], self.totals[(ref, tier)])
        cache = wire.plan_cache(model, prefix, size, batch_size, self.spec)
        ttl = cache.write_ttl
        temperature = _opinion_temperature(self.spec, tier)
        if temperature is not None:  # another request than the first tier's: another hash
            ref = f"{ref}\ntemperature={temperature}"
        self.current = _Group(
            key=key,
            temperature=temperature,
            provider=provider,
            model=model,
            system=system,
            cache_key=cache_key,
            ttl=ttl,
            hasher=request_hasher(ref, system_hash, self.fingerprint),
            render=wire.render_line,
            info=(cache_key, provider, model, tier, size, prefix, cache.mode),
        )
        if getattr(wire, "MESSAGES_VERBATIM", False):
            group = self.current
            group.template = LineTemplate.cut(
                lambda custom_id, messages: group.line({"messages": messages}, self.spec, custom_id)
            )
        return self.current

    def _size(self, key: tuple) -> int:
        if self.counts is not None:
            return self.counts[key]
        for size_row in self.sizes:
            if tuple(size_row[:3]) == key:
                return size_row[3]
        raise BatcherError(f"planner: group {key} missing from the group counts")

    def finish(self) -> None:
        group, self.current = self.current, None
        if group is None:
            return
        system_hash = group.key[2]
        name = prompt_name(system_hash, group.system, self.names)
        info = GroupInfo(
            *group.info, n_batches=len(group.batches), system_hash=system_hash, name=name
        )
        self.n_groups += 1
        entry = (info.n_requests, -self.n_groups, info)
        if len(self.heap) < SHOWN_GROUPS:
            heapq.heappush(self.heap, entry)
        else:
            heapq.heappushpop(self.heap, entry)

    def largest(self) -> list[GroupInfo]:
        return [entry[2] for entry in sorted(self.heap, key=lambda e: (-e[0], -e[1]))]


# ---------------------------------------------------------------------------- the loop


class _Batches:
    """The batch being filled, cut when the model or tier changes or a limit would break."""

    def __init__(
        self,
        begin: Begin,
        run_id: int,
        round_: int,
        spec: JobSpec,
        source: Source,
        on_batch: Callable[[BatchInfo], None] | None = None,
    ):
        self.begin, self.run_id, self.round, self.save = begin, run_id, round_, source.save
        self.on_batch = on_batch
        self.limits = limits(spec)
        self.current: _BatchFile | None = None
        self.done: list[BatchInfo] = []

    def add(
        self, group: _Group, row_id: int, custom_id: str | None, line: bytes, req_hash: str
    ) -> None:
        max_requests, max_bytes = self.limits[group.provider]
        if len(line) > max_bytes:
            raise UsageError(
                f"request {custom_id or f'i{row_id}-a1'} is {len(line):,} bytes, over the "
                f"{max_bytes:,}-byte limit "
                f"of one {group.provider} batch file: shorten that item"
            )
        batch = self.current
        if batch is not None and (
            batch.key != group.batch_key
            or batch.n_requests >= max_requests
            or batch.n_bytes + len(line) > max_bytes
        ):
            self.flush()
        if self.current is None:
            self.current = _BatchFile(self.run_id, self.round, *group.batch_key)
        group.batches.add(self.current.id)
        self.current.add(line, row_id, custom_id, req_hash)

    def flush(self) -> None:
        if self.current is not None:
            info = self.current.commit(self.begin, self.save)
            self.done.append(info)
            self.current = None
            if self.on_batch is not None:
                self.on_batch(info)

    def discard(self) -> None:
        if self.current is not None:  # stopped mid-batch: nothing of it was recorded
            self.current.discard()
            self.current = None

    def discard_done(self) -> None:
        """Delete the files of the batches saved so far (their rows are being rolled back)."""
        for info in self.done:
            Path(info.path).unlink(missing_ok=True)


def lay_out(
    db: Engine,
    run_id: int,
    spec: JobSpec,
    source: Source,
    round_: int = 1,
    progress: Progress | None = None,
    *,
    conn: Connection | None = None,
    on_batch: Callable[[BatchInfo], None] | None = None,
) -> Layout:
    """Write the batch files and rows for every row of `source`; see the module docstring.

    Each batch is committed on its own, then passed to `on_batch`, unless `conn` is given:
    then every row goes into that connection's transaction, which the caller commits after
    this returns (each file is fsync'd before then); when this raises, the files it wrote are
    deleted again.
    Raises UsageError when one request alone is larger than its provider's batch file limit.
    """
    begin: Begin = db.begin if conn is None else lambda: nullcontext(conn)
    if conn is not None and on_batch is not None:
        raise ValueError("lay_out: on_batch hears of committed batches; with conn none is")
    files = _Batches(begin, run_id, round_, spec, source, on_batch)
    with db.connect() if conn is None else nullcontext(conn) as reader:
        groups = _Groups(reader, spec, source)
        try:
            n = _lay_out_rows(reader, spec, source, groups, files, progress)
        except BaseException:
            if conn is not None:
                files.discard_done()
            raise
        finally:
            files.discard()
        groups.finish()
    if progress is not None:
        progress(n)
    return Layout(files.done, groups.n_groups, groups.largest(), n)


def _lay_out_rows(
    conn: Connection,
    spec: JobSpec,
    source: Source,
    groups: _Groups,
    batches: _Batches,
    progress: Progress | None,
) -> int:
    rows = source.rows
    if isinstance(rows, sa.Select):
        rows = conn.execution_options(yield_per=2000).execute(rows)
    group: _Group | None = None
    n = 0
    for row_id, custom_id, ref, tier, system_hash, request_json, *own_cap in rows:
        if group is None or (ref, tier, system_hash) != group.key:
            group = groups.enter((ref, tier, system_hash))
        wire_id = custom_id or f"i{row_id}-a1"
        stored = orjson.loads(request_json)
        line = None
        if own_cap and own_cap[0] is not None:  # a truncated answer's retry asks for more
            stored["max_tokens"] = own_cap[0]
        elif group.template is not None and len(stored) == 1:
            line = group.template.join(wire_id, request_json)
        if line is None:
            line = group.line(stored, spec, wire_id)
        batches.add(group, row_id, custom_id, line, group.request_hash(request_json))
        n += 1
        if progress is not None and n % PROGRESS_EVERY == 0:
            progress(n)
    batches.flush()
    return n
