"""Files by content: the blob store, resumable chunked uploads, trees, and what a workflow's
`blob:` / `tree:` references become on the server's disk.

Why content addressing: a desktop uploads a 200 MB LoRA or a folder of 3,000 frames once, asks
`POST /blobs/missing` next time and sends nothing; a dropped upload resumes where the server
stopped (`GET /blobs/{sha}/upload`), in chunks small enough for a proxy's time limit; the
server checks the sha256 of what it got, so a torn upload can never pass for the file.

Layout under the data dir:
    blobs/<aa>/<sha256>          complete blobs, read-only (0444)
    blobs/partial/<sha256>.part  an upload in progress (+ .json: the declared size)
    blobs/tmp/                   files being copied in (outputs of jobs)
    trees/<tree>.json            a tree's manifest {relative path: sha256}
    trees/<tree>/                the tree as a folder, built once (hard links to the blobs)
    inputs/<sha256>/<name>       a `blob:<sha>/<name>` reference: the blob under its own name,
                                 so loaders that look at the suffix see it
Every name that comes from a client goes through `protocol.safe_name` / `safe_relpath`, and
every path built from one is checked to stay inside its folder.

Uploads stream to disk (never a whole file in memory): request chunks are gathered to
WRITE_BYTES pieces, hashed as they arrive and written by a worker thread while the event loop
reads the next piece, and a chunk is answered while its last piece is still being written (see `_Upload`), so the
client's next chunk overlaps it: chunked uploads keep the disk busy like one long stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.engine.protocol import DEFAULT_MAX_UPLOAD, ProtocolError, is_sha256, safe_name, safe_relpath, tree_manifest

#: Bytes gathered from the request before one write + hash on the worker thread.
WRITE_BYTES = 2 << 20
_READ = 1 << 20
#: Files in one tree at most (a dataset of frames fits; a manifest stays a few MB).
MAX_TREE_FILES = 200_000
#: Unfinished uploads older than this are removed at start-up.
PARTIAL_MAX_AGE_S = 7 * 24 * 3600


class BlobError(Exception):
    """A refused blob operation: an HTTP status, one line, and extra JSON fields."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


class ResolveError(ValueError):
    """A blob/tree reference the server cannot turn into a path (one line)."""


@dataclass
class _Upload:
    """An upload in progress. `received` counts bytes accepted: hashed and written, or being
    written by `pending` (write-behind: a chunk is answered while its last piece is still going
    to disk, and the next chunk waits for it first; after a crash the file's size is the resume
    point, which is never past what the client was told)."""

    total: int
    received: int
    hasher: Any = field(default_factory=hashlib.sha256)
    pending: Any = None  # the piece being hashed and written (an asyncio future)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(src, dst)


def _seek_write(fd: int, data: memoryview, offset: int) -> int:
    os.lseek(fd, offset, os.SEEK_SET)
    return os.write(fd, data)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


class BlobStore:
    """The blobs, uploads, trees and inputs of one data dir (see the module docstring)."""

    def __init__(self, data_dir: str | Path, max_upload: int = DEFAULT_MAX_UPLOAD) -> None:
        self.root = Path(data_dir)
        self.max_upload = int(max_upload)
        self.blob_dir = self.root / "blobs"
        self.partial_dir = self.blob_dir / "partial"
        self.tmp_dir = self.blob_dir / "tmp"
        self.tree_dir = self.root / "trees"
        self.input_dir = self.root / "inputs"
        for d in (self.blob_dir, self.partial_dir, self.tmp_dir, self.tree_dir, self.input_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._uploads: dict[str, _Upload] = {}
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        self._sweep()

    def _sweep(self) -> None:
        """Drop copies half-made by a killed server and uploads abandoned for a week."""
        for p in self.tmp_dir.iterdir():
            p.unlink(missing_ok=True) if p.is_file() else shutil.rmtree(p, ignore_errors=True)
        for p in self.tree_dir.glob(".*"):
            shutil.rmtree(p, ignore_errors=True)
        now = time.time()
        for p in self.partial_dir.glob("*.part"):
            try:
                if now - p.stat().st_mtime > PARTIAL_MAX_AGE_S:
                    p.unlink(missing_ok=True)
                    p.with_suffix(".json").unlink(missing_ok=True)
            except OSError:
                pass

    # blobs ----------------------------------------------------------------------------------------
    def path(self, sha: str) -> Path:
        if not is_sha256(sha):
            raise ProtocolError(f"not a sha256: {sha[:80]!r}")
        return self.blob_dir / sha[:2] / sha

    def has(self, sha: str) -> bool:
        return is_sha256(sha) and self.path(sha).is_file()

    def size(self, sha: str) -> int:
        return self.path(sha).stat().st_size

    def missing(self, hashes: Iterable[str]) -> list[str]:
        """The hashes (well-formed ones; others raise ProtocolError) this store lacks, in order."""
        out = []
        for h in dict.fromkeys(hashes):
            if not is_sha256(h):
                raise ProtocolError(f"not a sha256: {str(h)[:80]!r}")
            if not self.has(h):
                out.append(h)
        return out

    def _place(self, tmp: Path, sha: str) -> Path:
        """Move a verified file into the store (read-only); a copy already there wins."""
        dst = self.path(sha)
        dst.parent.mkdir(exist_ok=True)
        if dst.exists():
            tmp.unlink(missing_ok=True)
        else:
            os.chmod(tmp, 0o444)
            os.replace(tmp, dst)
        return dst

    def add_file(self, path: str | Path) -> tuple[str, int]:
        """Copy a file into the store, hashing it on the way (one read): (sha256, size)."""
        tmp = self.tmp_dir / uuid.uuid4().hex
        h = hashlib.sha256()
        size = 0
        try:
            with open(path, "rb") as src, open(tmp, "wb") as dst:
                while chunk := src.read(_READ * 4):
                    h.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        sha = h.hexdigest()
        self._place(tmp, sha)
        return sha, size

    # uploads --------------------------------------------------------------------------------------
    def _partial(self, sha: str) -> Path:
        return self.partial_dir / f"{sha}.part"

    def upload_status(self, sha: str) -> dict[str, Any]:
        """Where an upload stands: {"received", "size" (declared, or None), "complete"}."""
        if self.has(sha):
            n = self.size(sha)
            return {"sha256": sha, "received": n, "size": n, "complete": True}
        with self._lock:
            up = self._uploads.get(sha)
        if up is not None:
            return {"sha256": sha, "received": up.received, "size": up.total, "complete": False}
        part = self._partial(sha)
        received = part.stat().st_size if part.is_file() else 0
        return {"sha256": sha, "received": received, "size": self._declared(sha), "complete": False}

    def _declared(self, sha: str) -> int | None:
        try:
            return int(json.loads(self._partial(sha).with_suffix(".json").read_text())["size"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _drop_partial(self, sha: str) -> None:
        with self._lock:
            self._uploads.pop(sha, None)
        self._partial(sha).unlink(missing_ok=True)
        self._partial(sha).with_suffix(".json").unlink(missing_ok=True)

    def _resume_state(self, sha: str, total: int) -> _Upload:
        """The upload's state, rebuilt from the partial file after a restart (one re-read)."""
        part = self._partial(sha)
        declared = self._declared(sha)
        if part.is_file() and declared is not None and part.stat().st_size <= declared:
            h = hashlib.sha256()
            n = 0
            with open(part, "rb") as f:
                while chunk := f.read(_READ * 8):
                    h.update(chunk)
                    n += len(chunk)
            return _Upload(declared, n, h)
        self._drop_partial(sha)
        part.with_suffix(".json").write_text(json.dumps({"size": total}))
        part.touch()
        return _Upload(total, 0)

    @staticmethod
    def _write_at(path: Path, offset: int, pieces: list[bytes]) -> None:
        """Write `pieces` at `offset` with one system call (a worker thread: the GIL is let go once)."""
        fd = os.open(path, os.O_WRONLY)
        try:
            if hasattr(os, "pwritev"):
                n = os.pwritev(fd, pieces, offset)
                if n == sum(len(x) for x in pieces):
                    return
                offset, pieces = offset + n, [b"".join(pieces)[n:]]  # a short write: finish plainly
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, offset) if hasattr(os, "pwrite") else _seek_write(fd, view, offset)
                view, offset = view[n:], offset + n
        finally:
            os.close(fd)

    async def _settle(self, sha: str, up: _Upload) -> None:
        """Wait for the piece in flight; a failed write (a full disk) drops the upload."""
        if up.pending is None:
            return
        try:
            await asyncio.shield(up.pending)
        except OSError as exc:
            self._drop_partial(sha)
            raise BlobError(409, f"the server could not write the upload ({exc.strerror or exc}): it starts "
                                 "again from 0", received=0) from None
        finally:
            up.pending = None

    async def receive(self, sha: str, offset: int, total: int, content_length: int | None,
                      chunks: AsyncIterator[bytes]) -> tuple[int, dict[str, Any]]:
        """Append one chunk of an upload; (HTTP status, JSON body). See `PUT /blobs/{sha}`.

        Refusals raise BlobError: over --max-upload or the free disk (413, before any byte is
        read), an offset other than the resume point or a second upload of the same blob at the
        same time (409 with "received"), a chunk past the declared size, or bytes whose sha256
        is not `sha` (422; the partial upload is dropped).
        """
        if not is_sha256(sha):
            raise BlobError(422, f"not a sha256: {sha[:80]!r}")
        if total < 0:
            raise BlobError(422, "X-Blob-Size must be the blob's total size in bytes")
        if total > self.max_upload:
            raise BlobError(413, f"the blob is {total} bytes, over this server's upload limit of {self.max_upload} "
                                 "bytes (start the server with a higher --max-upload)")
        if self.has(sha):
            n = self.size(sha)
            return 200, {"sha256": sha, "size": n, "received": n}
        if sha in self._busy:
            raise BlobError(409, "another upload of this blob is in progress", **self.upload_status(sha))
        self._busy.add(sha)
        try:
            with self._lock:
                up = self._uploads.get(sha)
            if up is None:
                up = await asyncio.to_thread(self._resume_state, sha, total)
                with self._lock:
                    self._uploads[sha] = up
            if up.total != total:
                raise BlobError(409, f"X-Blob-Size {total} differs from the {up.total} bytes this upload declared "
                                     "first", received=up.received, size=up.total)
            if offset != up.received:
                raise BlobError(409, f"offset {offset} is not where the upload stands: the server has "
                                     f"{up.received} bytes", received=up.received, size=up.total)
            if content_length is not None and offset + content_length > total:
                raise BlobError(422, f"the chunk ({content_length} bytes at offset {offset}) runs past "
                                     f"X-Blob-Size {total}", received=up.received)
            if offset == 0 and total > shutil.disk_usage(self.partial_dir).free:
                raise BlobError(413, f"not enough free disk on the server for {total} bytes")
            await self._stream(sha, up, chunks)
            if up.received < total:
                return 200, {"sha256": sha, "received": up.received, "size": total}
            await self._settle(sha, up)
            digest = up.hasher.hexdigest()
            if digest != sha:
                self._drop_partial(sha)
                raise BlobError(422, f"the uploaded bytes hash to {digest}, not {sha}: the upload was dropped; "
                                     "upload the file again", received=0)
            await asyncio.to_thread(self._place, self._partial(sha), sha)
            self._drop_partial(sha)
            return 201, {"sha256": sha, "size": total}
        finally:
            self._busy.discard(sha)

    async def _stream(self, sha: str, up: _Upload, chunks: AsyncIterator[bytes]) -> None:
        """Hash the request's chunks as they arrive and write them WRITE_BYTES at a time on a
        worker thread (one system call per piece, no copy to join them) while the loop reads on."""
        loop = asyncio.get_running_loop()
        part = self._partial(sha)
        buf: list[bytes] = []
        buffered = 0

        async def flush() -> None:
            nonlocal buf, buffered
            await self._settle(sha, up)  # one piece in flight at a time: order and bounded memory
            if buf:
                up.pending = loop.run_in_executor(None, self._write_at, part, up.received, buf)
                up.received += buffered
                buf, buffered = [], 0

        read = up.received  # bytes of the upload so far, accepted or still in `buf`
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                read += len(chunk)
                if read > up.total:
                    buf, buffered = [], 0
                    await self._settle(sha, up)
                    self._drop_partial(sha)
                    raise BlobError(422, f"the upload sent more bytes than X-Blob-Size ({up.total}): it was "
                                         "dropped", received=0)
                up.hasher.update(chunk)  # here, as it arrives: hashlib lets the GIL go while it runs
                buf.append(chunk)
                buffered += len(chunk)
                if buffered >= WRITE_BYTES:
                    await flush()
        finally:
            # the rest goes out, also when the client went away mid-chunk: every hashed byte is an
            # accepted one, so `received` stays the resume point; the next request waits for it
            await asyncio.shield(flush())

    # trees ----------------------------------------------------------------------------------------
    def put_tree(self, files: dict[str, str]) -> tuple[str, list[str]]:
        """Store a tree manifest; (tree id, hashes of its files not uploaded yet)."""
        if len(files) > MAX_TREE_FILES:
            raise ProtocolError(f"a tree holds at most {MAX_TREE_FILES} files ({len(files)} given)")
        manifest = tree_manifest(files)
        clean: dict[str, str] = json.loads(manifest)
        if len(clean) != len(files):
            raise ProtocolError("two paths of the tree name the same file")
        dirs = {"/".join(rel.split("/")[:i]) for rel in clean for i in range(1, rel.count("/") + 1)}
        clash = sorted(dirs & set(clean))
        if clash:
            raise ProtocolError(f"{clash[0]!r} is both a file and a folder in the tree")
        tree = hashlib.sha256(manifest).hexdigest()
        dst = self.tree_dir / f"{tree}.json"
        if not dst.exists():
            tmp = self.tmp_dir / uuid.uuid4().hex
            tmp.write_bytes(manifest)
            os.replace(tmp, dst)
        return tree, self.missing(clean.values())

    def tree_files(self, tree: str) -> dict[str, str] | None:
        if not is_sha256(tree):
            return None
        try:
            return json.loads((self.tree_dir / f"{tree}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def tree_folder(self, tree: str) -> Path:
        """The tree as a folder under the data dir, built once."""
        folder = self.tree_dir / tree
        if folder.is_dir():
            return folder
        files = self.tree_files(tree)
        if files is None:
            raise ResolveError(f"tree {tree} is not on the server: send its manifest (POST /trees) first")
        missing = self.missing(files.values())
        if missing:
            raise ResolveError(f"tree {tree[:12]}: {len(missing)} of its {len(files)} files are not on the server "
                               f"(first: {missing[0]}): upload them first")
        with self._build_lock:
            if folder.is_dir():
                return folder
            tmp = self.tree_dir / f".{tree}.{uuid.uuid4().hex}"
            try:
                for rel, sha in files.items():
                    dst = tmp / safe_relpath(rel)
                    if not _inside(dst, tmp):
                        raise ResolveError(f"tree {tree[:12]}: {rel!r} would leave the tree's folder")
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    _link_or_copy(self.path(sha), dst)
                tmp.mkdir(exist_ok=True)  # an empty tree is an empty folder
                os.rename(tmp, folder)
            except OSError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise ResolveError(f"tree {tree[:12]} cannot be built: {exc.strerror or exc}") from None
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return folder

    def blob_file(self, sha: str, name: str) -> Path:
        """A `blob:<sha>/<name>` reference as a file that keeps its name."""
        name = safe_name(name)
        if not self.has(sha):
            raise ResolveError(f"blob {sha} ({name}) is not on the server: upload it first")
        folder = self.input_dir / sha
        dst = folder / name
        if not _inside(dst, folder):
            raise ResolveError(f"{name!r} is not a usable file name")
        if dst.is_file():
            return dst
        try:
            folder.mkdir(exist_ok=True)
            tmp = self.tmp_dir / uuid.uuid4().hex
            _link_or_copy(self.path(sha), tmp)
            os.replace(tmp, dst)
        except OSError as exc:
            raise ResolveError(f"blob {sha[:12]} cannot be placed as {name!r}: {exc.strerror or exc}") from None
        return dst
