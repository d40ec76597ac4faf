"""A fake Replicate API on 127.0.0.1 that the real `replicate` client talks to through base_url.

It speaks the endpoints replicate 1.0.7 uses (paths and JSON shapes read from the client's
source): models and versions with their OpenAPI schema, predictions created for a model or a
version, polled, cancelled, and file uploads (multipart). Outputs are served from the server
itself at absolute `http://127.0.0.1:PORT/...` URLs, as the real API hands out delivery URLs.

Knobs for tests: `delay` (seconds a prediction takes), `polls_to_finish` (when set, a prediction
instead advances one step per poll and answers its result on that poll, whatever the time),
`fail(method, path_regex, [codes])` (answer the next matching requests with those statuses),
`token` (anything else gets 401; the 401 echoes the presented token, so tests prove it never
reaches a user-visible message), `request_latency` (every answer waits this long). Every
request is recorded with monotonic start/end times, and each prediction keeps when it was
created and first seen finished.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

TOKEN = "r8_FakeTestToken0123456789abcdefXYZ"


def openapi(props: dict, required: list[str], extra_schemas: dict | None = None, output: dict | None = None) -> dict:
    """An OpenAPI document shaped like Cog's: components.schemas.Input/Output (+ enum schemas)."""
    schemas = {"Input": {"type": "object", "title": "Input", "properties": props, "required": required},
               "Output": output or {"type": "array", "items": {"type": "string", "format": "uri"}}}
    schemas.update(extra_schemas or {})
    return {"openapi": "3.0.2", "info": {"title": "Cog", "version": "0.1.0"}, "paths": {},
            "components": {"schemas": schemas}}


TXT2IMG_SCHEMA = openapi(
    {
        "prompt": {"type": "string", "title": "Prompt", "description": "What to draw", "x-order": 0},
        "width": {"type": "integer", "title": "Width", "minimum": 16, "maximum": 256, "default": 32, "x-order": 1},
        "height": {"type": "integer", "title": "Height", "minimum": 16, "maximum": 256, "default": 32,
                   "x-order": 2},
        "num_outputs": {"type": "integer", "title": "Num Outputs", "minimum": 1, "maximum": 4, "default": 1,
                        "x-order": 3},
        "guidance": {"type": "number", "title": "Guidance", "minimum": 0, "maximum": 10, "default": 3.5,
                     "x-order": 4},
        "output_format": {"allOf": [{"$ref": "#/components/schemas/output_format"}], "default": "png",
                          "x-order": 5, "description": "Format of the output images"},
        "seed": {"type": "integer", "title": "Seed", "description": "Random seed; blank for random", "x-order": 6},
        "go_fast": {"type": "boolean", "title": "Go Fast", "default": True, "x-order": 7},
        "model": {"type": "string", "title": "Model", "enum": ["dev", "schnell"], "default": "dev", "x-order": 8},
    },
    ["prompt"],
    {"output_format": {"type": "string", "title": "output_format", "enum": ["png", "webp"],
                       "description": "An enumeration."}},
)

# Shaped like black-forest-labs/flux-schnell's schema (the workflow and the preset use it).
FLUX_SCHNELL_SCHEMA = openapi(
    {
        "prompt": {"type": "string", "title": "Prompt", "description": "Prompt for generated image", "x-order": 0},
        "aspect_ratio": {"allOf": [{"$ref": "#/components/schemas/aspect_ratio"}], "default": "1:1", "x-order": 1,
                         "description": "Aspect ratio for the generated image"},
        "num_outputs": {"type": "integer", "title": "Num Outputs", "minimum": 1, "maximum": 4, "default": 1,
                        "x-order": 2},
        "num_inference_steps": {"type": "integer", "title": "Num Inference Steps", "minimum": 1, "maximum": 4,
                                "default": 4, "x-order": 3},
        "seed": {"type": "integer", "title": "Seed", "description": "Random seed. Set for reproducible generation",
                 "x-order": 4},
        "output_format": {"allOf": [{"$ref": "#/components/schemas/output_format"}], "default": "webp",
                          "x-order": 5},
        "output_quality": {"type": "integer", "title": "Output Quality", "minimum": 0, "maximum": 100,
                           "default": 80, "x-order": 6},
        "go_fast": {"type": "boolean", "title": "Go Fast", "default": True, "x-order": 7},
    },
    ["prompt"],
    {"aspect_ratio": {"type": "string", "title": "aspect_ratio",
                      "enum": ["1:1", "16:9", "21:9", "3:2", "2:3", "4:3", "3:4", "9:16"]},
     "output_format": {"type": "string", "title": "output_format", "enum": ["webp", "jpg", "png"]}},
)

INVERT_SCHEMA = openapi(
    {
        "image": {"type": "string", "format": "uri", "title": "Image", "description": "Input image", "x-order": 0},
        "strength": {"type": "number", "title": "Strength", "minimum": 0, "maximum": 1, "default": 1.0,
                     "x-order": 1},
    },
    ["image"],
    output={"type": "string", "format": "uri"},
)

VIDEO_SCHEMA = openapi(
    {
        "image": {"type": "string", "format": "uri", "title": "Image", "x-order": 0},
        "num_frames": {"type": "integer", "title": "Num Frames", "minimum": 2, "maximum": 16, "default": 4,
                       "x-order": 1},
    },
    ["image"],
    output={"type": "string", "format": "uri"},
)

STACK_SCHEMA = openapi(
    {
        "images": {"type": "array", "items": {"type": "string", "format": "uri"}, "title": "Images", "x-order": 0},
        "gains": {"type": "array", "items": {"type": "number"}, "title": "Gains", "default": [1.0], "x-order": 1},
    },
    ["images"],
)

VIDCOUNT_SCHEMA = openapi(
    {"video": {"type": "string", "format": "uri", "title": "Video", "description": "Input video", "x-order": 0}},
    ["video"],
    output={"type": "string"},
)

TEXT_SCHEMA = openapi(
    {"prompt": {"type": "string", "title": "Prompt", "x-order": 0}},
    ["prompt"],
    output={"type": "array", "items": {"type": "string"}, "x-cog-array-type": "iterator"},
)


@dataclass
class FakeModel:
    owner: str
    name: str
    schema: dict
    behaviour: str  # txt2img | invert | video | text | fail | abort | not_media
    official: bool = True  # official models take predictions at /v1/models/{o}/{n}/predictions
    version: str = field(default_factory=lambda: uuid.uuid4().hex + uuid.uuid4().hex[:32])
    delay: float | None = None

    def version_json(self) -> dict:
        return {"id": self.version, "created_at": "2026-01-01T00:00:00.000000Z", "cog_version": "0.9.4",
                "openapi_schema": self.schema}

    def model_json(self, base: str) -> dict:
        return {"url": f"{base}/{self.owner}/{self.name}", "owner": self.owner, "name": self.name,
                "description": f"fake {self.behaviour} model", "visibility": "public", "github_url": None,
                "paper_url": None, "license_url": None, "run_count": 0, "cover_image_url": None,
                "default_example": None, "latest_version": self.version_json()}


@dataclass
class Request:
    method: str
    path: str
    start: float
    end: float = 0.0
    status: int = 0
    body: bytes = b""
    authorization: str = ""


class FakeReplicate:
    """The server state and its knobs; `start()` serves it on a free port of 127.0.0.1."""

    def __init__(self, token: str = TOKEN, delay: float = 0.0) -> None:
        self.token = token
        self.delay = delay
        self.polls_to_finish: int | None = None
        self.request_latency = 0.0
        self.models: dict[str, FakeModel] = {}
        self.predictions: dict[str, dict] = {}
        self.files: dict[str, tuple[bytes, str]] = {}
        self.outputs: dict[str, tuple[bytes, str]] = {}
        self.requests: list[Request] = []
        self.cancelled: list[str] = []
        self._failures: list[tuple[str, re.Pattern, int]] = []
        self.retry_after: int | None = None  # sent with forced failures when set
        self.lock = threading.RLock()
        self.httpd: ThreadingHTTPServer | None = None
        for m in (FakeModel("fake", "txt2img", TXT2IMG_SCHEMA, "txt2img"),
                  FakeModel("fake", "invert", INVERT_SCHEMA, "invert", official=False),
                  FakeModel("black-forest-labs", "flux-schnell", FLUX_SCHNELL_SCHEMA, "txt2img"),
                  FakeModel("fake", "video", VIDEO_SCHEMA, "video"),
                  FakeModel("fake", "text", TEXT_SCHEMA, "text"),
                  FakeModel("fake", "stack", STACK_SCHEMA, "stack"),
                  FakeModel("fake", "vidcount", VIDCOUNT_SCHEMA, "vidcount"),
                  FakeModel("fake", "broken", TXT2IMG_SCHEMA, "fail"),
                  FakeModel("fake", "aborts", TXT2IMG_SCHEMA, "abort"),
                  FakeModel("fake", "notmedia", TXT2IMG_SCHEMA, "not_media")):
            self.add_model(m)

    # knobs --------------------------------------------------------------------------------------
    def add_model(self, model: FakeModel) -> FakeModel:
        self.models[f"{model.owner}/{model.name}"] = model
        return model

    def fail(self, method: str, path_regex: str, statuses: list[int]) -> None:
        """Answer the next len(statuses) requests matching method and path with these codes."""
        with self.lock:
            for s in statuses:
                self._failures.append((method, re.compile(path_regex), s))

    def calls(self, method: str, path_regex: str) -> list[Request]:
        pat = re.compile(path_regex)
        with self.lock:
            return [r for r in self.requests if r.method == method and pat.search(r.path)]

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> FakeReplicate:
        server = self

        class Handler(_Handler):
            fake = server

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), name="fake-replicate", daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()

    # behaviour ----------------------------------------------------------------------------------
    def take_failure(self, method: str, path: str) -> int | None:
        with self.lock:
            for i, (m, pat, status) in enumerate(self._failures):
                if m == method and pat.search(path):
                    del self._failures[i]
                    return status
        return None

    def prediction_json(self, p: dict) -> dict:
        keys = ("id", "model", "version", "status", "input", "output", "logs", "error", "metrics",
                "created_at", "started_at", "completed_at", "urls")
        return {k: p.get(k) for k in keys}

    def advance(self, p: dict) -> None:
        """Move a prediction along (in time, or by polls): processing with tqdm-like logs, then its result."""
        if p["status"] in ("succeeded", "failed", "canceled", "aborted"):
            return
        p["polls"] = p.get("polls", 0) + 1
        if self.polls_to_finish is not None:
            elapsed, total = p["polls"] - 1, self.polls_to_finish - 1
        else:
            elapsed, total = time.monotonic() - p["created_mono"], p["delay"]
        if elapsed < total:
            done = int(4 * elapsed / total)
            p["status"] = "processing"
            p["logs"] = "Loading model\n" + "".join(_bar(k) for k in range(done + 1))
            return
        model: FakeModel = p["_model"]
        p["completed_mono"] = time.monotonic()
        p["completed_at"] = "2026-01-01T00:00:01.000000Z"
        p["logs"] = "Loading model\n" + "".join(_bar(k) for k in range(5)) + "done\n"
        if model.behaviour == "fail":
            p["status"], p["error"] = "failed", "CUDA out of memory on the fake GPU"
        elif model.behaviour == "abort":
            p["status"], p["error"] = "aborted", None
        else:
            p["status"], p["output"] = "succeeded", self.make_output(model, p["input"])

    def serve_bytes(self, data: bytes, content_type: str, ext: str) -> str:
        oid = hashlib.sha1(data).hexdigest()[:16] + uuid.uuid4().hex[:6]
        with self.lock:
            self.outputs[oid] = (data, content_type)
        return f"{self.url}/delivery/{oid}.{ext}"

    def read_input_file(self, ref: str) -> bytes:
        if ref.startswith("data:"):
            return base64.b64decode(ref.split(",", 1)[1])
        m = re.search(r"/v1/files/([^/]+)/download$", ref)
        if not m or m.group(1) not in self.files:
            raise ValueError(f"cannot fetch {ref}")
        return self.files[m.group(1)][0]

    def make_output(self, model: FakeModel, inp: dict) -> Any:
        if model.behaviour == "txt2img":
            seed = inp.get("seed")
            seed = int(seed) if seed is not None else int.from_bytes(uuid.uuid4().bytes[:4], "little")
            urls = []
            w, h = int(inp.get("width", 32)), int(inp.get("height", 32))
            if "aspect_ratio" in inp:
                a, b = (int(x) for x in inp["aspect_ratio"].split(":"))
                w, h = (48, 48 * b // a) if a >= b else (48 * a // b, 48)
            for i in range(int(inp.get("num_outputs", 1))):
                rng = np.random.default_rng([seed, i, len(str(inp.get("prompt", "")))])
                arr = rng.random((h, w, 3))
                urls.append(self.serve_bytes(png(arr), "image/png", "png"))
            return urls
        if model.behaviour == "invert":
            from PIL import Image as PILImage

            with PILImage.open(io.BytesIO(self.read_input_file(inp["image"]))) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
            return self.serve_bytes(png(1.0 - arr), "image/png", "png")
        if model.behaviour == "stack":
            from PIL import Image as PILImage

            urls = []
            for ref, gain in zip(inp["images"], inp.get("gains") or [1.0] * len(inp["images"]), strict=False):
                with PILImage.open(io.BytesIO(self.read_input_file(ref))) as im:
                    arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
                urls.append(self.serve_bytes(png(arr * float(gain)), "image/png", "png"))
            return urls
        if model.behaviour == "vidcount":
            return count_frames(self.read_input_file(inp["video"]))
        if model.behaviour == "video":
            return self.serve_bytes(mp4(int(inp.get("num_frames", 4))), "video/mp4", "mp4")
        if model.behaviour == "text":
            return ["A ", "fox ", "in ", "the ", "fog."]
        if model.behaviour == "not_media":
            return [self.serve_bytes(b"<html>not an image</html>", "text/html", "png")]
        raise AssertionError(model.behaviour)

    def validate(self, model: FakeModel, inp: dict) -> str | None:
        """Replicate's 422 detail text for invalid input, or None."""
        comps = model.schema["components"]["schemas"]
        schema = comps["Input"]
        problems = []
        for name in schema.get("required", []):
            if name not in inp:
                problems.append(f"- input: {name} is required")
        for name, value in inp.items():
            prop = dict(schema["properties"].get(name) or {})
            if not prop:
                continue
            for ref in prop.get("allOf", []):
                prop.update(comps[ref["$ref"].rsplit("/", 1)[-1]])
            if "enum" in prop and value not in prop["enum"]:
                problems.append(f"- input.{name}: {name} must be one of the following: " + ", ".join(
                    f'"{v}"' for v in prop["enum"]))
            if prop.get("type") in ("integer", "number") and isinstance(value, (int, float)):
                if "maximum" in prop and value > prop["maximum"]:
                    problems.append(f"- input.{name}: Must be less than or equal to {prop['maximum']}")
                if "minimum" in prop and value < prop["minimum"]:
                    problems.append(f"- input.{name}: Must be greater than or equal to {prop['minimum']}")
        return "\n".join(problems) + "\n" if problems else None

    def create(self, model: FakeModel, inp: dict) -> tuple[int, dict]:
        detail = self.validate(model, inp)
        if detail:
            return 422, {"title": "Input validation failed", "detail": detail, "status": 422}
        pid = uuid.uuid4().hex[:20]
        p = {"id": pid, "model": f"{model.owner}/{model.name}", "version": model.version, "status": "starting",
             "input": inp, "output": None, "logs": "", "error": None, "metrics": {},
             "created_at": "2026-01-01T00:00:00.000000Z", "started_at": None, "completed_at": None,
             "urls": {"get": f"{self.url}/v1/predictions/{pid}", "cancel": f"{self.url}/v1/predictions/{pid}/cancel"},
             "_model": model, "created_mono": time.monotonic(), "completed_mono": None,
             "delay": self.delay if model.delay is None else model.delay}
        with self.lock:
            self.predictions[pid] = p
        return 201, self.prediction_json(p)


def use_fake_replicate(request: Any, **knobs: Any) -> FakeReplicate:
    """Start a fake server for one test and point the client at it (env restored afterwards).

    For fixtures and for `tests/workflow_sets.py` overrides, which get the pytest request.
    """
    server = FakeReplicate(**knobs).start()
    request.addfinalizer(server.stop)
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("REPLICATE_BASE_URL", server.url)
    monkeypatch.setenv("REPLICATE_API_TOKEN", server.token)
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.02")
    return server


def _bar(k: int) -> str:
    """One tqdm-style progress line, as Cog models print them."""
    return f"{k * 25:3d}%|{'#' * k}{' ' * (4 - k)}| {k}/4 [00:00<00:00]\n"


def png(arr: np.ndarray) -> bytes:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray((np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def mp4(frames: int, size: tuple[int, int] = (32, 24)) -> bytes:
    import os
    import tempfile

    import cv2

    fd, path = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 8.0, size)
        for i in range(frames):
            frame = np.full((size[1], size[0], 3), int(255 * i / max(frames - 1, 1)), np.uint8)
            writer.write(frame)
        writer.release()
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


def count_frames(data: bytes) -> str:
    """'N frames WxH' for an uploaded video."""
    import os
    import tempfile

    import cv2

    fd, path = tempfile.mkstemp(suffix=".mp4")
    try:
        os.write(fd, data)
        os.close(fd)
        cap = cv2.VideoCapture(path)
        n, size = 0, (0, 0)
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            n, size = n + 1, (frame.shape[1], frame.shape[0])
        cap.release()
    finally:
        os.unlink(path)
    return f"{n} frames {size[0]}x{size[1]}"


class _Handler(BaseHTTPRequestHandler):
    fake: FakeReplicate
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        fake = self.fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        rec = Request(method, urllib.parse.urlsplit(self.path).path, time.monotonic(), body=body,
                      authorization=self.headers.get("Authorization", ""))
        with fake.lock:
            fake.requests.append(rec)
        if fake.request_latency:
            time.sleep(fake.request_latency)
        self.extra_headers: dict[str, str] = {}
        try:
            status, payload, ctype = self._route(method, rec.path, body)
        except Exception as exc:  # a bug in the fake should show up as a 500, not a hang
            status, payload, ctype = 500, {"detail": f"fake server error: {exc}"}, "application/json"
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        rec.status, rec.end = status, time.monotonic()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for key, value in self.extra_headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str, path: str, body: bytes) -> tuple[int, Any, str]:
        fake = self.fake
        js = "application/json"
        m = re.fullmatch(r"/delivery/(\w+)\.\w+", path)
        if m and method == "GET":
            data, ctype = fake.outputs.get(m.group(1), (b"", ""))
            return (200, data, ctype) if ctype else (404, {"detail": "no such output"}, js)
        if not path.startswith("/v1/"):
            return 404, {"detail": "not found"}, js
        presented = self.headers.get("Authorization", "")
        if presented != f"Bearer {fake.token}":
            return 401, {"title": "Unauthenticated", "status": 401,
                         "detail": f"Invalid token presented: {presented}"}, js
        forced = fake.take_failure(method, path)
        if forced is not None:
            self.extra_headers = {"Retry-After": str(fake.retry_after)} if fake.retry_after is not None else {}
            return forced, {"title": "Forced failure", "status": forced, "detail": "try again"}, js
        if method == "GET" and (m := re.fullmatch(r"/v1/models/([^/]+)/([^/]+)", path)):
            model = fake.models.get(f"{m.group(1)}/{m.group(2)}")
            return (200, model.model_json(fake.url), js) if model else _not_found()
        if method == "GET" and (m := re.fullmatch(r"/v1/models/([^/]+)/([^/]+)/versions/(\w+)", path)):
            model = fake.models.get(f"{m.group(1)}/{m.group(2)}")
            if model is None or model.version != m.group(3):
                return _not_found()
            return 200, model.version_json(), js
        if method == "POST" and (m := re.fullmatch(r"/v1/models/([^/]+)/([^/]+)/predictions", path)):
            model = fake.models.get(f"{m.group(1)}/{m.group(2)}")
            if model is None or not model.official:
                return _not_found()
            status, payload = fake.create(model, json.loads(body or b"{}").get("input") or {})
            return status, payload, js
        if method == "POST" and path == "/v1/predictions":
            doc = json.loads(body or b"{}")
            model = next((x for x in fake.models.values() if x.version == doc.get("version")), None)
            if model is None:
                return 422, {"title": "Invalid version", "status": 422,
                             "detail": "The specified version does not exist (or perhaps you don't have permission "
                                       "to use it?)"}, js
            status, payload = fake.create(model, doc.get("input") or {})
            return status, payload, js
        if method == "GET" and (m := re.fullmatch(r"/v1/predictions/(\w+)", path)):
            p = fake.predictions.get(m.group(1))
            if p is None:
                return _not_found()
            with fake.lock:
                fake.advance(p)
                return 200, fake.prediction_json(p), js
        if method == "POST" and (m := re.fullmatch(r"/v1/predictions/(\w+)/cancel", path)):
            p = fake.predictions.get(m.group(1))
            if p is None:
                return _not_found()
            with fake.lock:
                if p["status"] not in ("succeeded", "failed"):
                    p["status"] = "canceled"
                fake.cancelled.append(p["id"])
                return 200, fake.prediction_json(p), js
        if method == "POST" and path == "/v1/files":
            data, filename, ctype = _multipart_file(self.headers.get("Content-Type", ""), body)
            fid = uuid.uuid4().hex[:16]
            with fake.lock:
                fake.files[fid] = (data, ctype)
            return 201, {"id": fid, "name": filename, "content_type": ctype, "size": len(data),
                         "etag": hashlib.md5(data).hexdigest(),
                         "checksums": {"sha256": hashlib.sha256(data).hexdigest()},
                         "metadata": {}, "created_at": "2026-01-01T00:00:00Z", "expires_at": None,
                         "urls": {"get": f"{fake.url}/v1/files/{fid}/download"}}, js
        if method == "GET" and (m := re.fullmatch(r"/v1/files/(\w+)/download", path)):
            data, ctype = fake.files.get(m.group(1), (b"", ""))
            return (200, data, ctype) if ctype else _not_found()
        return _not_found()


def _not_found() -> tuple[int, dict, str]:
    return 404, {"title": "Not found", "detail": "The requested resource could not be found.", "status": 404}, \
        "application/json"


def _multipart_file(content_type: str, body: bytes) -> tuple[bytes, str, str]:
    """The 'content' part of a multipart/form-data body: (bytes, filename, content type)."""
    msg = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    for part in msg.iter_parts():
        if part.get_param("name", header="content-disposition") == "content":
            return part.get_payload(decode=True), part.get_filename() or "file", part.get_content_type()
    raise ValueError("no 'content' part in the upload")
