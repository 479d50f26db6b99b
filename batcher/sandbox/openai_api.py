"""OpenAI routes: Files and Batches under /v1."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from batcher.sandbox.errors import ApiError
from batcher.sandbox.http import int_param, json_body, multipart, page_after
from batcher.sandbox.openai_batches import OpenAIBatch, create_batch
from batcher.sandbox.openai_results import ENDPOINTS
from batcher.sandbox.state import FileRecord, SandboxState

MAX_METADATA = 16


def file_json(record: FileRecord) -> dict:
    return {
        "id": record.id,
        "object": "file",
        "bytes": len(record.data),
        "created_at": int(record.created_at),
        "filename": record.filename,
        "purpose": record.purpose,
        "status": "processed",
        "expires_at": int(record.expires_at) if record.expires_at else None,
        "status_details": None,
    }


def _file(state: SandboxState, file_id: str) -> FileRecord:
    record = state.files.get(file_id)
    if record is None:
        raise ApiError(404, f"No such File object: {file_id}", param="id")
    return record


def _batch(state: SandboxState, batch_id: str) -> OpenAIBatch:
    batch = state.openai_batches.get(batch_id)
    if batch is None:
        raise ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id")
    return batch


async def upload_file(request: Request, state: SandboxState) -> Response:
    fields = await multipart(request)
    if "file" not in fields or "purpose" not in fields:
        raise ApiError(400, "Both 'file' and 'purpose' are required.", param="file")
    purpose = fields["purpose"].value.decode()
    upload = fields["file"]
    if purpose == "batch" and not (upload.filename or "").endswith(".jsonl"):
        raise ApiError(400, "Batch input files must be .jsonl files.", param="file")
    seconds = fields.get("expires_after[seconds]")
    expires = float(seconds.value) if seconds else None
    if expires is not None and not 3600 <= expires <= 2_592_000:
        raise ApiError(
            400,
            "expires_after[seconds] must be between 3600 and 2592000.",
            param="expires_after[seconds]",
        )
    record = state.store_file(upload.value, upload.filename or "upload.jsonl", purpose, expires)
    return JSONResponse(file_json(record))


async def list_files(request: Request, state: SandboxState) -> Response:
    limit = int_param(request, "limit", 10_000, 1, 10_000)
    purpose = request.query_params.get("purpose")
    with state.lock:
        records = [r for r in state.files.values() if not purpose or r.purpose == purpose]
    if request.query_params.get("order", "desc") == "desc":
        records.reverse()
    page, more = page_after(records, request.query_params.get("after"), limit)
    return JSONResponse(_list([file_json(r) for r in page], more))


async def get_file(request: Request, state: SandboxState) -> Response:
    return JSONResponse(file_json(_file(state, request.path_params["file_id"])))


async def file_content(request: Request, state: SandboxState) -> Response:
    record = _file(state, request.path_params["file_id"])
    return Response(record.data, media_type="application/octet-stream")


async def delete_file(request: Request, state: SandboxState) -> Response:
    record = _file(state, request.path_params["file_id"])
    with state.lock:
        state.files.pop(record.id, None)
    return JSONResponse({"id": record.id, "object": "file", "deleted": True})


def _check_create(body: dict) -> None:
    endpoint = body.get("endpoint")
    if endpoint not in ENDPOINTS:
        raise ApiError(
            400,
            f"Invalid endpoint {endpoint!r}; supported: {', '.join(ENDPOINTS)}.",
            param="endpoint",
            code="invalid_value",
        )
    if body.get("completion_window") != "24h":
        raise ApiError(
            400, "completion_window must be '24h'.", param="completion_window", code="invalid_value"
        )
    metadata = body.get("metadata")
    if metadata is None:
        return
    if (
        not isinstance(metadata, dict)
        or len(metadata) > MAX_METADATA
        or any(not isinstance(v, str) or len(k) > 64 or len(v) > 512 for k, v in metadata.items())
    ):
        raise ApiError(
            400,
            "metadata: at most 16 string pairs, keys <= 64 and values <= 512 characters.",
            param="metadata",
            code="invalid_value",
        )


async def create(request: Request, state: SandboxState) -> Response:
    body = await json_body(request)
    _check_create(body)
    record = _file(state, str(body.get("input_file_id")))
    if record.purpose != "batch":
        raise ApiError(
            400,
            f"File {record.id} has purpose {record.purpose!r}, not 'batch'.",
            param="input_file_id",
        )
    with state.lock:
        batch = create_batch(
            state, body["endpoint"], record.id, "24h", body.get("metadata"), record.data
        )
        payload = batch.to_json(state.now())
        lost = state.faults.fire("create_lost", "openai")
    if lost:
        raise ApiError(
            500,
            "The server had an error while processing your request "
            "(the batch was created; injected by the sandbox).",
        )
    return JSONResponse(payload)


async def retrieve(request: Request, state: SandboxState) -> Response:
    now = state.tick()
    with state.lock:
        return JSONResponse(_batch(state, request.path_params["batch_id"]).to_json(now))


async def cancel(request: Request, state: SandboxState) -> Response:
    now = state.tick()
    with state.lock:
        batch = _batch(state, request.path_params["batch_id"])
        status = batch.timeline.openai_status(now, bool(batch.errors))
        if status in ("validating", "in_progress") and not batch.materialized:
            batch.timeline.cancel_requested = now
        elif status not in ("cancelling", "cancelled"):
            raise ApiError(
                400, f"Cannot cancel a batch with status '{status}'.", code="batch_not_cancellable"
            )
        return JSONResponse(batch.to_json(now))


async def list_batches(request: Request, state: SandboxState) -> Response:
    limit = int_param(request, "limit", 20, 1, 100)
    now = state.tick()
    with state.lock:
        batches = list(reversed(state.openai_batches.values()))
        page, more = page_after(batches, request.query_params.get("after"), limit)
        return JSONResponse(_list([b.to_json(now) for b in page], more))


def _list(data: list[dict], more: bool) -> dict:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }


ROUTES = [
    ("POST", "/v1/files", "files", upload_file),
    ("GET", "/v1/files", "files", list_files),
    ("GET", "/v1/files/{file_id}", "files", get_file),
    ("DELETE", "/v1/files/{file_id}", "files", delete_file),
    ("GET", "/v1/files/{file_id}/content", "results", file_content),
    ("POST", "/v1/batches", "create", create),
    ("GET", "/v1/batches", "list", list_batches),
    ("GET", "/v1/batches/{batch_id}", "retrieve", retrieve),
    ("POST", "/v1/batches/{batch_id}/cancel", "cancel", cancel),
]
