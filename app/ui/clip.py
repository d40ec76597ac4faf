"""How many frames the clip feeding a node has: the schedule editor's scrubber spans it.

After a run the length is that of the Video actually reaching the node: the last run's output on
its nearest upstream link carrying one, when that node and all above it ran with the parameters
they have now (so a Trim, Select Every Nth or Interpolate in between counts). Otherwise the clip
is the nearest Load Video / Load Image Sequence upstream of the node, its length from that
loader's outputs of the last run when the loader ran with the parameters it has now, else from
probing its file through the Video Info node's declaration (Load Image Sequence: its
own function, which lists the files and reads the first), once per file (path, size and mtime),
on a worker thread; `changed` is emitted when a probe finished. Load Video's start / stride /
max_frames trim the file's frame count as the node does. None when there is no clip or it cannot
be read (a remote engine's path): the editor keeps its default span.
"""

from __future__ import annotations

import pathlib
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from PySide6.QtCore import QObject, Signal

LOAD_VIDEO, LOAD_SEQUENCE, VIDEO_INFO = "imagebash.video.load", "imagebash.video.load_sequence", "imagebash.video.info"
SOURCES = (LOAD_VIDEO, LOAD_SEQUENCE)

Outputs = dict[str, dict[str, Any]]  # node id -> port -> OutputSummary


def _links_above(graph: Any, node_id: str) -> Iterator[Any]:
    """The links above `node_id`, nearest first (breadth-first; each source node once)."""
    seen, todo = {node_id}, deque([node_id])
    while todo:
        for ln in graph.links_into(todo.popleft()):
            if ln.src not in seen:
                seen.add(ln.src)
                todo.append(ln.src)
                yield ln


def clip_source(graph: Any, node_id: str) -> Any | None:
    """The nearest Load Video / Load Image Sequence node upstream of `node_id` (or the node itself)."""
    for nid in (node_id, *(ln.src for ln in _links_above(graph, node_id))):
        node = graph.nodes.get(nid)
        if node is not None and node.type in SOURCES:
            return node
    return None


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):  # a schedule, a missing value
        return default


def trimmed(total: int, start: int = 0, stride: int = 1, max_frames: int = 0) -> int:
    """Frames Load Video gives from a file of `total` frames (as `open_video` counts them)."""
    stride = max(1, stride)
    n = max(0, -(-(total - max(0, start)) // stride))
    return min(n, max_frames) if max_frames > 0 else n


def _count_sequence(registry: Any, source: str) -> int:
    spec = registry.get(LOAD_SEQUENCE) if registry is not None else None
    if spec is None:
        raise LookupError(LOAD_SEQUENCE)
    return len(spec.fn(source=pathlib.Path(source), fps=24.0, ctx=None))


def _count_video(registry: Any, path: str) -> int:
    spec = registry.get(VIDEO_INFO) if registry is not None else None
    if spec is None:
        raise LookupError(VIDEO_INFO)
    return int(spec.fn(path=pathlib.Path(path)).frames)


class ClipLengths(QObject):
    """Clip lengths for the inspector; probes are cached per file and run off the GUI thread."""

    changed = Signal()
    _probed = Signal(object, object)  # cache key, frame count or None (emitted on the worker thread)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._cache: dict[tuple, int | None] = {}
        self._pending: set[tuple] = set()
        self._probed.connect(self._store)

    # probing ------------------------------------------------------------------------------------
    @staticmethod
    def _key(type_id: str, path: str) -> tuple | None:
        p = pathlib.Path(path)
        try:
            st = p.stat()
        except OSError:
            return None  # not here (a remote engine's file, a glob): nothing to probe
        return (type_id, str(p), st.st_size, st.st_mtime_ns, p.is_dir())

    def file_frames(self, type_id: str, path: str, registry: Any) -> int | None:
        """The frame count of a loader's file if known; starts a probe (once) when it is not."""
        key = self._key(type_id, path) if path else None
        if key is None:
            return None
        if key in self._cache:
            return self._cache[key]
        if key not in self._pending:
            self._pending.add(key)
            count = _count_video if type_id == LOAD_VIDEO else _count_sequence
            threading.Thread(target=self._probe, args=(key, count, registry, path), daemon=True,
                             name="clip-probe").start()
        return None

    def _probe(self, key: tuple, count: Callable[[Any, str], int], registry: Any, path: str) -> None:
        try:
            n: int | None = count(registry, path)
        except Exception:  # noqa: BLE001 - unreadable here: the editor keeps its default span
            n = None
        self._probed.emit(key, n)

    def _store(self, key: tuple, n: int | None) -> None:
        self._pending.discard(key)
        self._cache[key] = n
        self.changed.emit()

    # lengths ------------------------------------------------------------------------------------
    def clip_length(self, document: Any, node_id: str, outputs: Outputs | None = None,
                    ran_params: Callable[[str], dict | None] | None = None) -> int | None:
        """Frames of the clip feeding `node_id` in `document` (None: unknown, or no clip)."""
        src = clip_source(document.graph, node_id)
        if src is None:
            return None
        if outputs:
            n = _arriving(document.graph, node_id, outputs, ran_params)
            if n:
                return n
        params = src.params
        if outputs and src.id in outputs and (ran_params is None or ran_params(src.id) == params):
            n = _from_outputs(outputs[src.id])
            if n:
                return n
        registry = document.registry
        if src.type == LOAD_VIDEO:
            total = self.file_frames(LOAD_VIDEO, str(params.get("path") or ""), _with(registry, VIDEO_INFO))
            if total is None:
                return None
            n = trimmed(total, _int(params.get("start"), 0), _int(params.get("stride"), 1),
                        _int(params.get("max_frames"), 0))
        else:
            n = self.file_frames(LOAD_SEQUENCE, str(params.get("source") or ""), _with(registry, LOAD_SEQUENCE))
        return n or None


def _arriving(graph: Any, node_id: str, outputs: Outputs, ran_params: Callable[[str], dict | None] | None) -> int:
    """Frames of the last run's Video on the nearest link into `node_id` that carried one, when
    nothing above it changed since (0: no such output, or it is stale)."""
    for ln in _links_above(graph, node_id):
        summary = outputs.get(ln.src, {}).get(ln.src_port)
        if getattr(summary, "kind", "") == "Video" and summary.frames:
            return int(summary.frames) if _current(graph, ln.src, ran_params) else 0
    return 0


def _current(graph: Any, node_id: str, ran_params: Callable[[str], dict | None] | None) -> bool:
    """Whether `node_id` and every node above it last ran with the parameters they have now."""
    if ran_params is None:
        return True
    for nid in (node_id, *(ln.src for ln in _links_above(graph, node_id))):
        node = graph.nodes.get(nid)
        if node is None or ran_params(nid) != node.params:
            return False
    return True


def _from_outputs(outs: dict[str, Any]) -> int:
    fc = outs.get("frame_count")
    if fc is not None and isinstance(getattr(fc, "value", None), int):
        return int(fc.value)
    return next((int(s.frames) for s in outs.values() if getattr(s, "kind", "") == "Video" and s.frames), 0)


def _with(registry: Any, type_id: str) -> Any:
    """`registry` when it declares `type_id`, else the app's own (a test's or a remote catalogue)."""
    if registry is not None and registry.get(type_id) is not None:
        return registry
    from nodes.registry import default_registry

    return default_registry()
