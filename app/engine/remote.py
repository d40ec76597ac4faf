"""The EngineClient of an engine on another machine (`imagebash serve` on a rented GPU).

It implements exactly the methods `LocalEngine` does, over the protocol in
`app.engine.protocol`, so the editor, the Train LoRA dialog and the CLI cannot tell the two apart:
- submit: the workflow's local files go up as content-addressed blobs (only those the server
  lacks), local model files it lacks are adopted, then the job is put under the client's run id
  (a retry is the same job); nothing waits for the run: it is followed by its events.
- events: one WebSocket to `/events?after=<last seq>` on a background thread; on a drop it says
  so (`EngineStatus`), reconnects with backoff and asks for what it missed, so listeners get every
  event once, in order. Files a job writes come as NodeFile records carrying their sha256: they
  are downloaded into the run's local output folder (or where a save port asked) before the
  listeners hear of them, and a run's RunFinished is passed on only after its downloads.
- outputs: fetched by reference (`.npy` for arrays, JSON for scalars, PNG frames), never pushed.
- catalogue and models: `registry` is the server's node catalogue (`RemoteRegistry`), `models`
  its model lists.
No call holds the network longer than `timeout`; a server that went away is one line.
"""

from __future__ import annotations

import io
import json
import logging
import pathlib
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from app.engine import events as ev
from app.engine.client import Throttle, local_file
from app.engine.executor import EngineSettings
from app.engine.protocol import API, CHUNK_BYTES, SIZE_HEADER
from app.engine.remote_catalog import RemoteRegistry
from app.engine.remote_inputs import Preparer, Progress, RemoteInputError
from app.engine.wire import FileArtifact, OutputRef
from app.graph.model import Graph
from app.graph.validate import Problem, ValidationError
from nodes.registry import Registry

log = logging.getLogger(__name__)

#: A submit that loses its connection is tried again for this long (a server restarting, a tunnel
#: re-established) before the run ends with the line saying why.
SUBMIT_RETRY_S = 60.0
#: The server's model list is asked again after this long (adopting one asks at once).
MODELS_TTL_S = 3.0
#: An upload request is sized to take about this long (well under MAX_REQUEST_SECONDS).
UPLOAD_PIECE_S = 8.0
MAX_PIECE_BYTES = 2 << 30

#: Reconnect delays (seconds) after a dropped event stream; the last repeats.
BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)


class EngineUnavailable(ConnectionError):
    """The remote engine cannot be reached or refused us (one line naming the URL); `transient`
    when trying again later may work (a dropped connection, a restarting server), not when the
    token is wrong or missing."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class RemoteRun:
    """A job on the server, as a RunHandle: its id, cancel, done, wait (for its RunFinished)."""

    def __init__(self, engine: RemoteEngine, run_id: str, output_dir: pathlib.Path,
                 destinations: dict[str, pathlib.Path]) -> None:
        self._engine = engine
        self.run_id = run_id
        self.output_dir = output_dir
        self.destinations = destinations
        self.files: list[FileArtifact] = []
        self.finished: ev.RunFinished | None = None
        self.seen = 0  # the highest event seq of this run handled: a replayed one is not handled twice
        self._done = threading.Event()
        self.lock = threading.Lock()  # held while replaying, so live events wait for the replay

    def cancel(self) -> None:
        self._engine.cancel(self.run_id)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> ev.RunFinished | None:
        """The run's RunFinished (None if still running after `timeout`); raises ValidationError
        when the server refused the workflow."""
        self._done.wait(timeout)
        f = self.finished
        if f is not None and f.problems:
            raise ValidationError([Problem(*p) for p in f.problems])
        return f


class RemoteEngine:
    """See the module docstring. `url` is the server's base URL (http(s)://host:port)."""

    def __init__(self, url: str, token: str, local_registry: Registry | None = None,
                 timeout: float = 30.0, verify: Any = True) -> None:
        import httpx

        self.url = url.rstrip("/")
        self._token = str(token or "").strip()
        self._local_registry = local_registry
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.url + API, timeout=timeout, verify=verify,
                                  headers={"Authorization": f"Bearer {self._token}"})
        self._registry: RemoteRegistry | None = None
        self._listeners: list[Callable[[ev.Event], None]] = []
        self._runs: dict[str, RemoteRun] = {}
        self._lock = threading.RLock()
        self._last_seq: int | None = None
        self._present: set[str] = set()  # blob and tree hashes the server is known to hold
        self._reached = False  # whether the server ever answered this client
        self._models_seen: tuple[float, list[dict[str, Any]]] | None = None
        self._stream: threading.Thread | None = None
        self._stop = threading.Event()
        self.connected = False
        self.settings = EngineSettings()

    def __repr__(self) -> str:
        return f"RemoteEngine({self.url})"

    # requests ------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kw: Any) -> Any:
        import httpx

        if not self._token:
            raise EngineUnavailable(f"no token for the engine at {self.url}: set one in Settings > Engines, "
                                    "IMAGEBASH_TOKEN or --token-file")
        if self._stop.is_set():
            raise EngineUnavailable(f"the client of the engine at {self.url} was shut down")
        try:
            r = self._http.request(method, path, **kw)
        except RuntimeError as exc:  # httpx: "the client has been closed" (shut down mid-request)
            raise EngineUnavailable(f"the client of the engine at {self.url} was shut down ({exc})") from None
        except httpx.HTTPError as exc:
            raise EngineUnavailable(f"the engine at {self.url} cannot be reached "
                                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                                    transient=True) from None
        self._reached = True
        if r.status_code == 401:
            raise EngineUnavailable(f"the engine at {self.url} refused the token (401): check it in "
                                    "Settings > Engines, IMAGEBASH_TOKEN or --token-file")
        return r

    def _json(self, method: str, path: str, ok: tuple[int, ...] = (200, 201), **kw: Any) -> Any:
        r = self._request(method, path, **kw)
        if r.status_code not in ok:
            raise _server_error(r, self.url)
        return r.json()

    def info(self) -> dict[str, Any]:
        """The server's version, device, GPU, VRAM and model count (Settings' "test connection")."""
        return self._json("GET", "/info")

    def loaded_models(self) -> set[str] | None:
        """The models the server holds in memory (its /info "loaded"); None from a server too old
        to say."""
        loaded = self.info().get("loaded")
        return None if loaded is None else {str(m) for m in loaded}

    # catalogue -----------------------------------------------------------------------------------
    @property
    def registry(self) -> RemoteRegistry:
        with self._lock:
            if self._registry is None:
                self._registry = RemoteRegistry(self._json("GET", "/nodes"), self.url, self._choices,
                                                self._local_registry)
            return self._registry

    def _choices(self, type_id: str, port: str) -> list[str]:
        try:
            return list(self._json("GET", f"/nodes/{type_id}/choices/{port}").get("choices", []))
        except (EngineUnavailable, RemoteInputError) as exc:
            log.info("model list from %s: %s", self.url, exc)
            return []

    def models(self, kind: str) -> list[str]:
        return [m["name"] for m in self.server_models() if m.get("kind") == kind]

    def server_models(self) -> list[dict[str, Any]]:
        with self._lock:
            hit = self._models_seen
        if hit is not None and time.monotonic() - hit[0] < MODELS_TTL_S:
            return list(hit[1])
        models = list(self._json("GET", "/models"))
        with self._lock:
            self._models_seen = (time.monotonic(), models)
        return list(models)

    # uploads (remote_inputs.Transport) ----------------------------------------------------------
    def missing(self, hashes: list[str]) -> list[str]:
        """The hashes the server lacks. Those it has are remembered for this connection (the
        store only grows), so a workflow submitted again asks nothing."""
        with self._lock:
            unknown = [h for h in dict.fromkeys(hashes) if h not in self._present]
        if not unknown:
            return []
        lacking = list(self._json("POST", "/blobs/missing", json={"hashes": unknown}).get("missing", []))
        with self._lock:
            self._present.update(set(unknown) - set(lacking))
        return lacking

    def upload(self, path: pathlib.Path, sha256: str, size: int, progress: Progress | None = None) -> None:
        """Send a file in pieces, resuming from what the server already has of it.

        A piece is one request, streamed from the file. The first is CHUNK_BYTES; later ones are
        sized from the speed seen so far to take about UPLOAD_PIECE_S (never near the proxies'
        time limits), so a fast link sends a big file in a few requests instead of paying a
        round trip every 8 MB, and a slow one keeps its requests short.
        """
        offset = int(self._json("GET", f"/blobs/{sha256}/upload").get("received", 0))
        piece = CHUNK_BYTES
        with open(path, "rb") as f:
            while True:
                n = min(piece, size - offset)
                f.seek(offset)
                t0 = time.monotonic()
                r = self._request("PUT", f"/blobs/{sha256}", params={"offset": offset}, content=_read(f, n),
                                  headers={SIZE_HEADER: str(size), "Content-Length": str(n),
                                           "Content-Type": "application/octet-stream"})
                if r.status_code == 409:  # the server holds another amount: continue from there
                    offset = int(r.json().get("received", 0))
                    continue
                if r.status_code not in (200, 201):
                    raise _server_error(r, self.url, f"uploading {path.name}")
                offset += n
                rate = n / max(time.monotonic() - t0, 1e-3)
                piece = int(min(max(CHUNK_BYTES, rate * UPLOAD_PIECE_S), MAX_PIECE_BYTES))
                if progress is not None:
                    progress(path.name, offset, size)
                if r.status_code == 201 or offset >= size:
                    with self._lock:
                        self._present.add(sha256)
                    return

    def put_tree(self, files: dict[str, str]) -> str:
        from app.engine.protocol import tree_hash

        tree = tree_hash(files)
        with self._lock:
            if tree in self._present:
                return tree
        body = self._json("POST", "/trees", json={"files": files})
        if body.get("missing"):
            raise RemoteInputError(f"the server lacks {len(body['missing'])} file(s) of a folder after uploading")
        with self._lock:
            self._present.add(str(body["tree"]))
        return str(body["tree"])

    def adopt(self, sha256: str, kind: str, name: str) -> str:
        with self._lock:
            self._models_seen = None
        return str(self._json("POST", "/models", json={"blob": sha256, "kind": kind, "name": name})["name"])

    # runs ----------------------------------------------------------------------------------------
    def submit(self, graph: Graph, targets: list[str] | None = None,
               output_dir: str | pathlib.Path | None = None, run_id: str | None = None) -> RemoteRun:
        """Queue a snapshot of `graph` on the server under `run_id` (a uuid when none is given;
        the same id again is the same job) and return at once: uploading the workflow's inputs
        happens on a worker thread, reported as progress of the run (node None). A model missing
        on the server, a refused workflow or an engine that cannot be reached ends the run with
        a RunFinished carrying the one-line error (and the problems), like a local run."""
        run_id = run_id or uuid.uuid4().hex
        with self._lock:
            existing = self._runs.get(run_id)
            if existing is not None and not existing.done:
                return existing
            run = RemoteRun(self, run_id, pathlib.Path(output_dir or "output"), {})
            self._runs[run_id] = run
        snapshot = graph.copy()
        threading.Thread(target=self._send_job, args=(run, snapshot, targets), name="imagebash-remote-submit",
                         daemon=True).start()
        return run

    def _send_job(self, run: RemoteRun, graph: Graph, targets: list[str] | None) -> None:
        def progress(name: str, done: int, total: int) -> None:
            self._dispatch(ev.NodeProgress(run.run_id, None, done / total if total else 1.0,
                                           f"uploading {name} ({done / 2**20:.1f}/{total / 2**20:.1f} MB)"))

        give_up = time.monotonic() + SUBMIT_RETRY_S
        attempt = 0
        while True:  # submitting is idempotent (the job id is ours): a dropped connection is retried
            try:
                self._submit_once(run, graph, targets, progress)
                return
            except EngineUnavailable as exc:
                # an engine never reached is one line at once; one that answered before is waited for
                if not (exc.transient and self._reached) or self._stop.is_set() or time.monotonic() > give_up:
                    self._end(run, str(exc).splitlines()[0] if str(exc) else type(exc).__name__, ())
                    return
                self._stop.wait(BACKOFF[min(attempt, len(BACKOFF) - 1)])
                attempt += 1
            except (RemoteInputError, OSError) as exc:
                self._end(run, str(exc).splitlines()[0] if str(exc) else type(exc).__name__, ())
                return

    def _submit_once(self, run: RemoteRun, graph: Graph, targets: list[str] | None, progress: Progress) -> None:
        self._ensure_stream()
        prepared = Preparer(self, self._local_registry or self.registry, progress).prepare(graph)
        run.destinations.update(prepared.destinations)
        r = self._request("PUT", f"/jobs/{run.run_id}", json={"workflow": prepared.workflow, "targets": targets})
        if r.status_code == 201:
            return  # the job is queued: its events tell the rest
        if r.status_code == 200:  # submitted before (a retry, or this client restarted): catch up
            self._replay(run)
            return
        body = _body(r)
        problems = tuple((p.get("node_id"), p.get("port"), str(p.get("message", "")))
                         for p in body.get("problems") or [])
        if not problems and r.status_code != 422:
            raise _server_error(r, self.url, "submitting the workflow")
        self._end(run, str(body.get("error") or r.text), problems or ((None, None, str(body.get("error"))),))

    def _end(self, run: RemoteRun, error: str, problems: tuple) -> None:
        """A run that never reached the server's queue ends here, as a local one that cannot start."""
        with run.lock:
            run.finished = ev.RunFinished(run.run_id, None, error=error, problems=problems)
            self._dispatch(run.finished)
            run._done.set()

    def attach(self, run_id: str, output_dir: str | pathlib.Path | None = None) -> RemoteRun:
        """Follow a job submitted earlier (by another process, or before a restart of this one):
        its events from the start are replayed, so its progress shows again."""
        self.job(run_id)  # a LookupError naming the job when the server has none
        run = RemoteRun(self, run_id, pathlib.Path(output_dir or "output"), {})
        with self._lock:  # listed before the stream runs: none of its live events goes elsewhere
            self._runs[run_id] = run
        self._ensure_stream()
        self._replay(run)
        return run

    def _replay(self, run: RemoteRun) -> None:
        """Hand on a job's events so far (a page at a time); live ones wait on run.lock meanwhile,
        and each seq is handled once."""
        with run.lock:
            after = 0
            while True:
                page = self._json("GET", "/events", params={"after": after, "limit": 500, "job": run.run_id})
                records = page.get("events") or []
                for record in records:
                    after = int(record.get("seq", after))
                    self._handle(run, record)
                if len(records) < 500:
                    break

    def job(self, run_id: str) -> dict[str, Any]:
        return self._json("GET", f"/jobs/{run_id}")

    def jobs(self, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        return self._json("GET", "/jobs", params={"limit": limit, "offset": offset})

    def rerun(self, run_id: str) -> dict[str, Any]:
        return self._json("POST", f"/jobs/{run_id}/rerun")

    def cancel(self, run_id: str) -> bool:
        r = self._request("DELETE", f"/jobs/{run_id}")
        return r.status_code == 200

    @property
    def busy(self) -> bool:
        with self._lock:
            return any(not r.done for r in self._runs.values())

    def apply_settings(self, settings: EngineSettings) -> None:
        """Device, precision and budgets are the server's own (its command line)."""
        self.settings = settings

    # events --------------------------------------------------------------------------------------
    def subscribe(self, listener: Callable[[ev.Event], None], throttle: bool = True) -> Callable[[], None]:
        wrapped = Throttle(listener) if throttle else listener
        with self._lock:
            self._listeners.append(wrapped)

        def unsubscribe() -> None:
            with self._lock:
                if wrapped in self._listeners:
                    self._listeners.remove(wrapped)

        return unsubscribe

    def _dispatch(self, event: ev.Event) -> None:
        with self._lock:
            listeners = tuple(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed on %s", type(event).__name__)

    def connect(self) -> None:
        """Open the event stream now (it opens on the first submit otherwise), so `connected`
        and EngineStatus events tell the link's state while nothing runs."""
        self._ensure_stream()

    def _ensure_stream(self) -> None:
        with self._lock:
            if self._stream is not None and self._stream.is_alive():
                return
            if self._last_seq is None:
                self._last_seq = int(self._json("GET", "/events", params={"after": 0, "limit": 1})
                                     .get("last_seq", 0))
            self._stop.clear()
            self._stream = threading.Thread(target=self._stream_loop, name="imagebash-remote-events", daemon=True)
            self._stream.start()

    def _stream_loop(self) -> None:
        from websockets.sync.client import connect

        ws_url = ("wss" if self.url.startswith("https") else "ws") + self.url[self.url.index(":"):] + API + "/events"
        failures = 0
        while not self._stop.is_set():
            try:
                with connect(f"{ws_url}?after={self._last_seq or 0}", open_timeout=self.timeout,
                             additional_headers={"Authorization": f"Bearer {self._token}"},
                             ping_interval=15, ping_timeout=30, max_size=None) as ws:
                    failures = 0
                    self._set_connected(True, "")
                    while not self._stop.is_set():
                        try:
                            text = ws.recv(timeout=0.5)
                        except TimeoutError:
                            continue
                        self._record(json.loads(text))
            except Exception as exc:  # noqa: BLE001 - any drop: say so, back off, reconnect, catch up
                if self._stop.is_set():
                    break
                failures += 1
                self._set_connected(False, f"the engine at {self.url} went away ({type(exc).__name__}); "
                                           "reconnecting")
                self._stop.wait(BACKOFF[min(failures - 1, len(BACKOFF) - 1)])
        self._set_connected(False, "")

    def _set_connected(self, on: bool, message: str) -> None:
        if on and not self.connected:
            with self._lock:  # it may be another server (a restarted box, a new disk): ask again
                self._present.clear()
                self._models_seen = None
        if on != self.connected or message:
            self.connected = on
            self._dispatch(ev.EngineStatus("", None, on, message or ("connected to " + self.url if on else "")))

    def _record(self, record: dict[str, Any]) -> None:
        """One record off the live stream."""
        seq = int(record.get("seq", 0))
        if self._last_seq is not None and seq <= self._last_seq:
            return
        self._last_seq = seq
        with self._lock:
            run = self._runs.get(str(record.get("job", "")))
        if run is None:
            event = _event(record, self.url)
            if event is not None:
                self._dispatch(event)  # another client's job: listeners may show it or not
            return
        with run.lock:
            self._handle(run, record)

    def _handle(self, run: RemoteRun, record: dict[str, Any]) -> None:
        """One record of a run this client follows (live or replayed; each seq once)."""
        seq = int(record.get("seq", 0))
        if seq <= run.seen:
            return
        run.seen = seq
        event = _event(record, self.url)
        if isinstance(event, ev.NodeFile) and event.file is not None:
            event = self._download(run, event, record.get("file") or {})
        if isinstance(event, ev.RunFinished):
            run.finished = event
            self._dispatch(event)
            run._done.set()
        elif event is not None:
            self._dispatch(event)

    # files ---------------------------------------------------------------------------------------
    def _download(self, run: RemoteRun, event: ev.NodeFile, entry: dict[str, Any]) -> ev.NodeFile | None:
        """Bring a written file here (into the run's output folder, or where a save port asked)."""
        art = event.file
        sha = entry.get("sha256")
        rel = str(entry.get("path") or pathlib.PurePosixPath(art.path).name)
        if not sha:
            log.warning("%s: the server kept no copy of %s", run.run_id, rel)
            return None
        dest = run.destinations.get(art.node_id)
        numbered = not (dest is not None and art.kind == "lora")
        if not numbered:  # the LoRA to where it was asked for, its twin beside it
            from app.training.export import peft_path_for

            dest = peft_path_for(dest) if rel.endswith(".peft.safetensors") else dest
        elif rel.startswith("/") or ".." in pathlib.PurePosixPath(rel).parts:
            dest = _unclaimed(run.output_dir / pathlib.PurePosixPath(rel).name, sha)
        else:
            dest = _unclaimed(run.output_dir / pathlib.PurePosixPath(rel), sha)
        try:
            if not (numbered and dest.is_file()):  # a numbered name taken by the same content: a replay
                self.download_blob(sha, dest)
        except (EngineUnavailable, OSError) as exc:
            self._dispatch(ev.NodeLog(run.run_id, art.node_id, f"could not download {rel}: {exc}", "warning"))
            return None
        local = FileArtifact(art.run_id, art.node_id, str(dest), art.kind, dest.stat().st_size, art.frame)
        run.files.append(local)
        return ev.NodeFile(event.run_id, event.node_id, local)

    def download_blob(self, sha256: str, dest: pathlib.Path) -> pathlib.Path:
        """Fetch a blob into `dest` (atomically: a partial file never takes the final name)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        import httpx

        try:
            with self._http.stream("GET", f"/blobs/{sha256}") as r:
                if r.status_code != 200:
                    raise _server_error(r, self.url, f"downloading {dest.name}")
                with open(tmp, "wb") as f:
                    for chunk in r.iter_bytes(1 << 20):
                        f.write(chunk)
        except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: the client was shut down meanwhile
            tmp.unlink(missing_ok=True)
            raise EngineUnavailable(f"the engine at {self.url} went away while sending {dest.name} "
                                    f"({type(exc).__name__})") from None
        tmp.replace(dest)
        return dest

    def fetch_file(self, artifact: FileArtifact) -> pathlib.Path:
        """The downloaded file (NodeFile events name the local copy)."""
        return local_file(artifact)

    # outputs -------------------------------------------------------------------------------------
    def fetch(self, ref: OutputRef) -> Any:
        r = self._request("GET", f"/jobs/{ref.run_id}/outputs/{ref.node_id}/{ref.port}")
        if r.status_code != 200:
            raise _server_error(r, self.url)
        if r.headers.get("content-type", "").startswith("application/json"):
            return r.json()
        return np.load(io.BytesIO(r.content), allow_pickle=False)

    def fetch_frame(self, ref: OutputRef, index: int = 0) -> np.ndarray:
        from app.engine.wire import decode_png

        r = self._request("GET", f"/jobs/{ref.run_id}/outputs/{ref.node_id}/{ref.port}/frames/{index}")
        if r.status_code != 200:
            raise _server_error(r, self.url)
        return decode_png(r.content).astype(np.float32) / 255.0

    def release(self, run_id: str) -> None:
        """Outputs kept on the server leave its store by its own budget; nothing to do here."""

    def shutdown(self, wait_s: float = 3.0) -> None:
        self._stop.set()
        if self._stream is not None:
            self._stream.join(wait_s)
        self._http.close()


def _unclaimed(dest: pathlib.Path, sha256: str) -> pathlib.Path:
    """`dest`, or the next free number after it (`name_00002.png`, else `name_2.png`) when an
    earlier file holds that name: a server numbers a job's files from 1 in the job's own folder,
    and here they meet the files of earlier runs, which must not be overwritten. A file there
    with the same content is this file (its events replayed after a restart): it keeps its name."""
    import hashlib
    import re

    m = re.fullmatch(r"(.*_)(\d+)", dest.stem)
    candidate, n = dest, 1
    while candidate.exists():
        if candidate.is_file():
            h = hashlib.sha256()
            with open(candidate, "rb") as f:
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(block)
            if h.hexdigest() == sha256:
                return candidate
        n += 1
        name = (f"{m.group(1)}{int(m.group(2)) + n - 1:0{len(m.group(2))}d}" if m else f"{dest.stem}_{n}")
        candidate = dest.with_name(name + dest.suffix)
    return candidate


def _read(f: Any, n: int, block: int = 1 << 20) -> Any:
    """`n` bytes of an open file as an iterator of blocks (an upload is never all in memory)."""
    left = n
    while left > 0:
        data = f.read(min(block, left))
        if not data:
            raise OSError(f"{getattr(f, 'name', 'the file')} got shorter while it was being sent")
        left -= len(data)
        yield data


def _event(record: dict[str, Any], url: str) -> ev.Event | None:
    try:
        return ev.from_wire(record["event"])
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("an event from %s could not be read: %s", url, exc)
        return None


def _body(r: Any) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {"error": r.text.strip().splitlines()[0] if r.text.strip() else f"HTTP {r.status_code}"}
    return body if isinstance(body, dict) else {"error": str(body)}


def _server_error(r: Any, url: str, what: str = "") -> Exception:
    from app.engine.store import OutputGone

    message = str(_body(r).get("error") or f"HTTP {r.status_code}")
    if r.status_code == 410:
        return OutputGone(message)
    if r.status_code == 404:
        return LookupError(message)
    prefix = f"{what}: " if what else ""
    return EngineUnavailable(f"{prefix}the engine at {url} answered {r.status_code}: {message}") \
        if r.status_code >= 500 else RemoteInputError(f"{prefix}{message}")


def wait_for(engine: RemoteEngine, run: RemoteRun, give_up_s: float = 60.0,
             tick: Callable[[], None] | None = None) -> ev.RunFinished | None:
    """Wait for a run; None when the engine stayed unreachable for `give_up_s` (it went away)."""
    gone_since: float | None = None
    while not run.done:
        run._done.wait(0.2)
        if tick is not None:
            tick()
        if engine.connected:
            gone_since = None
        elif gone_since is None:
            gone_since = time.monotonic()
        elif time.monotonic() - gone_since > give_up_s:
            return None
    return run.finished
