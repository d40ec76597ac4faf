"""Content fingerprints for files a node reads, so editing a file on disk invalidates its cache.

A fingerprint is (size, mtime, hash of the content). Hashing a multi-GB checkpoint on every run
would be slow, so hashes are memoised per (path, size, mtime): a file is re-read only when it
changed. The memo is bounded (least recently used out), so a long-lived server that sees
thousands of uploads does not grow without end. blake2b is in the standard library and faster
than sha256 in pure Python builds.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import threading
from collections import OrderedDict

MEMO_ENTRIES = 4096
_memo: OrderedDict[tuple[str, int, int, str], str] = OrderedDict()
_lock = threading.Lock()
_CHUNK = 1 << 20


def file_hash(path: str | os.PathLike[str], digest_size: int = 16, algorithm: str = "blake2b") -> str:
    """Hex digest of a file's content (blake2b of `digest_size` bytes, or e.g. "sha256", which
    the remote engine's content addressing uses), memoised on (path, size, mtime)."""
    p = os.fspath(path)
    st = os.stat(p)
    name = f"blake2b-{digest_size}" if algorithm == "blake2b" else algorithm
    key = (os.path.abspath(p), st.st_size, st.st_mtime_ns, name)
    with _lock:
        hit = _memo.get(key)
        if hit is not None:
            _memo.move_to_end(key)
    if hit is not None:
        return hit
    h = hashlib.blake2b(digest_size=digest_size) if algorithm == "blake2b" else hashlib.new(algorithm)
    with open(p, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    with _lock:
        _memo[key] = digest
        while len(_memo) > MEMO_ENTRIES:
            _memo.popitem(last=False)
    return digest


def fingerprint(path: str | os.PathLike[str]) -> str:
    """A string that changes when the file or folder (its listing and files) changes.

    A missing path fingerprints as 'missing' so the node runs and fails with the path.
    """
    try:
        p = pathlib.Path(path).expanduser()
        if p.is_dir():
            parts = []
            for child in sorted(p.rglob("*")):
                if child.is_file():
                    st = child.stat()
                    parts.append(f"{child.relative_to(p)}:{st.st_size}:{st.st_mtime_ns}")
            return "dir:" + hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()
        st = p.stat()
        return f"{st.st_size}:{st.st_mtime_ns}:{file_hash(p)}"
    except (OSError, ValueError, RuntimeError):  # a NUL byte, an unknown ~user: no such file either
        return "missing"


def short_hash(path: str | os.PathLike[str]) -> str:
    """The first 10 hex digits of the file's sha256, for provenance in saved images: A1111's
    "Model hash" (AutoV2), which Civitai's by-hash lookup takes, so a PNG names its models findably."""
    return file_hash(path, algorithm="sha256")[:10]
