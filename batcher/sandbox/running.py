"""The sandbox other commands can find: `batcher sandbox`, and the in-process sandbox of a
`--sandbox` command while it lives, write their URL to state_dir()/sandbox.json, so that
`submit --sandbox` then `resume --sandbox` (or `cancel --sandbox` from another terminal) talk
to the sandbox that holds the run's batches instead of a new, empty one."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from batcher.store.db import state_dir


class SandboxAt:
    """A sandbox served at `url` (any process): the base URLs for each provider's SDK."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def gemini_base_url(self) -> str:
        return self.url + "/gemini"

    @property
    def xai_base_url(self) -> str:
        return self.url + "/xai/v1"

    @property
    def deepseek_base_url(self) -> str:
        return self.url + "/deepseek"


def record_path() -> Path:
    return state_dir() / "sandbox.json"


@contextmanager
def recorded(url: str) -> Iterator[None]:
    """Record `url` as the running sandbox for as long as the block runs (unless another
    live sandbox is recorded already); the record goes when the block ends."""
    if running_sandbox() is not None:
        yield
        return
    path = record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    try:
        yield
    finally:
        try:
            if json.loads(path.read_text()).get("url") == url:
                path.unlink()
        except (OSError, ValueError):
            pass


def running_sandbox() -> SandboxAt | None:
    """The recorded sandbox when it answers; None when none is recorded or it has gone."""
    try:
        url = json.loads(record_path().read_text())["url"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        with urllib.request.urlopen(url + "/_sandbox/stats", timeout=2):
            return SandboxAt(url)
    except (urllib.error.URLError, OSError, ValueError):
        return None
