"""Autosave: every few seconds, each open document with unsaved changes goes to the data folder.

Each window session keeps its files in `data_dir()/autosave/<session>/`, held by a QLockFile for
as long as the session lives. A clean exit deletes the folder; after a crash the folder stays and
its lock is stale (its process is gone), so the next start finds it and offers to restore, losing
at most one autosave interval. Two windows running at once never see each other's live sessions.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QLockFile, QObject, QTimer, Signal

from app import paths
from app.graph.io import WorkflowFormatError, graph_from_dict, graph_to_dict
from app.graph.model import Graph

LOCK_NAME = "session.lock"
AUTOSAVE_FORMAT = "imagebash-autosave/1"


def autosave_root() -> pathlib.Path:
    root = paths.data_dir() / "autosave"
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass
class AutosaveEntry:
    """One document found in a crashed session."""

    file: pathlib.Path
    title: str
    path: str | None  # the file the document was last saved to, if any
    saved_at: float
    workflow: dict[str, Any]
    base_dir: str | None = None

    def graph(self) -> Graph:
        g = graph_from_dict(self.workflow)
        g.base_dir = str(pathlib.Path(self.path).resolve().parent) if self.path else self.base_dir
        return g


@dataclass
class OrphanSession:
    """The autosave folder of a session that did not exit cleanly."""

    folder: pathlib.Path
    entries: list[AutosaveEntry]
    lock: QLockFile  # held by us until the session is restored or discarded

    def discard(self) -> None:
        self.lock.unlock()
        shutil.rmtree(self.folder, ignore_errors=True)


def find_orphans() -> list[OrphanSession]:
    """Sessions whose process is gone; each is locked for the caller (nobody else restores it)."""
    found = []
    for folder in sorted(autosave_root().iterdir()):
        if not folder.is_dir():
            continue
        lock = QLockFile(str(folder / LOCK_NAME))
        lock.setStaleLockTime(0)  # stale only when its process is gone, however old
        if not lock.tryLock(0):
            continue  # a live session (this process or another window)
        entries = _read_entries(folder)
        if entries:
            found.append(OrphanSession(folder, entries, lock))
        else:
            lock.unlock()
            shutil.rmtree(folder, ignore_errors=True)
    return found


def _read_entries(folder: pathlib.Path) -> list[AutosaveEntry]:
    entries = []
    for f in sorted(folder.glob("doc-*.json")):
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
            if data.get("format") != AUTOSAVE_FORMAT or not isinstance(data.get("workflow"), dict):
                continue
            graph_from_dict(data["workflow"])  # only offer what will load
        except (OSError, ValueError, WorkflowFormatError, AttributeError):
            continue
        entries.append(AutosaveEntry(f, str(data.get("title") or f.stem), data.get("path"),
                                     float(data.get("saved_at") or f.stat().st_mtime), data["workflow"],
                                     data.get("base_dir")))
    return entries


class AutosaveManager(QObject):
    """Writes the registered documents that changed since the last autosave, on a timer."""

    saved = Signal(int)  # how many documents were written

    def __init__(self, interval_s: float = 5.0, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.folder = autosave_root() / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.folder.mkdir(parents=True)
        self._lock = QLockFile(str(self.folder / LOCK_NAME))
        self._lock.setStaleLockTime(0)
        if not self._lock.tryLock(0):
            raise OSError(f"cannot lock the autosave folder {self.folder}")
        self._docs: dict[int, tuple[Any, str]] = {}  # id(doc) -> (doc, file stem)
        self._written: dict[int, str] = {}  # id(doc) -> the JSON last written
        self._counter = 0
        self.timer = QTimer(self)
        self.timer.setInterval(max(50, int(interval_s * 1000)))
        self.timer.timeout.connect(self.save_now)
        self.timer.start()

    def register(self, document: Any) -> None:
        if id(document) not in self._docs:
            self._counter += 1
            self._docs[id(document)] = (document, f"doc-{self._counter}")

    def unregister(self, document: Any) -> None:
        item = self._docs.pop(id(document), None)
        self._written.pop(id(document), None)
        if item is not None:
            (self.folder / f"{item[1]}.json").unlink(missing_ok=True)

    def documents(self) -> Iterable[Any]:
        return [d for d, _ in self._docs.values()]

    def save_now(self) -> int:
        """Write every changed, unsaved document; remove files of documents saved since."""
        n = 0
        for key, (doc, stem) in list(self._docs.items()):
            file = self.folder / f"{stem}.json"
            if not doc.is_dirty():
                if self._written.pop(key, None) is not None:
                    file.unlink(missing_ok=True)
                continue
            workflow = graph_to_dict(doc.graph)
            text = json.dumps(workflow, sort_keys=True)
            if self._written.get(key) == text:
                continue
            data = {"format": AUTOSAVE_FORMAT, "title": _title(doc), "saved_at": time.time(),
                    "path": str(doc.path) if doc.path else None, "base_dir": doc.graph.base_dir,
                    "workflow": workflow}
            tmp = file.with_suffix(".tmp")
            try:
                tmp.write_text(json.dumps(data), encoding="utf-8")
                tmp.replace(file)
            except OSError:
                continue  # a full disk must not interrupt editing; the next tick tries again
            self._written[key] = text
            n += 1
        if n:
            self.saved.emit(n)
        return n

    def close_clean(self) -> None:
        """A clean exit: nothing to restore next time."""
        self.timer.stop()
        self._docs.clear()
        self._lock.unlock()
        shutil.rmtree(self.folder, ignore_errors=True)


def _title(doc: Any) -> str:
    if getattr(doc, "path", None):
        return pathlib.Path(doc.path).stem
    return str(getattr(doc, "autosave_title", "") or "Untitled")
