"""Checks made before anything is stored or sent: every provider a job needs has its key, and
its base URL answers.

A missing key found at submit time would leave a stored run behind and a message about
waiting for the provider; found here it is one line naming the variable, exit code 2. A base
URL that does not answer (a typo in OPENAI_BASE_URL, a sandbox that is not running, no
network) is asked again until the spec's `polling.unreachable_after_s` has passed, then the
command stops saying what to check.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

import httpx
from sqlalchemy.engine import Engine

from batcher.errors import BatcherError, UsageError
from batcher.providers import Clients, base_url_of, unreachable_message
from batcher.providers.calls import KEY_ENVS
from batcher.spec import JobSpec, split_model_ref
from batcher.store import attempts, items

# Other variables the SDKs read a key from (google-genai also reads GOOGLE_API_KEY).
ALSO_READ = {"google": ("GOOGLE_API_KEY",)}
PROBE_TIMEOUT_S = 10.0


class ProviderUnreachable(BatcherError):
    """A provider's base URL gave no answer at all for longer than the allowed window."""


def _has_key(provider: str, clients: Clients) -> bool:
    if provider in clients.instances or getattr(clients, f"{provider}_api_key", None):
        return True
    if provider == "google" and clients.gemini_api_key:
        return True
    names = (KEY_ENVS.get(provider, ""), *ALSO_READ.get(provider, ()))
    return any(os.environ.get(name) for name in names if name)


def providers_of(spec: JobSpec) -> dict[str, list[str]]:
    """provider -> the spec's tiers that run on it, in spec order."""
    tiers_of: dict[str, list[str]] = {}
    for tier, ref in spec.tiers.items():
        tiers_of.setdefault(split_model_ref(ref, f"tiers.{tier}")[0], []).append(tier)
    return tiers_of


def check_keys(
    spec: JobSpec,
    clients: Clients | None = None,
    *,
    also: Iterable[str] = (),
    then: str = "nothing was stored or sent",
) -> None:
    """UsageError naming the variable when a provider of the spec's tiers, or one of `also`
    (providers that items name with their own "model"), has no API key (neither in
    `clients` nor in the environment)."""
    clients = clients or Clients()
    needed: dict[str, str] = {}
    for provider, tiers in providers_of(spec).items():
        plural = len(tiers) > 1
        needed[provider] = (
            f"tier{'s' * plural} {', '.join(tiers)} of {spec.path or spec.name} "
            f"run{'s' * (not plural)} on {provider}"
        )
    for provider in also:
        needed.setdefault(provider, f"items of {spec.path or spec.name} name {provider} models")
    for provider, why in needed.items():
        variable = _missing_key(spec, provider, clients)
        if variable:
            raise UsageError(
                f"{variable} is not set and {why}: export {variable}, or add --sandbox; {then}"
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


def run_providers(db: Engine, run_id: int) -> set[str]:
    """Providers that attempts of `run_id` were planned on, or that its items name (items
    may name their own model; a deferred plan has no attempts yet)."""
    with db.connect() as conn:
        named = {split_model_ref(ref)[0] for ref in items.explicit_models(conn, run_id)}
        return attempts.providers_of_run(conn, run_id) | named


def answers(url: str) -> bool:
    """True when anything answers HTTP at `url` (any status: a 404 or 401 is an answer)."""
    try:
        httpx.get(url, timeout=PROBE_TIMEOUT_S)
    except httpx.TransportError:
        return False
    return True


def check_reachable(
    providers: Iterable[str],
    clients: Clients | None,
    window_s: float,
    *,
    then: str = "nothing was stored or sent; run the same command again",
) -> None:
    """Ask each provider's base URL until it answers; ProviderUnreachable after `window_s`
    seconds of silence, naming the URL, the variable that sets it, and `then`."""
    clients = clients or Clients()
    for provider in sorted(set(providers)):
        if provider in clients.instances:
            continue
        url = base_url_of(provider, clients)
        if not url:  # a [providers.NAME] endpoint: its own module says where it is
            continue
        deadline = time.monotonic() + window_s
        while not answers(url):
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProviderUnreachable(unreachable_message(provider, url, window_s, then))
            time.sleep(min(1.0, left))


def preflight_spec(spec: JobSpec, clients: Clients | None, window_s: float) -> None:
    """Before a new run of `spec` is stored: keys, then base URLs, of the spec's providers."""
    check_keys(spec, clients)
    check_reachable(providers_of(spec), clients, window_s)


def preflight_new_run(db: Engine, run_id: int, spec: JobSpec, clients: Clients | None) -> None:
    """After planning a new run: items that name their own model may need another provider.
    Without its key the run is deleted again, so nothing is left stored or sent."""
    from batcher.store.runs import delete_runs

    try:
        check_keys(spec, clients, also=run_providers(db, run_id))
    except UsageError:
        delete_runs(db, [run_id])
        raise


def preflight_run(db: Engine, run_id: int, clients: Clients | None, window_s: float) -> None:
    """Before `resume` (or `retry`) of `run_id` sends anything: keys and base URLs of every
    provider of its spec and of its planned attempts."""
    from batcher.run.engine import run_spec

    spec = run_spec(db, run_id)
    extra = run_providers(db, run_id)
    later = f"then `batcher resume {run_id}` continues"
    check_keys(spec, clients, also=extra, then=later)
    check_reachable({*providers_of(spec), *extra}, clients, window_s, then=later)
