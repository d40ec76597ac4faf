"""Runs workflows for the window: one engine, a queue of jobs, engine events marshalled to Qt.

The engine calls its listeners on its own threads; `RunController` re-emits each event through a
queued Qt signal, so every slot runs on the GUI thread and the window never freezes or touches
widgets from a worker. Jobs run one after the other (the queue panel lists them); each runs on a
snapshot of the graph taken when it was queued, so editing during a run is safe.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import time
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, Qt, QTimer, Signal

from app.engine import events as ev
from app.graph.model import Graph

MAX_LISTED_FILES = 200
PROGRESS_INTERVAL_S = 1 / 30


@dataclass
class RunJob:
    """One queued or finished run, as the queue panel shows it."""

    number: int
    document: Any
    title: str
    graph: Graph
    targets: list[str] | None
    output_dir: pathlib.Path
    status: str = "queued"  # queued | running | done | failed | cancelled | error
    queued_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    files: list[pathlib.Path] = field(default_factory=list)
    #: Files that Save nodes returned as their output.
    reported_files: list[pathlib.Path] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    message: str = ""
    problems: list[Any] = field(default_factory=list)  # validation Problems when the run could not start
    engine_run_id: int | None = None
    handle: Any = None
    #: Extra nodes the job added to the graph (an export's save node), hidden from the canvas.
    hidden_nodes: frozenset[str] = frozenset()

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or time.time()) - self.started_at

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "cancelled", "error")


class RunController(QObject):
    """Owns the engine; queues runs; turns engine events into Qt signals on the GUI thread."""

    jobQueued = Signal(object)  # RunJob
    jobStarted = Signal(object)
    jobFinished = Signal(object)
    engineEvent = Signal(object, object)  # RunJob, engine Event
    _bridged = Signal(object)  # emitted on engine threads, delivered queued on the GUI thread

    def __init__(self, engine_settings: Any = None, registry: Any = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._settings = engine_settings
        self._registry = registry
        self._engine: Any = None
        self._pending_settings: Any = None
        self._numbers = itertools.count(1)
        self.jobs: list[RunJob] = []
        self._queue: list[RunJob] = []
        self.current: RunJob | None = None
        #: Last outputs of every node that finished, per document: {id(doc): {node_id: {port: value}}}.
        self._outputs: dict[int, dict[str, dict[str, Any]]] = {}
        self._last_progress: dict[tuple[int, str | None], float] = {}
        self._bridged.connect(self._on_event, Qt.ConnectionType.QueuedConnection)
        self._poll = QTimer(self)
        self._poll.setInterval(25)
        self._poll.timeout.connect(self._check_done)

    # engine -------------------------------------------------------------------------------------
    @property
    def engine(self) -> Any:
        """The engine, built on first use (so opening the window stays cheap)."""
        if self._engine is None:
            from app.engine import Engine
            from nodes.registry import REGISTRY

            self._engine = Engine(self._registry or REGISTRY, self._settings)
            self._engine.events.subscribe(self._forward)
        return self._engine

    def apply_settings(self, engine_settings: Any) -> None:
        """New engine settings: rebuild the engine now if idle, else once the queue drains."""
        if engine_settings == self._settings:
            return  # nothing changed: keep the engine and its cache
        self._settings = engine_settings
        if self._engine is None:
            return
        if self.busy:
            self._pending_settings = engine_settings
        else:
            self._rebuild_engine()

    def _rebuild_engine(self) -> None:
        self._pending_settings = None
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    def _forward(self, event: ev.Event) -> None:
        """On an engine thread: pass the event to the GUI thread, at most ~30 progress events/s per node.

        A node may report progress far faster than anyone can see (per pixel row, per frame);
        queuing all of it would flood the GUI thread and freeze the window.
        """
        if isinstance(event, ev.NodeProgress) and event.fraction < 1.0:
            now = time.monotonic()
            key = (event.run_id, event.node_id)
            if now - self._last_progress.get(key, 0.0) < PROGRESS_INTERVAL_S:
                return
            self._last_progress[key] = now
        elif isinstance(event, ev.RunFinished):
            self._last_progress.clear()
        self._bridged.emit(event)

    @property
    def busy(self) -> bool:
        return self.current is not None or bool(self._queue)

    # jobs ---------------------------------------------------------------------------------------
    def submit(self, document: Any, graph: Graph, targets: list[str] | None = None,
               output_dir: str | pathlib.Path | None = None, title: str = "",
               hidden_nodes: frozenset[str] = frozenset()) -> RunJob:
        """Queue a run of a snapshot of `graph`; it starts when the runs before it are over."""
        job = RunJob(next(self._numbers), document, title or "workflow", graph.copy(),
                     list(targets) if targets else None,
                     pathlib.Path(output_dir) if output_dir else pathlib.Path("output"),
                     hidden_nodes=hidden_nodes)
        self.jobs.append(job)
        self._queue.append(job)
        self.jobQueued.emit(job)
        if self.current is None:
            self._start_next()
        return job

    def cancel(self) -> bool:
        """Cancel the running job and drop the queued ones; False when there was nothing to cancel."""
        did = False
        for job in self._queue:
            job.status = "cancelled"
            job.finished_at = time.time()
            self.jobFinished.emit(job)
            did = True
        self._queue.clear()
        if self.current is not None and self.current.handle is not None:
            self.current.handle.cancel()
            did = True
        return did

    def _start_next(self) -> None:
        if not self._queue:
            if self._pending_settings is not None:
                self._rebuild_engine()
            return
        job = self._queue.pop(0)
        self.current = job
        job.status = "running"
        job.started_at = time.time()
        try:
            job.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._finish(job, "error", f"cannot create the output folder {job.output_dir}: {exc}")
            return
        self._outputs.setdefault(id(job.document), {})
        job.handle = self.engine.start(job.graph, job.targets, job.output_dir)
        self.jobStarted.emit(job)
        self._poll.start()

    def _check_done(self) -> None:
        job = self.current
        if job is None or job.handle is None or not job.handle.done:
            return
        # every event of the run was emitted before it returned: deliver the queued ones first
        QCoreApplication.sendPostedEvents(self)
        try:
            result = job.handle.wait(0)
        except Exception as exc:  # noqa: BLE001 - a ValidationError or an engine bug: shown, not fatal
            job.problems = list(getattr(exc, "problems", None) or [])
            msg = "; ".join(map(str, job.problems)) if job.problems else (str(exc) or type(exc).__name__)
            self._finish(job, "error", msg)
            return
        job.errors = dict(result.errors)
        status = "cancelled" if result.cancelled else ("failed" if result.errors else "done")
        self._finish(job, status, "")

    def _finish(self, job: RunJob, status: str, message: str) -> None:
        self._poll.stop()
        job.status = status
        job.message = message
        job.finished_at = time.time()
        # what Save nodes reported, plus anything else new in the folder (a Save mapped over video
        # frames reports only its last file)
        new = _new_files(job.output_dir, job.started_at or job.queued_at)
        job.files = list(dict.fromkeys([*job.reported_files, *new]))
        self.current = None
        self.jobFinished.emit(job)
        self._start_next()

    # events -------------------------------------------------------------------------------------
    def _on_event(self, event: ev.Event) -> None:
        job = self.current
        if job is None:
            return
        if job.engine_run_id is None:
            job.engine_run_id = event.run_id
        elif event.run_id != job.engine_run_id:
            return
        if isinstance(event, ev.NodeFinished) and event.node_id and event.outputs:
            self._outputs.setdefault(id(job.document), {})[event.node_id] = dict(event.outputs)
            job.reported_files += _reported_files(event.outputs, job.output_dir)
        self.engineEvent.emit(job, event)

    def outputs(self, document: Any) -> dict[str, dict[str, Any]]:
        """The latest outputs of each node of `document` that has run (for previews and export)."""
        return self._outputs.get(id(document), {})

    def forget(self, document: Any) -> None:
        self._outputs.pop(id(document), None)

    def shutdown(self, wait_s: float = 3.0) -> None:
        """Cancel everything and stop the engine (window closing)."""
        job = self.current
        self.cancel()
        if job is not None and job.handle is not None:
            try:
                job.handle.wait(wait_s)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        self._poll.stop()
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None


def _reported_files(outputs: dict[str, Any], folder: pathlib.Path) -> list[pathlib.Path]:
    """Existing files inside `folder` named by a node's str/Path outputs (Save nodes return their paths)."""
    found = []
    try:
        root = folder.resolve()
    except OSError:
        return found
    for value in outputs.values():
        if isinstance(value, pathlib.PurePath):
            value = str(value)
        if not isinstance(value, str) or len(value) > 100_000:
            continue
        for line in value.splitlines()[:MAX_LISTED_FILES]:
            p = pathlib.Path(line.strip())
            try:
                if line.strip() and p.is_file() and p.resolve().is_relative_to(root):
                    found.append(p)
            except (OSError, ValueError):
                continue
    return found


def _new_files(folder: pathlib.Path, since: float) -> list[pathlib.Path]:
    """Files under `folder` written since `since` (what Save nodes wrote during a run)."""
    found: list[pathlib.Path] = []
    if not folder.is_dir():
        return found
    for root, _dirs, files in os.walk(folder):
        for name in sorted(files):
            p = pathlib.Path(root) / name
            try:
                if p.stat().st_mtime >= since - 1.0 and not name.endswith(".tmp"):
                    found.append(p)
            except OSError:
                continue
            if len(found) >= MAX_LISTED_FILES:
                return found
    return found


def display_value(outputs: dict[str, Any]) -> Any:
    """The output worth a thumbnail: the first Image/Mask array or Video among a node's outputs."""
    from app.ui.panels.images import is_displayable

    return next((v for v in outputs.values() if is_displayable(v)), None)


def thumbnail_of(job: RunJob, node_id: str, outputs: dict[str, dict[str, Any]]) -> Any:
    """A node's own picture, or for a sink without image outputs (Save) the picture it was fed."""
    from app.ui.panels.images import first_frame

    value = display_value(outputs.get(node_id, {}))
    if value is None:
        for ln in job.graph.links_into(node_id):
            value = outputs.get(ln.src, {}).get(ln.src_port)
            if first_frame(value) is not None:
                break
    return first_frame(value)


def apply_event_to_view(view: Any, job: RunJob, event: ev.Event, outputs: dict[str, dict[str, Any]]) -> None:
    """Show one engine event on the canvas: state, progress, step preview, thumbnail, error."""
    from app.ui.panels.images import first_frame

    nid = event.node_id
    if isinstance(event, ev.NodeStarted):
        view.set_node_state(nid, "running", 0.0)
    elif isinstance(event, ev.NodeProgress):
        view.set_node_state(nid, "running", event.fraction, event.text)
        if event.preview is not None:
            frame = first_frame(event.preview) if getattr(event.preview, "ndim", 0) == 4 else event.preview
            if frame is not None:
                view.set_node_thumbnail(nid, frame)
    elif isinstance(event, ev.NodeFinished):
        view.set_node_state(nid, "cached" if event.cached else "done", 1.0)
        thumb = thumbnail_of(job, nid, outputs)
        if thumb is not None:
            view.set_node_thumbnail(nid, thumb)
    elif isinstance(event, ev.NodeFailed):
        view.set_node_state(nid, "failed", None, event.message)
    elif isinstance(event, ev.NodeSkipped):
        view.set_node_state(nid, "muted" if event.reason == "muted" else "skipped", None, event.reason)
