"""HTTP errors in each provider's envelope."""

from __future__ import annotations

import math
import uuid

from starlette.responses import JSONResponse

ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(Exception):
    """An HTTP error a route answers with; rendered in the calling provider's envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}
        self.retry_after = retry_after


def request_id(prefix: str = "req_") -> str:
    return prefix + uuid.uuid4().hex[:24]


def error_response(provider: str, err: ApiError) -> JSONResponse:
    rid = request_id()
    headers = dict(err.headers)
    if provider == "google":
        return JSONResponse(google_error(err), status_code=err.status, headers=headers)
    if provider == "anthropic":
        kind = ANTHROPIC_TYPES.get(err.status, "api_error")
        body = {"type": "error", "error": {"type": kind, "message": err.message}, "request_id": rid}
        headers["request-id"] = rid
    else:
        kind = OPENAI_TYPES.get(err.status, "server_error")
        body = {
            "error": {"message": err.message, "type": kind, "param": err.param, "code": err.code}
        }
        headers["x-request-id"] = rid
    return JSONResponse(body, status_code=err.status, headers=headers)


GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def google_error(err: ApiError) -> dict:
    """Google's error envelope; a 429 says how long to wait in a RetryInfo detail."""
    error: dict = {
        "code": err.status,
        "message": err.message,
        "status": GOOGLE_STATUS.get(err.status, "UNKNOWN"),
    }
    if err.retry_after is not None:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{err.retry_after:g}s",
            }
        ]
    return {"error": error}


def retry_headers(seconds: float) -> dict[str, str]:
    return {
        "retry-after": str(max(1, math.ceil(seconds))) if seconds >= 1 else f"{seconds:g}",
        "retry-after-ms": str(int(seconds * 1000)),
    }
