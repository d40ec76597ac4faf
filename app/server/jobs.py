"""Jobs: submitted workflows, kept in SQLite, run one at a time on the server's engine.

Why one at a time, in submission order: a rented GPU box has one GPU whose memory is the
constraint (the engine's device lock serialises GPU nodes anyway), and a queue a user can read
("third in line") beats jobs that interleave and all finish late. A job's id is chosen by the
client, so `PUT /jobs/{id}` can be retried after a dropped connection: the same id and body is
the same job (never run twice), the same id with another workflow is refused.

How a job runs: `submit` checks the workflow exactly as the CLI does (graph_from_dict, upgrade,
then blob/tree references turned into paths under the data dir, then validate) and refuses a
bad one with the CLI's one-line message. The worker thread takes the oldest queued job, starts
it on the engine with run_id = job id and output_dir = <data dir>/jobs/<id>/out, and waits for
its RunFinished. Every engine event (progress thinned to ~30/s per node by `Throttle`) goes
through one ingest thread, in order: it updates the job's per-node status, copies each written
file into the blob store (the job's file manifest), and stores the event as a numbered record
that the hub fans out (a NodeFile record carries the file's manifest entry as "file"). A job's
final status is committed in the same transaction as its RunFinished record, so a client that
sees RunFinished and asks for the job sees it finished.

Restarts: a job that was running when the server died is marked `interrupted` at the next
start (with a RunFinished record saying so) and can be rerun under the same id; queued jobs
run. The engine's output cache is in memory, so a rerun after a restart recomputes every node
(a rerun in the same server process reuses what the cache kept).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.engine import events as ev
from app.engine import protocol
from app.engine.protocol import BLOB_PREFIX, TREE_PREFIX, ProtocolError, parse_ref
from app.engine.wire import FileArtifact
from app.graph.io import WorkflowFormatError, graph_from_dict
from app.graph.model import Graph
from app.graph.validate import Problem, ValidationError, upgrade, validate
from app.server.blobs import BlobStore, ResolveError
from app.server.db import Database
from app.server.hub import EventHub

log = logging.getLogger(__name__)

JOB_ID = re.compile(protocol.JOB_ID)
STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
TERMINAL = ("done", "failed", "cancelled", "interrupted")
RERUNNABLE = ("interrupted", "failed", "cancelled")
INTERRUPTED = "interrupted: the server stopped while this job was running; rerun it"
#: A reference in any parameter (a Path port also takes a malformed one, to refuse it).
_REF = re.compile(r"^(blob:[0-9a-f]{64}/|tree:[0-9a-f]{64}$)")
#: Events the ingest thread stores per transaction at most.
INGEST_BATCH = 512


class JobError(Exception):
    """A refused job request: HTTP status, one line, and the workflow's problems (422)."""

    def __init__(self, status: int, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = problems or []


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def problem_json(p: Problem) -> dict[str, Any]:
    return {"node_id": p.node_id, "port": p.port, "message": p.message}


@dataclass
class _Active:
    """The job the worker is running (its live state; SQLite has a copy as of the last batch)."""

    id: str
    created: float
    started: float
    attempt: int
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: str = "running"
    error: str | None = None
    ended: float | None = None
    cancel_requested: bool = False
    stopping: bool = False  # cancelled because the server is stopping: ends `interrupted`
    handle: Any = None
    finished: threading.Event = field(default_factory=threading.Event)


class Jobs:
    """The job store and its worker (see the module docstring)."""

    def __init__(self, db: Database, hub: EventHub, blobs: BlobStore, client: Any, data_dir: Path) -> None:
        self.db = db
        self.hub = hub
        self.blobs = blobs
        self.client = client
        self.registry = client.registry
        self.jobs_dir = Path(data_dir) / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._cv = threading.Condition(threading.RLock())
        self._state_lock = threading.Lock()
        self._active: dict[str, _Active] = {}
        self._preloads: set[str] = set()
        self._q: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._unsubscribe: Any = None

    # life cycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Mark jobs a dead server left running as interrupted and listen to the engine; jobs
        submitted between this and `run()` (the preloads) are queued before the worker starts."""
        self._recover()
        self._unsubscribe = self.client.subscribe(self._on_event)

    def run(self) -> None:
        """Start the ingest thread and the worker."""
        for target, name in ((self._ingest_loop, "imagebash-ingest"), (self._run_loop, "imagebash-jobs")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def close(self, wait_s: float = 5.0) -> None:
        """Stop taking jobs; the running one is cancelled and ends `interrupted` (rerun it later)."""
        with self._cv:
            self._stopping = True
            for a in self._active.values():
                a.stopping = a.cancel_requested = True
                if a.handle is not None:
                    a.handle.cancel()
            self._cv.notify_all()
        deadline = time.monotonic() + wait_s
        runner = self._threads[1] if len(self._threads) > 1 else None
        if runner is not None:
            runner.join(max(0.0, deadline - time.monotonic()))
        self._q.put(("stop",))
        if self._threads:
            self._threads[0].join(max(0.5, deadline - time.monotonic()))
        if self._unsubscribe is not None:
            self._unsubscribe()

    def _recover(self) -> None:
        now = time.time()
        for row in self.db.rows("SELECT id, nodes FROM jobs WHERE status = 'running'"):
            nodes = json.loads(row["nodes"] or "{}")
            for n in nodes.values():
                if n.get("status") in ("pending", "running"):
                    n["status"] = "interrupted"
            job_id = row["id"]

            def mark(conn: Any, job_id: str = job_id, nodes: dict = nodes) -> None:
                conn.execute("UPDATE jobs SET status = 'interrupted', finished = ?, error = ?, nodes = ? WHERE id = ?",
                             (now, INTERRUPTED, json.dumps(nodes), job_id))

            self.hub.append(job_id, ev.to_wire(ev.RunFinished(job_id, None, error=INTERRUPTED)), before_commit=mark)
            log.warning("job %s was running when the server stopped: now interrupted (rerun it)", job_id)

    # paths ----------------------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def out_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "out"

    # checking a workflow --------------------------------------------------------------------------
    def build(self, workflow: Any, targets: list[str] | None, job_dir: Path) -> Graph:
        """The runnable graph of a submitted document; JobError(422) with the CLI's message if bad."""
        try:
            graph = graph_from_dict(workflow)
        except WorkflowFormatError as exc:
            raise JobError(422, str(exc)) from None
        try:
            graph, _notes = upgrade(graph, self.registry)
            problems = self._resolve_refs(graph)
            graph.base_dir = str(job_dir)  # a relative path names a file of the job's own folder
            problems.extend(validate(graph, self.registry))
        except Exception as exc:
            log.exception("checking a workflow failed")
            raise JobError(422, f"the workflow cannot be checked: {one_line(exc)}") from None
        for t in targets or ():
            if t not in graph.nodes:
                problems.append(Problem(t, None, "is asked for as a target but is not a node of the workflow"))
        if problems:
            raise JobError(422, str(ValidationError(problems)), problems)
        return graph

    def _resolve_refs(self, graph: Graph) -> list[Problem]:
        """Turn `blob:` / `tree:` parameter values into paths under the data dir."""
        problems: list[Problem] = []
        for node in graph.nodes.values():
            spec = self.registry.get(node.type)
            for name, value in list(node.params.items()):
                port = spec.input(name, node.params) if spec is not None else None
                try:
                    new = self._resolve_value(value, port is not None and port.kind == "Path")
                except (ProtocolError, ResolveError) as exc:
                    problems.append(Problem(node.id, name, one_line(exc)))
                    continue
                if new is not value:
                    node.params[name] = new
        return problems

    def _resolve_value(self, value: Any, path_port: bool) -> Any:
        if isinstance(value, str):
            if _REF.match(value) or (path_port and value.startswith((BLOB_PREFIX, TREE_PREFIX))):
                kind, sha, name = parse_ref(value)  # type: ignore[misc]  # a match is a reference
                return str(self.blobs.blob_file(sha, name) if kind == "blob" else self.blobs.tree_folder(sha))
            return value
        if isinstance(value, list):
            out = [self._resolve_value(v, path_port) for v in value]
            return out if any(a is not b for a, b in zip(out, value, strict=True)) else value
        if isinstance(value, dict):
            new = {k: self._resolve_value(v, path_port) for k, v in value.items()}
            return new if any(new[k] is not value[k] for k in value) else value
        return value

    # requests -------------------------------------------------------------------------------------
    @staticmethod
    def _body_hash(workflow: Any, targets: Any) -> str:
        text = json.dumps({"workflow": workflow, "targets": targets}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    def _row(self, job_id: str) -> Any:
        return self.db.row("SELECT * FROM jobs WHERE id = ?", (job_id,))

    def submit(self, job_id: str, workflow: Any, targets: list[str] | None = None,
               preload: bool = False) -> tuple[bool, dict[str, Any]]:
        """(created, job): a new queued job, or the same one again for a retry (see module doc)."""
        if not JOB_ID.match(job_id):
            raise JobError(422, f"{job_id[:80]!r} is not a usable job id (letters, digits, '_', '-', '.'; "
                                "at most 128; not starting with '.' or '-')")
        if targets is not None and (not isinstance(targets, list) or not all(isinstance(t, str) for t in targets)):
            raise JobError(422, "'targets' must be a list of node ids")
        body_hash = self._body_hash(workflow, targets)
        existing = self._row(job_id)
        if existing is not None:
            return self._again(existing, body_hash)
        self.build(workflow, targets, self.job_dir(job_id))
        with self._cv:
            existing = self._row(job_id)
            if existing is not None:
                return self._again(existing, body_hash)
            qseq = int(self.db.scalar("SELECT COALESCE(MIN(qseq), 1) - 1 FROM jobs") if preload else
                       self.db.scalar("SELECT COALESCE(MAX(qseq), 0) + 1 FROM jobs"))
            body = json.dumps({"workflow": workflow, "targets": targets}, separators=(",", ":"))
            with self.db.tx() as conn:
                conn.execute("INSERT INTO jobs (id, body_hash, body, status, qseq, created) VALUES (?, ?, ?, ?, ?, ?)",
                             (job_id, body_hash, body, "queued", qseq, time.time()))
            self.out_dir(job_id).mkdir(parents=True, exist_ok=True)
            if preload:
                self._preloads.add(job_id)
            self._cv.notify_all()
        return True, self.get(job_id)

    def _again(self, row: Any, body_hash: str) -> tuple[bool, dict[str, Any]]:
        if row["body_hash"] != body_hash:
            raise JobError(409, f"job id '{row['id']}' is taken by another workflow: choose a new id")
        return False, self.get(row["id"])

    def get(self, job_id: str) -> dict[str, Any]:
        row = self._row(job_id)
        if row is None:
            raise JobError(404, f"no job '{job_id[:80]}' on this server")
        return self._public(row, full=True)

    def _public(self, row: Any, full: bool = False) -> dict[str, Any]:
        body = json.loads(row["body"])
        job = {"id": row["id"], "status": row["status"], "created": row["created"], "started": row["started"],
               "finished": row["finished"], "error": row["error"], "attempt": row["attempt"],
               "targets": body.get("targets")}
        with self._state_lock:
            a = self._active.get(row["id"])
            nodes = json.loads(json.dumps(a.nodes)) if a is not None and a.ended is None else None
            if a is not None and a.ended is None:
                job["cancel_requested"] = a.cancel_requested
        job["nodes"] = nodes if nodes is not None else json.loads(row["nodes"] or "{}")
        if row["status"] == "queued":
            job["position"] = int(self.db.scalar("SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND qseq < ?",
                                                 (row["qseq"],)))
        if full:
            job["files"] = int(self.db.scalar("SELECT COUNT(*) FROM files WHERE job = ?", (row["id"],)))
        return job

    def list(self, limit: int = 50, offset: int = 0, status: str | None = None) -> dict[str, Any]:
        """Newest first, `limit` at a time; `status` filters."""
        where, args = ("WHERE status = ?", [status]) if status else ("", [])
        total = int(self.db.scalar(f"SELECT COUNT(*) FROM jobs {where}", args))
        rows = self.db.rows(f"SELECT * FROM jobs {where} ORDER BY created DESC, id LIMIT ? OFFSET ?",
                            [*args, limit, offset])
        return {"jobs": [self._public(r) for r in rows], "total": total, "limit": limit, "offset": offset}

    def cancel(self, job_id: str) -> dict[str, Any]:
        """A queued job never runs; a running one is cancelled in the engine (its node stops at
        its next cancel check); other jobs go on. Cancelling a cancelled job again is a no-op."""
        with self._cv:
            row = self._row(job_id)
            if row is None:
                raise JobError(404, f"no job '{job_id[:80]}' on this server")
            status = row["status"]
            if status == "queued":
                now = time.time()

                def mark(conn: Any) -> None:
                    conn.execute("UPDATE jobs SET status = 'cancelled', finished = ?, error = NULL WHERE id = ?",
                                 (now, job_id))

                self.hub.append(job_id, ev.to_wire(ev.RunFinished(job_id, None, cancelled=True)), before_commit=mark)
            elif status == "running":
                a = self._active.get(job_id)
                if a is not None:
                    a.cancel_requested = True
                    if a.handle is not None:
                        a.handle.cancel()
            elif status != "cancelled":
                raise JobError(409, f"job '{job_id}' is already {status}: there is nothing to cancel")
        return self.get(job_id)

    def rerun(self, job_id: str) -> dict[str, Any]:
        """Queue an interrupted, failed or cancelled job again, under the same id (its events
        continue the log)."""
        with self._cv:
            row = self._row(job_id)
            if row is None:
                raise JobError(404, f"no job '{job_id[:80]}' on this server")
            if row["status"] not in RERUNNABLE:
                raise JobError(409, f"job '{job_id}' is {row['status']}: only an interrupted, failed or cancelled "
                                    "job can be rerun")
            qseq = int(self.db.scalar("SELECT COALESCE(MAX(qseq), 0) + 1 FROM jobs"))
            with self.db.tx() as conn:
                conn.execute("UPDATE jobs SET status = 'queued', qseq = ?, finished = NULL, error = NULL, nodes = '{}' "
                             "WHERE id = ?", (qseq, job_id))
            self._cv.notify_all()
        return self.get(job_id)

    def files(self, job_id: str) -> list[dict[str, Any]]:
        if self._row(job_id) is None:
            raise JobError(404, f"no job '{job_id[:80]}' on this server")
        rows = self.db.rows("SELECT path, kind, size, sha256, node_id, frame FROM files WHERE job = ? ORDER BY rowid",
                            (job_id,))
        return [dict(r) for r in rows]

    def exists(self, job_id: str) -> bool:
        return self._row(job_id) is not None

    def wait(self, job_id: str, timeout: float) -> dict[str, Any]:
        """The job once it is no longer queued or running, or as it stands after `timeout` (tests, CLI)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job["status"] in TERMINAL or time.monotonic() >= deadline:
                return job
            time.sleep(0.02)

    # the worker -----------------------------------------------------------------------------------
    def _next_queued(self) -> Any:
        return self.db.row("SELECT * FROM jobs WHERE status = 'queued' ORDER BY qseq LIMIT 1")

    def _run_loop(self) -> None:
        while True:
            with self._cv:
                row = None
                while not self._stopping:
                    row = self._next_queued()
                    if row is not None:
                        break
                    self._cv.wait(2.0)
                if self._stopping:
                    return
                job_id = row["id"]
                a = _Active(job_id, row["created"], time.time(), int(row["attempt"]) + 1)
                with self._state_lock:
                    self._active[job_id] = a
                with self.db.tx() as conn:
                    conn.execute("UPDATE jobs SET status = 'running', started = ?, finished = NULL, error = NULL, "
                                 "nodes = '{}', attempt = ? WHERE id = ?", (a.started, a.attempt, job_id))
            try:
                self._run_one(a, json.loads(row["body"]))
            except Exception as exc:
                log.exception("job %s could not start", job_id)
                self._q.put(("event", ev.RunFinished(job_id, None, error=one_line(exc))))
            a.finished.wait()
            with self._cv, self._state_lock:
                self._active.pop(job_id, None)

    def _run_one(self, a: _Active, body: dict[str, Any]) -> None:
        try:
            graph = self.build(body["workflow"], body.get("targets"), self.job_dir(a.id))
        except JobError as exc:  # e.g. a blob removed from the data dir since the job was queued
            problems = tuple((p.node_id, p.port, p.message) for p in exc.problems)
            self._q.put(("event", ev.RunFinished(a.id, None, error=exc.message, problems=problems)))
            return
        out = self.out_dir(a.id)
        out.mkdir(parents=True, exist_ok=True)
        handle = self.client.submit(graph, body.get("targets"), out, run_id=a.id)
        a.handle = handle
        if a.cancel_requested:
            handle.cancel()
        error = None
        try:
            handle.wait()
        except BaseException as exc:  # noqa: BLE001 - reported through the job (RunFinished has it too)
            error = one_line(exc)
        self._q.put(("returned", a.id, error))

    # events ---------------------------------------------------------------------------------------
    def _on_event(self, event: ev.Event) -> None:
        """The engine's listener (throttled): hand over to the ingest thread, in order."""
        self._q.put(("event", event))

    def _ingest_loop(self) -> None:
        stop = False
        while not stop:
            batch = [self._q.get()]
            while len(batch) < INGEST_BATCH:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            if any(item[0] == "stop" for item in batch):
                stop = True
                batch = [item for item in batch if item[0] != "stop"]
            try:
                self._ingest(batch)
            except Exception:
                log.exception("storing %d events failed", len(batch))
                for item in batch:  # never leave the worker waiting for a RunFinished that was dropped
                    if item[0] == "returned" or isinstance(item[1], ev.RunFinished):
                        a = self._active.get(item[1] if item[0] == "returned" else item[1].run_id)
                        if a is not None:
                            a.finished.set()

    def _ingest(self, batch: list[tuple[Any, ...]]) -> None:
        items: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        files: list[tuple[str, dict[str, Any], int]] = []
        dirty: dict[str, _Active] = {}
        ended: list[_Active] = []
        for item in batch:
            if item[0] == "returned":
                _, job_id, error = item
                a = self._active.get(job_id)
                if a is None or a.ended is not None:
                    continue
                event: ev.Event = ev.RunFinished(job_id, None, error=error or "the run ended without a result")
            else:
                event = item[1]
            a = self._active.get(event.run_id)
            extra = None
            if isinstance(event, ev.NodeFile) and event.file is not None:
                entry = self._file_entry(event.file)
                if entry is not None:
                    files.append((event.run_id, entry, a.attempt if a is not None else 0))
                    extra = {"file": entry}
            if a is not None and a.ended is None:
                with self._state_lock:
                    self._apply(a, event)
                dirty[a.id] = a
                if a.ended is not None:
                    ended.append(a)
            items.append((event.run_id, ev.to_wire(event), extra))
        with self.db.lock:
            with self.db.tx() as conn:
                for job_id, entry, attempt in files:
                    conn.execute("INSERT OR REPLACE INTO files (job, path, kind, size, sha256, node_id, frame, "
                                 "attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 (job_id, entry["path"], entry["kind"], entry["size"], entry["sha256"],
                                  entry["node_id"], entry["frame"], attempt))
                for a in dirty.values():
                    with self._state_lock:
                        nodes = json.dumps(a.nodes)
                    conn.execute("UPDATE jobs SET status = ?, error = ?, finished = ?, nodes = ? WHERE id = ?",
                                 (a.status, a.error, a.ended, nodes, a.id))
                records = self.hub.insert(conn, items)
            self.hub.publish(records)
        for a in ended:
            a.finished.set()

    def _file_entry(self, art: FileArtifact) -> dict[str, Any] | None:
        """Copy a written file into the blob store: its entry in the job's manifest."""
        path = Path(art.path)
        try:
            sha, size = self.blobs.add_file(path)
        except OSError as exc:
            log.warning("job %s: the file %s written by %s cannot be kept: %s", art.run_id, path.name, art.node_id,
                        exc.strerror or exc)
            return None
        out = self.out_dir(art.run_id)
        try:
            rel = path.resolve().relative_to(out.resolve()).as_posix()
        except ValueError:
            rel = str(path)  # written outside the job's folder (a trained LoRA into the models folder)
        return {"path": rel, "kind": art.kind, "size": size, "sha256": sha, "node_id": art.node_id,
                "frame": art.frame}

    def _apply(self, a: _Active, e: ev.Event) -> None:
        """What an event says about the job's nodes and status (called with the state lock)."""
        now = time.time()
        n = a.nodes.setdefault(e.node_id, {"status": "pending"}) if e.node_id is not None else None
        if isinstance(e, ev.RunStarted):
            for nid in e.nodes:
                a.nodes.setdefault(nid, {"status": "pending"})
        elif isinstance(e, ev.NodeStarted) and n is not None:
            n.update(status="running", title=e.title, started=now, progress=0.0)
        elif isinstance(e, ev.NodeProgress) and n is not None:
            n["progress"] = e.fraction
            if e.text:
                n["text"] = e.text
                if a.id in self._preloads:
                    log.info("preload: %s: %3.0f%% %s", e.node_id, e.fraction * 100, e.text)
        elif isinstance(e, ev.NodeFinished) and n is not None:
            n.update(status="cached" if e.cached else "done", duration=e.duration, progress=1.0)
            n.pop("started", None)
        elif isinstance(e, ev.NodeFailed) and n is not None:
            started = n.pop("started", None)
            n.update(status="failed", error=e.message)
            if started is not None:
                n["duration"] = round(now - started, 6)
            if e.upstream:
                n["upstream"] = e.upstream
        elif isinstance(e, ev.NodeSkipped) and n is not None:
            n.update(status="muted" if e.reason == "muted" else "skipped", reason=e.reason)
        elif isinstance(e, ev.NodeLog):
            if a.id in self._preloads:
                log.info("preload: %s: %s", e.node_id, e.message)
        elif isinstance(e, ev.NodeFile) and n is not None:
            n["files"] = int(n.get("files", 0)) + 1
        elif isinstance(e, ev.RunFinished):
            self._finish(a, e, now)

    def _finish(self, a: _Active, e: ev.RunFinished, now: float) -> None:
        interrupted = a.stopping and (e.cancelled or e.error)
        for n in a.nodes.values():
            if n.get("status") in ("pending", "running"):
                n["status"] = "interrupted" if interrupted else ("cancelled" if e.cancelled else "not run")
                n.pop("started", None)
        if interrupted:
            a.status, a.error = "interrupted", INTERRUPTED
        elif e.cancelled:
            a.status, a.error = "cancelled", None
        elif e.error or e.failed:
            a.status = "failed"
            first = next((nid for nid in e.failed if not a.nodes.get(nid, {}).get("upstream")), None)
            first = first or (e.failed[0] if e.failed else None)
            a.error = e.error or f"node '{first}' failed: {a.nodes.get(first, {}).get('error', '')}".rstrip(": ")
        else:
            a.status, a.error = "done", None
        a.ended = now
        if a.id in self._preloads:
            log.info("preload: %s%s", a.status, f" ({a.error})" if a.error else "")


def preload_workflow(model: str) -> dict[str, Any]:
    """The one-node workflow `serve --preload MODEL` queues first: Load Model, so the weights are
    in the model manager before the first job (and its load progress is the job's events)."""
    return {"format": "imagebash/1",
            "nodes": [{"id": "model", "type": "imagebash.diffusion.load_model", "params": {"checkpoint": model},
                       "pos": [0, 0]}],
            "links": []}


def new_preload_id(model: str) -> str:
    digest = hashlib.sha256(f"{model}\0{time.time_ns()}\0{os.getpid()}".encode()).hexdigest()[:12]
    return f"preload-{digest}"
