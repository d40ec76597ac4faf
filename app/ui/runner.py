"""Runs workflows for the window through an engine client, and marshals its events to Qt.

The window reaches an engine only through `app.engine.client.EngineClient` (in-process or
remote); `RunController` is its one user in the UI. The client calls its listeners on engine
threads; the controller re-emits each event through a queued Qt signal, so every slot runs on
the GUI thread and the window never freezes or touches widgets from a worker. Jobs run one after
the other (the queue panel lists them), each on a snapshot of the graph taken when it was
queued, so editing during a run is safe. A job ends on its run's RunFinished event; the files
it wrote come from NodeFile events, and node outputs are kept as summaries whose references the
panels fetch from the client.
"""

from __future__ import annotations

import itertools
import pathlib
import time
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal

from app.engine import events as ev
from app.engine.wire import OutputSummary
from app.graph.model import Graph
from app.graph.validate import Problem


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
    #: Files the run's nodes reported writing (NodeFile events), in order.
    files: list[pathlib.Path] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    message: str = ""
    problems: list[Any] = field(default_factory=list)  # validation Problems when the run could not start
    run_id: str | None = None
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
    """Queues runs on an engine client; turns its events into Qt signals on the GUI thread."""

    jobQueued = Signal(object)  # RunJob
    jobStarted = Signal(object)
    jobFinished = Signal(object)
    engineEvent = Signal(object, object)  # RunJob, engine Event
    _bridged = Signal(object)  # emitted on engine threads, delivered queued on the GUI thread

    def __init__(self, client: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self._numbers = itertools.count(1)
        self.jobs: list[RunJob] = []
        self._queue: list[RunJob] = []
        self.current: RunJob | None = None
        #: Summaries of the last outputs of every node that finished, per document:
        #: {id(doc): {node_id: {port: OutputSummary}}}; values are fetched from the client by ref.
        self._outputs: dict[int, dict[str, dict[str, OutputSummary]]] = {}
        self._runs_of: dict[int, list[str]] = {}
        self._bridged.connect(self._on_event, Qt.ConnectionType.QueuedConnection)
        self._unsubscribe = client.subscribe(self._bridged.emit)

    def apply_settings(self, engine_settings: Any) -> None:
        """New engine settings (the client applies them once no run is in flight)."""
        self.client.apply_settings(engine_settings)

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
        if self.current is not None and self.current.run_id is not None:
            self.client.cancel(self.current.run_id)
            did = True
        return did

    def _start_next(self) -> None:
        if not self._queue:
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
        job.handle = self.client.submit(job.graph, job.targets, job.output_dir)
        job.run_id = job.handle.run_id
        self._runs_of.setdefault(id(job.document), []).append(job.run_id)
        self.jobStarted.emit(job)

    def _finish(self, job: RunJob, status: str, message: str) -> None:
        job.status = status
        job.message = message
        job.finished_at = time.time()
        self.current = None
        self.jobFinished.emit(job)
        self._start_next()

    # events -------------------------------------------------------------------------------------
    def _on_event(self, event: ev.Event) -> None:
        job = self.current
        if job is None or event.run_id != job.run_id:
            return
        if isinstance(event, ev.NodeFinished) and event.node_id:
            self._outputs.setdefault(id(job.document), {})[event.node_id] = dict(event.outputs)
        elif isinstance(event, ev.NodeFile) and event.file is not None:
            job.files.append(pathlib.Path(event.file.path))
        elif isinstance(event, ev.NodeFailed) and event.node_id:
            job.errors[event.node_id] = event.message
        self.engineEvent.emit(job, event)
        if isinstance(event, ev.RunFinished):
            self._run_finished(job, event)

    def _run_finished(self, job: RunJob, event: ev.RunFinished) -> None:
        if event.error is not None:
            job.problems = [Problem(*p) for p in event.problems]
            self._finish(job, "error", "; ".join(map(str, job.problems)) if job.problems else event.error)
            return
        for nid in event.failed:
            job.errors.setdefault(nid, "failed")
        self._finish(job, "cancelled" if event.cancelled else ("failed" if event.failed else "done"), "")

    def outputs(self, document: Any) -> dict[str, dict[str, OutputSummary]]:
        """Summaries of the latest outputs of each node of `document` that has run."""
        return self._outputs.get(id(document), {})

    def forget(self, document: Any) -> None:
        """A document closed: drop its summaries and let the engine drop the values behind them."""
        self._outputs.pop(id(document), None)
        for run_id in self._runs_of.pop(id(document), []):
            self.client.release(run_id)

    def shutdown(self, wait_s: float = 3.0) -> None:
        """Cancel everything and stop the engine (window closing)."""
        self.cancel()
        self._unsubscribe()
        self.client.shutdown(wait_s)


def display_summary(outputs: dict[str, OutputSummary]) -> OutputSummary | None:
    """The output worth a thumbnail: the first picture (Image, Mask, Video) among a node's outputs."""
    return next((v for v in outputs.values() if v.displayable), None)


def thumbnail_of(job: RunJob, node_id: str, outputs: dict[str, dict[str, OutputSummary]]) -> bytes | None:
    """A node's own picture, or for a sink without image outputs (Save) the picture it was fed."""
    summary = display_summary(outputs.get(node_id, {}))
    if summary is None:
        for ln in job.graph.links_into(node_id):
            summary = outputs.get(ln.src, {}).get(ln.src_port)
            if summary is not None and summary.thumbnail:
                break
    return summary.thumbnail if summary is not None else None


def apply_event_to_view(view: Any, job: RunJob, event: ev.Event, outputs: dict[str, dict[str, OutputSummary]]) -> None:
    """Show one engine event on the canvas: state, progress, step preview, thumbnail, error."""
    nid = event.node_id
    if isinstance(event, ev.NodeStarted):
        view.set_node_state(nid, "running", 0.0)
    elif isinstance(event, ev.NodeProgress):
        view.set_node_state(nid, "running", event.fraction, event.text)
        if event.preview:
            view.set_node_thumbnail(nid, event.preview)
    elif isinstance(event, ev.NodeFinished):
        view.set_node_state(nid, "cached" if event.cached else "done", 1.0)
        thumb = thumbnail_of(job, nid, outputs)
        if thumb:
            view.set_node_thumbnail(nid, thumb)
    elif isinstance(event, ev.NodeFailed):
        view.set_node_state(nid, "failed", None, event.message)
    elif isinstance(event, ev.NodeSkipped):
        view.set_node_state(nid, "muted" if event.reason == "muted" else "skipped", None, event.reason)
