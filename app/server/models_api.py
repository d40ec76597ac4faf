"""The server's models: what `GET /models` lists, and adopting an uploaded LoRA or checkpoint.

Why hashes: the desktop decides what to upload by content, not by name (two people's
"style.safetensors" are different files; the same file under two names is one upload), so each
listed model carries its sha256. Hashing a 7 GB checkpoint takes seconds, and a models volume
holds dozens, so hashes are computed once on a background thread and remembered in SQLite keyed
by (path, size, mtime); a model not hashed yet is listed with "sha256": null until it is.

Adopting (`POST /models`) turns an uploaded blob into a model file the dropdowns list: it must
be a .safetensors whose header reads (`app.engine.probe`: only the JSON header is parsed,
nothing is ever unpickled) and whose tensors match the kind asked for; it goes to the first
models folder's `loras/` or `checkpoints/` under a safe name, never over a different file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any

from app.engine.protocol import ProtocolError, safe_name
from app.server.blobs import BlobStore
from app.server.db import Database

log = logging.getLogger(__name__)

KINDS = ("checkpoint", "lora", "text_encoder", "vae", "controlnet", "ipadapter")
SUBDIR = {"checkpoint": "checkpoints", "lora": "loras", "text_encoder": "text_encoders", "vae": "vae",
          "controlnet": "controlnet", "ipadapter": "ipadapter"}


class ModelRequestError(Exception):
    """A refused model request: HTTP status and one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def lora_family(path: Path) -> str | None:
    """The family a LoRA was made for (the families' rules, header only); None if unsure."""
    from app.engine import families
    from app.engine.probe import ProbeError, probe

    try:
        return families.lora_family(probe(path))
    except ProbeError:
        return None


def model_family(path: Path, kind: str) -> str | None:
    if kind == "lora":
        return lora_family(path)
    if kind in ("text_encoder", "vae", "controlnet", "ipadapter"):  # parts and add-ons: named by what loads them
        return None
    from app.engine.models import ModelError, detect_family

    try:
        return detect_family(path)
    except (ModelError, OSError, ValueError):
        return None


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class ModelIndex:
    """Lists and adopts models; hashes files in the background (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._todo: queue.SimpleQueue[Path | None] = queue.SimpleQueue()
        self._queued: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # hashes ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._hash_loop, name="imagebash-model-hash", daemon=True)
        self._thread.start()
        self.list()  # queues every model not hashed yet

    def close(self) -> None:
        self._todo.put(None)

    def _memo(self, path: Path) -> str | None:
        st = path.stat()
        row = self.db.row("SELECT size, mtime_ns, sha256 FROM model_hashes WHERE path = ?", (str(path),))
        if row is not None and row["size"] == st.st_size and row["mtime_ns"] == st.st_mtime_ns:
            return str(row["sha256"])
        return None

    def remember(self, path: Path, sha: str) -> None:
        st = path.stat()
        with self.db.tx() as conn:
            conn.execute("INSERT OR REPLACE INTO model_hashes (path, size, mtime_ns, sha256) VALUES (?, ?, ?, ?)",
                         (str(path), st.st_size, st.st_mtime_ns, sha))

    def sha256(self, path: Path, wait: bool = False) -> str | None:
        """The remembered hash of a model file; None (and queued for the hasher) when not known yet,
        unless `wait` (then it is computed now)."""
        try:
            known = self._memo(path)
        except OSError:
            return None
        if known is not None or not path.is_file():
            return known
        if wait:
            sha = sha256_file(path)
            self.remember(path, sha)
            return sha
        with self._lock:
            if str(path) not in self._queued:
                self._queued.add(str(path))
                self._todo.put(path)
        return None

    def _hash_loop(self) -> None:
        while (path := self._todo.get()) is not None:
            try:
                if path.is_file() and self._memo(path) is None:
                    self.remember(path, sha256_file(path))
            except OSError as exc:
                log.warning("cannot hash %s: %s", path.name, exc.strerror or exc)
            except Exception:
                log.exception("hashing %s failed", path)
            finally:
                with self._lock:
                    self._queued.discard(str(path))

    # listing --------------------------------------------------------------------------------------
    def list(self, kind: str | None = None) -> list[dict[str, Any]]:
        """[{"name", "kind", "family", "size", "sha256", "format"}] for the models folders' files."""
        from nodes.diffusion.catalog import (
            find,
            list_checkpoints,
            list_controlnets,
            list_ip_adapters,
            list_loras,
            list_text_encoders,
            list_vaes,
        )

        listings = {"checkpoint": list_checkpoints, "lora": list_loras, "text_encoder": list_text_encoders,
                    "vae": list_vaes, "controlnet": list_controlnets, "ipadapter": list_ip_adapters}
        out = []
        for k in (kind,) if kind else KINDS:
            names = listings[k]()
            for name in names:
                path = find(name, k)
                if path is None:
                    continue
                try:
                    out.append({"name": name, "kind": k, "family": model_family(path, k), "size": _size(path),
                                "sha256": self.sha256(path) if path.is_file() else None,
                                "format": "safetensors" if path.is_file() else "diffusers"})
                except OSError:
                    continue  # removed while listing
        return out

    # adopting -------------------------------------------------------------------------------------
    def adopt(self, blobs: BlobStore, sha: str, kind: str, name: str) -> tuple[bool, dict[str, Any]]:
        """(created, {"name", "kind", "sha256", "size", "family"}) for an uploaded blob made a model."""
        from app.engine.probe import ProbeError, probe
        from app.paths import models_dirs
        from nodes.diffusion.catalog import find

        if kind not in KINDS:
            raise ModelRequestError(422, f"unknown model kind {kind!r} ({', '.join(KINDS)})")
        try:
            name = safe_name(name)
        except ProtocolError as exc:
            raise ModelRequestError(422, str(exc)) from None
        if not name.lower().endswith(".safetensors") or name.lower() == ".safetensors":
            raise ModelRequestError(422, f"{name[:80]!r}: only .safetensors model files are adopted (pickle "
                                         "checkpoints can run code when loaded)")
        if not blobs.has(sha):
            raise ModelRequestError(404, f"blob {sha[:80]} is not on the server: upload it first")
        src = blobs.path(sha)
        try:
            header = probe(src)
        except ProbeError as exc:
            raise ModelRequestError(422, str(exc).replace(src.name, name)) from None  # the blob's name is its hash
        is_lora = header.looks_like_lora()
        if is_lora != (kind == "lora") and (is_lora or kind in ("checkpoint", "lora")):
            what = "a LoRA" if is_lora else "not a LoRA (a checkpoint or another model)"
            raise ModelRequestError(422, f"{name} is {what}; adopt it as kind '{'lora' if is_lora else 'checkpoint'}'")
        dst = models_dirs()[0] / SUBDIR[kind] / name
        existing = dst if dst.exists() else find(name, kind)
        size = src.stat().st_size
        if existing is not None and existing.exists():
            if existing.is_file() and existing.stat().st_size == size and self.sha256(existing, wait=True) == sha:
                return False, self._entry(name, kind, existing, sha)
            raise ModelRequestError(409, f"a different {kind} named {name} is already on the server: "
                                         "choose another name")
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{name}.{os.getpid()}.part")
        try:
            try:
                os.link(src, tmp)  # same volume: no copy of a multi-GB file
            except OSError:
                import shutil

                shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ModelRequestError(422, f"{name} cannot be stored in the models folder: {exc.strerror or exc}") \
                from None
        self.remember(dst, sha)
        log.info("adopted %s as a %s (%d bytes)", name, kind, size)
        return True, self._entry(name, kind, dst, sha)

    @staticmethod
    def _entry(name: str, kind: str, path: Path, sha: str) -> dict[str, Any]:
        return {"name": name, "kind": kind, "sha256": sha, "size": path.stat().st_size,
                "family": model_family(path, kind), "format": "safetensors"}
