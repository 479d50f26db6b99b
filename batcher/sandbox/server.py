"""Running the sandbox: `serve` in the foreground, `start_sandbox` in a background thread."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from typing import Any

import uvicorn

from batcher.errors import UsageError
from batcher.sandbox.app import build_app
from batcher.sandbox.config import SandboxConfig, parse_model_map
from batcher.sandbox.faults import parse_faults
from batcher.sandbox.running import SandboxAt
from batcher.sandbox.state import SandboxState

HOST = "127.0.0.1"


def make_config(
    replay: str | None = None,
    model_map: str | dict | None = None,
    faults: str = "",
    speed: float = 1.0,
    **fields: Any,
) -> SandboxConfig:
    """A SandboxConfig from CLI-style options; raises SandboxOptionError on bad ones."""
    faults = faults or ""
    parse_faults(faults)  # fail at start, not on the first request
    try:
        mapping = model_map if isinstance(model_map, dict) else parse_model_map(model_map)
        return SandboxConfig(speed=speed, faults=faults, replay=replay, model_map=mapping).updated(
            fields
        )
    except (ValueError, OSError) as exc:
        raise SandboxOptionError(str(exc)) from exc


class SandboxOptionError(UsageError, ValueError):
    """A sandbox option that cannot be used (the message quotes it)."""


def open_state(config: SandboxConfig) -> SandboxState:
    """The sandbox state; a replay file that cannot be read raises SandboxOptionError."""
    try:
        return SandboxState(config)
    except (ValueError, OSError) as exc:
        raise SandboxOptionError(f"replay file {config.replay!r}: {exc}") from exc


def serve(
    port: int = 8765,
    replay: str | None = None,
    model_map: str | dict | None = None,
    faults: str | None = "",
    speed: float = 1.0,
    host: str = HOST,
    log_level: str = "info",
) -> None:
    """Serve on `host`:`port` (loopback by default) until interrupted (`batcher sandbox`).

    Raises SandboxOptionError / FaultSpecError for bad options, before binding.
    """
    state = open_state(make_config(replay, model_map, faults or "", speed))
    uvicorn.run(build_app(state), host=host, port=port, log_level=log_level)


class Sandbox(SandboxAt):
    """A sandbox served from a background thread; a context manager that stops it on exit."""

    def __init__(self, config: SandboxConfig, port: int = 0) -> None:
        self.state = open_state(config)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        self.port = sock.getsockname()[1]
        super().__init__(f"http://{HOST}:{self.port}")
        self._server = uvicorn.Server(
            uvicorn.Config(build_app(self.state), log_level="warning", lifespan="off")
        )
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the sandbox server did not start")
            time.sleep(0.01)

    def env(self) -> dict[str, str]:
        """Environment for subprocesses: base URLs and dummy keys."""
        return {
            "OPENAI_BASE_URL": self.openai_base_url,
            "OPENAI_API_KEY": "sk-sandbox",
            "ANTHROPIC_BASE_URL": self.anthropic_base_url,
            "ANTHROPIC_API_KEY": "sk-ant-sandbox",
            "GOOGLE_GEMINI_BASE_URL": self.gemini_base_url,
            "GEMINI_API_KEY": "gemini-sandbox",
            "XAI_BASE_URL": self.xai_base_url,
            "XAI_API_KEY": "xai-sandbox",
            "DEEPSEEK_BASE_URL": self.deepseek_base_url,
            "DEEPSEEK_API_KEY": "deepseek-sandbox",
        }

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change settings now: faults=SPEC (replace), add_faults=SPEC, clear_faults=True,
        or any SandboxConfig field (speed, malformed, replay, model_map, limits)."""
        return self.state.configure(changes)

    def stats(self) -> dict[str, Any]:
        """Same as GET /_sandbox/stats (fetched over HTTP so it reflects the served state)."""
        return self._get("/_sandbox/stats")

    def billed(self, **filters: str) -> list[dict]:
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        return self._get("/_sandbox/billed" + (f"?{query}" if query else ""))["data"]

    def advance_clock(self, seconds: float) -> float:
        now = self.state.clock.advance(seconds)
        self.state.tick()
        return now

    def reset(self) -> None:
        self.state.reset()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.load(response)


def start_sandbox(config: SandboxConfig | None = None, port: int = 0, **options: Any) -> Sandbox:
    """Start a sandbox on a free port (or `port`) in this process; use as a context manager.

    `options` are make_config's (replay, model_map, faults, speed, any SandboxConfig field)
    and are ignored when `config` is given.
    """
    return Sandbox(config or make_config(**options), port)
