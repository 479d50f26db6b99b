"""Gemini API routes: Files (resumable upload, get, download, delete) and batch mode.

Paths as the google-genai SDK sends them (below PREFIX), under either API version (`v1beta`
in the docs, `v1` the SDK's default):

- `POST /upload/{v}/files` starts an upload and answers the session URL in
  `x-goog-upload-url`; chunks are POSTed there with `X-Goog-Upload-Command: upload` (plus
  `finalize` on the last one);
- `POST /{v}/models/{model}:batchGenerateContent` creates a job;
- `GET /{v}/batches[/{id}]`, `POST /{v}/batches/{id}:cancel`, `DELETE /{v}/batches/{id}`;
- `GET /{v}/files/{id}:download?alt=media` reads a responses file.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from batcher.sandbox.errors import ApiError
from batcher.sandbox.gemini_batches import GeminiBatch, GeminiFile, create_batch, store_file
from batcher.sandbox.http import int_param, json_body
from batcher.sandbox.state import SandboxState

# Under /gemini, so that its /v1/batches and /v1/files do not meet OpenAI's: the SDK's
# base URL is then http://127.0.0.1:PORT/gemini.
PREFIX = "/gemini"
VERSIONS = ("v1", "v1beta")
MAX_FILE_BYTES = 2 * 1024**3  # "The maximum allowed file size for an input file is 2GB."


@dataclass
class Upload:
    """A resumable upload session: what was declared at start, what has arrived."""

    size: int
    mime_type: str
    display_name: str
    data: bytearray


def _version(request: Request) -> None:
    if request.path_params["version"] not in VERSIONS:
        raise ApiError(404, f"API version {request.path_params['version']!r} not found.")


def _split(rest: str, verb: str | None) -> str:
    """'ID:verb' -> 'ID'; ApiError 404 when the verb is not the one routed here."""
    name, _, found = rest.partition(":")
    if (found or None) != verb:
        raise ApiError(404, f"Method {found or 'GET'!r} not found for {rest!r}.")
    return name


def _file(state: SandboxState, file_id: str) -> GeminiFile:
    record = state.gemini_files.get(file_id)
    if record is None:
        raise ApiError(404, f"File files/{file_id} was not found.")
    return record


def _batch(state: SandboxState, batch_id: str) -> GeminiBatch:
    batch = state.gemini_batches.get(batch_id)
    if batch is None:
        raise ApiError(404, f"Batch batches/{batch_id} was not found.")
    return batch


async def upload(request: Request, state: SandboxState) -> Response:
    """Both steps of the resumable protocol: start (no upload_id) and the chunks."""
    _version(request)
    session = request.query_params.get("upload_id")
    if session is None:
        return await _start_upload(request, state)
    return await _upload_chunk(request, state, session)


async def _start_upload(request: Request, state: SandboxState) -> Response:
    headers = request.headers
    if headers.get("x-goog-upload-protocol") != "resumable" or (
        headers.get("x-goog-upload-command") != "start"
    ):
        raise ApiError(
            400, "Expected X-Goog-Upload-Protocol: resumable and X-Goog-Upload-Command: start."
        )
    size = int(headers.get("x-goog-upload-header-content-length") or -1)
    if not 0 <= size <= MAX_FILE_BYTES:
        raise ApiError(400, f"File size {size} is outside 0..{MAX_FILE_BYTES} bytes.")
    meta = (await json_body(request)).get("file") or {}
    mime = headers.get("x-goog-upload-header-content-type") or meta.get("mime_type") or ""
    display = meta.get("display_name") or meta.get("displayName") or ""
    token = secrets.token_urlsafe(12)
    with state.lock:
        state.gemini_uploads[token] = Upload(size, mime, display, bytearray())
    origin = f"{request.url.scheme}://{request.url.netloc}"
    version = request.path_params["version"]
    url = f"{origin}{PREFIX}/upload/{version}/files?upload_id={token}"
    return Response(b"", headers={"x-goog-upload-url": url, "x-goog-upload-status": "active"})


async def _upload_chunk(request: Request, state: SandboxState, token: str) -> Response:
    command = request.headers.get("x-goog-upload-command", "")
    offset = int(request.headers.get("x-goog-upload-offset") or -1)
    data = await request.body()
    with state.lock:
        session = state.gemini_uploads.get(token)
        if session is None:
            raise ApiError(404, "Upload session not found or finished.")
        if offset != len(session.data):
            raise ApiError(
                400,
                f"X-Goog-Upload-Offset {offset} does not match the "
                f"{len(session.data)} bytes received so far.",
            )
        session.data += data
        if "finalize" not in command:
            return Response(b"", headers={"x-goog-upload-status": "active"})
        del state.gemini_uploads[token]
    if len(session.data) != session.size:
        raise ApiError(
            400, f"Upload finalized at {len(session.data)} bytes; {session.size} were declared."
        )
    record = store_file(
        state, bytes(session.data), session.display_name, "UPLOADED", session.mime_type
    )
    return JSONResponse({"file": record.to_json()}, headers={"x-goog-upload-status": "final"})


async def get_file(request: Request, state: SandboxState) -> Response:
    _version(request)
    rest = request.path_params["rest"]
    if rest.endswith(":download"):
        record = _file(state, _split(rest, "download"))
        if record.source != "GENERATED":
            raise ApiError(400, "Only generated files can be downloaded; uploaded files cannot.")
        return Response(record.data, media_type="application/octet-stream")
    return JSONResponse(_file(state, _split(rest, None)).to_json())


async def delete_file(request: Request, state: SandboxState) -> Response:
    _version(request)
    record = _file(state, _split(request.path_params["rest"], None))
    with state.lock:
        state.gemini_files.pop(record.id, None)
    return JSONResponse({})


async def create(request: Request, state: SandboxState) -> Response:
    _version(request)
    model = "models/" + _split(request.path_params["rest"], "batchGenerateContent")
    batch = (await json_body(request)).get("batch") or {}
    source = batch.get("inputConfig") or batch.get("input_config") or {}
    file_name = source.get("fileName") or source.get("file_name")
    if not isinstance(file_name, str) or not file_name.startswith("files/"):
        raise ApiError(
            400,
            "batch.input_config.file_name must name an uploaded file "
            "(files/...); inlined requests are not emulated.",
        )
    display = batch.get("displayName") or batch.get("display_name")
    if not display:
        raise ApiError(400, "batch.display_name is required.")
    record = _file(state, file_name.removeprefix("files/"))
    with state.lock:
        job = create_batch(state, model, str(display), record.id, record.data)
        payload = job.to_json(state.now())
        lost = state.faults.fire("create_lost", "google")
    if lost:
        raise ApiError(
            500, "An internal error has occurred (the batch was created; injected by the sandbox)."
        )
    return JSONResponse(payload)


async def retrieve(request: Request, state: SandboxState) -> Response:
    _version(request)
    now = state.tick()
    with state.lock:
        job = _batch(state, _split(request.path_params["rest"], None))
        return JSONResponse(job.to_json(now))


async def cancel(request: Request, state: SandboxState) -> Response:
    """Only running or pending jobs can be cancelled; the answer is an empty object."""
    _version(request)
    now = state.tick()
    with state.lock:
        job = _batch(state, _split(request.path_params["rest"], "cancel"))
        if job.state(now) not in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"):
            raise ApiError(400, f"Batch {job.name} is {job.state(now)} and cannot be cancelled.")
        if job.failure is None and job.timeline.cancel_requested is None:
            job.timeline.cancel_requested = now
    return JSONResponse({})


async def delete(request: Request, state: SandboxState) -> Response:
    _version(request)
    with state.lock:
        job = _batch(state, _split(request.path_params["rest"], None))
        if job.timeline.cancel_requested is None and not job.materialized:
            job.timeline.cancel_requested = state.now()  # deleting stops processing too
        del state.gemini_batches[job.id]
    return JSONResponse({})


async def list_batches(request: Request, state: SandboxState) -> Response:
    """Newest first, `pageSize` (default 50, at most 1000) a page, `nextPageToken` to go on."""
    _version(request)
    size = int_param(request, "pageSize", 50, 1, 1000)
    start = int_param(request, "pageToken", 0, 0, 10**9)
    now = state.tick()
    with state.lock:
        jobs = list(reversed(state.gemini_batches.values()))
        page = [job.to_json(now) for job in jobs[start : start + size]]
    out: dict = {"operations": page}
    if start + size < len(jobs):
        out["nextPageToken"] = str(start + size)
    return JSONResponse(out)


ROUTES = [
    # Chunks of a resumable upload are the "upload" route; starting one is "files". The SDK
    # waits 1 s, 2 s, 4 s before resending a chunk whose answer has no upload status.
    ("POST", PREFIX + "/upload/{version}/files", "files", upload),
    ("GET", PREFIX + "/{version}/files/{rest}", "results", get_file),
    ("DELETE", PREFIX + "/{version}/files/{rest}", "files", delete_file),
    ("POST", PREFIX + "/{version}/models/{rest}", "create", create),
    ("GET", PREFIX + "/{version}/batches", "list", list_batches),
    ("GET", PREFIX + "/{version}/batches/{rest}", "retrieve", retrieve),
    ("POST", PREFIX + "/{version}/batches/{rest}", "cancel", cancel),
    ("DELETE", PREFIX + "/{version}/batches/{rest}", "delete", delete),
]
