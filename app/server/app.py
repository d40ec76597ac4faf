"""The HTTP + WebSocket face of a server: `create_app(state)` builds the FastAPI app that turns
the routes of `app.engine.protocol` into calls on a `ServerState`.

Why so thin: every rule (what a job is, how an upload resumes, what a reference resolves to)
lives in the state's parts, where tests call it directly; this module only maps requests and
errors. Errors are always JSON `{"error": "<one line>"}` (plus "problems" for a workflow that
does not validate, "received" for an upload that must resume elsewhere); nothing echoes a
request header, so the token never appears in a response. No handler holds a request for long:
submit returns at once, progress goes out on the WebSocket.
"""

from __future__ import annotations

import enum
import io
import logging
import math
import pathlib
import re
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import numpy as np
from fastapi import APIRouter, FastAPI, Header, Path, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from app.engine.protocol import API, SIZE_HEADER, ProtocolError
from app.engine.store import OutputGone
from app.engine.wire import OutputRef, encode_png
from app.server.auth import BearerAuth
from app.server.blobs import BlobError
from app.server.hub import Overflow
from app.server.jobs import JobError, problem_json
from app.server.models_api import ModelRequestError
from app.server.state import ServerState

log = logging.getLogger(__name__)

SHA = r"^[0-9a-f]{64}$"
#: The largest offset/seq a query takes (SQLite integers are 64-bit).
MAX_INT = (1 << 63) - 1
#: JSON request bodies larger than this are refused unread (blobs have their own limit).
MAX_JSON_BYTES = 64 << 20
#: A whole Video is sent as one .npy only up to this size; longer ones go frame by frame.
MAX_VALUE_BYTES = 1 << 30
NPY_TYPE = "application/x-npy"
#: The job statuses of `jobs.STATUSES`, for the schema of GET /jobs?status=.
ModelKind = Literal["checkpoint", "lora", "text_encoder", "vae", "controlnet", "ipadapter"]
JobStatus = Literal["queued", "running", "done", "failed", "cancelled", "interrupted"]


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


class MissingBody(BaseModel):
    hashes: list[str] = Field(max_length=1_000_000)


class TreeBody(BaseModel):
    files: dict[str, str]


class JobBody(BaseModel):
    workflow: dict[str, Any]
    targets: list[str] | None = None


class AdoptBody(BaseModel):
    blob: str
    kind: ModelKind
    name: str


class _JsonLimit:
    """ASGI middleware: a JSON body over MAX_JSON_BYTES is refused (413) before it is read."""

    def __init__(self, app: Any, limit: int = MAX_JSON_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and not scope.get("path", "").startswith(f"{API}/blobs/"):
            for name, value in scope.get("headers") or ():
                if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                    await _error(413, f"the request body is over {self.limit} bytes")(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _value_response(value: Any, ref: OutputRef) -> Response:
    """An output value: arrays as .npy (np.save; load with allow_pickle=False), scalars/text as JSON."""
    from nodes.types import Latent, Model, Video

    where = f"{ref.node_id}.{ref.port}"
    kind = type(value).__name__
    if isinstance(value, Video):
        n, (w, h) = len(value), value.size
        nbytes = n * w * h * value.channels * 4
        if nbytes > MAX_VALUE_BYTES:
            return _error(422, f"{where} is a Video of {n} frames ({nbytes} bytes as float32): fetch it a frame "
                               "at a time (/frames/{i}) or download the file it was saved to")
        value = np.concatenate([np.asarray(value.frame(i), np.float32) for i in range(n)]) if n else \
            np.zeros((0, h, w, value.channels), np.float32)
    elif isinstance(value, Latent):
        kind = f"Latent:{value.family}"
        value = value.samples.detach().to("cpu").float().numpy()
    elif isinstance(value, Model):
        return _error(422, f"{where} is a Model: a handle to weights loaded on the server, which cannot be "
                           "downloaded (link it to a node instead)")
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            return _error(422, f"{where} holds Python objects, which are not sent")
        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        return Response(buf.getvalue(), media_type=NPY_TYPE, headers={"X-Value-Kind": kind})
    try:
        doc = _jsonable(value)
    except TypeError:
        return _error(422, f"{where} is a {type(value).__name__}, which has no wire form: link it to a node instead")
    return JSONResponse({"value": doc}, headers={"X-Value-Kind": kind})


def _jsonable(value: Any, depth: int = 0) -> Any:
    if depth > 32:
        raise TypeError("too deep")
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, np.generic):
        return _jsonable(value.item(), depth + 1)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    raise TypeError(type(value).__name__)


def create_app(state: ServerState) -> FastAPI:
    """The FastAPI app for `state`; its lifespan starts and closes the state."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        await anyio.to_thread.run_sync(state.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(state.close)

    from app import __version__

    app = FastAPI(title="imagebash engine", version=__version__, lifespan=lifespan, redoc_url=None,
                  description="The remote engine of imagebash (see app/engine/protocol.py). Every route but "
                              f"{API}/health needs 'Authorization: Bearer <token>'.")
    r = APIRouter(prefix=API)

    # errors ---------------------------------------------------------------------------------------
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def request_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "request"
        return _error(422, f"{where}: {first.get('msg', 'invalid')}"[:300])

    @app.exception_handler(JobError)
    async def job_error(request: Request, exc: JobError) -> JSONResponse:
        extra = {"problems": [problem_json(p) for p in exc.problems]} if exc.status == 422 else {}
        return _error(exc.status, exc.message, **extra)

    @app.exception_handler(BlobError)
    async def blob_error(request: Request, exc: BlobError) -> JSONResponse:
        return _error(exc.status, exc.message, **exc.extra)

    @app.exception_handler(ModelRequestError)
    async def model_error(request: Request, exc: ModelRequestError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(ProtocolError)
    async def protocol_error(request: Request, exc: ProtocolError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(OutputGone)
    async def output_gone(request: Request, exc: OutputGone) -> JSONResponse:
        return _error(410, str(exc).strip("'\""))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal error ({type(exc).__name__}): see the server's log")

    # server ---------------------------------------------------------------------------------------
    @r.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @r.get("/info")
    def info() -> dict[str, Any]:
        return state.info()

    @r.get("/nodes")
    def nodes() -> list[dict[str, Any]]:
        return [spec.describe() for spec in state.registry.all()]

    @r.get("/nodes/{type_id}/choices/{port}")
    def choices(type_id: str, port: str) -> dict[str, Any]:
        spec = state.registry.get(type_id)
        if spec is None:
            raise StarletteHTTPException(404, f"no node type '{type_id[:80]}' on this server")
        if spec.input(port) is None:
            raise StarletteHTTPException(404, f"{spec.id} has no input '{port[:80]}'")
        return {"choices": state.registry.choices(spec.id, port)}

    # models ---------------------------------------------------------------------------------------
    @r.get("/models")
    def models(kind: ModelKind | None = None) -> list[dict[str, Any]]:
        return state.models.list(kind)

    @r.post("/models", status_code=201)
    def adopt(body: AdoptBody) -> JSONResponse:
        if not state.blobs.has(body.blob):
            raise ModelRequestError(404, f"blob {body.blob[:80]} is not on the server: upload it first")
        created, entry = state.models.adopt(state.blobs, body.blob, body.kind, body.name)
        return JSONResponse(entry, status_code=201 if created else 200)

    # blobs ----------------------------------------------------------------------------------------
    @r.post("/blobs/missing")
    def blobs_missing(body: MissingBody) -> dict[str, Any]:
        return {"missing": state.blobs.missing(body.hashes)}

    @r.head("/blobs/{sha}")
    def blob_head(sha: str = Path(pattern=SHA)) -> Response:
        if not state.blobs.has(sha):
            return Response(status_code=404)
        return Response(headers={"content-length": str(state.blobs.size(sha)), "accept-ranges": "bytes"},
                        media_type="application/octet-stream")

    @r.get("/blobs/{sha}/upload")
    def blob_upload_status(sha: str = Path(pattern=SHA)) -> dict[str, Any]:
        return state.blobs.upload_status(sha)

    raw_body = {"type": "string", "format": "binary"}

    @r.put("/blobs/{sha}", openapi_extra={"requestBody": {
        "required": False, "content": {"application/octet-stream": {"schema": raw_body}}}})
    async def blob_put(request: Request, sha: str = Path(pattern=SHA), offset: int = Query(0, ge=0, le=MAX_INT),
                       size: int = Header(alias=SIZE_HEADER, ge=0, le=MAX_INT)) -> Response:
        raw = request.headers.get("content-length")
        length = int(raw) if raw is not None and re.fullmatch(r"[0-9]{1,19}", raw) else None
        try:
            status, body = await state.blobs.receive(sha, offset, size, length, request.stream())
        except ClientDisconnect:
            return _error(400, "the client went away mid-chunk")
        return JSONResponse(body, status_code=status)

    @r.get("/blobs/{sha}")
    def blob_get(sha: str = Path(pattern=SHA)) -> Response:
        if not state.blobs.has(sha):
            return _error(404, f"blob {sha} is not on this server")
        return FileResponse(state.blobs.path(sha), media_type="application/octet-stream")

    @r.post("/trees")
    def trees(body: TreeBody) -> dict[str, Any]:
        tree, missing = state.blobs.put_tree(body.files)
        return {"tree": tree, "missing": missing}

    # jobs -----------------------------------------------------------------------------------------
    @r.put("/jobs/{job_id}", status_code=201)
    def put_job(job_id: str, body: JobBody) -> JSONResponse:
        created, job = state.jobs.submit(job_id, body.workflow, body.targets)
        return JSONResponse(job, status_code=201 if created else 200)

    @r.get("/jobs")
    def list_jobs(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=MAX_INT),
                  status: JobStatus | None = None) -> dict[str, Any]:
        return state.jobs.list(limit, offset, status)

    @r.get("/jobs/{job_id}")
    def get_job(job_id: str) -> dict[str, Any]:
        return state.jobs.get(job_id)

    @r.delete("/jobs/{job_id}")
    def cancel_job(job_id: str) -> dict[str, Any]:
        return state.jobs.cancel(job_id)

    @r.post("/jobs/{job_id}/rerun")
    def rerun_job(job_id: str) -> dict[str, Any]:
        return state.jobs.rerun(job_id)

    @r.get("/jobs/{job_id}/files")
    def job_files(job_id: str) -> list[dict[str, Any]]:
        return state.jobs.files(job_id)

    def _fetch(job_id: str, node: str, port: str) -> tuple[OutputRef, Any]:
        if not state.jobs.exists(job_id):
            raise JobError(404, f"no job '{job_id[:80]}' on this server")
        ref = OutputRef(job_id, node, port)
        return ref, state.client.fetch(ref)

    @r.get("/jobs/{job_id}/outputs/{node}/{port}")
    def output(job_id: str, node: str, port: str) -> Response:
        ref, value = _fetch(job_id, node, port)
        return _value_response(value, ref)

    @r.get("/jobs/{job_id}/outputs/{node}/{port}/frames/{index}")
    def output_frame(job_id: str, node: str, port: str, index: int = Path(ge=0, le=MAX_INT)) -> Response:
        from nodes.types import Video

        ref, value = _fetch(job_id, node, port)
        if isinstance(value, Video):
            count = len(value)
        elif isinstance(value, np.ndarray) and value.ndim in (3, 4):
            count = int(value.shape[0])
        else:
            return _error(422, f"{node}.{port} is not a picture (an Image or Mask batch, or a Video)")
        if index >= count:
            return _error(404, f"{node}.{port} has {count} frame(s); there is no frame {index}")
        frame = state.client.fetch_frame(ref, index)
        png = encode_png(frame, max_side=1 << 30)
        if png is None:
            return _error(422, f"frame {index} of {node}.{port} is not a picture")
        return Response(png, media_type="image/png")

    # events ---------------------------------------------------------------------------------------
    @r.get("/events")
    def events(after: int = Query(0, ge=0, le=MAX_INT), limit: int = Query(500, ge=1, le=5000),
               job: str | None = None) -> Response:
        page = state.hub.page(after, limit, job)
        body = '{"events":[' + ",".join(text for _, text in page) + f'],"last_seq":{state.hub.last_seq}}}'
        return Response(body, media_type="application/json")

    @app.websocket(f"{API}/events")
    async def events_ws(ws: WebSocket) -> None:
        raw_after = ws.query_params.get("after")
        job = ws.query_params.get("job") or None
        if raw_after is not None and not (re.fullmatch(r"[0-9]{1,19}", raw_after) and int(raw_after) <= MAX_INT):
            await ws.close(code=1008, reason="'after' must be a seq number (an integer >= 0)")
            return
        await ws.accept()
        after = int(raw_after) if raw_after is not None else None

        overflow: list[str] = []

        async with anyio.create_task_group() as tg:
            async def pump() -> None:
                try:
                    async for text in state.hub.replay_then_live(after, job, run_sync=anyio.to_thread.run_sync):
                        await ws.send_text(text)
                except Overflow as exc:
                    overflow.append(str(exc))
                except (OSError, RuntimeError, WebSocketDisconnect):  # the client went away mid-send
                    pass
                tg.cancel_scope.cancel()

            async def watch() -> None:  # the client's messages are not used; a disconnect ends both
                while (await ws.receive())["type"] != "websocket.disconnect":
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(pump)
            tg.start_soon(watch)
        if overflow:
            await ws.close(code=1013, reason=overflow[0][:120])

    app.include_router(r)
    app.add_middleware(_JsonLimit)
    app.add_middleware(BearerAuth, token=state.token)
    _document_auth(app)
    return app


def _document_auth(app: FastAPI) -> None:
    """Say in /openapi.json that every route but /health takes the bearer token."""
    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = base()
            schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"bearer": []}]
            health = schema.get("paths", {}).get(f"{API}/health", {}).get("get")
            if health is not None:
                health["security"] = []
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
