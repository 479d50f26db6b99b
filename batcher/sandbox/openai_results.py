"""One OpenAI batch request -> one output or error line, with realistic usage."""

from __future__ import annotations

import hashlib
import itertools
import math
import os

from batcher.plan import tokens
from batcher.sandbox.caching import ColdStart, cold_start, openai_cached_tokens
from batcher.sandbox.ledger import openai_kinds
from batcher.sandbox.limits import context_window
from batcher.sandbox.prompts import (
    REPLY_PRIMING,
    Part,
    chain,
    openai_parts,
    part_count,
    text_count,
    text_tokens,
)
from batcher.sandbox.responders import (
    REASONING_RE,
    Query,
    Reply,
    is_reasoning,
    openai_query,
    reasoning_tokens,
)

CHAT, RESPONSES, EMBEDDINGS, COMPLETIONS = (
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/completions",
)
ENDPOINTS = (CHAT, RESPONSES, EMBEDDINGS, COMPLETIONS)


_serial = itertools.count(1)
_RUN = os.urandom(4).hex()


def _rid(prefix: str) -> str:
    # a counter, not uuid4: 30,000 ids per 10,000-request batch must be cheap
    return f"{prefix}{_RUN}{next(_serial):016x}"


def success_line(custom_id: str, body: dict) -> dict:
    return {
        "id": _rid("batch_req_"),
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": _rid("req_"), "body": body},
        "error": None,
    }


def http_error_line(
    custom_id: str,
    status: int,
    message: str,
    kind: str,
    code: str | None = None,
    param: str | None = None,
) -> dict:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return {
        "id": _rid("batch_req_"),
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": _rid("req_"), "body": body},
        "error": None,
    }


def batch_error_line(custom_id: str, code: str, message: str) -> dict:
    return {
        "id": _rid("batch_req_"),
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }


def run_request(
    state, batch, line: dict, at: float, provider: str = "openai"
) -> tuple[dict, dict | None]:
    """The result line of one request processed at sandbox time `at`, and its usage if billed.

    `provider` names whose faults and prompt cache apply (xAI and DeepSeek serve this format
    too, each with a cache of its own)."""
    body, custom_id = line["body"], line["custom_id"]
    model = str(body.get("model", ""))
    missing = _missing_input(batch.endpoint, body)
    if missing:
        return http_error_line(
            custom_id,
            400,
            f"Missing required parameter: '{missing}'.",
            "invalid_request_error",
            "missing_required_parameter",
        ), None
    refused = param_refusal(body, batch.endpoint)
    if refused:
        message, code, param = refused
        return http_error_line(custom_id, 400, message, "invalid_request_error", code, param), None
    parts = openai_parts(body, batch.endpoint)  # once, for the context check and the cache
    refusal = _refusal(state, batch.endpoint, body, model, parts, provider)
    if refusal is not None:
        return http_error_line(custom_id, 400, *refusal), None
    if state.faults.fire("request_error", provider, model=model, key=(batch.id, custom_id)):
        return http_error_line(
            custom_id,
            500,
            "The server had an error while processing your request (injected by the sandbox).",
            "server_error",
        ), None
    if batch.endpoint == EMBEDDINGS:
        result = _embedding(body, model)
    else:
        query = openai_query(body, batch.endpoint)
        reply = state.responder.answer(query)
        if reply.text is None:
            return http_error_line(
                custom_id,
                400,
                reply.error_message or "error",
                reply.error_type or "invalid_request_error",
                "sandbox_no_answer",
            ), None
        timeline = getattr(batch, "timeline", None)  # direct mode: one request at a time
        cold = cold_start(state, batch.id, provider, timeline.created) if timeline else None
        result = _completion(state, batch.endpoint, body, parts, query, reply, at, provider, cold)
    return success_line(custom_id, result), result["usage"]


def _refusal(
    state, endpoint: str, body: dict, model: str, parts: tuple[Part, ...], provider: str = "openai"
) -> tuple[str, str, str, str] | None:
    """(message, type, code, param) of a request the real endpoint refuses with a 400 line:
    `max_tokens` on a reasoning model, or prompt plus completion cap over the context."""
    if endpoint != CHAT:
        return None
    if "max_tokens" in body and REASONING_RE.match(model):
        return (
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "invalid_request_error",
            "unsupported_parameter",
            "max_tokens",
        )
    window = context_window(state.config, provider, model)
    if window is None:
        return None
    # The chain's length is the prompt's token count. The chain is memoized by the parts, so
    # the cache accounting that follows finds it instead of tokenizing the prompt again.
    prompt = chain(parts).length + REPLY_PRIMING
    completion = _limit(body) or 0
    if prompt + completion <= window:
        return None
    return (
        f"This model's maximum context length is {window} tokens. However, you requested "
        f"{prompt + completion} tokens ({prompt} in the messages, {completion} in the "
        "completion). Please reduce the length of the messages or completion.",
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
    )


def param_refusal(body: dict, endpoint: str) -> tuple[str, str, str] | None:
    """(message, code, param) of a 400 the service gives this body, or None.

    Reasoning models (gpt-5, o-series) take temperature and top_p only at their default,
    refuse stop; other models refuse reasoning_effort; strict Structured
    Outputs refuse a schema with optional properties or open objects."""
    if endpoint not in (CHAT, RESPONSES):
        return None
    model = str(body.get("model", ""))
    if is_reasoning(model):
        for name in ("temperature", "top_p"):
            value = body.get(name)
            if value is not None and value != 1:
                return (
                    f"Unsupported value: '{name}' does not support {value} with this model. "
                    "Only the default (1) value is supported.",
                    "unsupported_value",
                    name,
                )
        if body.get("stop") is not None:  # (max_tokens: see _refusal)
            return (
                "Unsupported parameter: 'stop' is not supported with this model.",
                "unsupported_parameter",
                "stop",
            )
    elif body.get("reasoning_effort") is not None:
        return (
            "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
            "unsupported_parameter",
            "reasoning_effort",
        )
    fmt = body.get("response_format") or {}
    spec = fmt.get("json_schema") or {}
    if fmt.get("type") == "json_schema" and spec.get("strict") is True:
        problem = strict_schema_problem(spec.get("schema") or {}, ())
        if problem:
            return (
                f"Invalid schema for response_format '{spec.get('name')}': {problem}",
                "invalid_json_schema",
                "response_format",
            )
    return None


def strict_schema_problem(schema: object, context: tuple[str, ...]) -> str | None:
    """What strict mode refuses in `schema`: an object without additionalProperties false,
    or with properties missing from required."""
    if not isinstance(schema, dict):
        return None
    where = f"In context=({', '.join(repr(c) for c in context)})"
    props = schema.get("properties")
    if schema.get("type") == "object" or props is not None:
        if schema.get("additionalProperties") is not False:
            return f"{where}, 'additionalProperties' is required to be supplied and to be false."
        missing = [name for name in props or {} if name not in (schema.get("required") or [])]
        if missing:
            return (
                f"{where}, 'required' is required to be supplied and to be an array including "
                f"every key in properties. Missing '{missing[0]}'."
            )
    subs = [((*context, "properties", k), v) for k, v in (props or {}).items()]
    subs += [((*context, "$defs", k), v) for k, v in (schema.get("$defs") or {}).items()]
    if isinstance(schema.get("items"), dict):
        subs.append(((*context, "items"), schema["items"]))
    for key in ("anyOf", "oneOf", "allOf"):
        subs += [((*context, key, str(i)), v) for i, v in enumerate(schema.get(key) or [])]
    for sub_context, sub in subs:
        problem = strict_schema_problem(sub, sub_context)
        if problem:
            return problem
    return None


def _missing_input(endpoint: str, body: dict) -> str | None:
    field = {CHAT: "messages", RESPONSES: "input", EMBEDDINGS: "input", COMPLETIONS: "prompt"}[
        endpoint
    ]
    return None if body.get(field) else field


def _limit(body: dict) -> int | None:
    for key in ("max_completion_tokens", "max_output_tokens", "max_tokens"):
        if isinstance(body.get(key), int):
            return body[key]
    return None


def _clip(
    text: str, reasoning: int, limit: int | None, visible: int | None = None
) -> tuple[str, int, bool]:
    """Text cut to what fits in `limit` after reasoning; (text, visible tokens, truncated).
    `visible` is the text's token count when the responder knows it."""
    visible = text_count(text) if visible is None else visible
    if limit is None or visible + reasoning <= limit:
        return text, visible, False
    room = max(0, limit - reasoning)
    ids = text_tokens(text)[:room]
    return tokens.encoding().decode(list(ids)), len(ids), True


def _completion(
    state,
    endpoint: str,
    body: dict,
    parts: tuple[Part, ...],
    query: Query,
    reply: Reply,
    at: float,
    provider: str,
    cold: ColdStart | None = None,
) -> dict:
    model = query.model
    ttl = state.config.openai_cache_ttl_s
    if body.get("prompt_cache_retention") == "24h":
        ttl = 86400.0
    miss = state.faults.fire("cache_miss", provider, model=model) is not None
    prompt, cached = openai_cached_tokens(
        state.prompt_cache(provider), model, body.get("prompt_cache_key"), parts, at, ttl, miss,
        cold,
    )  # fmt: skip
    prompt += REPLY_PRIMING if endpoint == CHAT else 0
    limit = _limit(body)
    # Reasoning counts against max_completion_tokens: it can use the whole cap (then the
    # content is empty and finish_reason is length), never more.
    reasoning = reasoning_tokens(query, state.config.reasoning_tokens)
    reasoning = min(reasoning, limit) if limit is not None else reasoning
    text, visible, cut = _clip(reply.text or "", reasoning, limit, reply.tokens)
    out = visible + reasoning
    created = int(at)
    if endpoint == RESPONSES:
        usage = {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + out,
        }
        return _response_body(model, text, usage, created, cut)
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": out,
        "total_tokens": prompt + out,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    finish = "length" if cut else "stop"
    if endpoint == COMPLETIONS:
        return {
            "id": _rid("cmpl-"),
            "object": "text_completion",
            "created": created,
            "model": model,
            "usage": usage,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
        }
    return {
        "id": _rid("chatcmpl-"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_sandbox",
        "usage": usage,
        "choices": [
            {
                "index": 0,
                "finish_reason": finish,
                "logprobs": None,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "refusal": None,
                    "annotations": [],
                },
            }
        ],
    }


def _response_body(model: str, text: str, usage: dict, created: int, cut: bool) -> dict:
    message = {
        "type": "message",
        "id": _rid("msg_"),
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    return {
        "id": _rid("resp_"),
        "object": "response",
        "created_at": created,
        "status": "incomplete" if cut else "completed",
        "model": model,
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "output": [message],
        "usage": usage,
        "error": None,
    }


def _embedding(body: dict, model: str) -> dict:
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    dims = int(body.get("dimensions") or 256)
    data, prompt = [], 0
    for index, item in enumerate(inputs):
        text = item if isinstance(item, str) else str(item)
        prompt += part_count(text)
        seed = hashlib.blake2b(f"{model}\n{text}".encode(), digest_size=32).digest()
        raw = [math.sin(seed[i % 32] + i) for i in range(dims)]
        norm = math.sqrt(sum(v * v for v in raw)) or 1.0
        data.append({"object": "embedding", "index": index, "embedding": [v / norm for v in raw]})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }


def kinds_of(usage: dict) -> dict[str, int]:
    return openai_kinds(usage)
