"""Gemini batch mode: the batch job (an Operation), its input lines, and one request's answer.

A job reads a JSONL file of `{"key", "request": GenerateContentRequest}` lines and writes a
JSONL file of `{"key", "response": GenerateContentResponse}` or `{"key", "error": Status}`
lines in input order. States (REST names): PENDING -> RUNNING -> SUCCEEDED, or FAILED,
CANCELLED, EXPIRED (48 hours running or pending). The docs say an expired job has no results;
`gemini_partial_results` makes expired and cancelled jobs keep what they finished.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from batcher.plan import tokens
from batcher.sandbox.caching import gemini_cached_tokens
from batcher.sandbox.lifecycle import DAY, Timeline
from batcher.sandbox.prompts import text_of
from batcher.sandbox.responders import make_query, pick
from batcher.sandbox.state import SandboxState, new_id

BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"
EXPIRY_S = 2 * DAY  # "running or pending for more than 48 hours"
# GenerateContentRequest fields (proto JSON accepts camelCase and snake_case names).
REQUEST_FIELDS = {
    "contents",
    "systemInstruction",
    "generationConfig",
    "safetySettings",
    "tools",
    "toolConfig",
    "cachedContent",
    "model",
    "labels",
}
GENERATION_FIELDS = {
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
    "responseModalities",
    "mediaResolution",
    "speechConfig",
}
# The fields of the Schema object (an OpenAPI subset) that `responseSchema` takes; anything
# else, such as additionalProperties, is refused (responseJsonSchema takes JSON Schema).
SCHEMA_FIELDS = {
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
}
THINKING_RE = re.compile(r"^gemini-(2\.5-(flash|pro)(?!-lite)|[3-9])")
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def normalized(value: object) -> dict:
    """A JSON object with its keys in camelCase (the service accepts either spelling)."""
    if not isinstance(value, dict):
        return {}
    return {camel(k): v for k, v in value.items()}


def timestamp(t: float | None) -> str | None:
    if t is None:
        return None
    when = datetime.fromtimestamp(t, UTC)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


def status(code: int, message: str) -> dict:
    return {"code": code, "message": message, "status": STATUS_NAMES.get(code, "UNKNOWN")}


@dataclass
class GeminiFile:
    id: str  # without the "files/" prefix
    data: bytes
    display_name: str
    mime_type: str
    source: str  # UPLOADED (cannot be downloaded) or GENERATED
    created_at: float

    def to_json(self) -> dict:
        out = {
            "name": f"files/{self.id}",
            "displayName": self.display_name,
            "mimeType": self.mime_type,
            "sizeBytes": str(len(self.data)),
            "createTime": timestamp(self.created_at),
            "updateTime": timestamp(self.created_at),
            "expirationTime": timestamp(self.created_at + EXPIRY_S),
            "state": "ACTIVE",
            "source": self.source,
            "uri": f"files/{self.id}",
        }
        if self.source == "GENERATED":
            out["downloadUri"] = f"files/{self.id}:download?alt=media"
        return out


def store_file(
    state: SandboxState,
    data: bytes,
    display_name: str,
    source: str,
    mime_type: str = "application/jsonl",
) -> GeminiFile:
    """A Files API file, kept for 48 hours."""
    record = GeminiFile(new_id("f"), data, display_name, mime_type, source, state.now())
    with state.lock:
        state.gemini_files[record.id] = record
    return record


def parse_lines(data: bytes) -> tuple[list[dict], str | None]:
    """The input file's lines, or an error that fails the whole job (not JSONL, empty)."""
    lines = []
    for number, raw in enumerate(data.decode("utf-8", errors="replace").split("\n"), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            return [], f"Line {number} of the input file is not valid JSON."
        if not isinstance(line, dict):
            return [], f"Line {number} of the input file is not a JSON object."
        lines.append(line)
    if not lines:
        return [], "The input file contains no requests."
    return lines, None


def check_request(request: object) -> str | None:
    """Why a line's request is invalid (a per-line INVALID_ARGUMENT), or None."""
    if not isinstance(request, dict):
        return "request must be a GenerateContentRequest object."
    body = normalized(request)
    unknown = sorted(set(body) - REQUEST_FIELDS)
    if unknown:
        return f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.'
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    config = normalized(body.get("generationConfig"))
    unknown = sorted(set(config) - GENERATION_FIELDS)
    if unknown:
        return (
            f'Invalid JSON payload received. Unknown name "{unknown[0]}" at '
            "'generation_config': Cannot find field."
        )
    schema = config.get("responseSchema") or config.get("responseJsonSchema")
    if schema and config.get("responseMimeType") not in ("application/json", "text/x.enum"):
        return "A response schema needs responseMimeType application/json."
    bad = _schema_problem(config.get("responseSchema"), "generation_config.response_schema")
    return bad


def _schema_problem(schema: object, where: str) -> str | None:
    """The first keyword of `schema` that the Schema object does not have, as the service
    words it; None when every keyword is known."""
    if not isinstance(schema, dict):
        return None
    for key, value in schema.items():
        if camel(key) not in SCHEMA_FIELDS:
            return (
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': "
                "Cannot find field."
            )
        children = (
            value.values()
            if key == "properties" and isinstance(value, dict)
            else (
                value
                if key == "anyOf" and isinstance(value, list)
                else [value]
                if key == "items"
                else []
            )
        )
        for child in children:
            problem = _schema_problem(child, f"{where}.{key}")
            if problem:
                return problem
    return None


def contents_text(body: dict) -> tuple[str, list[dict]]:
    """(system text, messages with role/content) of a request, for counting and answering."""
    system = normalized(body.get("systemInstruction"))
    system_text = "\n".join(
        text_of(p.get("text")) for p in system.get("parts") or [] if isinstance(p, dict)
    )
    messages = []
    for content in body.get("contents") or []:
        if not isinstance(content, dict):
            continue
        text = "\n".join(
            text_of(p.get("text"))
            for p in content.get("parts") or []
            if isinstance(p, dict) and "text" in p
        )
        role = "assistant" if content.get("role") == "model" else "user"
        messages.append({"role": role, "content": text})
    return system_text, messages


@dataclass
class GeminiBatch:
    id: str  # without the "batches/" prefix
    model: str  # "models/..."
    display_name: str
    file_name: str
    lines: list[dict]
    timeline: Timeline
    failure: str | None = None  # the job fails as a whole (bad input file)
    output_file: str | None = None
    counts: dict = field(default_factory=lambda: {"ok": 0, "failed": 0})
    materialized: bool = False

    @property
    def name(self) -> str:
        return f"batches/{self.id}"

    def due(self, now: float) -> bool:
        return self.failure is None and not self.materialized and now >= self.timeline.cutoff()

    def state(self, now: float) -> str:
        t = self.timeline
        if self.failure is not None:
            return "BATCH_STATE_FAILED" if now >= t.validated else "BATCH_STATE_PENDING"
        outcome = t.outcome()
        if now >= t.ended():
            return {
                "done": "BATCH_STATE_SUCCEEDED",
                "expired": "BATCH_STATE_EXPIRED",
                "cancelled": "BATCH_STATE_CANCELLED",
            }[outcome]
        return "BATCH_STATE_PENDING" if now < t.validated else "BATCH_STATE_RUNNING"

    def materialize(self, state: SandboxState) -> None:
        """Run the requests that finished before the cutoff; write the responses file once."""
        total = len(self.lines)
        outcome = self.timeline.outcome()
        keep = outcome == "done" or state.config.gemini_partial_results
        finished = self.timeline.finished_count(total) if keep else 0
        out = []
        for index, line in enumerate(self.lines[:finished]):
            at = self.timeline.finish_time(index, total)
            result = run_request(state, self, line, at)
            self.counts["ok" if "response" in result else "failed"] += 1
            out.append(result)
        if out:
            data = "".join(json.dumps(line) + "\n" for line in out).encode()
            record = store_file(state, data, f"{self.id}-responses.jsonl", "GENERATED")
            self.output_file = record.id
        self.materialized = True

    def to_json(self, now: float) -> dict:
        """The job as an Operation: the batch itself is in `metadata`."""
        state = self.state(now)
        ended = state not in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING")
        t = self.timeline
        total = len(self.lines)
        done = self.counts["ok"] + self.counts["failed"] if self.materialized else 0
        stats = {
            "requestCount": str(total),
            "successfulRequestCount": str(self.counts["ok"]),
            "failedRequestCount": str(self.counts["failed"]),
            "pendingRequestCount": str(0 if ended else total - done),
        }
        meta = {
            "@type": BATCH_TYPE,
            "name": self.name,
            "model": self.model,
            "displayName": self.display_name,
            "inputConfig": {"fileName": f"files/{self.file_name}"},
            "createTime": timestamp(t.created),
            "updateTime": timestamp(now),
            "batchStats": stats,
            "state": state,
            "priority": "0",
        }
        op: dict = {"name": self.name, "metadata": meta}
        if ended:
            meta["endTime"] = timestamp(
                min(now, t.ended() if self.failure is None else t.validated)
            )
            op["done"] = True
            if self.failure is not None:
                op["error"] = status(400, self.failure)
            elif self.output_file:
                meta["output"] = {"responsesFile": f"files/{self.output_file}"}
                op["response"] = {
                    "@type": OUTPUT_TYPE,
                    "responsesFile": f"files/{self.output_file}",
                }
            else:
                op["response"] = {"@type": OUTPUT_TYPE}
        return op


def run_request(state: SandboxState, batch: GeminiBatch, line: dict, at: float) -> dict:
    """One output line for an input line processed at sandbox time `at`; bills a response."""
    key = line.get("key")
    out: dict = {"key": key} if key is not None else {}
    problem = check_request(line.get("request"))
    if problem:
        return {**out, "error": status(400, problem)}
    model = batch.model.removeprefix("models/")
    if state.faults.fire("request_error", "google", model=model, key=(batch.id, key)):
        return {
            **out,
            "error": status(500, "An internal error has occurred (injected by the sandbox)."),
        }
    body = normalized(line["request"])
    config = normalized(body.get("generationConfig"))
    system, messages = contents_text(body)
    schema = config.get("responseSchema") or config.get("responseJsonSchema")
    query = make_query(model, body, system, messages, schema)
    reply = state.responder.answer(query)
    if reply.text is None:
        return {**out, "error": status(400, reply.error_message or "no answer")}
    parts = tuple(p for p in (system, *(m["content"] for m in messages)) if p)
    miss = state.faults.fire("cache_miss", "google", model=model) is not None
    prompt, cached = gemini_cached_tokens(
        state.gemini_cache,
        model,
        parts,
        at,
        state.config.gemini_cache_ttl_s,
        gemini_min_cache(state, model),
        miss,
    )
    thoughts = thinking_tokens(model, config, query.digest)
    limit = config.get("maxOutputTokens")
    text, visible, cut = clip(reply.text, thoughts, limit)
    usage = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": visible,
        "totalTokenCount": prompt + visible + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if cached:
        usage["cachedContentTokenCount"] = cached
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    state.ledger.bill("google", batch.id, str(key), model, usage, google_kinds(usage))
    content: dict = {"role": "model", "parts": [{"text": text}] if text else []}
    candidate = {"content": content, "finishReason": "MAX_TOKENS" if cut else "STOP", "index": 0}
    response = {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": new_id("resp-"),
    }
    return {**out, "response": response}


def thinking_tokens(model: str, config: dict, digest: bytes) -> int:
    """Gemini 2.5 Flash/Pro and later think by default; thinkingBudget 0 turns it off."""
    budget = normalized(config.get("thinkingConfig")).get("thinkingBudget")
    if not THINKING_RE.match(model) or budget == 0:
        return 0
    spent = 64 * (1 + pick(digest, "thinking", 4))
    return min(spent, budget) if isinstance(budget, int) and budget > 0 else spent


def clip(text: str, thoughts: int, limit: object) -> tuple[str, int, bool]:
    """Text cut to what fits in maxOutputTokens after thinking; (text, tokens, truncated)."""
    ids = tokens.encode(text)
    if not isinstance(limit, int):
        return text, len(ids), False
    room = max(0, limit - thoughts)
    if len(ids) <= room:
        return text, len(ids), False
    return tokens.encoding().decode(list(ids[:room])), room, True


def gemini_min_cache(state: SandboxState, model: str) -> int:
    """The smallest prompt implicit caching considers (docs' table; larger where versions of
    the table disagree), overridable per model with `gemini_min_cache_tokens`."""
    overrides = state.config.gemini_min_cache_tokens
    if model in overrides:
        return overrides[model]
    if model.startswith("gemini-2.5-flash"):
        return 2048
    return 4096


def google_kinds(usage: dict) -> dict[str, int]:
    """Token kinds of a usageMetadata: prompt includes cached; thoughts are billed as output."""
    cached = usage.get("cachedContentTokenCount", 0)
    thoughts = usage.get("thoughtsTokenCount", 0)
    return {
        "input": usage["promptTokenCount"] - cached,
        "cache_read": cached,
        "cache_write_5m": 0,
        "cache_write_1h": 0,
        "output": usage.get("candidatesTokenCount", 0) + thoughts,
        "reasoning": thoughts,
    }


def create_batch(
    state: SandboxState, model: str, display_name: str, file_id: str, data: bytes
) -> GeminiBatch:
    """Plan a job over the file's lines; a file that is not JSONL fails the job."""
    lines, failure = parse_lines(data)
    slow = state.faults.fire("slow", "google")
    expire = state.faults.fire("expire", "google")
    if state.faults.fire("invalid_batch", "google"):
        failure = "The batch input was rejected (injected by the sandbox)."
    timeline = Timeline.plan(
        state.now(),
        len(lines),
        state.config,
        slow.factor if slow else 1.0,
        expire.after if expire else None,
    )
    timeline.expires = timeline.created + EXPIRY_S
    batch = GeminiBatch(new_id("b"), model, display_name, file_id, lines, timeline, failure)
    state.ledger.submitted("google", [str(line.get("key")) for line in lines])
    state.gemini_batches[batch.id] = batch
    if failure is None:
        state.pending.append(batch)
    return batch
