"""Checks made before anything is stored or sent: every provider a job needs has its key.

A missing key found at submit time would leave a stored run behind and a message about
waiting for the provider; found here it is one line naming the variable, exit code 2.
"""

from __future__ import annotations

import os

from batcher.errors import UsageError
from batcher.providers import Clients
from batcher.providers.calls import KEY_ENVS
from batcher.spec import JobSpec, split_model_ref

# Other variables the SDKs read a key from (google-genai also reads GOOGLE_API_KEY).
ALSO_READ = {"google": ("GOOGLE_API_KEY",)}


def _has_key(provider: str, clients: Clients) -> bool:
    if provider in clients.instances or getattr(clients, f"{provider}_api_key", None):
        return True
    if provider == "google" and clients.gemini_api_key:
        return True
    names = (KEY_ENVS.get(provider, ""), *ALSO_READ.get(provider, ()))
    return any(os.environ.get(name) for name in names if name)


def check_keys(spec: JobSpec, clients: Clients | None = None) -> None:
    """UsageError naming the variable when a provider of the spec's tiers has no API key
    (neither in `clients` nor in the environment)."""
    clients = clients or Clients()
    tiers_of: dict[str, list[str]] = {}
    for tier, ref in spec.tiers.items():
        tiers_of.setdefault(split_model_ref(ref, f"tiers.{tier}")[0], []).append(tier)
    for provider, tiers in tiers_of.items():
        variable = _missing_key(spec, provider, clients)
        if variable:
            raise UsageError(
                f"{variable} is not set and tier{'s' * (len(tiers) > 1)} {', '.join(tiers)} "
                f"of {spec.path or spec.name} run{'s' * (len(tiers) == 1)} on {provider}: "
                f"export {variable}, or add --sandbox; nothing was stored or sent"
            )


def _missing_key(spec: JobSpec, provider: str, clients: Clients) -> str | None:
    """The variable to set when `provider` has no key, else None."""
    settings = spec.providers.get(provider)
    if settings is not None and settings.kind == "openai-compatible":
        found = clients.compatible_api_key or provider in clients.instances
        return None if found or os.environ.get(settings.api_key_env) else settings.api_key_env
    if provider in KEY_ENVS and not _has_key(provider, clients):
        return KEY_ENVS[provider]
    return None
