"""Get a model into the models folder: from the Hub, Civitai or a URL, resumable, hash-checked.

Single files are streamed with httpx to `<final>.part` next to where they land, so an interrupted
or cancelled download continues with an HTTP Range request from the .part's size (the sha256 of
the existing prefix is recomputed, so the whole file is always checked before it is renamed). A
whole diffusers repo is listed through huggingface_hub's HfApi and each file it needs is
streamed the same way. Every failure is a `DownloadError` with one line a user can act on; tokens
travel only in Authorization headers and never reach a message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from app import secrets
from app.library import sources
from app.library.sources import Source, SourceError

log = logging.getLogger(__name__)

#: Bytes hashed per read when re-hashing a .part before resuming.
HASH_CHUNK = 8 << 20
#: At most this many progress callbacks per second.
PROGRESS_HZ = 10
#: Automatic resumes after a dropped connection within one call.
RETRIES = 3
#: Kinds that have a folder: catalog.DIRS plus embeddings.
EXTRA_DIRS = {"embedding": ("embeddings",), "depth": ("depth",)}  # depth: the Depth preprocessor's models
#: Civitai model types → our kinds.
CIVITAI_KINDS = {"checkpoint": "checkpoint", "lora": "lora", "locon": "lora", "dora": "lora", "lycoris": "lora",
                 "textualinversion": "embedding", "vae": "vae", "controlnet": "controlnet"}
TIMEOUT = httpx.Timeout(30.0, connect=15.0)
_SHA = re.compile(r"[0-9a-f]{64}")


class DownloadError(Exception):
    """A download that did not produce a model file; the message is one line."""


@dataclass
class DownloadProgress:
    """Where a download stands: bytes done of total, bytes/s over this call, seconds left."""

    done: int
    total: int | None
    speed: float
    eta: float | None
    name: str


class _Cancelled(Exception):
    pass


def _folders() -> dict[str, tuple[str, ...]]:
    from nodes.diffusion.catalog import DIRS

    return {**DIRS, **EXTRA_DIRS}


def kind_folder(root: Path, kind: str) -> Path:
    """The folder a model of `kind` lands in under a models root."""
    sub = _folders()[kind][0]
    return root / sub if sub else root


def download(source: str, kind: str | None = None, *, dest_root: Path | None = None,
             expected_sha256: str | None = None, token: str | None = None,
             progress: Callable[[DownloadProgress], None] | None = None,
             cancel: threading.Event | None = None) -> Path:
    """Download `source` into the models folder and return the file (or repo folder) it became.

    kind None means: a repo is a checkpoint, a single file is sorted by its safetensors header.
    """
    try:
        src = sources.parse(source)
    except SourceError as exc:
        raise DownloadError(str(exc)) from None
    if kind is not None and kind not in _folders():
        raise DownloadError(f"unknown model kind {kind!r}: use one of {', '.join(sorted(_folders()))}")
    if expected_sha256 is not None:
        expected_sha256 = expected_sha256.strip().lower()
        if not _SHA.fullmatch(expected_sha256):
            raise DownloadError(f"{expected_sha256!r} is not a sha256 (64 hex digits)")
    name = src.filename
    if name and sources.is_pickle(name):
        raise DownloadError(sources.pickle_message(name))
    secrets.remember(token)
    if dest_root is None:
        from app.paths import models_dirs

        dest_root = models_dirs()[0]
    job = _Job(Path(dest_root), progress, cancel or threading.Event())
    try:
        job.check()
        if src.kind == "hf-repo":
            return _snapshot(src, kind or "checkpoint", job, token if token is not None else sources.hf_token())
        if src.kind == "hf-file":
            return _hub_file(src, kind, job, expected_sha256, token if token is not None else sources.hf_token())
        if src.kind == "civitai":
            return _civitai(src, kind, job, expected_sha256, token if token is not None else sources.civitai_token())
        return _url(src, kind, job, expected_sha256, token)
    except _Cancelled:
        raise DownloadError("cancelled; run it again to resume") from None
    except httpx.TimeoutException:
        raise DownloadError(f"{src.label}: the server stopped answering (timeout); run it again to resume") from None
    except httpx.HTTPError as exc:
        host = urllib.parse.urlsplit(str(exc.request.url)).netloc if _has_request(exc) else "the server"
        raise DownloadError(f"{src.label}: cannot reach {host} ({type(exc).__name__}); check the connection "
                            "and run it again") from None
    except OSError as exc:
        raise DownloadError(f"{src.label}: cannot write the download ({exc.strerror or type(exc).__name__}"
                            f"{': ' + exc.filename if isinstance(exc.filename, str) else ''})") from None


def _has_request(exc: httpx.HTTPError) -> bool:
    try:
        exc.request  # noqa: B018 - raises RuntimeError when the error has no request
    except RuntimeError:
        return False
    return True


# --- progress ------------------------------------------------------------------------------------

class _Job:
    """One download call: where it goes, who hears about progress, and its cancel flag. A repo
    download of several files reports them as one total (`prior` bytes of finished files)."""

    def __init__(self, root: Path, callback: Callable[[DownloadProgress], None] | None,
                 cancel: threading.Event) -> None:
        self.root, self.callback, self.cancel = root, callback, cancel
        self.started = time.monotonic()
        self.last = 0.0
        self.fresh = 0  # bytes received by the current file in this call
        self.prior = self.prior_fresh = 0
        self.grand: int | None = None
        self.label = ""

    def check(self) -> None:
        if self.cancel.is_set():
            raise _Cancelled

    def file_done(self, size: int) -> None:
        self.prior += size
        self.prior_fresh += self.fresh
        self.fresh = 0

    def report(self, done: int, total: int | None, name: str, fresh: int, final: bool = False) -> None:
        self.check()
        self.fresh = fresh
        if self.callback is None:
            return
        if self.grand is not None:
            done, total, name, fresh = self.prior + done, self.grand, self.label, self.prior_fresh + fresh
        now = time.monotonic()
        if not final and self.last and now - self.last < 1.0 / PROGRESS_HZ:
            return
        self.last = now
        speed = fresh / max(now - self.started, 1e-6)
        eta = (total - done) / speed if total is not None and speed > 0 else None
        self.callback(DownloadProgress(done, total, speed, eta, name))


# --- single files over HTTP ----------------------------------------------------------------------

def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _url(src: Source, kind: str | None, job: _Job, expected: str | None, token: str | None) -> Path:
    return _single(src.url or "", src.filename or "download.safetensors", kind, job, expected, _auth(token),
                   src.label, "url")


def _hub_file(src: Source, kind: str | None, job: _Job, expected: str | None, token: str | None) -> Path:
    _hub_online()
    return _single(_resolve_url(src.repo or "", src.revision, src.path or ""), src.filename or "model.safetensors",
                   kind, job, expected, _auth(token), src.label, "hf")


def _resolve_url(repo: str, revision: str, path: str) -> str:
    return (f"{sources.hf_endpoint()}/{repo}/resolve/{urllib.parse.quote(revision, safe='')}/"
            f"{urllib.parse.quote(path)}")


def _single(url: str, name: str, kind: str | None, job: _Job, expected: str | None, headers: dict[str, str],
            label: str, service: str) -> Path:
    """One model file into its kind's folder, or via a staging folder until its header says."""
    folder = kind_folder(job.root, kind) if kind else job.root / ".downloads"
    if kind and (folder / name).exists():
        return _existing(folder / name, expected)
    final = _fetch(url, folder, name, job, expected=expected, headers=headers, label=label, service=service)
    return _sort_by_header(final, job.root) if kind is None else final


def _fetch(url: str, folder: Path, name: str, job: _Job, *, expected: str | None, headers: dict[str, str],
           label: str, service: str, sniff: bool = True) -> Path:
    """Stream one file to `folder/name` through `name.part`, resuming after dropped connections."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    part = folder / (name + ".part")
    with httpx.Client(timeout=TIMEOUT, follow_redirects=True) as client:
        for attempt in range(RETRIES + 1):
            try:
                sha = _stream(client, url, part, name, job, headers=headers, expected=expected, label=label,
                              service=service, sniff=sniff)
                break
            except (httpx.RemoteProtocolError, httpx.ReadError, _ShortRead) as exc:
                if attempt == RETRIES or not part.exists():
                    raise DownloadError(f"{name}: the connection dropped after {_mb(_size(part))} "
                                        f"({type(exc).__name__}); run it again to resume") from None
                log.info("%s: connection dropped at %d bytes; resuming", name, _size(part))
    log.info("%s: downloaded, sha256 %s", name, sha)
    os.replace(part, final)
    return final


def _existing(final: Path, expected: str | None) -> Path:
    """A file already in place: kept when no hash is known or the hash matches."""
    if expected is None or _hash_file(final) == expected:
        return final
    raise DownloadError(f"{final.name} already exists in {final.parent} with a different sha256; remove it "
                        "or rename it and run the download again")


class _ShortRead(Exception):
    """The body ended before Content-Length (some servers close without an error)."""


def _stream(client: httpx.Client, url: str, part: Path, name: str, job: _Job, *, headers: dict[str, str],
            expected: str | None, label: str, service: str, sniff: bool) -> str:
    """One GET into `part` (resuming from its size); returns the sha256 of the whole file."""
    offset = _size(part)
    req = {**headers, "Accept-Encoding": "identity"}
    if offset:
        req["Range"] = f"bytes={offset}-"
    with client.stream("GET", url, headers=req) as r:
        if r.status_code == 416 and offset:
            part.unlink()  # the .part is not a prefix of this file any more: start again
            return _stream(client, url, part, name, job, headers=headers, expected=expected, label=label,
                           service=service, sniff=sniff)
        _raise_for_status(r, label, service)
        if offset and not (r.status_code == 206 and _range_start(r) == offset):
            offset = 0  # the server ignored the Range: start from the beginning
        ctype = r.headers.get("content-type", "").split(";")[0].strip().lower()
        if sniff and ctype in ("text/html", "application/xhtml+xml"):
            raise DownloadError(f"{label} answered a web page (Content-Type {ctype}), not a model file; use the "
                                "file's download link")
        length = _int(r.headers.get("content-length"))
        total = offset + length if length is not None else _range_total(r)
        _check_space(part.parent, (total - offset) if total is not None else None)
        linked = _hub_sha(r) if service == "hf" else None
        expected = expected or linked
        hasher = hashlib.sha256()
        if offset:
            _hash_into(hasher, part, offset)
        done = offset
        sniffed = offset > 0 or not sniff
        head = b""
        it = r.iter_raw() if not r.headers.get("content-encoding") else r.iter_bytes()
        with open(part, "r+b" if offset else "wb") as f:
            if offset:
                f.seek(offset)
                f.truncate()
            try:
                for chunk in it:
                    if not sniffed:
                        head += chunk
                        if len(head) < 9:
                            continue
                        _sniff(head, label, total)
                        sniffed, chunk, head = True, head, b""
                    f.write(chunk)
                    hasher.update(chunk)
                    done += len(chunk)
                    job.report(done, total, name, done - offset)
            except DownloadError:
                f.close()
                part.unlink(missing_ok=True)
                raise
            if not sniffed:
                f.close()
                part.unlink(missing_ok=True)
                raise DownloadError(f"{label} answered {len(head)} bytes, not a model file")
        if total is not None and done < total:
            raise _ShortRead
        job.report(done, total, name, done - offset, final=True)
    digest = hasher.hexdigest()
    if expected is not None and digest != expected:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{name}: sha256 mismatch (expected {expected}, got {digest}): the download was "
                            "removed")
    return digest


def _sniff(head: bytes, label: str, total: int | None) -> None:
    """Refuse a body that is neither safetensors (sane header length, then '{') nor GGUF."""
    if head[:4] == b"GGUF":
        return
    (n,) = struct.unpack("<Q", head[:8])
    if 2 <= n <= 100_000_000 and (total is None or 8 + n <= total) and head[8:9] == b"{":
        return
    raise DownloadError(f"{label} is not a model file (no safetensors header); the download was removed")


def _raise_for_status(r: httpx.Response, label: str, service: str) -> None:
    code = r.status_code
    if code < 400:
        return
    error = r.headers.get("x-error-code", "")
    if code == 404 or error in ("RepoNotFound", "EntryNotFound", "RevisionNotFound"):
        raise DownloadError(f"{label} not found (HTTP {code}){_private_hint(service, error)}")
    if code in (401, 403):
        raise DownloadError(_auth_message(label, service, code))
    if code == 429:
        raise DownloadError(f"{label}: the server is rate-limiting downloads (HTTP 429); wait and run it again")
    raise DownloadError(f"{label}: the server answered HTTP {code}; run it again later")


def _private_hint(service: str, error: str) -> str:
    if service == "hf" and error == "RepoNotFound":
        return "; if it is private, add a Hugging Face token in Settings ▸ Accounts"
    return ""


def _auth_message(label: str, service: str, code: int) -> str:
    if service == "civitai":
        return (f"{label} needs a Civitai account (HTTP {code}): add a Civitai API key in Settings ▸ Accounts, "
                "or `imagebash models download --token-from-keyring`")
    if service == "hf":
        return (f"{label} is gated (HTTP {code}): accept its licence on huggingface.co and add a Hugging Face "
                "token in Settings ▸ Accounts, or `imagebash models download --token-from-keyring`")
    return f"{label}: the server refused access (HTTP {code}); the link may need a token or may have expired"


def _hub_sha(r: httpx.Response) -> str | None:
    """The sha256 the Hub publishes for an LFS file (X-Linked-Etag on its redirect, or the ETag)."""
    for resp in [*r.history, r]:
        for key in ("x-linked-etag", "etag"):
            value = resp.headers.get(key, "").strip().removeprefix("W/").strip('"').lower()
            if _SHA.fullmatch(value):
                return value
    return None


def _range_start(r: httpx.Response) -> int | None:
    m = re.match(r"bytes (\d+)-", r.headers.get("content-range", ""))
    return int(m.group(1)) if m else None


def _range_total(r: httpx.Response) -> int | None:
    m = re.match(r"bytes \d+-\d+/(\d+)", r.headers.get("content-range", ""))
    return int(m.group(1)) if m else None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def _check_space(folder: Path, needed: int | None) -> None:
    if not needed:
        return
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DownloadError(f"not enough free space on {folder} (needs {_gb(needed)}, has {_gb(free)})")


def _hash_into(hasher, path: Path, length: int) -> None:
    with open(path, "rb") as f:
        left = length
        while left > 0:
            block = f.read(min(HASH_CHUNK, left))
            if not block:
                break
            hasher.update(block)
            left -= len(block)


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    _hash_into(h, path, _size(path))
    return h.hexdigest()


def _sort_by_header(staged: Path, root: Path) -> Path:
    """Move a file downloaded without a kind to loras/ or checkpoints/, by its header."""
    from app.engine.probe import ProbeError, probe

    kind = "checkpoint"
    if staged.suffix.lower() == ".safetensors":
        try:
            kind = "lora" if probe(staged).looks_like_lora() else "checkpoint"
        except ProbeError as exc:
            staged.unlink(missing_ok=True)
            raise DownloadError(f"{exc}; the download was removed") from None
    folder = kind_folder(root, kind)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / staged.name
    if target.exists():
        if _hash_file(target) == _hash_file(staged):
            staged.unlink()
            return target
        raise DownloadError(f"{target.name} already exists in {folder} with different contents; the new "
                            f"download is kept at {staged}")
    os.replace(staged, target)
    return target


# --- Civitai -------------------------------------------------------------------------------------

def civitai_version(version_id: str, token: str | None = None) -> dict:
    """GET /api/v1/model-versions/{id}: the version's files, hashes, trained words and model type."""
    return _civitai_get(f"/api/v1/model-versions/{version_id}", f"civitai:{version_id}", token)


def _civitai_get(path: str, label: str, token: str | None) -> dict:
    with httpx.Client(timeout=TIMEOUT, follow_redirects=True) as client:
        r = client.get(sources.civitai_api() + path, headers=_auth(token))
    _raise_for_status(r, label, "civitai")
    try:
        data = r.json()
    except ValueError:
        raise DownloadError(f"{label}: Civitai answered something that is not JSON") from None
    if not isinstance(data, dict):
        raise DownloadError(f"{label}: Civitai answered an unexpected document")
    return data


def _civitai(src: Source, kind: str | None, job: _Job, expected: str | None, token: str | None) -> Path:
    vid = src.version_id
    if vid is None:
        model = _civitai_get(f"/api/v1/models/{src.model_id}", src.label, token)
        versions = model.get("modelVersions") or []
        if not versions:
            raise DownloadError(f"{src.label} has no downloadable version")
        vid = str(versions[0]["id"])
    label = f"civitai:{vid}"
    version = civitai_version(vid, token)
    file = _pick_file(version.get("files") or [], label)
    name = _safe_name(str(file.get("name") or f"civitai_{vid}.safetensors"), label)
    if sources.is_pickle(name):
        raise DownloadError(sources.pickle_message(name))
    mtype = str((version.get("model") or {}).get("type") or "")
    kind = kind or CIVITAI_KINDS.get(mtype.lower())
    sha = expected or (str((file.get("hashes") or {}).get("SHA256") or "").lower() or None)
    if sha is not None and not _SHA.fullmatch(sha):
        sha = None
    url = file.get("downloadUrl") or version.get("downloadUrl") or f"{sources.civitai_api()}/api/download/models/{vid}"
    job.check()
    path = _single(str(url), name, kind, job, sha, _auth(token), label, "civitai")
    _write_sidecar(path, version, vid, sha)
    return path


def _pick_file(files: list[dict], label: str) -> dict:
    """The primary .safetensors model file of a version (refusing a version with only pickles)."""
    models = [f for f in files if str(f.get("type") or "Model") in ("Model", "Pruned Model")] or files
    safe = [f for f in models if str(f.get("name", "")).lower().endswith((".safetensors", ".gguf"))
            or (f.get("metadata") or {}).get("format") == "SafeTensor"]
    if not safe:
        if models:
            raise DownloadError(sources.pickle_message(str(models[0].get("name") or label)))
        raise DownloadError(f"{label} has no model file")
    return next((f for f in safe if f.get("primary")), safe[0])


def _safe_name(name: str, label: str) -> str:
    """A plain file name (no folders, no dot files) from what a server says."""
    clean = Path(name.replace("\\", "/")).name.strip()
    if not clean or clean.startswith("."):
        raise DownloadError(f"{label}: the server named the file {name!r}, which is not a usable file name")
    return clean


def _write_sidecar(path: Path, version: dict, vid: str, sha: str | None) -> None:
    """NAME.civitai.json next to the file: trigger words and where it came from (no token)."""
    model = version.get("model") or {}
    words = [str(w).strip() for w in version.get("trainedWords") or [] if str(w).strip()]
    info = {"source": f"civitai:{vid}", "modelId": version.get("modelId"), "modelVersionId": int(vid),
            "model": model.get("name"), "version": version.get("name"), "type": model.get("type"),
            "baseModel": version.get("baseModel"), "trainedWords": words, "sha256": sha}
    sidecar = path.with_name(path.name.rsplit(".", 1)[0] + ".civitai.json")
    sidecar.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --- whole Hub repos -----------------------------------------------------------------------------

def _snapshot(src: Source, kind: str, job: _Job, token: str | None) -> Path:
    """A diffusers repo into <kind folder>/<repo name>/: model_index.json and, per component, its
    configs, tokenizer files and one weight variant (fp16 when every component has it), as
    app.engine.models.hub_files chooses. The listing comes from the Hub API through huggingface_hub;
    each file is streamed like a single file, so a cancelled or dropped repo download resumes
    (huggingface_hub 2.4 deletes its partial files when a download fails)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFile

    from app.engine.models import hub_files

    _hub_online()
    label = src.label
    repo = src.repo or ""
    target = kind_folder(job.root, kind) / repo.split("/")[-1]
    headers = _auth(token)
    try:
        api = HfApi(endpoint=sources.hf_endpoint(), token=token or False)
        tree = {f.path: f for f in api.list_repo_tree(repo, recursive=True, revision=src.revision)
                if isinstance(f, RepoFile)}
    except GatedRepoError as exc:
        raise DownloadError(_auth_message(label, "hf", _code(exc))) from None
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        what = f"revision {src.revision}" if isinstance(exc, RevisionNotFoundError) else "repo"
        raise DownloadError(f"{label} not found ({what}; if it is private, add a Hugging Face token in "
                            "Settings ▸ Accounts)") from None
    except HfHubHTTPError as exc:
        code = _code(exc)
        if code in (401, 403):
            raise DownloadError(_auth_message(label, "hf", code)) from None
        raise DownloadError(f"{label}: the Hub answered HTTP {code}; run it again later") from None
    if "model_index.json" in tree:
        callback, job.callback = job.callback, None  # progress counts the whole repo, from below
        try:
            index_path = _fetch(_resolve_url(repo, src.revision, "model_index.json"), target, "model_index.json",
                                job, expected=None, headers=headers, label=label, service="hf", sniff=False)
        finally:
            job.callback = callback
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise DownloadError(f"{label}: its model_index.json is not JSON") from None
        chosen, _variant = hub_files(list(tree), index if isinstance(index, dict) else {}, half=True)
    else:  # not a diffusers pipeline (a text encoder, a LoRA repo): its safetensors and configs
        chosen = [p for p in tree if p.endswith((".safetensors", ".json", ".txt", ".model"))]
    if not any(p.endswith(".safetensors") for p in chosen):
        pickles = [p for p in tree if sources.is_pickle(p)]
        if pickles:
            raise DownloadError(sources.pickle_message(pickles[0].split("/")[-1]))
        raise DownloadError(f"{label} has no .safetensors weights to download")
    todo = [p for p in chosen if not (target / p).is_file() or _size(target / p) != tree[p].size]
    try:
        target.mkdir(parents=True, exist_ok=True)  # a repo without model_index.json has no file here yet
    except OSError as exc:
        raise DownloadError(f"{label}: cannot write the download ({exc.strerror}: {target})") from None
    _check_space(target, sum(tree[p].size - _size(target / (p + ".part")) for p in todo))
    job.grand, job.label = sum(tree[p].size for p in chosen), label
    job.prior = sum(tree[p].size for p in chosen if p not in todo)
    for path in todo:
        f = tree[path]
        sha = f.lfs.sha256 if f.lfs is not None else None
        folder = target.joinpath(*path.split("/")[:-1])
        _fetch(_resolve_url(repo, src.revision, path), folder, path.split("/")[-1], job, expected=sha,
               headers=headers, label=f"{label}/{path}", service="hf", sniff=path.endswith(".safetensors"))
        job.file_done(f.size)
    job.report(0, 0, label, 0, final=True)
    return target


def _code(exc) -> int:
    response = getattr(exc, "response", None)
    return response.status_code if response is not None else 0


def _hub_online() -> None:
    """Honour huggingface_hub's offline mode (HF_HUB_OFFLINE, read once when it is imported)."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        raise DownloadError("HF_HUB_OFFLINE is set: unset it to download from the Hugging Face Hub")
