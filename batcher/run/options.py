"""The options a run was started with, kept with the run (run.options_json) so that
`resume`, `retry` and `cancel` carry on as it began: an option given again replaces the
stored one, an option left out keeps it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import orjson


@dataclass(frozen=True)
class RunOptions:
    reuse: bool = True  # answer requests from earlier runs (off with --no-reuse)
    poll_interval_s: float | None = None  # --poll-interval; None: the spec's polling
    sandbox: bool = False  # started with --sandbox: its batches live at a sandbox

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, text: str | None) -> RunOptions:
        """Stored options; runs from before options were stored get the defaults."""
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in orjson.loads(text or "{}").items() if k in known})

    def overridden(
        self,
        *,
        no_reuse: bool = False,
        poll_interval_s: float | None = None,
        sandbox: bool = False,
    ) -> RunOptions:
        """These options with those given on a later command line (flags only switch on)."""
        changes: dict = {}
        if no_reuse:
            changes["reuse"] = False
        if poll_interval_s is not None:
            changes["poll_interval_s"] = poll_interval_s
        if sandbox:
            changes["sandbox"] = True
        return replace(self, **changes)
