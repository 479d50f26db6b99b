"""Anthropic message batches: create-time validation, the batch object, and results."""

from __future__ import annotations

import json
import random
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from batcher.plan import tokens
from batcher.sandbox.caching import CacheControlError, ColdStart, anthropic_usage, cold_start
from batcher.sandbox.errors import ApiError
from batcher.sandbox.jsonl import jsonl
from batcher.sandbox.ledger import anthropic_kinds
from batcher.sandbox.lifecycle import Timeline
from batcher.sandbox.limits import context_window
from batcher.sandbox.prompts import (
    anthropic_parts,
    count,
    shared_texts,
    text_count,
    text_tokens,
)
from batcher.sandbox.responders import anthropic_query, forced_tool
from batcher.sandbox.state import SandboxState, new_id

CUSTOM_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# Top-level Messages fields the service takes (API reference, Create a Message); any other
# is refused: "<field>: Extra inputs are not permitted".
PARAM_FIELDS = frozenset(
    "model messages max_tokens system metadata stop_sequences stream temperature top_p top_k "
    "tools tool_choice thinking service_tier container mcp_servers output_config "
    "output_format context_management inference_geo cache_control".split()
)
# Models after Opus 4.6 refuse the sampling parameters (users' reports of the 400).
NO_SAMPLING_RE = re.compile(r"claude-(opus-4-[7-9]|(opus|sonnet|haiku)-[5-9])")
OUTCOMES = ("succeeded", "errored", "canceled", "expired")


def rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def validate_create(body: dict, size: int, cfg) -> list[dict]:
    """The batch's requests, or ApiError 400/413 as the service answers at create time."""
    if size > cfg.anthropic_max_bytes:
        raise ApiError(
            413, f"Request exceeds the maximum allowed size of {cfg.anthropic_max_bytes} bytes."
        )
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise ApiError(400, "requests: List should have at least 1 item after validation")
    if len(requests) > cfg.anthropic_max_requests:
        raise ApiError(
            400,
            f"requests: List should have at most {cfg.anthropic_max_requests} "
            f"items after validation, not {len(requests)}",
        )
    seen: set[str] = set()
    for index, item in enumerate(requests):
        _check_request(item, index, seen)
    return requests


def _check_request(item: object, index: int, seen: set[str]) -> None:
    where = f"requests.{index}"
    if not isinstance(item, dict):
        raise ApiError(400, f"{where}: Input should be a valid dictionary")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not CUSTOM_ID_RE.match(custom_id):
        raise ApiError(
            400,
            f"{where}.custom_id: String should match pattern "
            f"'^[a-zA-Z0-9_-]{{1,64}}$' (got {custom_id!r})",
        )
    if custom_id in seen:
        raise ApiError(
            400,
            f"{where}.custom_id: Duplicate custom_id {custom_id!r}; custom_id "
            "must be unique within a batch.",
        )
    seen.add(custom_id)
    params = item.get("params")
    if not isinstance(params, dict):
        raise ApiError(400, f"{where}.params: Field required")
    if not isinstance(params.get("model"), str) or not params["model"]:
        raise ApiError(400, f"{where}.params.model: Field required")
    max_tokens = params.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise ApiError(
            400,
            f"{where}.params.max_tokens: Input should be greater than or equal "
            f"to 1 (got {max_tokens!r})",
        )
    if not isinstance(params.get("messages"), list) or not params["messages"]:
        raise ApiError(400, f"{where}.params.messages: Field required")
    if params.get("stream"):
        raise ApiError(400, f"{where}.params.stream: Streaming is not supported in batches.")


@dataclass
class AnthropicBatch:
    id: str
    requests: list[dict]
    timeline: Timeline
    results: bytes = b""
    counts: dict = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    materialized: bool = False

    def due(self, now: float) -> bool:
        return not self.materialized and now >= self.timeline.cutoff()

    def materialize(self, state: SandboxState) -> None:
        total = len(self.requests)
        finished = self.timeline.finished_count(total)
        rest = "expired" if self.timeline.outcome() == "expired" else "canceled"
        lines = []
        for index, item in enumerate(self.requests):
            if index < finished:
                at = self.timeline.finish_time(index, total)
                cold = cold_start(state, self.id, "anthropic", self.timeline.created)
                result = run_request(state, self.id, item, at, cold)
            else:
                result = {"type": rest}
            self.counts[result["type"]] += 1
            lines.append({"custom_id": item["custom_id"], "result": result})
        random.Random(self.id).shuffle(lines)  # results come in no particular order
        self.results = jsonl(lines, _echoes_request)
        self.materialized = True

    def to_json(self, now: float, base_url: str) -> dict:
        t = self.timeline
        status = t.anthropic_status(now)
        ended = status == "ended"
        counts = dict(self.counts) if ended else dict.fromkeys(OUTCOMES, 0)
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": {"processing": 0 if ended else len(self.requests), **counts},
            "created_at": rfc3339(t.created),
            "expires_at": rfc3339(t.expires),
            "ended_at": rfc3339(t.ended()) if ended else None,
            "cancel_initiated_at": rfc3339(t.cancel_requested),
            "archived_at": None,
            "results_url": f"{base_url}/v1/messages/batches/{self.id}/results" if ended else None,
        }


def _echoes_request(line: dict) -> bool:
    """Whether a result line holds values taken from its request: a forced tool's input
    is a schema instance, whose enum and const values come from the request."""
    content = line["result"].get("message", {}).get("content") or [{}]
    return content[0].get("type") == "tool_use"


def _errored(kind: str, message: str) -> dict:
    return {
        "type": "errored",
        "error": {"type": "error", "error": {"type": kind, "message": message}},
    }


def run_request(
    state: SandboxState, batch_id: str, item: dict, at: float, cold: ColdStart | None = None
) -> dict:
    """The result of one request processed at sandbox time `at`; bills it if it succeeded."""
    params, custom_id = item["params"], item["custom_id"]
    model = params["model"]
    refused = refusal(params)
    if refused:
        return _errored("invalid_request_error", refused)
    if state.faults.fire("request_error", "anthropic", model=model, key=(batch_id, custom_id)):
        return _errored("api_error", "Internal server error (injected by the sandbox).")
    parts, marks = anthropic_parts(params)
    window = context_window(state.config, "anthropic", model)
    if window is not None and count(parts) > window:  # before any cache entry is written
        message = f"prompt is too long: {count(parts)} tokens > {window} maximum"
        return _errored("invalid_request_error", message)
    miss = state.faults.fire("cache_miss", "anthropic", model=model) is not None
    try:
        cache = anthropic_usage(
            state.anthropic_cache, model, parts, marks, at, miss, cold,
            state.config.anthropic_min_cache_tokens,
        )  # fmt: skip
    except CacheControlError as exc:
        return _errored("invalid_request_error", str(exc))
    reply = state.responder.answer(anthropic_query(params))
    if reply.text is None:
        return _errored(reply.error_type or "invalid_request_error", reply.error_message or "")
    text, out, cut = _clip(reply.text, params["max_tokens"], reply.tokens)
    content, stop = [{"type": "text", "text": text}], "max_tokens" if cut else "end_turn"
    tool = forced_tool(params)
    if tool is not None and not cut:  # the forced tool's input is the answer
        content, stop = [_tool_use(tool["name"], text)], "tool_use"
    usage = {
        "input_tokens": cache.input_tokens,
        "output_tokens": out,
        "cache_creation_input_tokens": cache.write_5m + cache.write_1h,
        "cache_read_input_tokens": cache.read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache.write_5m,
            "ephemeral_1h_input_tokens": cache.write_1h,
        },
        "service_tier": "batch",
    }
    state.ledger.bill("anthropic", batch_id, custom_id, model, usage, anthropic_kinds(usage))
    message = {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }
    return {"type": "succeeded", "message": message}


def refusal(params: dict) -> str | None:
    """The message of the 400 the service gives these params, or None."""
    unknown = sorted(set(params) - PARAM_FIELDS)
    if unknown:
        return f"{unknown[0]}: Extra inputs are not permitted"
    if NO_SAMPLING_RE.search(str(params["model"])):
        for name in ("temperature", "top_p", "top_k"):
            if name in params:
                return f"`{name}` is deprecated for this model."
    return None


def _tool_use(name: str, text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        value = {}  # the service parses tool input: a broken answer loses its fields instead
    return {"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:24], "name": name,
            "input": value if isinstance(value, dict) else {}}  # fmt: skip


def _clip(text: str, limit: int, known: int | None = None) -> tuple[str, int, bool]:
    """Text cut to `limit` tokens; (text, tokens, truncated). `known` is the text's token
    count when the responder knows it: a text that fits is then not tokenized."""
    count = text_count(text) if known is None else known
    if count <= limit:
        return text, count, False
    ids = text_tokens(text)
    return tokens.encoding().decode(list(ids[:limit])), limit, True


def create_batch(state: SandboxState, requests: list[dict]) -> AnthropicBatch:
    if state.faults.fire("invalid_batch", "anthropic"):
        raise ApiError(400, "requests: the batch was rejected (injected by the sandbox).")
    slow = state.faults.fire("slow", "anthropic")
    expire = state.faults.fire("expire", "anthropic")
    timeline = Timeline.plan(
        state.now(),
        len(requests),
        state.config,
        slow.factor if slow else 1.0,
        expire.after if expire else None,
    )
    for item in requests:  # one str object for each long text requests repeat
        params = item["params"]
        if "system" in params:
            params["system"] = shared_texts.share_blocks(params["system"])
        shared_texts.share_messages(params.get("messages"))
    # Anthropic has no separate validating/finalizing status: both count as in_progress.
    batch = AnthropicBatch(new_id("msgbatch_"), requests, timeline)
    state.ledger.submitted("anthropic", [r["custom_id"] for r in requests])
    state.anthropic_batches[batch.id] = batch
    state.pending.append(batch)
    return batch
