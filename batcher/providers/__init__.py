"""Provider adapters. Each module knows one provider's wire format; nothing else does.

`connect(name, clients)` gives the batch client of a provider. `Clients` says where the SDKs
point; its fields left at None fall back to the SDKs' own environment variables
(OPENAI_API_KEY / OPENAI_BASE_URL, ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL, GEMINI_API_KEY /
GOOGLE_GEMINI_BASE_URL). Keys are never stored anywhere else.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from batcher.errors import UsageError
from batcher.providers.base import Provider, WireFormat
from batcher.providers.calls import RetryPolicy

NAMES = ("openai", "anthropic", "google")


@dataclass(frozen=True)
class Clients:
    """Where the provider SDKs point, and how patiently reads are retried."""

    openai_base_url: str | None = None
    openai_api_key: str | None = None
    anthropic_base_url: str | None = None
    anthropic_api_key: str | None = None
    gemini_base_url: str | None = None
    gemini_api_key: str | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    # Ready-made Provider objects by name (tests, custom endpoints); they win over the rest.
    instances: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_sandbox(cls, sandbox: Any, policy: RetryPolicy | None = None) -> Clients:
        """Both SDKs pointed at a running batcher.sandbox, with dummy keys."""
        return cls(
            openai_base_url=sandbox.openai_base_url,
            openai_api_key="sk-sandbox",
            anthropic_base_url=sandbox.anthropic_base_url,
            anthropic_api_key="sk-ant-sandbox",
            gemini_base_url=sandbox.gemini_base_url,
            gemini_api_key="gemini-sandbox",
            policy=policy or RetryPolicy(attempts=10, base_s=0.05, cap_s=1.0),
        )


def connect(name: str, clients: Clients | None = None) -> Provider:
    """The batch client of provider `name`. UsageError for an unknown provider."""
    clients = clients or Clients()
    if name in clients.instances:
        return clients.instances[name]
    if name == "openai":
        from batcher.providers.openai import OpenAIBatches

        return OpenAIBatches(clients.openai_base_url, clients.openai_api_key, policy=clients.policy)
    if name == "anthropic":
        from batcher.providers.anthropic import AnthropicBatches

        return AnthropicBatches(
            clients.anthropic_base_url, clients.anthropic_api_key, policy=clients.policy
        )
    if name == "google":
        from batcher.providers.google import GeminiBatches

        return GeminiBatches(clients.gemini_base_url, clients.gemini_api_key, policy=clients.policy)
    raise UsageError(f"unknown provider {name!r}: use one of {', '.join(NAMES)}")


def wire_format(name: str) -> WireFormat:
    """What the planner needs of provider `name` without a client: its batch limits and how
    it renders a request as a line of its batch file (the module batcher.providers.<name>)."""
    if name not in NAMES:
        raise UsageError(f"unknown provider {name!r}: use one of {', '.join(NAMES)}")
    return importlib.import_module(f"batcher.providers.{name}")  # type: ignore[return-value]


class Registry:
    """Connects each provider once, on first use."""

    def __init__(self, clients: Clients | None = None) -> None:
        self.clients = clients or Clients()
        self._open: dict[str, Provider] = {}

    def get(self, name: str) -> Provider:
        if name not in self._open:
            self._open[name] = connect(name, self.clients)
        return self._open[name]
