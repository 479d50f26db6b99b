"""Anthropic routes: Message Batches under /v1/messages/batches."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from batcher.sandbox.anthropic_batches import AnthropicBatch, create_batch, validate_create
from batcher.sandbox.errors import ApiError
from batcher.sandbox.http import int_param, json_body, page_after, page_before
from batcher.sandbox.state import SandboxState


def base_url(request: Request) -> str:
    """This server's own origin, so the SDK follows results_url back here."""
    return f"{request.url.scheme}://{request.url.netloc}"


def _batch(state: SandboxState, batch_id: str) -> AnthropicBatch:
    batch = state.anthropic_batches.get(batch_id)
    if batch is None:
        raise ApiError(404, f"Message batch {batch_id!r} not found.")
    return batch


async def create(request: Request, state: SandboxState) -> Response:
    size = int(request.headers.get("content-length") or 0)
    if size > state.config.anthropic_max_bytes:
        raise ApiError(
            413,
            f"Request exceeds the maximum allowed size of "
            f"{state.config.anthropic_max_bytes} bytes.",
        )
    body = await json_body(request)
    requests = validate_create(body, len(await request.body()), state.config)
    with state.lock:
        batch = create_batch(state, requests)
        payload = batch.to_json(state.now(), base_url(request))
        lost = state.faults.fire("create_lost", "anthropic")
    if lost:
        raise ApiError(
            500, "Internal server error (the batch was created; injected by the sandbox)."
        )
    return JSONResponse(payload)


async def retrieve(request: Request, state: SandboxState) -> Response:
    now = state.tick()
    with state.lock:
        batch = _batch(state, request.path_params["batch_id"])
        return JSONResponse(batch.to_json(now, base_url(request)))


async def cancel(request: Request, state: SandboxState) -> Response:
    now = state.tick()
    with state.lock:
        batch = _batch(state, request.path_params["batch_id"])
        status = batch.timeline.anthropic_status(now)
        if status == "ended":
            raise ApiError(
                400, f"Message batch {batch.id} has already ended and cannot be canceled."
            )
        if status == "in_progress":
            batch.timeline.cancel_requested = now
        return JSONResponse(batch.to_json(now, base_url(request)))


async def delete(request: Request, state: SandboxState) -> Response:
    now = state.tick()
    with state.lock:
        batch = _batch(state, request.path_params["batch_id"])
        if batch.timeline.anthropic_status(now) != "ended":
            raise ApiError(
                400,
                f"Message batch {batch.id} is still processing; cancel it and "
                "wait for it to end before deleting it.",
            )
        del state.anthropic_batches[batch.id]
    return JSONResponse({"id": batch.id, "type": "message_batch_deleted"})


async def results(request: Request, state: SandboxState) -> Response:
    now = state.tick()
    with state.lock:
        batch = _batch(state, request.path_params["batch_id"])
        if batch.timeline.anthropic_status(now) != "ended":
            raise ApiError(
                400, f"Message batch {batch.id} has not ended; results are not available yet."
            )
        data = batch.results
    return Response(data, media_type="application/binary")


async def list_batches(request: Request, state: SandboxState) -> Response:
    limit = int_param(request, "limit", 20, 1, 1000)
    now = state.tick()
    with state.lock:
        batches = list(reversed(state.anthropic_batches.values()))  # newest first
        before = request.query_params.get("before_id")
        if before:
            page, more = page_before(batches, before, limit)
        else:
            page, more = page_after(batches, request.query_params.get("after_id"), limit)
        data = [b.to_json(now, base_url(request)) for b in page]
    return JSONResponse(
        {
            "data": data,
            "has_more": more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


ROUTES = [
    ("POST", "/v1/messages/batches", "create", create),
    ("GET", "/v1/messages/batches", "list", list_batches),
    ("GET", "/v1/messages/batches/{batch_id}", "retrieve", retrieve),
    ("POST", "/v1/messages/batches/{batch_id}/cancel", "cancel", cancel),
    ("DELETE", "/v1/messages/batches/{batch_id}", "delete", delete),
    ("GET", "/v1/messages/batches/{batch_id}/results", "results", results),
]
