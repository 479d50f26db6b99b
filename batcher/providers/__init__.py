"""Provider adapters. Each module knows one provider's wire format; nothing else does.

`connect(name, clients)` gives the batch client of a provider. `Clients` says where the SDKs
point; its fields left at None fall back to the SDKs' own environment variables
(OPENAI_API_KEY / OPENAI_BASE_URL, ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL, GEMINI_API_KEY /
GOOGLE_GEMINI_BASE_URL, XAI_API_KEY / XAI_BASE_URL). Keys are never stored anywhere else.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from batcher.errors import UsageError
from batcher.providers.base import NO_CACHE, Provider, WireFormat
from batcher.providers.calls import ProviderError, RetryPolicy

NAMES = ("openai", "anthropic", "google", "xai", "deepseek")
# Where each SDK goes when neither Clients nor its environment variable names a base URL.
BASE_URL_ENVS = {"openai": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL",
                 "google": "GOOGLE_GEMINI_BASE_URL", "xai": "XAI_BASE_URL",
                 "deepseek": "DEEPSEEK_BASE_URL"}  # fmt: skip
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "google": "https://generativelanguage.googleapis.com",
    "xai": "https://api.x.ai/v1",
    "deepseek": "https://api.deepseek.com",
}


@dataclass(frozen=True)
class Clients:
    """Where the provider SDKs point, and how patiently reads are retried."""

    openai_base_url: str | None = None
    openai_api_key: str | None = None
    anthropic_base_url: str | None = None
    anthropic_api_key: str | None = None
    gemini_base_url: str | None = None
    gemini_api_key: str | None = None
    xai_base_url: str | None = None
    xai_api_key: str | None = None
    deepseek_base_url: str | None = None
    deepseek_api_key: str | None = None
    # Where every [providers.NAME] kind = "openai-compatible" points instead of its base_url,
    # with this key instead of its api_key_env (the sandbox).
    compatible_base_url: str | None = None
    compatible_api_key: str | None = None
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
            xai_base_url=sandbox.xai_base_url,
            xai_api_key="xai-sandbox",
            deepseek_base_url=sandbox.deepseek_base_url,
            deepseek_api_key="deepseek-sandbox",
            compatible_base_url=sandbox.openai_base_url,
            compatible_api_key="sk-sandbox",
            policy=policy or RetryPolicy(attempts=10, base_s=0.05, cap_s=1.0),
        )


def base_url_of(name: str, clients: Clients | None = None) -> str:
    """The base URL provider `name`'s SDK will call: Clients, else its variable, else the
    SDK's default."""
    clients = clients or Clients()
    field_name = "gemini_base_url" if name == "google" else f"{name}_base_url"
    return (
        getattr(clients, field_name, None)
        or os.environ.get(BASE_URL_ENVS.get(name, ""))
        or DEFAULT_BASE_URLS.get(name, "")
    )


def unreachable_message(provider: str, url: str, silent_s: float, then: str) -> str:
    variable = BASE_URL_ENVS.get(provider, "the base URL")
    return (
        f"{provider} did not answer at {url} for {_duration(silent_s)}: check {variable}, "
        f"the network and the provider's status page; {then}"
    )


def _duration(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def connect(name: str, clients: Clients | None = None, spec: Any = None) -> Provider:
    """The client of provider `name` (a built-in one or one of `spec`'s [providers.NAME]):
    its batch API, or direct mode where the spec or the provider asks for it. UsageError for
    an unknown provider."""
    clients = clients or Clients()
    if name in clients.instances:
        return clients.instances[name]
    settings = spec.providers.get(name) if spec is not None else None
    mode = spec.mode_of(name) if spec is not None else ("direct" if name == "deepseek" else None)
    if mode == "direct" or (settings is not None and settings.kind == "openai-compatible"):
        return _openai_format(name, clients, settings, mode or "batch")
    if name == "openai":
        from batcher.providers.openai import OpenAIBatches

        return OpenAIBatches(
            clients.openai_base_url,
            clients.openai_api_key,
            policy=clients.policy,
            expires_after_s=_expiry(spec),
        )
    if name == "anthropic":
        from batcher.providers.anthropic import AnthropicBatches

        return AnthropicBatches(
            clients.anthropic_base_url, clients.anthropic_api_key, policy=clients.policy
        )
    if name == "google":
        from batcher.providers.google import GeminiBatches

        return GeminiBatches(clients.gemini_base_url, clients.gemini_api_key, policy=clients.policy)
    if name == "xai":
        from batcher.providers.xai import XAIBatches

        return XAIBatches(clients.xai_base_url, clients.xai_api_key, policy=clients.policy)
    raise UsageError(f"unknown provider {name!r}: use one of {', '.join(NAMES)}")


def _expiry(spec: Any) -> int | None:
    """Seconds an uploaded file lives when the spec asks for an expiry instead of deletion."""
    batching = getattr(spec, "batching", None)
    if batching is not None and batching.uploaded_files == "expire":
        return batching.uploaded_files_expire_s
    return None


def wire_format(name: str, settings: Any = None) -> WireFormat:
    """What the planner needs of provider `name` without a client: its batch limits and how
    it renders a request as a line of its batch file (the module batcher.providers.<name>;
    OpenAI's for a [providers.NAME] kind = "openai-compatible", given as `settings`)."""
    if settings is not None and getattr(settings, "kind", None) == "openai-compatible":
        return _compatible_format()
    if name not in NAMES:
        raise UsageError(f"unknown provider {name!r}: use one of {', '.join(NAMES)}")
    return importlib.import_module(f"batcher.providers.{name}")  # type: ignore[return-value]


def _compatible_format() -> WireFormat:
    """OpenAI's lines and limits for a named OpenAI-compatible endpoint; no prompt cache is
    planned, since a self-hosted server or a gateway may not cache at all."""
    openai = importlib.import_module("batcher.providers.openai")
    return SimpleNamespace(  # type: ignore[return-value]
        MAX_REQUESTS=openai.MAX_REQUESTS,
        MAX_BYTES=openai.MAX_BYTES,
        render_line=openai.render_line,
        MESSAGES_VERBATIM=openai.MESSAGES_VERBATIM,
        plan_cache=lambda *args, **kwargs: NO_CACHE,
    )


# Built-in providers that speak OpenAI's chat completions: base URL and key, as
# (Clients field, environment variable, default); the key from its variable only.
ENDPOINTS = {
    "openai": (("openai_base_url", "OPENAI_BASE_URL", None),
               ("openai_api_key", "OPENAI_API_KEY")),
    "xai": (("xai_base_url", "XAI_BASE_URL", "https://api.x.ai/v1"),
            ("xai_api_key", "XAI_API_KEY")),
    "deepseek": (("deepseek_base_url", "DEEPSEEK_BASE_URL", "https://api.deepseek.com"),
                 ("deepseek_api_key", "DEEPSEEK_API_KEY")),
}  # fmt: skip


def endpoint_of(name: str, clients: Clients, settings: Any) -> tuple[str | None, str, str]:
    """(base URL, API key, key variable) of an OpenAI-format provider; ProviderError naming the
    variable when the key is missing."""
    if settings is not None and settings.kind == "openai-compatible":
        base_url = clients.compatible_base_url or settings.base_url
        key_env = settings.api_key_env
        key = clients.compatible_api_key or os.environ.get(key_env)
    else:
        (url_field, url_env, default), (key_field, key_env) = ENDPOINTS[name]
        base_url = getattr(clients, url_field) or os.environ.get(url_env) or default
        key = getattr(clients, key_field) or os.environ.get(key_env)
    if not key:
        raise ProviderError(f"{name}: no API key (set {key_env})")
    return base_url, key, key_env


def _openai_format(name: str, clients: Clients, settings: Any, mode: str) -> Provider:
    from batcher.providers import direct, openai

    base_url, key, _ = endpoint_of(name, clients, settings)
    if mode == "batch":  # an OpenAI-compatible Files + Batches endpoint
        batches = openai.OpenAIBatches(base_url, key, policy=clients.policy)
        batches.name = name
        return batches
    render = wire_format(name, settings).render_line
    hold = None
    if name == "deepseek" and settings is not None and settings.offpeak_only:
        hold = direct.deepseek_peak_ends
    limits = direct.DirectSettings(
        concurrency=settings.concurrency if settings else 16,
        requests_per_minute=settings.requests_per_minute if settings else None,
        tokens_per_minute=settings.tokens_per_minute if settings else None,
        hold_until=hold,
    )
    return direct.DirectProvider(
        name, base_url=base_url, api_key=key, settings=limits, policy=clients.policy,
        render=render,
    )  # fmt: skip


DIRECT_PREFIX = "direct-"  # provider batch ids of direct-mode batches (batcher.providers.direct)


def resent_count(local_batch_id: str) -> int:
    """Requests of a direct-mode batch sent again (possibly billed twice), from its journal."""
    from batcher.providers.direct import resent_count as count

    return count(local_batch_id)


def is_direct(provider: Any) -> bool:
    """Whether a connected provider sends its requests one by one (direct mode)."""
    return bool(getattr(provider, "direct", False))


class Registry:
    """Connects each provider once, on first use (the run's spec says which are direct)."""

    def __init__(self, clients: Clients | None = None, spec: Any = None) -> None:
        self.clients = clients or Clients()
        self.spec = spec
        self._open: dict[str, Provider] = {}

    def get(self, name: str) -> Provider:
        if name not in self._open:
            self._open[name] = connect(name, self.clients, self.spec)
        return self._open[name]
