"""The policy file `batcher tune` writes and a spec names (`[routing] policy = "file:..."`).

A JSON object: `version`, the chosen `policy` (its kind and parameters, scorer coefficients
included), its cross-validated figures (`cv`), the `alternatives` it beat and what it was
`learned_from`. Only `version` and `policy` drive a run; the rest is the record of why. The
spec reads the file at load time (see batcher.spec), so a run's spec snapshot holds it.

This module imports nothing of batcher's: the spec validates policies with its models.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

VERSION = 1
KINDS = ("fixed", "validator", "agreement", "scorer")


class Scorer(BaseModel):
    """A logistic scorer: p(correct) = 1 / (1 + exp(-(intercept + sum of coefficient x
    (feature - mean) / scale))); the first tier's answer stands when p >= threshold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    features: list[str]
    means: list[float]
    scales: list[float]
    coefficients: list[float]
    intercept: float
    threshold: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _same_lengths(self) -> Scorer:
        n = len(self.features)
        if not (len(self.means) == len(self.scales) == len(self.coefficients) == n):
            raise ValueError("features, means, scales and coefficients need one entry each")
        if any(s <= 0 for s in self.scales):
            raise ValueError("every scale must be > 0")
        return self


class Policy(BaseModel):
    """What a run does with each item.

    - fixed: every item to `tier`, nothing above it;
    - validator: `tier`'s valid answer stands, an invalid or cut-off one escalates to
      `frontier` (the classifier strategy);
    - agreement: `tier`'s answer stands when every tier of `opinions` gives the same answer
      key, else it escalates (the agreement cascade);
    - scorer: `tier`'s valid answer stands when `scorer` rates it likely correct, from its
      signals (and the `opinions`' agreement, when it has any), else it escalates.

    `frontier` is the tier accuracy and cost were measured against (the baseline's tier).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["fixed", "validator", "agreement", "scorer"]
    tier: str
    frontier: str
    opinions: list[str] = []
    scorer: Scorer | None = None

    @model_validator(mode="after")
    def _parameters(self) -> Policy:
        if self.kind == "scorer" and self.scorer is None:
            raise ValueError('kind "scorer" needs its scorer (features, coefficients, ...)')
        if self.kind != "scorer" and self.scorer is not None:
            raise ValueError(f'kind "{self.kind}" takes no scorer')
        if self.kind == "agreement" and not self.opinions:
            raise ValueError('kind "agreement" needs at least one tier in opinions')
        if self.kind in ("fixed", "validator") and self.opinions:
            raise ValueError(f'kind "{self.kind}" takes no opinions')
        return self

    @property
    def ladder(self) -> list[str]:
        """The escalation ladder a run with this policy climbs."""
        if self.kind == "fixed" or self.tier == self.frontier:
            return [self.tier]
        return [self.tier, self.frontier]

    def describe(self) -> str:
        """A short name for tables: "all-mid", "mid, validator", "mid, check agrees",
        "mid, scorer+check >= 0.62" (each escalating to the frontier)."""
        if self.kind == "fixed":
            return f"all-{self.tier}"
        if self.kind == "validator":
            return f"{self.tier}, validator"
        if self.kind == "agreement":
            verb = "agree" if len(self.opinions) > 1 else "agrees"
            return f"{self.tier}, {'+'.join(self.opinions)} {verb}"
        assert self.scorer is not None
        seen = "".join(f"+{t}" for t in self.opinions)
        return f"{self.tier}, scorer{seen} >= {self.scorer.threshold:.2f}"


class PolicyFile(BaseModel):
    """The whole file. Fields besides `version` and `policy` are kept as written."""

    model_config = ConfigDict(extra="allow", frozen=True)

    version: int
    policy: Policy

    @model_validator(mode="after")
    def _known_version(self) -> PolicyFile:
        if self.version != VERSION:
            raise ValueError(f"version {self.version}: this batcher reads version {VERSION}")
        return self


def policy_document(policy: Policy, **record: Any) -> dict[str, Any]:
    """The JSON object of a policy file: version, policy, then `record` (cv, alternatives,
    learned_from, ...)."""
    return {"version": VERSION, "policy": policy.model_dump(exclude_none=True), **record}


def write_policy(path: str | Path, document: dict[str, Any]) -> None:
    """Write the policy file whole (a temporary file renamed over it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    os.replace(temporary, path)
