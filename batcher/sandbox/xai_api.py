"""xAI routes under /xai/v1: the OpenAI-compatible Files upload and xAI's own Batch API.

A batch is created from an uploaded JSONL file of OpenAI batch lines and named by the caller.
It has request counters instead of a status: `num_requests` stays 0 while the input file is
validated, then `num_pending` counts down as requests finish (here: all at once, when the
batch's processing stops). A file that fails validation makes xAI cancel the batch itself
(`cancel_time` and `cancel_by_xai_message`). Past `expire_time` the requests that did not run
never will; the counters freeze with them still pending, and they have no result (the docs
do not say more; this is the less convenient reading). Results are paged from
`GET /v1/batches/{id}/results`, each request's chat completion under
`batch_result.response.chat_get_completion`. Sources: docs/providers.md, xAI.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from batcher.sandbox.errors import ApiError
from batcher.sandbox.http import int_param, json_body, multipart
from batcher.sandbox.lifecycle import Timeline
from batcher.sandbox.openai_batches import _check_line
from batcher.sandbox.openai_results import CHAT, kinds_of, run_request
from batcher.sandbox.state import FileRecord, SandboxState, new_id

NAME = "xai"


def timestamp(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def validate(data: bytes) -> tuple[list[dict], str | None]:
    """The request lines of an input file, or why xAI would refuse it."""
    raw = [t for t in data.decode("utf-8", errors="replace").split("\n") if t.strip()]
    if not raw:
        return [], "The input file is empty."
    lines, seen = [], set()
    for number, text in enumerate(raw, 1):
        line, error = _check_line(text, number, CHAT, seen, None)
        if error:
            return [], error["message"]
        seen.add(line["custom_id"])
        lines.append(line)
    return lines, None


@dataclass
class XAIBatch:
    id: str
    name: str
    input_file_id: str
    lines: list[dict]
    invalid: str | None  # why the input was refused: xAI cancels the batch itself
    timeline: Timeline
    endpoint: str = CHAT
    results: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    materialized: bool = False

    def due(self, now: float) -> bool:
        return not self.invalid and not self.materialized and now >= self.timeline.cutoff()

    def materialize(self, state: SandboxState) -> None:
        """Run the requests that finished before processing stopped; bill each one."""
        total = len(self.lines)
        finished = self.timeline.finished_count(total)
        success = error = 0
        for index, line in enumerate(self.lines[:finished]):
            at = self.timeline.finish_time(index, total)
            out, usage = run_request(state, self, line, at, provider=NAME)
            if usage is not None:
                success += 1
                model = str(line["body"].get("model", ""))
                state.ledger.bill(NAME, self.id, line["custom_id"], model, usage, kinds_of(usage))
                result = {"response": {"chat_get_completion": out["response"]["body"]}}
            else:
                error += 1
                body = (out.get("response") or {}).get("body") or {}
                message = (body.get("error") or {}).get("message") or "request failed"
                result = {"error": {"code": (out.get("response") or {}).get("status_code", 500),
                                    "message": message}}  # fmt: skip
            self.results.append({"batch_request_id": line["custom_id"], "batch_result": result})
        random.Random(self.id).shuffle(self.results)  # no order is promised
        cancelled = total - finished if self.timeline.outcome() == "cancelled" else 0
        self.counts = {"num_success": success, "num_error": error, "num_cancelled": cancelled,
                       "num_pending": total - finished - cancelled}  # fmt: skip
        self.materialized = True

    def to_json(self, now: float) -> dict:
        t = self.timeline
        validated = now >= t.validated
        counts = {"num_requests": 0, "num_pending": 0, "num_success": 0, "num_error": 0,
                  "num_cancelled": 0}  # fmt: skip
        if validated and not self.invalid:
            counts["num_requests"] = counts["num_pending"] = len(self.lines)
            if self.materialized:
                counts.update(self.counts)
        cancel_time = None
        if self.invalid and validated:
            cancel_time = t.validated
        elif t.cancel_requested is not None and t.outcome() == "cancelled":
            cancel_time = t.cancel_requested
        return {
            "batch_id": self.id,
            "name": self.name,
            "input_file_id": self.input_file_id,
            "create_time": timestamp(t.created),
            "expire_time": timestamp(t.deadline),
            "cancel_time": timestamp(cancel_time),
            "cancel_by_xai_message": self.invalid if cancel_time and self.invalid else None,
            "state": counts,
        }


def _batch(state: SandboxState, batch_id: str) -> XAIBatch:
    batch = state.xai_batches.get(batch_id)
    if batch is None:
        raise ApiError(404, f"Batch {batch_id} not found.", code="not_found")
    return batch


def file_json(record: FileRecord) -> dict:
    return {
        "id": record.id,
        "object": "file",
        "bytes": len(record.data),
        "created_at": int(record.created_at),
        "filename": record.filename,
        "purpose": "",  # xAI stores no purpose; its files serve batches
    }


async def upload_file(request: Request, state: SandboxState) -> Response:
    fields = await multipart(request)
    if "file" not in fields:  # `purpose` is optional: xAI ignores it
        raise ApiError(400, "A 'file' field is required.", param="file")
    upload = fields["file"]
    record = state.store_file(upload.value, upload.filename or "upload.jsonl", "")
    return JSONResponse(file_json(record))


async def get_file(request: Request, state: SandboxState) -> Response:
    record = state.files.get(request.path_params["file_id"])
    if record is None:
        raise ApiError(404, f"File {request.path_params['file_id']} not found.")
    return JSONResponse(file_json(record))


async def create(request: Request, state: SandboxState) -> Response:
    body = await json_body(request)
    name, file_id = body.get("name"), body.get("input_file_id")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "name is required.", param="name")
    record = state.files.get(str(file_id))
    if record is None:
        raise ApiError(404, f"File {file_id} not found.", param="input_file_id")
    lines, invalid = validate(record.data)
    with state.lock:
        cfg = state.config
        slow = state.faults.fire("slow", NAME)
        expire = state.faults.fire("expire", NAME)
        if not invalid and state.faults.fire("invalid_batch", NAME):
            invalid = "The batch input was rejected (injected by the sandbox)."
        timeline = Timeline.plan(
            state.now(), len(lines), cfg, slow.factor if slow else 1.0,
            expire.after if expire else None,
        )  # fmt: skip
        batch = XAIBatch(new_id("batch_"), name, record.id, lines, invalid, timeline)
        state.xai_batches[batch.id] = batch
        state.ledger.submitted(NAME, [line["custom_id"] for line in lines])
        if not invalid:
            state.pending.append(batch)
        payload = batch.to_json(state.now())
        lost = state.faults.fire("create_lost", NAME)
    if lost:
        raise ApiError(500, "Internal error (the batch was created; injected by the sandbox).")
    return JSONResponse(payload)


async def retrieve(request: Request, state: SandboxState) -> Response:
    now = state.tick()
    with state.lock:
        return JSONResponse(_batch(state, request.path_params["batch_id"]).to_json(now))


async def list_batches(request: Request, state: SandboxState) -> Response:
    limit = int_param(request, "limit", 100, 1, 1000)
    start = int(request.query_params.get("pagination_token") or 0)
    now = state.tick()
    with state.lock:
        batches = list(reversed(state.xai_batches.values()))
        page = [b.to_json(now) for b in batches[start : start + limit]]
    more = start + limit < len(batches)
    return JSONResponse({"batches": page, "pagination_token": str(start + limit) if more else None})


async def results(request: Request, state: SandboxState) -> Response:
    limit = int_param(request, "limit", 100, 1, 1000)
    start = int(request.query_params.get("pagination_token") or 0)
    state.tick()
    with state.lock:
        done = _batch(state, request.path_params["batch_id"]).results
        page = done[start : start + limit]
    more = start + limit < len(done)
    return JSONResponse({"results": page, "pagination_token": str(start + limit) if more else None})


async def cancel(request: Request, state: SandboxState) -> Response:
    now = state.tick()
    with state.lock:
        batch = _batch(state, request.path_params["batch_id"])
        if batch.materialized or batch.invalid:
            raise ApiError(400, "The batch has no pending requests to cancel.")
        batch.timeline.cancel_requested = max(now, batch.timeline.created)
    now = state.tick()  # the pending requests are dropped at once
    with state.lock:
        return JSONResponse(batch.to_json(now))


ROUTES = [
    ("POST", "/xai/v1/files", "files", upload_file),
    ("GET", "/xai/v1/files/{file_id}", "files", get_file),
    ("POST", "/xai/v1/batches", "create", create),
    ("GET", "/xai/v1/batches", "list", list_batches),
    ("POST", "/xai/v1/batches/{batch_id}:cancel", "cancel", cancel),
    ("GET", "/xai/v1/batches/{batch_id}/results", "results", results),
    ("GET", "/xai/v1/batches/{batch_id}", "retrieve", retrieve),
]
