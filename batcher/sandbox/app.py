"""The ASGI app: both providers' routes behind auth and HTTP fault injection, plus admin."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batcher.sandbox import admin, anthropic_api, chat_api, gemini_api, openai_api, xai_api
from batcher.sandbox.errors import ApiError, error_response, retry_headers
from batcher.sandbox.state import SandboxState

Handler = Callable[[Request, SandboxState], Awaitable[Response]]
HTTP_FAULTS = (("http429", 429), ("http500", 500), ("http529", 529), ("http404", 404))
NOT_FOUND_ROUTES = frozenset({"retrieve", "results"})  # where http404 fires without route=


def _check_auth(provider: str, request: Request, state: SandboxState) -> None:
    if not state.config.require_auth:
        return
    if provider == "google":
        # The Gemini API takes its key as x-goog-api-key (or ?key=); an upload session URL
        # carries its own authority (the SDK sends no key with the chunks).
        if "upload_id" in request.query_params:
            return
        if not (request.headers.get("x-goog-api-key") or request.query_params.get("key")):
            raise ApiError(
                403,
                "Method doesn't allow unregistered callers (callers without "
                "established identity). Please use API Key or other form of API "
                "consumer identity to call this API.",
            )
        return
    bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    key = bearer or (request.headers.get("x-api-key", "") if provider == "anthropic" else "")
    if not key:
        raise ApiError(
            401,
            "Missing API key: send 'Authorization: Bearer <key>'"
            + (" or 'x-api-key'." if provider == "anthropic" else "."),
        )


def _http_fault(state: SandboxState, provider: str, route: str) -> None:
    for kind, status in HTTP_FAULTS:
        if kind == "http404" and route not in NOT_FOUND_ROUTES and not _routed(state, kind):
            continue
        fault = state.faults.fire(kind, provider, route=route)
        if fault is None:
            continue
        headers = retry_headers(fault.retry_after) if status == 429 else {}
        if provider == "google":
            headers = {}  # Google says how long to wait in the error's RetryInfo, not headers
        message = {
            429: "Rate limit reached (injected by the sandbox).",
            500: "The server had an error (injected by the sandbox).",
            529: "Overloaded (injected by the sandbox).",
            404: "Not found (injected by the sandbox).",
        }[status]
        raise ApiError(
            status,
            message,
            headers=headers,
            code="rate_limit_exceeded" if status == 429 else None,
            retry_after=fault.retry_after if status == 429 else None,
        )


def _routed(state: SandboxState, kind: str) -> bool:
    """True when a live fault of `kind` names its routes (then they decide, not the default)."""
    return any(f.kind == kind and f.routes for f in state.faults.faults)


def _forget(state: SandboxState, provider: str, route: str, request: Request) -> None:
    """The `forget` fault: the batch this retrieve asks about is dropped before it is served."""
    if route != "retrieve" or not state.faults.fire("forget", provider, route=route):
        return
    params = request.path_params
    state.forget_batch(provider, params.get("batch_id") or params.get("rest", ""))


def _route_of(route: str, request: Request) -> str:
    """A Gemini upload session's chunks share the start's path; faults tell them apart."""
    return "upload" if "upload_id" in request.query_params else route


def wrap(provider: str, route: str, handler: Handler, state: SandboxState):
    async def endpoint(request: Request) -> Response:
        try:
            _check_auth(provider, request, state)
            _http_fault(state, provider, _route_of(route, request))
            _forget(state, provider, route, request)
            return await handler(request, state)
        except ApiError as err:
            return error_response(provider, err)

    return endpoint


def build_app(state: SandboxState) -> Starlette:
    """The sandbox's ASGI app over `state`."""
    routes = []
    tables = (
        ("openai", openai_api.ROUTES),
        ("anthropic", anthropic_api.ROUTES),
        ("google", gemini_api.ROUTES),
        ("xai", xai_api.ROUTES),
        *chat_api.ROUTES.items(),
    )
    for provider, table in tables:
        for method, path, route, handler in table:
            routes.append(Route(path, wrap(provider, route, handler, state), methods=[method]))
    for method, path, handler in admin.ROUTES:
        routes.append(Route(path, admin.wrap(handler, state), methods=[method]))
    return Starlette(routes=routes)
