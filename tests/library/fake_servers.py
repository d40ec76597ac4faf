"""Fake model servers on 127.0.0.1 for the download tests (and the download benchmark).

`FileServer` serves bytes (or files on disk) over real HTTP/1.1 with Range support, and has knobs
for what goes wrong on real links: `drop_after` (close the connection after N body bytes, once),
`ignore_range` (answer 200 to a Range request), `delay` (seconds slept per 64 KiB: a slow link),
`content_type`, and `fail[path] = status`. Every request is recorded in `requests`.

`FakeHub` adds the Hugging Face Hub endpoints huggingface_hub 2.4 calls (read from its source):
GET /api/models/{repo}/revision/{rev}, GET /api/models/{repo}/tree/{rev} (recursive listing),
HEAD/GET /{repo}/resolve/{rev}/{path}. Like the real Hub, an LFS file (.safetensors) answers the
resolve URL with a 302 to a CDN URL (a second port: another origin) carrying X-Linked-Etag (its
sha256) and X-Linked-Size; other files answer 200 with a quoted git ETag. A gated repo answers 401 (no token) or 403 (a
wrong token) with X-Error-Code: GatedRepo; an unknown repo 401 RepoNotFound, an unknown file 404.

`FakeCivitai` speaks the REST API v1: /api/v1/model-versions/{id}, /api/v1/model-versions/by-hash/
{sha256 or AutoV2}, /api/v1/models/{id}, and /api/download/models/{id} (a 307 to the file, as civitai.com
redirects to its storage).

Start one with `with serve(FileServer(), {"/m.safetensors": data}) as s: s.url("/m.safetensors")`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import struct
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHUNK = 1 << 20
SLOW_CHUNK = 64 << 10


def safetensors_bytes(tensors: dict[str, tuple[int, ...]], fill: int = 0, pad_to: int = 0,
                      metadata: dict[str, str] | None = None) -> bytes:
    """A valid .safetensors file with F32 tensors of the given shapes (filled with a byte pattern),
    padded with one extra tensor to at least `pad_to` bytes so tests can make big files cheaply."""
    header: dict = {}
    offset = 0
    shapes = dict(tensors)
    size = 0
    for shape in shapes.values():
        n = 4
        for d in shape:
            n *= d
        size += n
    if pad_to > size + 256:
        shapes["pad"] = ((pad_to - size - 256) // 4,)
    for name, shape in shapes.items():
        n = 4
        for d in shape:
            n *= d
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    body = bytes((fill + i) % 251 for i in range(min(offset, 1 << 16)))
    data = (body * (offset // max(len(body), 1) + 1))[:offset]
    return struct.pack("<Q", len(raw)) + raw + data


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Request:
    """What the server saw: method, path (with query) and headers (lower-case names)."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)


class FileServer:
    """Serves `files` (path → bytes or a Path on disk) with the knobs described above."""

    def __init__(self) -> None:
        self.files: dict[str, bytes | Path] = {}
        self.headers: dict[str, dict[str, str]] = {}  # extra response headers per path
        self.fail: dict[str, int] = {}
        self.drop_after: int | None = None
        self.ignore_range = False
        self.delay = 0.0
        self.content_type = "application/octet-stream"
        self.requests: list[Request] = []
        self.base = ""
        self._lock = threading.Lock()

    def url(self, path: str) -> str:
        return self.base + path

    def seen(self, method: str | None = None, path_part: str = "") -> list[Request]:
        with self._lock:
            return [r for r in self.requests if (method is None or r.method == method) and path_part in r.path]

    # -- routing (subclasses add their own before falling back to files) --
    def route(self, h: Handler, method: str, path: str) -> None:
        bare = urllib.parse.urlsplit(path).path
        if bare in self.fail:
            h.send_status(self.fail[bare])
            return
        if bare not in self.files:
            h.send_status(404)
            return
        h.send_file(method, self.files[bare], self.content_type, self.headers.get(bare, {}))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _handle(self, method: str) -> None:
        app = self.server.app
        with app._lock:
            app.requests.append(Request(method, self.path, {k.lower(): v for k, v in self.headers.items()}))
        try:
            app.route(self, method, self.path)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def send_status(self, code: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, obj: object, code: int = 200, headers: dict[str, str] | None = None) -> None:
        self.send_status(code, {"Content-Type": "application/json", **(headers or {})}, json.dumps(obj).encode())

    def send_file(self, method: str, data: bytes | Path, content_type: str, extra: dict[str, str]) -> None:
        app = self.server.app
        size = data.stat().st_size if isinstance(data, Path) else len(data)
        start, end = 0, size
        code = 200
        rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if rng and not app.ignore_range:
            start = int(rng.group(1))
            end = int(rng.group(2)) + 1 if rng.group(2) else size
            if start >= size:
                self.send_status(416, {"Content-Range": f"bytes */{size}"})
                return
            code = 206
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if method == "HEAD":
            return
        with app._lock:
            drop, app.drop_after = app.drop_after, None
        step = SLOW_CHUNK if app.delay else CHUNK
        sent = 0
        f = open(data, "rb") if isinstance(data, Path) else None
        try:
            if f is not None:
                f.seek(start)
            pos = start
            while pos < end:
                n = min(step, end - pos)
                if drop is not None:
                    n = min(n, drop - sent)
                    if n <= 0:
                        self.close_connection = True
                        self.wfile.flush()
                        self.connection.shutdown(2)
                        return
                chunk = f.read(n) if f is not None else data[pos:pos + n]
                self.wfile.write(chunk)
                pos += n
                sent += n
                if app.delay:
                    time.sleep(app.delay)
        finally:
            if f is not None:
                f.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: FileServer

    def handle_error(self, request, client_address) -> None:  # a dropped connection is the point
        pass


@contextlib.contextmanager
def serve(app: FileServer, files: dict[str, bytes | Path] | None = None) -> Iterator[FileServer]:
    """Run `app` on 127.0.0.1 (a free port) in a thread for the duration of the block; an app with
    a `cdn_base` also gets a second port, a different origin as the Hub's CDN is."""
    app.files.update(files or {})
    servers = []
    for attr in ("base", "cdn_base") if hasattr(app, "cdn_base") else ("base",):
        server = _Server(("127.0.0.1", 0), Handler)
        server.app = app
        setattr(app, attr, f"http://127.0.0.1:{server.server_address[1]}")
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                                  daemon=True)
        thread.start()
        servers.append((server, thread))
    try:
        yield app
    finally:
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(5)


# --- the Hub -------------------------------------------------------------------------------------

@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = "a" * 40
    gated: bool = False


class FakeHub(FileServer):
    """Enough of huggingface.co for hf_hub_download, snapshot_download and plain resolve URLs."""

    def __init__(self, token: str | None = None) -> None:
        super().__init__()
        self.repos: dict[str, Repo] = {}
        self.token = token  # the token a gated repo accepts
        self.cdn_base = ""  # where LFS files are served from (set by serve)

    def add(self, repo: str, files: dict[str, bytes], gated: bool = False) -> Repo:
        commit = hashlib.sha1(repo.encode()).hexdigest()
        self.repos[repo] = r = Repo(files, commit, gated)
        for data in files.values():
            self.files[f"/_cdn/{sha256(data)}"] = data
        return r

    @staticmethod
    def lfs(path: str) -> bool:
        return path.endswith((".safetensors", ".bin", ".ckpt", ".gguf"))

    def _denied(self, h: Handler, repo: Repo | None) -> bool:
        auth = h.headers.get("Authorization", "")
        if repo is None:
            h.send_json({"error": "Repository not found"}, 401, {"X-Error-Code": "RepoNotFound",
                                                                 "X-Error-Message": "Repository not found"})
            return True
        if repo.gated and auth != f"Bearer {self.token}":
            code = 403 if auth else 401
            # the real Hub never echoes a token; this fake does, so tests prove it never reaches a message
            h.send_json({"error": f"Access to this model is restricted (you sent {auth!r})"}, code,
                        {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to this model is restricted"})
            return True
        return False

    def route(self, h: Handler, method: str, path: str) -> None:
        u = urllib.parse.urlsplit(path)
        parts = [urllib.parse.unquote(p) for p in u.path.split("/") if p]
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
            repo = self.repos.get(f"{parts[2]}/{parts[3]}")
            if self._denied(h, repo):
                return
            assert repo is not None
            if parts[4] == "revision":
                h.send_json({"id": f"{parts[2]}/{parts[3]}", "sha": repo.commit, "private": False,
                             "gated": "manual" if repo.gated else False,
                             "siblings": [{"rfilename": p} for p in repo.files]})
            else:
                h.send_json([self._entry(p, d) for p, d in repo.files.items()])
            return
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self.repos.get(f"{parts[0]}/{parts[1]}")
            if self._denied(h, repo):
                return
            assert repo is not None
            file = "/".join(parts[4:])
            if parts[3] not in ("main", repo.commit) or file not in repo.files:
                h.send_json({"error": "Entry not found"}, 404, {"X-Error-Code": "EntryNotFound",
                                                                "X-Repo-Commit": repo.commit})
                return
            data = repo.files[file]
            common = {"X-Repo-Commit": repo.commit}
            if self.lfs(file):
                h.send_status(302, {**common, "Location": f"{self.cdn_base}/_cdn/{sha256(data)}",
                                    "X-Linked-Etag": f'"{sha256(data)}"', "X-Linked-Size": str(len(data)),
                                    "ETag": f'"{hashlib.sha1(data).hexdigest()}"'})
                return
            h.send_file(method, data, "text/plain; charset=utf-8",
                        {**common, "ETag": f'"{hashlib.sha1(data).hexdigest()}"'})
            return
        super().route(h, method, path)

    def _entry(self, path: str, data: bytes) -> dict:
        entry = {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": path}
        if self.lfs(path):
            entry["lfs"] = {"oid": sha256(data), "size": len(data), "pointerSize": 134}
        return entry


# --- Civitai -------------------------------------------------------------------------------------

class FakeCivitai(FileServer):
    """Civitai's REST API v1 for model versions, by-hash look-ups and downloads."""

    def __init__(self, token: str | None = None) -> None:
        super().__init__()
        self.versions: dict[int, dict] = {}
        self.token = token  # when set, downloads need `Authorization: Bearer <token>`

    def add_version(self, vid: int, model_id: int, name: str, data: bytes, *, mtype: str = "LORA",
                    words: list[str] | None = None, sha: str | None = None, extra_files: list[dict] | None = None,
                    base_model: str = "SD 1.5") -> dict:
        """A model version with one primary file (plus `extra_files`, listed first)."""
        self.files[f"/files/{vid}/{name}"] = data
        self.headers[f"/files/{vid}/{name}"] = {"Content-Disposition": f'attachment; filename="{name}"'}
        file = {"id": vid * 10, "name": name, "type": "Model", "primary": True, "sizeKB": len(data) / 1024,
                "metadata": {"format": "SafeTensor" if name.endswith(".safetensors") else "PickleTensor"},
                "hashes": {"SHA256": (sha or sha256(data)).upper()},
                "downloadUrl": f"{self.base}/api/download/models/{vid}"}
        version = {"id": vid, "modelId": model_id, "name": "v1.0", "baseModel": base_model,
                   "trainedWords": words or [], "model": {"name": f"Model {model_id}", "type": mtype, "nsfw": False},
                   "files": [*(extra_files or []), file], "downloadUrl": file["downloadUrl"]}
        self.versions[vid] = version
        return version

    def route(self, h: Handler, method: str, path: str) -> None:
        u = urllib.parse.urlsplit(path)
        parts = [p for p in u.path.split("/") if p]
        if parts[:3] == ["api", "v1", "model-versions"]:
            if len(parts) == 5 and parts[3] == "by-hash":
                wanted = parts[4].lower()  # a SHA256, or its first 10 digits (AutoV2), as civitai.com takes
                found = [v for v in self.versions.values()
                         if any(wanted in (full, full[:10]) for f in v["files"]
                                for full in [(f.get("hashes") or {}).get("SHA256", "").lower()])]
                if found:
                    h.send_json(found[0])
                else:
                    h.send_json({"error": "Model not found"}, 404)
                return
            version = self.versions.get(int(parts[3])) if len(parts) == 4 and parts[3].isdigit() else None
            if version is None:
                h.send_json({"error": "Model not found"}, 404)
            else:
                h.send_json(version)
            return
        if parts[:3] == ["api", "v1", "models"] and len(parts) == 4:
            versions = [v for v in self.versions.values() if str(v["modelId"]) == parts[3]]
            if not versions:
                h.send_json({"error": "Model not found"}, 404)
            else:
                h.send_json({"id": int(parts[3]), "name": versions[0]["model"]["name"],
                             "type": versions[0]["model"]["type"], "modelVersions": versions})
            return
        if parts[:3] == ["api", "download", "models"] and len(parts) == 4:
            if self.token and h.headers.get("Authorization", "") != f"Bearer {self.token}":
                h.send_json({"error": "Unauthorized", "message": "The creator requires a login"}, 401)
                return
            version = self.versions.get(int(parts[3])) if parts[3].isdigit() else None
            if version is None:
                h.send_json({"error": "Model not found"}, 404)
                return
            name = version["files"][-1]["name"]
            h.send_status(307, {"Location": f"{self.base}/files/{parts[3]}/{name}"})
            return
        super().route(h, method, path)
