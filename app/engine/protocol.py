"""The remote engine's wire protocol, shared by the server (`app.server`) and its client
(`app.engine.remote`): routes, how inputs and outputs are named, and the rules both sides check.

Everything is under `API` (/api/v1). Every route but `GET /api/v1/health` needs
`Authorization: Bearer <token>` (/openapi.json and /docs too; 401 otherwise, also on the
WebSocket handshake); errors are JSON `{"error": "<one line>"}` (a workflow that does not
validate: 422 with `"problems": [{"node_id", "port", "message"}]` as well).

    GET    /health                                 {"status": "ok", "version"}        (no token)
    GET    /info                                   version, protocol, device, gpu, vram_total/free,
                                                   models (count), loaded (names of the models in
                                                   memory), max_upload, chunk_bytes, jobs
    GET    /nodes                                  the node catalogue: NodeSpec.describe() of each
    GET    /nodes/{type_id}/choices/{port}         {"choices": [...]} (model lists)
    GET    /models[?kind=K]                        [{"name", "kind", "family", "size", "sha256",
                                                   "format"}], K one of checkpoint, lora,
                                                   text_encoder, vae; sha256 is null until the server has
                                                   hashed the file (once, in the background)
    POST   /models                                 {"blob", "kind", "name"} -> adopt an uploaded
                                                   .safetensors blob as a model -> 201 {"name", ...}
                                                   (200: the same file is already there; 409: a
                                                   different file has that name)
    POST   /blobs/missing                          {"hashes": [sha256...]} -> {"missing": [...]}
    HEAD   /blobs/{sha256}                         200 with Content-Length, or 404
    GET    /blobs/{sha256}/upload                  {"received": bytes so far, "size", "complete"}
    PUT    /blobs/{sha256}?offset=N                a chunk (header X-Blob-Size: the total);
                                                   200 {"received"}; the last chunk verifies the hash
                                                   -> 201 {"sha256", "size"}; mismatch -> 422 (the
                                                   partial is dropped); an offset other than the
                                                   resume point -> 409 {"received"}; over the limit
                                                   -> 413 unread; a blob already there -> 200
    GET    /blobs/{sha256}                         the bytes (HTTP Range supported)
    POST   /trees                                  {"files": {"rel/path": sha256}} -> {"tree",
                                                   "missing": [hashes not uploaded yet]}
    PUT    /jobs/{job_id}                          {"workflow": <imagebash/1>, "targets": [...]}
                                                   -> 201 (200 when the same job was already
                                                   submitted: a retry; 409 if the id is taken by
                                                   another workflow); ids match JOB_ID
    GET    /jobs?limit=N&offset=M[&status=S]       {"jobs": [...], "total"}, newest first
    GET    /jobs/{job_id}                          status, per-node status/durations/errors
    DELETE /jobs/{job_id}                          cancel (queued or running; 409 once finished)
    POST   /jobs/{job_id}/rerun                    queue an interrupted/failed/cancelled job again
    GET    /jobs/{job_id}/files                    the job's written files: [{"path", "kind",
                                                   "size", "sha256", "node_id", "frame"}]; path is
                                                   relative to the job's output folder (absolute
                                                   for a file a node wrote elsewhere)
    GET    /jobs/{job_id}/outputs/{node}/{port}    a value: .npy for arrays (application/x-npy,
                                                   np.load(..., allow_pickle=False)), JSON
                                                   {"value": v} for scalars; 410 when no longer kept
    GET    /jobs/{job_id}/outputs/{node}/{port}/frames/{i}   one frame as an 8-bit PNG
    GET    /events?after=SEQ&limit=N[&job=ID]      {"events": [record...], "last_seq"}
    WS     /events?after=SEQ[&job=ID]              records as they happen, then live (no `after`:
                                                   live only); closed 1013 when the client falls
                                                   too far behind: reconnect with after=

An event record is `{"seq": n, "job": job_id, "event": events.to_wire(e)}`; `seq` grows across
all jobs, so a client that reconnects asks for `after=<last seq it saw>` and misses nothing. A
NodeFile record also carries `"file"`: the file's entry in GET /jobs/{id}/files (with its
sha256, to download it from /blobs). Job statuses: queued, running, done, failed, cancelled,
interrupted (the server stopped while it ran; rerun it).

Inputs on the client's disk travel as content-addressed blobs. In a submitted workflow a `Path`
parameter naming a file becomes `blob:<sha256>/<file name>`, a folder becomes `tree:<sha256>`
(the hash of its manifest, see `tree_hash`); the server turns both into paths under its data
dir. A model file that exists only on the client (a personal LoRA) is uploaded as a blob and
adopted (`POST /models`); the parameter then names it as the server lists it.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re

API = "/api/v1"
VERSION = 1
TOKEN_HEADER = "Authorization"
SIZE_HEADER = "X-Blob-Size"
#: Bytes per upload request: small enough that no request is held near a proxy's time limit.
CHUNK_BYTES = 8 << 20
#: The server refuses a blob larger than this unless started with a higher --max-upload.
DEFAULT_MAX_UPLOAD = 64 << 30
#: No request is held open longer than this (Runpod's proxy cuts at 100 s).
MAX_REQUEST_SECONDS = 30

#: Client-chosen job ids (they name a folder on the server).
JOB_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"

BLOB_PREFIX = "blob:"
TREE_PREFIX = "tree:"
_SHA = re.compile(r"^[0-9a-f]{64}$")


class ProtocolError(ValueError):
    """A reference, hash or name that does not follow the protocol (one line)."""


def is_sha256(text: str) -> bool:
    return bool(_SHA.match(text))


def safe_name(name: str) -> str:
    """A file name as the server stores it: the last path part, no separators, no dot-only names."""
    base = posixpath.basename(str(name).replace("\\", "/")).strip()
    if base in ("", ".", "..") or "\x00" in base:
        raise ProtocolError(f"not a usable file name: {name!r}")
    return base


def safe_relpath(path: str) -> str:
    """A relative path inside a tree: '/'-separated, no absolute part, no '..', no empty parts."""
    p = str(path).replace("\\", "/")
    parts = p.split("/")
    if not p or p.startswith("/") or re.match(r"^[A-Za-z]:", p) or any(x in ("", ".", "..") for x in parts) \
            or "\x00" in p:
        raise ProtocolError(f"not a safe relative path: {path!r}")
    return "/".join(parts)


def blob_ref(sha256: str, name: str) -> str:
    return f"{BLOB_PREFIX}{sha256}/{safe_name(name)}"


def tree_ref(tree: str) -> str:
    return f"{TREE_PREFIX}{tree}"


def parse_ref(value: str) -> tuple[str, str, str] | None:
    """('blob', sha, name) or ('tree', sha, '') for a reference, None for any other value."""
    if not isinstance(value, str):
        return None
    if value.startswith(BLOB_PREFIX):
        sha, _, name = value[len(BLOB_PREFIX):].partition("/")
        if not is_sha256(sha):
            raise ProtocolError(f"bad blob reference {value!r}")
        return "blob", sha, safe_name(name)
    if value.startswith(TREE_PREFIX):
        sha = value[len(TREE_PREFIX):]
        if not is_sha256(sha):
            raise ProtocolError(f"bad tree reference {value!r}")
        return "tree", sha, ""
    return None


def tree_manifest(files: dict[str, str]) -> bytes:
    """The canonical form of a folder: sorted {relative path: sha256}, compact JSON."""
    clean = {}
    for rel, sha in files.items():
        if not is_sha256(sha):
            raise ProtocolError(f"bad hash for {rel!r} in a tree")
        clean[safe_relpath(rel)] = sha
    return json.dumps(clean, sort_keys=True, separators=(",", ":")).encode()


def tree_hash(files: dict[str, str]) -> str:
    """The id of a folder on the server: the sha256 of its manifest."""
    return hashlib.sha256(tree_manifest(files)).hexdigest()
