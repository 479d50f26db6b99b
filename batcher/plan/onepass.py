"""Planning a fresh input while it is ingested: one pass, one transaction.

`batcher plan` used to store every item, then read the whole run back sorted by cache group
(a sort of every request in the database), lay it out, and rewrite every item row to mark it
queued. Here the ingest hands each stored row to a `PlanningSink` (see `ingest.ItemSink`):
items go in already queued, and each row's request is appended to the spool file of its
cache group (provider and model, tier, system prompt), so that when the input is read the
groups come back one after the other from their spools, in the same order the database sort
gave, for the usual `layout.lay_out` loop. Attempts and batches are inserted in the ingest's
transaction, which commits once every batch file is written and fsync'd: a refused or crashed
plan leaves no run (at worst orphan files), and no item can be planned twice.

At most MAX_SPOOLS groups are spooled at once. An input with more (say, a system prompt of
its own per item) drops its spools and is laid out from the database instead, still inside
the transaction: the rows it reads are the run's queued items, which have no attempt yet.

A run that is driven right away (`batcher run`) need not wait for its whole layout: with
`defer=True` the ingest commits its queued items and keeps the spools in the run's batch
folder (`kept_spools`), and `lay_out_kept` lays them out later, batch by batch, each batch
committed on its own, so that the engine submits the first batch while the next is written
(see `batcher.run.pipeline`). Only a plan whose estimate needs no attempt to be read back is
deferred (the budget check runs on it before anything is laid out or sent); a crash during
the layout leaves queued items without an attempt, which `lay_out_kept` lays out again from
the database (the spools are only trusted while no batch of the run exists).
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson
from sqlalchemy.engine import Connection, Engine

from batcher.errors import UsageError
from batcher.plan.estimate import InputFacts, reads_attempts
from batcher.plan.ingest import IngestResult
from batcher.plan.layout import (
    BatchInfo,
    Layout,
    Progress,
    Source,
    add_second_opinions,
    attempt_source,
    item_source,
    lay_out,
    save_first_attempts,
)
from batcher.spec import JobSpec, split_model_ref
from batcher.store import batches, runs
from batcher.store.db import state_dir
from batcher.store.states import ItemStatus

MAX_SPOOLS = 64
PRIMARY = "primary"  # the role of an item's own attempts (attempt.role)
SPOOL_BUFFER = 256 << 10  # bytes buffered per open spool: MAX_SPOOLS of them stay small
INDEX = "groups.json"  # a kept spool folder's groups: key, count and file, in order


def _group_order(key: tuple) -> tuple:
    """The database's order of group keys (a NULL system prompt first)."""
    ref, tier, system_hash = key
    return (ref, tier, system_hash is not None, system_hash or "")


class PlanningSink:
    """Spools the rows of an ingest by cache group, then lays them out (see module doc).

    Use it as a context manager: the spool folder is removed on the way out, whatever
    happened. After the ingest, `layout` and `tier_split` describe the plan.
    """

    def __init__(
        self, db: Engine, spec: JobSpec, progress: Progress | None = None, *, defer: bool = False
    ):
        self.db, self.spec, self.progress, self.defer = db, spec, progress, defer
        self.refs = dict(spec.tiers)
        self.folder = Path(tempfile.mkdtemp(prefix="spool-", dir=_ensure(state_dir())))
        self.spools: dict[tuple, IO[bytes]] | None = {}  # None: too many groups
        self.counts: Counter[tuple] = Counter()
        self.tokens: Counter[tuple] = Counter()  # estimated input tokens by group
        self.tier_split: Counter[tuple[str, str]] = Counter()
        self.stranded = 0  # items routed to a tier the spec lacks
        self.layout: Layout | None = None  # None after the ingest: deferred (see `deferred`)
        self.groups: list[tuple] | None = None  # see _group_sums
        self.kept: Path | None = None  # the run's kept spools, until the ingest commits

    @property
    def deferred(self) -> bool:
        """Whether the ingest kept its spools for `lay_out_kept` instead of laying out."""
        return self.kept is not None

    def __enter__(self) -> PlanningSink:
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        self._drop_spools()
        shutil.rmtree(self.folder, ignore_errors=True)
        if kind is not None and self.kept is not None:  # the ingest rolled back
            shutil.rmtree(self.kept, ignore_errors=True)

    # --- while ingesting

    def take(self, rows: list[tuple], ids: list[int]) -> None:
        """Spool each stored row (ITEM_COLUMNS) under its cache group's key."""
        refs, spools, counts, tokens = self.refs, self.spools, self.counts, self.tokens
        for item_id, row in zip(ids, rows, strict=True):
            tier = row[7]
            self.tier_split[(tier, row[8])] += 1
            ref = row[5] or refs.get(tier)
            if ref is None:
                self.stranded += 1
                continue
            if spools is None:
                continue
            key = (ref, tier, row[2])
            spool = spools.get(key)
            if spool is None:
                spool = self._open(key)
                if spool is None:
                    spools = None
                    continue
            spool.write(f"{item_id}\t{row[3]}\n".encode())
            counts[key] += 1
            tokens[key] += row[9] or 0

    def _open(self, key: tuple) -> IO[bytes] | None:
        """A new group's spool, or None (and no spools any more) past MAX_SPOOLS groups."""
        assert self.spools is not None
        if len(self.spools) >= MAX_SPOOLS:
            self._drop_spools()
            return None
        path = self.folder / f"g{len(self.spools)}.tsv"
        spool = self.spools[key] = open(path, "w+b", buffering=SPOOL_BUFFER)  # noqa: SIM115
        return spool

    def _drop_spools(self) -> None:
        for spool in (self.spools or {}).values():
            spool.close()
        self.spools, self.counts, self.tokens = None, Counter(), Counter()

    # --- at the end of the ingest, in its transaction

    def finish(self, conn: Connection, result: IngestResult) -> None:
        """Lay out every item of the run, then mark the run planned."""
        if self.stranded:  # a fixed classifier or rule naming no tier of the spec
            raise UsageError(
                f"{self.stranded} items have a tier that the spec does not define "
                f"(tiers: {', '.join(self.spec.tiers)}); nothing was stored"
            )
        run_id = result.run_id
        if self.defer and self._keep(run_id, result):
            runs.mark_planned(conn, run_id)
            return
        if self.spools is not None:
            source = self._spooled_source()
        else:
            source = item_source(run_id, self.spec, status=ItemStatus.QUEUED)
        self.layout = lay_out(self.db, run_id, self.spec, source, 1, self.progress, conn=conn)
        spooled = self.spools is not None
        if add_second_opinions(conn, run_id, self.spec):
            spooled = False  # other attempts than the items' own: the estimate reads them
            opinions = lay_out(self.db, run_id, self.spec, attempt_source(run_id), 1, conn=conn)
            self.layout.batches += opinions.batches
            self.layout.n_groups += opinions.n_groups
        self.groups = self._group_sums() if spooled else None
        runs.mark_planned(conn, run_id)

    def _keep(self, run_id: int, result: IngestResult) -> bool:
        """Keep the spools in the run's folder for `lay_out_kept`, when the estimate can be
        made from the sums alone and nothing but the items' own attempts is planned."""
        spec = self.spec
        if self.spools is None or spec.ends_in_followups:  # second opinions, calibration
            return False
        groups = self._group_sums()
        facts = InputFacts(result.max_input_tokens, result.own_max_tokens, groups)
        if reads_attempts(spec, facts):
            return False
        order = sorted(self.spools, key=_group_order)
        index = []
        for key in order:
            spool = self.spools[key]
            spool.close()
            index.append([*key, self.counts[key], Path(spool.name).name])
        (self.folder / INDEX).write_bytes(orjson.dumps(index))
        kept = kept_spools(run_id)
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(kept, ignore_errors=True)  # of an ingest under this id that rolled back
        self.folder.rename(kept)
        self.spools, self.kept, self.groups = {}, kept, groups
        return True

    def _group_sums(self) -> list[tuple]:
        """(provider, model, tier, system hash, attempts, estimated input tokens, role) of
        the plan's first attempts by cache group, in the order the database groups them,
        summed while spooling: what `estimate_run` would read back (`groups` is None when
        the plan has other attempts too, or was laid out from the database)."""
        groups = []
        for ref, tier, system_hash in self.counts:
            provider, model = split_model_ref(ref)
            key = (ref, tier, system_hash)
            groups.append((provider, model, tier, system_hash, self.counts[key], self.tokens[key]))
        groups.sort(key=lambda g: (*g[:3], g[3] is not None, g[3] or ""))
        return [(*g, PRIMARY) for g in groups]

    def _spooled_source(self) -> Source:
        return _spool_source(self.counts, self._rows())

    def _rows(self) -> Iterator[tuple]:
        """(item id, None, ref, tier, system hash, request json) group after group."""
        assert self.spools is not None
        for key in sorted(self.spools, key=_group_order):
            ref, tier, system_hash = key
            spool = self.spools[key]
            spool.flush()
            spool.seek(0)
            yield from _spooled_rows(spool, ref, tier, system_hash)
            spool.close()


def kept_spools(run_id: int) -> Path:
    """Where a deferred plan keeps the spools of run `run_id` until they are laid out."""
    return state_dir() / "batches" / f"run-{run_id}" / "spool"


def layout_pending(run_id: int) -> bool:
    """Whether a deferred plan of run `run_id` still waits for `lay_out_kept`."""
    return kept_spools(run_id).exists()


def lay_out_kept(
    db: Engine, run_id: int, spec: JobSpec, on_batch: Callable[[BatchInfo], None] | None = None
) -> Layout:
    """Lay out the queued items of a deferred plan, each batch committed on its own and then
    passed to `on_batch`; the kept spools are removed afterwards.

    The spools are read when no batch of the run exists yet; after a crash in the middle of
    the layout, the items still without an attempt are read from the database instead (the
    unique (item, seq) index keeps any item from being laid out twice)."""
    folder = kept_spools(run_id)
    with db.connect() as conn:
        started = bool(batches.providers_of_run(conn, run_id))
    index_path = folder / INDEX
    if not started and index_path.exists():
        source = _kept_source(folder, orjson.loads(index_path.read_bytes()))
    else:
        source = item_source(run_id, spec, status=ItemStatus.QUEUED)
    layout = lay_out(db, run_id, spec, source, 1, on_batch=on_batch)
    shutil.rmtree(folder, ignore_errors=True)
    return layout


def _kept_source(folder: Path, index: list[list]) -> Source:
    def rows() -> Iterator[tuple]:
        for ref, tier, system_hash, _, name in index:
            with open(folder / name, "rb") as spool:
                yield from _spooled_rows(spool, ref, tier, system_hash)

    return _spool_source({(ref, tier, h): n for ref, tier, h, n, _ in index}, rows())


def _spool_source(counts: dict[tuple, int], rows: Iterator[tuple]) -> Source:
    """A layout source of spooled first attempts: `rows` group after group, and the counts
    of each group (ref, tier, system hash) it yields."""
    totals: Counter[tuple[str, str]] = Counter()
    for (ref, tier, _), n in counts.items():
        totals[(ref, tier)] += n
    return Source(rows=rows, sizes=dict(counts), totals=dict(totals), save=save_first_attempts)


def _spooled_rows(spool: IO[bytes], ref: str, tier: str, system_hash: str | None) -> Iterator:
    """A spool's lines ("item id TAB request json") as the layout's rows."""
    for line in spool:
        item_id, _, request_json = line.partition(b"\t")
        yield int(item_id), None, ref, tier, system_hash, request_json[:-1]


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder
