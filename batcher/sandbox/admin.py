"""Admin routes under /_sandbox: config and faults, clock, reset, stats, billing listing."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from batcher.sandbox.errors import ApiError
from batcher.sandbox.faults import FaultSpecError
from batcher.sandbox.http import json_body
from batcher.sandbox.state import SandboxState


def wrap(handler, state: SandboxState):
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request, state)
        except (ApiError, FaultSpecError, ValueError, TypeError) as err:
            status = err.status if isinstance(err, ApiError) else 400
            return JSONResponse({"error": str(err)}, status_code=status)

    return endpoint


async def get_config(request: Request, state: SandboxState) -> Response:
    return JSONResponse(state.describe())


async def post_config(request: Request, state: SandboxState) -> Response:
    """Body: {"faults": SPEC} replaces faults, {"add_faults": SPEC} adds, {"clear_faults": true}
    clears; any SandboxConfig field (speed, malformed, replay, model_map, limits) is set."""
    return JSONResponse(state.configure(await json_body(request)))


async def post_clock(request: Request, state: SandboxState) -> Response:
    """Body: {"advance": SECONDS}. Moves the sandbox clock forward; answers {"now": T}."""
    body = await json_body(request)
    now = state.clock.advance(float(body.get("advance", 0)))
    state.tick()
    return JSONResponse({"now": now})


async def post_reset(request: Request, state: SandboxState) -> Response:
    state.reset()
    return JSONResponse({"reset": True})


async def get_stats(request: Request, state: SandboxState) -> Response:
    state.tick()
    with state.lock:
        return JSONResponse(state.ledger.stats())


async def get_billed(request: Request, state: SandboxState) -> Response:
    """Per-request billing rows; filter with ?provider=&batch_id=&custom_id=."""
    state.tick()
    filters = {
        k: v
        for k, v in request.query_params.items()
        if k in ("provider", "batch_id", "custom_id", "model")
    }
    with state.lock:
        rows = [r for r in state.ledger.billed if all(r[k] == v for k, v in filters.items())]
    return JSONResponse({"data": rows, "count": len(rows)})


ROUTES = [
    ("GET", "/_sandbox/config", get_config),
    ("POST", "/_sandbox/config", post_config),
    ("POST", "/_sandbox/clock", post_clock),
    ("POST", "/_sandbox/reset", post_reset),
    ("GET", "/_sandbox/stats", get_stats),
    ("GET", "/_sandbox/billed", get_billed),
]
