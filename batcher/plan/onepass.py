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
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sqlalchemy.engine import Connection, Engine

from batcher.errors import UsageError
from batcher.plan.ingest import IngestResult
from batcher.plan.layout import (
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
from batcher.store import runs
from batcher.store.db import state_dir
from batcher.store.states import ItemStatus

MAX_SPOOLS = 64
PRIMARY = "primary"  # the role of an item's own attempts (attempt.role)
SPOOL_BUFFER = 256 << 10  # bytes buffered per open spool: MAX_SPOOLS of them stay small


def _group_order(key: tuple) -> tuple:
    """The database's order of group keys (a NULL system prompt first)."""
    ref, tier, system_hash = key
    return (ref, tier, system_hash is not None, system_hash or "")


class PlanningSink:
    """Spools the rows of an ingest by cache group, then lays them out (see module doc).

    Use it as a context manager: the spool folder is removed on the way out, whatever
    happened. After the ingest, `layout` and `tier_split` describe the plan.
    """

    def __init__(self, db: Engine, spec: JobSpec, progress: Progress | None = None):
        self.db, self.spec, self.progress = db, spec, progress
        self.refs = dict(spec.tiers)
        self.folder = Path(tempfile.mkdtemp(prefix="spool-", dir=_ensure(state_dir())))
        self.spools: dict[tuple, IO[bytes]] | None = {}  # None: too many groups
        self.counts: Counter[tuple] = Counter()
        self.tokens: Counter[tuple] = Counter()  # estimated input tokens by group
        self.tier_split: Counter[tuple[str, str]] = Counter()
        self.stranded = 0  # items routed to a tier the spec lacks
        self.layout: Layout | None = None
        self.groups: list[tuple] | None = None  # see _group_sums

    def __enter__(self) -> PlanningSink:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._drop_spools()
        shutil.rmtree(self.folder, ignore_errors=True)

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
        totals: Counter[tuple[str, str]] = Counter()
        for (ref, tier, _), n in self.counts.items():
            totals[(ref, tier)] += n
        return Source(
            rows=self._rows(),
            sizes=dict(self.counts),
            totals=dict(totals),
            save=save_first_attempts,
        )

    def _rows(self) -> Iterator[tuple]:
        """(item id, None, ref, tier, system hash, request json) group after group."""
        assert self.spools is not None
        for key in sorted(self.spools, key=_group_order):
            ref, tier, system_hash = key
            spool = self.spools[key]
            spool.flush()
            spool.seek(0)
            for line in spool:
                item_id, _, request_json = line.partition(b"\t")
                yield int(item_id), None, ref, tier, system_hash, request_json[:-1]
            spool.close()


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder
