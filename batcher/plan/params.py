"""Plan-time check of a spec's request parameters against what each tier's model takes.

A parameter a model is known to refuse fails every request of a batch (a per-line 400 on
the real services, after up to 24 hours in the queue), so `plan` and `run` refuse the spec
first, naming the tier, the model and the fix. The knowledge lives in the provider modules
(`param_problems` and their capability tables).
"""

from __future__ import annotations

from batcher.errors import UsageError
from batcher.plan.requests import resolve
from batcher.providers import wire_format
from batcher.spec import JobSpec


def param_problems(spec: JobSpec) -> list[str]:
    """Every problem of the spec's defaults on every tier, as 'tiers.T (p:m): problem'."""
    max_tokens, temperature, params = resolve({}, spec)
    problems = []
    for tier, ref in spec.tiers.items():
        provider, model = spec.model_of(tier)
        wire = wire_format(provider, spec.providers.get(provider))
        check = getattr(wire, "param_problems", None)  # xAI, DeepSeek: no table of their own
        found = check(model, params, temperature, max_tokens, "defaults") if check else []
        for problem in found:
            problems.append(f"tiers.{tier} ({ref}): {problem}")
    return problems


def check_params(spec: JobSpec) -> None:
    """UsageError (exit 2) listing what the tiers' models would refuse; nothing is stored."""
    problems = param_problems(spec)
    if problems:
        lines = "\n  ".join(problems)
        raise UsageError(
            f"{spec.path or spec.name}: the providers would refuse these requests, so nothing "
            f"was stored or sent:\n  {lines}"
        )
