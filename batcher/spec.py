"""Job specs: a TOML file in jobs/ loaded into a validated `JobSpec`.

Every error is a SpecError that names the spec file, the key (dotted, as written in the
TOML) and what is wrong. Values of the form `file:relative/path` are read relative to the
spec's folder at load time, so the spec snapshot stored with a run holds the actual text.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import jsonschema
import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from batcher.errors import SpecError, UsageError
from batcher.tune.policy_file import PolicyFile

PROVIDERS = ("openai", "anthropic", "google", "xai", "deepseek")
DIRECT_ONLY = ("deepseek",)  # no batch API: always direct mode
# Providers whose lines are OpenAI batch lines, so direct mode can send them as they are.
OPENAI_FORMAT = ("openai", "xai", "deepseek")
_PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")

HIGH_KEYWORDS = [
    "analyze", "compare", "debug", "refactor", "architect", "design", "optimize",
    "explain why", "trade-off", "reason",
]  # fmt: skip
LOW_KEYWORDS = [
    "classify", "extract", "format", "convert", "translate", "summarize briefly",
    "yes or no", "list the", "parse",
]  # fmt: skip


class KeyedError(ValueError):
    """A problem found across fields, with the key (dotted, as in the TOML) it is about."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem


def _bad_ref(ref: str, known: tuple[str, ...] = PROVIDERS) -> str:
    return (
        f"{ref!r}: write PROVIDER:MODEL with PROVIDER one of {', '.join(known)}, "
        'e.g. "openai:gpt-5-mini"'
    )


def _check_model_ref(ref: str) -> str:
    """The form PROVIDER:MODEL; whether PROVIDER exists is checked against the whole spec
    (a [providers.NAME] section names one more)."""
    provider, sep, model = ref.partition(":")
    if not sep or not model or not _PROVIDER_NAME.match(provider):
        raise ValueError(_bad_ref(ref))
    return ref


ModelRef = Annotated[str, AfterValidator(_check_model_ref)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Strict):
    """Send matching items to `tier`. Every condition given must hold; the first rule wins."""

    tier: str
    metadata: dict[str, str | int | float | bool] | None = None
    prompt_regex: str | None = None
    min_tokens: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)

    @field_validator("prompt_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


class Cascade(_Strict):
    """[routing.cascade]: the tiers that give a second opinion on each first-tier answer."""

    second_opinions: list[str] = []
    # sent with the second opinions only: a tier on the first tier's own model then samples
    # it again instead of repeating its answer
    temperature: float | None = Field(default=None, ge=0, le=2)


class Tune(_Strict):
    """[routing.tune]: what `batcher tune` aims at and reads (see batcher.tune.fit)."""

    # accuracy against gold (or the frontier tier's answers) the chosen policy must reach;
    # unset, the frontier tier's own accuracy on the same items
    target_accuracy: float | None = Field(default=None, gt=0, le=1)
    # A policy meets the target when its accuracy is at most this many standard errors of
    # the target (sqrt(t(1-t)/n) on n items) below it: a cheaper policy the evidence cannot
    # tell apart from the target counts. 0 asks for the target exactly.
    tolerance_se: float = Field(default=1.0, ge=0, le=5)
    metadata: list[str] = []  # item metadata fields the learned scorer may read
    folds: int = Field(default=5, ge=2, le=20)  # cross-validation folds
    seed: int = 0  # of the folds


class Routing(_Strict):
    # "classifier": accept a first-tier answer that passes validation; "cascade": accept it
    # only when the second opinions give the same answer key (see batcher.run.cascade)
    strategy: Literal["classifier", "cascade"] = "classifier"
    cascade: Cascade = Cascade()
    classifier: str = "heuristic"  # or "fixed:TIER"
    # share of items also sent to the frontier tier as evidence (see batcher.plan.calibration)
    calibrate: float = Field(default=0.0, ge=0, le=1)
    calibrate_seed: int = 0
    # What the classifier reads: "varying" (the prompt without the lines every prompt shares),
    # "prompt" (the last user message whole), "message" (system and every message), or
    # "metadata.FIELD" (one metadata field). See batcher.plan.routing.ClassifierText.
    classifier_text: str = Field(
        default="varying", pattern=r"^(varying|prompt|message|metadata\.[A-Za-z0-9_.-]+)$"
    )
    # escalation order, cheapest first; unset, the spec's tiers in the order written
    ladder: list[str] = []
    rules: list[Rule] = []
    high_keywords: list[str] = HIGH_KEYWORDS
    low_keywords: list[str] = LOW_KEYWORDS
    frontier_words: int = Field(default=200, ge=1)  # more words than this with one high keyword
    nano_words: int = Field(default=50, ge=1)  # fewer words than this with one low keyword
    tune: Tune = Tune()
    # A policy `batcher tune` learned ("file:policies/NAME.json", read at load time): it sets
    # the classifier, ladder, strategy and second opinions (see `_apply_policy`).
    policy: PolicyFile | None = None

    @model_validator(mode="before")
    @classmethod
    def _apply_policy(cls, data: Any) -> Any:
        """A policy routes every item (that no rule or explicit choice places) to its first
        tier, escalates to its frontier, and asks its second opinions: what it was
        measured doing. A scorer's accept/escalate decision is batcher.tune.policies'."""
        if not isinstance(data, dict) or data.get("policy") is None:
            return data
        raw = data["policy"]
        if isinstance(raw, str):
            raise KeyedError("routing.policy", 'write policy = "file:policies/NAME.json"')
        try:
            document = raw if isinstance(raw, PolicyFile) else PolicyFile.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(["routing.policy", *(str(p) for p in first["loc"])])
            raise KeyedError(key, first["msg"].removeprefix("Value error, ")) from None
        policy = document.policy
        cascade = data.get("cascade") or {}
        if isinstance(cascade, BaseModel):
            cascade = cascade.model_dump()
        return {
            **data,
            "policy": document,
            "classifier": f"fixed:{policy.tier}",
            "ladder": policy.ladder,
            "strategy": "cascade" if policy.opinions else "classifier",
            "cascade": {**cascade, "second_opinions": policy.opinions},
        }


class Defaults(_Strict):
    system: str | None = None
    # Covers the answer and, on reasoning models, the hidden reasoning before it.
    max_tokens: int = Field(default=1024, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    # Sent to reasoning models (OpenAI gpt-5, o-series); labeling and extraction want
    # "minimal" or "low", which leave most of max_tokens to the answer.
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = "low"
    # Neutral settings (json_schema, reasoning_effort, temperature, stop) are rendered by
    # each provider; a table named after a provider ([defaults.params.openai]) goes to that
    # provider only, as written; any other key goes to every provider as written.
    params: dict[str, Any] = {}

    @field_validator("params")
    @classmethod
    def _provider_tables(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in PROVIDERS:
            if name in value and not isinstance(value[name], dict):
                raise ValueError(f"params.{name} must be a table of {name}'s own fields")
        return value


class Validation(_Strict):
    json_output: bool = Field(default=False, alias="json")
    json_schema: dict[str, Any] | None = None
    labels: list[str] | None = None
    label_field: str | None = None  # where the label sits in a JSON answer (e.g. "label")
    regex: str | None = None
    # The answer key compared between models (see batcher.run.answers): a JSON field, else
    # label_field, else a regex group ("answer", else the first), else the whole reply.
    answer_field: str | None = None
    answer_regex: str | None = None

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(value)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"not a valid JSON Schema: {exc.message}") from exc
        return value

    @field_validator("regex", "answer_regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        return Rule._compiles(value)


class Retry(_Strict):
    max_attempts: int = Field(default=4, ge=1)  # all attempts of one item, every tier together
    transient_retries: int = Field(default=2, ge=0)  # same-tier retries after errors
    # Retries after the provider expired the batch first: its capacity, not the item's fault,
    # so a budget of its own (not counted in max_attempts or transient_retries).
    expired_retries: int = Field(default=5, ge=0)
    # An answer cut off at max_tokens: "retry_larger" sends it once more on the same tier with
    # twice the max_tokens (at most the model's output limit), then escalates; "escalate"
    # moves it up the ladder at once; "fail" ends the item.
    on_truncated: Literal["retry_larger", "escalate", "fail"] = "retry_larger"


class Batching(_Strict):
    openai_max_lines: int = Field(default=50_000, ge=1, le=50_000)
    openai_max_bytes: int = Field(default=200 * 1024 * 1024, ge=1, le=200 * 1024 * 1024)
    anthropic_max_requests: int = Field(default=100_000, ge=1, le=100_000)
    anthropic_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1, le=256 * 1024 * 1024)
    google_max_requests: int = Field(default=100_000, ge=1, le=100_000)
    google_max_bytes: int = Field(default=2 * 1024**3, ge=1, le=2 * 1024**3)
    # Uploaded batch files: deleted once their batch is reconciled, or given an expiry at
    # upload (OpenAI expires_after, seconds after creation: 1 hour to 30 days).
    uploaded_files: Literal["delete", "expire"] = "delete"
    uploaded_files_expire_s: int = Field(default=7 * 86400, ge=3600, le=2_592_000)
    # Local batch files (state/batches/run-N/): deleted once their batch is reconciled, as its
    # answers are in the database; true keeps them for audit (`batcher run --keep-files`).
    keep_files: bool = False
    # provider -> batch price / standard price, for models without batch prices in genai-prices
    batch_factors: dict[str, Annotated[float, Field(gt=0, le=1)]] = {}

    def limits_for(self, provider: str) -> tuple[int, int]:
        """(max requests, max bytes) of one batch of `provider` as the spec caps them (the
        provider's own limits may be lower). Providers without spec settings: no cap."""
        requests = getattr(self, f"{provider}_max_requests", None)
        if provider == "openai":
            requests = self.openai_max_lines  # OpenAI counts lines of the batch file
        size = getattr(self, f"{provider}_max_bytes", None)
        return requests or sys.maxsize, size or sys.maxsize


class Caching(_Strict):
    """The prompt-cache model the plan and its estimate assume (see README, Cache model)."""

    # provider -> how many requests of a cache group in each batch miss the cache: a batch's
    # requests run concurrently, so the first ones do not see each other's writes. Unset,
    # the provider module's default (measured: cold Anthropic batches read close to 0%).
    cold_requests: dict[str, Annotated[int, Field(ge=0)]] = {}
    # "provider:model" -> shortest cacheable prefix in tokens, over the provider module's.
    min_tokens: dict[str, Annotated[int, Field(ge=1)]] = {}
    # Share by which a prefix counted without the model's own tokenizer may be off (cl100k
    # for Anthropic and Gemini): within the band around the minimum it "may not cache".
    margin: float = Field(default=0.2, ge=0, lt=1)
    anthropic_ttl: Literal["5m", "1h"] = "1h"  # the batch guide's advice for shared context


class Polling(_Strict):
    interval_s: float = Field(default=30.0, gt=0)
    max_interval_s: float = Field(default=300.0, gt=0)
    # A provider that does not answer at all for this long stops the run (resumable).
    unreachable_after_s: float = Field(default=900.0, gt=0)


class PriceOverride(_Strict):
    """Negotiated prices in USD per million tokens, standard (non-batch) rates."""

    input_mtok: float = Field(ge=0)
    output_mtok: float = Field(ge=0)
    cache_read_mtok: float | None = Field(default=None, ge=0)
    cache_write_mtok: float | None = Field(default=None, ge=0)
    cache_write_1h_mtok: float | None = Field(default=None, ge=0)
    batch_factor: float = Field(default=0.5, gt=0, le=1)  # batch price / standard price


class ProviderSettings(_Strict):
    """[providers.NAME]: settings of a built-in provider, or a named OpenAI-compatible one."""

    kind: Literal["openai-compatible"] | None = None
    base_url: str | None = None
    api_key_env: str | None = None  # the only place the key is read from
    mode: Literal["batch", "direct"] | None = None  # default: batch, deepseek direct
    concurrency: int = Field(default=16, ge=1, le=1024)  # direct mode: requests in flight
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    offpeak_only: bool = False  # deepseek: hold direct requests during its peak hours


class Schedule(_Strict):
    cron: str | None = None
    every: str | None = None
    tz: str = "UTC"
    input: str | None = None


class JobSpec(_Strict):
    name: str
    description: str = ""
    tiers: dict[str, ModelRef]
    prompts: dict[str, str] = {}  # named system prompts that items select with "system_ref"
    input: str | None = None  # default input file
    defaults: Defaults = Defaults()
    routing: Routing = Routing()
    validation: Validation = Validation()
    retry: Retry = Retry()
    batching: Batching = Batching()
    caching: Caching = Caching()
    polling: Polling = Polling()
    max_usd: float | None = Field(default=None, gt=0)
    pricing: dict[str, PriceOverride] = {}
    providers: dict[str, ProviderSettings] = {}
    schedule: Schedule | None = None
    on_invalid: Literal["escalate", "fail"] = "escalate"

    path: str = ""  # where the spec was loaded from (set by load_spec)

    @field_validator("tiers")
    @classmethod
    def _some_tier(cls, tiers: dict[str, str]) -> dict[str, str]:
        if not tiers:
            raise ValueError('name at least one tier, e.g. nano = "openai:gpt-5-nano"')
        return tiers

    @model_validator(mode="before")
    @classmethod
    def _default_ladder(cls, data: Any) -> Any:
        """Without `routing.ladder`, escalation climbs the tiers in spec order, so a one- or
        two-tier spec needs no ladder of its own."""
        if not isinstance(data, dict) or not isinstance(data.get("tiers"), dict):
            return data
        routing = data.get("routing", {})
        if isinstance(routing, dict) and not routing.get("ladder"):
            # second-opinion tiers check answers; they are no rung to escalate to
            cascade = routing.get("cascade")
            opinions = cascade.get("second_opinions", []) if isinstance(cascade, dict) else []
            ladder = [t for t in data["tiers"] if t not in opinions] or list(data["tiers"])
            data = {**data, "routing": {**routing, "ladder": ladder}}
        return data

    @model_validator(mode="after")
    def _providers_known(self) -> JobSpec:
        for name, settings in self.providers.items():
            _check_provider(name, settings)
        known = (*PROVIDERS, *(n for n in self.providers if n not in PROVIDERS))
        for tier, ref in self.tiers.items():
            if ref.partition(":")[0] not in known:
                raise KeyedError(f"tiers.{tier}", _bad_ref(ref, known))
        return self

    def mode_of(self, provider: str) -> Literal["batch", "direct"]:
        """How `provider`'s requests are sent: through its batch API, or one by one."""
        settings = self.providers.get(provider)
        if settings is not None and settings.mode is not None:
            return settings.mode
        return "direct" if provider in DIRECT_ONLY else "batch"

    @model_validator(mode="after")
    def _tiers_exist(self) -> JobSpec:
        known = ", ".join(self.tiers)
        if self.routing.policy is not None:  # before the ladder and opinions it wrote
            policy = self.routing.policy.policy
            named = [("tier", policy.tier), ("frontier", policy.frontier)]
            named += [(f"opinions[{i}]", t) for i, t in enumerate(policy.opinions)]
            for key, tier in named:
                if tier not in self.tiers:
                    problem = f"{tier!r} is not a tier of this spec: use {known}"
                    raise KeyedError(f"routing.policy.policy.{key}", problem)
        for i, tier in enumerate(self.routing.ladder):
            if tier not in self.tiers:
                raise KeyedError(f"routing.ladder[{i}]", f"{tier!r} is not a tier: use {known}")
        for i, rule in enumerate(self.routing.rules):
            if rule.tier not in self.tiers:
                key = f"routing.rules[{i}].tier"
                raise KeyedError(key, f"{rule.tier!r} is not a tier: use {known}")
        opinions = self.routing.cascade.second_opinions
        for i, tier in enumerate(opinions):
            if tier not in self.tiers:
                key = f"routing.cascade.second_opinions[{i}]"
                raise KeyedError(key, f"{tier!r} is not a tier: use {known}")
        if self.routing.strategy == "cascade" and not opinions:
            raise KeyedError(
                "routing.cascade.second_opinions",
                'strategy = "cascade" needs at least one second-opinion tier, e.g. ["check"]',
            )
        classifier = self.routing.classifier
        if classifier.startswith("fixed:") and classifier[6:] not in self.tiers:
            problem = f"{classifier!r} names no tier: use fixed:TIER with TIER one of {known}"
            raise KeyedError("routing.classifier", problem)
        if classifier != "heuristic" and not classifier.startswith("fixed:"):
            raise KeyedError(
                "routing.classifier", f'{classifier!r}: use "heuristic" or "fixed:TIER"'
            )
        return self

    @property
    def frontier_tier(self) -> str:
        """The tier that the baseline is priced on: the top of the escalation ladder (a
        policy's frontier, which a fixed-tier policy's ladder does not reach)."""
        if self.routing.policy is not None:
            return self.routing.policy.policy.frontier
        return self.routing.ladder[-1] if self.routing.ladder else next(reversed(self.tiers))

    def opinion_tiers(self, first_tier: str) -> list[str]:
        """The tiers asked for a second opinion on an item whose first tier is `first_tier`:
        none unless the strategy is "cascade", the tier is below the top of the ladder, and
        it is no second-opinion tier itself."""
        routing = self.routing
        opinions = routing.cascade.second_opinions
        if routing.strategy != "cascade" or first_tier in opinions:
            return []
        if first_tier not in routing.ladder or first_tier == self.frontier_tier:
            return []
        return list(opinions)

    @property
    def ends_in_followups(self) -> bool:
        """Whether items have attempts besides their answer (second opinions, calibration),
        so that only the follow-up step, once all of them are in, may end an item; or a
        learned scorer decides whether a valid answer stands."""
        routing = self.routing
        scored = routing.policy is not None and routing.policy.policy.kind == "scorer"
        return routing.strategy == "cascade" or routing.calibrate > 0 or scored

    def model_of(self, tier: str) -> tuple[str, str]:
        """(provider, model) of `tier`."""
        return split_model_ref(self.tiers[tier], f"tiers.{tier}")

    def input_file(self, override: str | None = None) -> str:
        """The input to read: `override`, else the spec's `input` relative to the spec file."""
        if override:
            return override
        if self.input:
            return str(Path(self.path).parent / self.input)
        raise UsageError(
            f"{self.path}: no input given: pass --input FILE or set `input` in the spec"
        )

    def snapshot(self) -> str:
        """The spec as JSON, with file: values already read, for storing with a run."""
        return self.model_dump_json(by_alias=True)


def _check_provider(name: str, settings: ProviderSettings) -> None:
    key = f"providers.{name}"
    if name in PROVIDERS:
        if settings.kind is not None:
            raise KeyedError(f"{key}.kind", f"{name} is a built-in provider: leave kind out")
        if name in DIRECT_ONLY and settings.mode == "batch":
            raise KeyedError(f"{key}.mode", f'{name} has no batch API: use mode = "direct"')
        if settings.mode == "direct" and name not in OPENAI_FORMAT:
            raise KeyedError(
                f"{key}.mode",
                f"direct mode sends OpenAI-format requests: available for "
                f"{', '.join(OPENAI_FORMAT)} and openai-compatible providers, not {name}",
            )
        return
    if not _PROVIDER_NAME.match(name):
        raise KeyedError(key, f"{name!r}: a provider name is lowercase letters, digits, - and _")
    if settings.kind != "openai-compatible":
        raise KeyedError(f"{key}.kind", 'a provider of your own needs kind = "openai-compatible"')
    for field in ("base_url", "api_key_env"):
        if not getattr(settings, field):
            raise KeyedError(f"{key}.{field}", "required for an openai-compatible provider")


def split_model_ref(ref: str, key: str = "model") -> tuple[str, str]:
    """'openai:gpt-5-nano' -> ('openai', 'gpt-5-nano'); ValueError naming `key` otherwise.
    (Whether the provider exists is the spec's check: it may name providers of its own.)"""
    provider, sep, model = ref.partition(":")
    if not sep or not model or not _PROVIDER_NAME.match(provider):
        raise ValueError(
            f"{key} = {ref!r}: write PROVIDER:MODEL with PROVIDER one of {', '.join(PROVIDERS)}"
        )
    return provider, model


def _read_file_refs(data: Any, base: Path, spec_path: Path, key: str = "") -> Any:
    """Replace every "file:rel/path" string with the file's text (JSON files: parsed)."""
    if isinstance(data, dict):
        return {
            k: _read_file_refs(v, base, spec_path, f"{key}.{k}" if key else k)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [_read_file_refs(v, base, spec_path, f"{key}[{i}]") for i, v in enumerate(data)]
    if isinstance(data, str) and data.startswith("file:"):
        target = base / data[5:]
        try:
            text = target.read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(str(spec_path), key, f"cannot read {target}: {exc.strerror}") from exc
        if target.suffix == ".json":
            try:
                return orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise SpecError(str(spec_path), key, f"{target} is not valid JSON: {exc}") from exc
        return text
    return data


def _key_of(error: dict[str, Any]) -> str:
    parts = []
    for part in error["loc"]:
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
        else:
            parts.append(str(part))
    return ".".join(parts)


def parse_spec(data: dict[str, Any], path: str = "<spec>") -> JobSpec:
    """Validate an already-parsed spec mapping; SpecError on the first problem."""
    if "path" in data:
        raise SpecError(path, "path", _unknown_key_message(("path",)))
    try:
        return JobSpec.model_validate({**data, "path": path})
    except ValidationError as exc:
        first = exc.errors()[0]
        cause = (first.get("ctx") or {}).get("error")
        if isinstance(cause, KeyedError):
            raise SpecError(path, cause.key, cause.problem) from None
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = _unknown_key_message(first["loc"])
        elif first["type"] == "missing":
            message = "required key is missing: add it"
        raise SpecError(path, _key_of(first), message) from None


def _section_model(loc: tuple) -> type[BaseModel] | None:
    """The model whose keys are allowed at `loc` (the section holding the bad key)."""
    model: type[BaseModel] = JobSpec
    parts = iter(loc[:-1])
    for part in parts:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        found = _model_in(field.annotation)
        if found is None:
            return None
        if get_origin(field.annotation) is dict:
            next(parts, None)  # the table's own key, e.g. pricing."openai:gpt-5"
        model = found
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _unknown_key_message(loc: tuple) -> str:
    model = _section_model(loc)
    if model is None:
        return "unknown key: check the spelling (see jobs/example.toml)"
    allowed = [field.alias or name for name, field in model.model_fields.items() if name != "path"]
    return f"unknown key: check the spelling; allowed here: {', '.join(allowed)}"


def load_spec(path: str | Path) -> JobSpec:
    """Read and validate the TOML job spec at `path`. Raises SpecError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(str(path), "", f"cannot read the spec: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), "", f"not valid TOML: {exc}") from exc
    routing = data.get("routing")
    policy_ref = routing.get("policy") if isinstance(routing, dict) else None
    data = _read_file_refs(data, path.parent, path)
    try:
        return parse_spec(data, str(path))
    except SpecError as exc:  # a bad policy file: say which file, not only which key
        if not (isinstance(policy_ref, str) and policy_ref.startswith("file:")):
            raise
        if not exc.key.startswith("routing.policy"):
            raise
        target = path.parent / policy_ref[5:]
        raise SpecError(str(path), exc.key, f"{target}: {exc.problem}") from None


def spec_from_snapshot(snapshot: str) -> JobSpec:
    """The JobSpec stored with a run (see JobSpec.snapshot)."""
    return JobSpec.model_validate_json(snapshot)
