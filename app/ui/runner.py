"""Runs workflows for the window through its engine clients, and marshals their events to Qt.

The window reaches engines only through `app.engine.client.EngineClient` (in-process or remote);
`RunController` is its one user in the UI. Each job runs on the client its document's engine
names (`client_for`); the controller subscribes to every client it is given and re-emits each
event through one queued Qt signal, so every slot runs on the GUI thread and the window never
freezes or touches widgets from a worker. Jobs of one engine run one after the other (the queue
panel lists them); jobs of different engines run side by side. Each job runs a snapshot of the
graph taken when it was queued, so editing during a run is safe. A job ends on its run's
RunFinished event; the files it wrote come from NodeFile events (local paths: a remote client
downloads them first), and node outputs are kept as summaries whose references the panels fetch
through `fetch_frame`, which asks the client that made the run. Calls that may cross a network
(cancel) leave the GUI thread; a remote job that was running when the window closed keeps
running on its server, and `follow` picks it up again.
"""

from __future__ import annotations

import itertools
import logging
import pathlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Qt, Signal

from app.engine import events as ev
from app.engine.wire import OutputRef, OutputSummary
from app.graph.model import Graph
from app.graph.validate import Problem
from app.ui.engines import one_line
from app.ui.signals import emit_safely

log = logging.getLogger(__name__)


@dataclass(eq=False)  # a job is itself: compared by identity
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
    #: The engine it runs on: its key ("local" or the URL), its name, its client.
    engine_key: str = "local"
    engine: str = "local"
    client: Any = field(default=None, repr=False)
    #: The latest word on a step that is not a node's (an upload: "uploading x.png (1.0/2.0 MB)").
    note: str = ""
    cancel_requested: bool = False
    cancel_confirmed: bool = False  # its engine said it was cancelling it
    ran: bool = False  # a node of it started
    #: A followed job its server no longer has (nothing more will come of it), or whose server
    #: could not be reached (worth following again at the next start).
    gone: bool = False
    unreachable: bool = False

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or time.time()) - self.started_at

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "cancelled", "error")


ClientFor = Callable[[Any], tuple[Any, str, str]]  # document -> (client, engine key, engine name)


class RunController(QObject):
    """Queues runs on engine clients; turns their events into Qt signals on the GUI thread."""

    jobQueued = Signal(object)  # RunJob
    jobStarted = Signal(object)
    jobFinished = Signal(object)
    engineEvent = Signal(object, object)  # RunJob, engine Event
    engineStatus = Signal(object, object)  # client, app.engine.events.EngineStatus
    _bridged = Signal(object, object)  # (client, event), emitted on engine threads, delivered queued
    _follow_failed = Signal(object, str, bool)  # job, message, whether the job is gone from its server

    def __init__(self, client: Any, parent: QObject | None = None, client_for: ClientFor | None = None) -> None:
        super().__init__(parent)
        self.client = client  # the default engine (the in-process one)
        self._client_for = client_for or (lambda _doc: (self.client, "local", "local"))
        self._numbers = itertools.count(1)
        self.jobs: list[RunJob] = []
        self._queues: dict[int, list[RunJob]] = {}  # id(client) -> jobs waiting for it
        self._running: dict[int, RunJob] = {}  # id(client) -> its job in flight
        self._followed: list[RunJob] = []  # jobs started before this window (reattached)
        self._by_run: dict[tuple[int, str], RunJob] = {}
        self._client_of_run: dict[str, Any] = {}
        #: Summaries of the last outputs of every node that finished, per document:
        #: {id(doc): {node_id: {port: OutputSummary}}}; values are fetched from the client by ref.
        self._outputs: dict[int, dict[str, dict[str, OutputSummary]]] = {}
        #: The parameters each of those nodes ran with: {id(doc): {node_id: params}}.
        self._ran_params: dict[int, dict[str, dict[str, Any]]] = {}
        self._runs_of: dict[int, list[str]] = {}
        self._subscriptions: dict[int, tuple[Any, Callable[[], None]]] = {}
        self._bridged.connect(self._on_event, Qt.ConnectionType.QueuedConnection)
        self._follow_failed.connect(self._on_follow_failed, Qt.ConnectionType.QueuedConnection)
        self.add_client(client)

    def add_client(self, client: Any) -> None:
        """Follow the events of `client` (once; the window adds each engine client it makes)."""
        if id(client) in self._subscriptions:
            return
        unsubscribe = client.subscribe(lambda e, c=client: self._bridged.emit(c, e))
        self._subscriptions[id(client)] = (client, unsubscribe)

    def remove_client(self, client: Any) -> bool:
        """Stop and forget an idle client (its engine left Settings); False while it has jobs."""
        cid = id(client)
        if cid in self._running or self._queues.get(cid) or any(j.client is client for j in self._followed):
            return False
        _client, unsubscribe = self._subscriptions.pop(cid, (None, None))
        if unsubscribe is not None:
            unsubscribe()
            client.shutdown()
        return True

    def apply_settings(self, engine_settings: Any) -> None:
        """New engine settings (each client applies them once no run is in flight)."""
        for client, _u in self._subscriptions.values():
            client.apply_settings(engine_settings)

    @property
    def busy(self) -> bool:
        return bool(self._running) or any(self._queues.values()) or bool(self._followed)

    @property
    def current(self) -> RunJob | None:
        """The job in flight (the most recently started one when several engines run)."""
        active = self.active_jobs()
        return max(active, key=lambda j: j.started_at or 0.0) if active else None

    def active_jobs(self) -> list[RunJob]:
        return [*self._running.values(), *self._followed]

    # jobs ---------------------------------------------------------------------------------------
    def new_job_number(self) -> int:
        """The next job number, for a job run outside this controller (a pooled run, see
        `app.ui.pool_run`) that the queue panel lists with the others."""
        return next(self._numbers)

    def submit(self, document: Any, graph: Graph, targets: list[str] | None = None,
               output_dir: str | pathlib.Path | None = None, title: str = "",
               hidden_nodes: frozenset[str] = frozenset()) -> RunJob:
        """Queue a run of a snapshot of `graph` on `document`'s engine; it starts when the runs
        queued before it on that engine are over."""
        client, key, name = self._client_for(document)
        self.add_client(client)
        job = RunJob(next(self._numbers), document, title or "workflow", graph.copy(),
                     list(targets) if targets else None,
                     pathlib.Path(output_dir) if output_dir else pathlib.Path("output"),
                     hidden_nodes=hidden_nodes, engine_key=key, engine=name, client=client)
        self.jobs.append(job)
        self._queues.setdefault(id(client), []).append(job)
        self.jobQueued.emit(job)
        if id(client) not in self._running:
            self._start_next(client)
        return job

    def follow(self, client: Any, run_id: str, title: str, output_dir: str | pathlib.Path,
               engine_key: str, engine: str) -> RunJob:
        """Show a job submitted before this window started (it ran on while the desktop was
        closed): its events are replayed from the start, its files downloaded to `output_dir`."""
        self.add_client(client)
        job = RunJob(next(self._numbers), None, title or run_id, Graph(), None, pathlib.Path(output_dir),
                     status="running", started_at=time.time(), run_id=run_id, engine_key=engine_key,
                     engine=engine, client=client)
        self.jobs.append(job)
        self._followed.append(job)
        self._by_run[(id(client), run_id)] = job
        self._client_of_run[run_id] = client
        self.jobQueued.emit(job)
        self.jobStarted.emit(job)

        def attach() -> None:
            try:
                job.handle = client.attach(run_id, job.output_dir)
            except LookupError:
                emit_safely(self._follow_failed, job, f"the job {run_id} is no longer on {engine}", True)
            except Exception as exc:  # noqa: BLE001 - unreachable, refused: one line, try at the next start
                emit_safely(self._follow_failed, job, one_line(exc), False)

        threading.Thread(target=attach, name="imagebash-attach", daemon=True).start()
        return job

    def _on_follow_failed(self, job: RunJob, message: str, gone: bool) -> None:
        if job.finished:
            return
        job.gone, job.unreachable = gone, not gone
        self._finish(job, "error", message)

    def cancel(self, document: Any = None) -> bool:
        """Cancel the running jobs and drop the queued ones (only `document`'s when given); False
        when there was nothing to cancel."""
        did = False
        for queue in list(self._queues.values()):
            for job in [j for j in queue if document is None or j.document is document]:
                queue.remove(job)
                job.status = "cancelled"
                job.finished_at = time.time()
                self.jobFinished.emit(job)
                did = True
        for job in self.active_jobs():
            if job.run_id is not None and (document is None or job.document is document):
                self._send_cancel(job)
                did = True
        return did

    def _send_cancel(self, job: RunJob) -> None:
        """Ask the job's engine to cancel it, off the GUI thread (a remote one is a request away).
        A remote job still uploading is not on its server yet: its RunStarted asks again."""
        job.cancel_requested = True
        client, run_id = job.client, job.run_id

        def work() -> None:
            try:
                job.cancel_confirmed = bool(client.cancel(run_id)) or job.cancel_confirmed
            except Exception as exc:  # noqa: BLE001 - the engine went away: its jobs end with it
                log.info("cancel %s: %s", run_id, exc)

        threading.Thread(target=work, name="imagebash-cancel", daemon=True).start()

    def _start_next(self, client: Any) -> None:
        queue = self._queues.get(id(client))
        if not queue:
            return
        job = queue.pop(0)
        self._running[id(client)] = job
        job.status = "running"
        job.started_at = time.time()
        try:
            job.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._finish(job, "error", f"cannot create the output folder {job.output_dir}: {exc}")
            return
        if job.document is not None:
            self._outputs.setdefault(id(job.document), {})
        job.handle = client.submit(job.graph, job.targets, job.output_dir)
        job.run_id = job.handle.run_id
        self._by_run[(id(client), job.run_id)] = job
        self._client_of_run[job.run_id] = client
        if job.document is not None:
            self._runs_of.setdefault(id(job.document), []).append(job.run_id)
        self.jobStarted.emit(job)

    def _finish(self, job: RunJob, status: str, message: str) -> None:
        job.status = status
        job.message = message
        job.finished_at = time.time()
        client = job.client
        if job in self._followed:
            self._followed.remove(job)
            client = None
        elif self._running.get(id(client)) is job:
            del self._running[id(client)]
        if job.run_id is not None:
            self._by_run.pop((id(job.client), job.run_id), None)
        self.jobFinished.emit(job)
        if client is not None and id(client) not in self._running:
            self._start_next(client)

    # events -------------------------------------------------------------------------------------
    def _on_event(self, client: Any, event: ev.Event) -> None:
        if isinstance(event, ev.EngineStatus):
            self.engineStatus.emit(client, event)
            return
        job = self._by_run.get((id(client), event.run_id))
        if job is None or job.finished:
            return
        if isinstance(event, ev.NodeFinished) and event.node_id:
            if job.document is not None:
                self._outputs.setdefault(id(job.document), {})[event.node_id] = dict(event.outputs)
                ran = job.graph.nodes.get(event.node_id) if job.graph is not None else None
                self._ran_params.setdefault(id(job.document), {})[event.node_id] = \
                    dict(ran.params) if ran is not None else None
        elif isinstance(event, ev.NodeFile) and event.file is not None:
            job.files.append(pathlib.Path(event.file.path))
        elif isinstance(event, ev.NodeFailed) and event.node_id:
            job.errors[event.node_id] = event.message
        elif isinstance(event, ev.NodeProgress) and event.node_id is None and event.text:
            job.note = event.text
        elif isinstance(event, (ev.RunStarted, ev.NodeStarted)):
            job.note = ""
            job.ran = job.ran or isinstance(event, ev.NodeStarted)
            if job.cancel_requested and not job.cancel_confirmed:  # asked while being sent: it is there now
                self._send_cancel(job)
        self.engineEvent.emit(job, event)
        if isinstance(event, ev.RunFinished):
            self._run_finished(job, event)

    def _run_finished(self, job: RunJob, event: ev.RunFinished) -> None:
        job.note = ""
        if event.error is not None:
            job.problems = [Problem(*p) for p in event.problems]
            self._finish(job, "error", "; ".join(map(str, job.problems)) if job.problems else event.error)
            return
        for nid in event.failed:
            job.errors.setdefault(nid, "failed")
        self._finish(job, "cancelled" if event.cancelled else ("failed" if event.failed else "done"), "")

    # outputs ------------------------------------------------------------------------------------
    def outputs(self, document: Any) -> dict[str, dict[str, OutputSummary]]:
        """Summaries of the latest outputs of each node of `document` that has run."""
        return self._outputs.get(id(document), {})

    def ran_params(self, document: Any, node_id: str) -> dict[str, Any] | None:
        """The parameters node `node_id` of `document` had in the run that made its latest outputs."""
        return self._ran_params.get(id(document), {}).get(node_id)

    def client_of(self, run_id: str) -> Any:
        """The client that made run `run_id` (the default one for a run it never saw)."""
        return self._client_of_run.get(run_id, self.client)

    def fetch_frame(self, ref: OutputRef, index: int = 0) -> np.ndarray:
        """A frame of an output, from the engine that made it (called on worker threads)."""
        return self.client_of(ref.run_id).fetch_frame(ref, index)

    def forget(self, document: Any) -> None:
        """A document closed: drop its summaries and let the engines drop the values behind them."""
        self._outputs.pop(id(document), None)
        self._ran_params.pop(id(document), None)
        for run_id in self._runs_of.pop(id(document), []):
            self.client_of(run_id).release(run_id)

    def shutdown(self, wait_s: float = 3.0, detach: tuple[Any, ...] | list[Any] = ()) -> None:
        """Drop the queued jobs, cancel the running ones (except on the clients in `detach`: a
        remote engine's jobs run on without this window) and stop every client (window closing)."""
        keep = {id(c) for c in detach}
        for queue in self._queues.values():
            queue.clear()
        for job in self.active_jobs():
            if id(job.client) not in keep and job.run_id is not None:
                try:
                    job.client.cancel(job.run_id)
                except Exception as exc:  # noqa: BLE001 - closing anyway
                    log.info("cancel %s: %s", job.run_id, exc)
        for client, unsubscribe in list(self._subscriptions.values()):
            unsubscribe()
            client.shutdown(wait_s)
        self._subscriptions.clear()



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
