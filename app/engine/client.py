"""The one interface the editor and the CLI drive an engine through, and its in-process form.

What crosses it, and nothing else:
- in: a workflow (a Graph, copied at submit: plain data), the node ids to run, an output folder,
  an optional client-chosen run id; cancel by run id; engine settings;
- out: events (`app.engine.events`: plain data, output summaries with `OutputRef`s, file
  artefacts), output values fetched by reference (`fetch`, `fetch_frame`: a picture frame),
  written files by artefact (`fetch_file`), the node catalogue (`registry`: its specs give ports,
  dynamic ports and `choices`), and the model lists (`models`).
No widget holds a live engine object: arrays, lazy Videos, device tensors and server paths stay
behind the interface. `LocalEngine` is the implementation that runs the engine in this process;
a remote engine (`imagebash serve`) implements the same methods over HTTP and a WebSocket.
"""

from __future__ import annotations

import pathlib
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from app.engine import events as ev
from app.engine.executor import Engine, EngineSettings, RunHandle
from app.engine.wire import FileArtifact, OutputRef
from app.graph.model import Graph
from nodes.registry import Registry, default_registry

#: Progress events a subscriber gets per node at most per second (a node may report per pixel
#: row; nobody sees more than a screen refresh, and a socket should not carry more).
PROGRESS_PER_SECOND = 30


class RunTicket(Protocol):
    run_id: str

    def cancel(self) -> None: ...

    @property
    def done(self) -> bool: ...


class EngineClient(Protocol):
    """What a front end may ask of an engine; see the module docstring for what crosses it."""

    @property
    def registry(self) -> Registry: ...

    def submit(self, graph: Graph, targets: list[str] | None = None,
               output_dir: str | pathlib.Path | None = None, run_id: str | None = None) -> RunTicket: ...

    def cancel(self, run_id: str) -> bool: ...

    def subscribe(self, listener: Callable[[ev.Event], None]) -> Callable[[], None]: ...

    def fetch(self, ref: OutputRef) -> Any: ...

    def fetch_frame(self, ref: OutputRef, index: int = 0) -> np.ndarray: ...

    def fetch_file(self, artifact: FileArtifact) -> pathlib.Path: ...

    def release(self, run_id: str) -> None: ...

    def models(self, kind: str) -> list[str]: ...

    def apply_settings(self, settings: EngineSettings) -> None: ...

    @property
    def busy(self) -> bool: ...

    def shutdown(self) -> None: ...


def local_file(artifact: FileArtifact) -> pathlib.Path:
    """The file an artefact names on this machine; FileNotFoundError (one line) when it is gone."""
    path = pathlib.Path(artifact.path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the file {artifact.node_id} wrote is not here (any more)")
    return path


class Throttle:
    """Passes events on, dropping progress of a node that comes sooner than 1/rate s after the
    last one passed (a step that finishes, fraction 1.0, always passes)."""

    def __init__(self, listener: Callable[[ev.Event], None], rate: float = PROGRESS_PER_SECOND) -> None:
        self.listener = listener
        self.interval = 1.0 / rate
        self._last: dict[tuple[str, str | None], float] = {}
        self._lock = threading.Lock()

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.NodeProgress) and event.fraction < 1.0:
            now = time.monotonic()
            key = (event.run_id, event.node_id)
            with self._lock:
                if now - self._last.get(key, float("-inf")) < self.interval:
                    return
                self._last[key] = now
        elif isinstance(event, ev.RunFinished):
            with self._lock:
                for key in [k for k in self._last if k[0] == event.run_id]:
                    del self._last[key]
        self.listener(event)


class LocalEngine:
    """An EngineClient running the engine in this process (built on first use, so opening the
    editor stays cheap; rebuilt when settings change, once no run is in flight)."""

    def __init__(self, registry: Registry | None = None, settings: EngineSettings | None = None) -> None:
        self._registry = registry if registry is not None else default_registry()
        self._settings = settings or EngineSettings()
        self._pending: EngineSettings | None = None
        self._engine: Engine | None = None
        self._listeners: list[Callable[[ev.Event], None]] = []
        self._handles: dict[str, RunHandle] = {}
        self._lock = threading.RLock()

    # engine ----------------------------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        return self._registry

    @property
    def settings(self) -> EngineSettings:
        return self._settings

    @property
    def engine(self) -> Engine:
        """The in-process engine (for tests and for this module; front ends use the methods)."""
        with self._lock:
            if self._engine is None:
                self._engine = Engine(self._registry, self._settings)
                self._engine.events.subscribe(self._dispatch)
            return self._engine

    def _dispatch(self, event: ev.Event) -> None:
        if isinstance(event, ev.RunFinished):  # bookkeeping first: a listener may submit the next run
            with self._lock:
                self._handles.pop(event.run_id, None)
                if self._pending is not None and not self._handles:
                    self._rebuild()
        for listener in tuple(self._listeners):
            listener(event)

    def apply_settings(self, settings: EngineSettings) -> None:
        """New settings: rebuild the engine now if idle, else once the runs in flight are over."""
        with self._lock:
            if settings == self._settings and self._pending is None:
                return  # nothing changed: keep the engine and its cache
            self._settings = settings
            self._pending = settings
            if not self._handles:
                self._rebuild()

    def _rebuild(self) -> None:
        self._pending = None
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    @property
    def busy(self) -> bool:
        return bool(self._handles)

    def loaded_models(self) -> set[str]:
        """The names of the models this engine holds in memory (see ModelManager.held_names);
        empty before the engine or its model manager was built, and asking builds neither."""
        with self._lock:
            engine = self._engine
        manager = engine.services.peek("models") if engine is not None else None
        return set(manager.held_names()) if manager is not None and hasattr(manager, "held_names") else set()

    # runs ------------------------------------------------------------------------------------------
    def submit(self, graph: Graph, targets: list[str] | None = None,
               output_dir: str | pathlib.Path | None = None, run_id: str | None = None) -> RunHandle:
        """Start a run of a snapshot of `graph`; follow it by its events (its last is RunFinished)."""
        engine = self.engine
        with self._lock:  # held until the handle is listed: its RunFinished waits for the lock
            run_id = run_id or engine.new_run_id()
            if run_id in self._handles:
                return self._handles[run_id]  # the same run asked for again: one run
            handle = engine.start(graph, targets, output_dir, run_id)
            self._handles[run_id] = handle
        return handle

    def cancel(self, run_id: str) -> bool:
        with self._lock:
            handle = self._handles.get(run_id)
        if handle is None:
            return False
        handle.cancel()
        return True

    def subscribe(self, listener: Callable[[ev.Event], None], throttle: bool = True) -> Callable[[], None]:
        """Events of every run; progress thinned to PROGRESS_PER_SECOND per node unless `throttle` is off."""
        wrapped = Throttle(listener) if throttle else listener
        self._listeners.append(wrapped)

        def unsubscribe() -> None:
            if wrapped in self._listeners:
                self._listeners.remove(wrapped)

        return unsubscribe

    # outputs ---------------------------------------------------------------------------------------
    def fetch(self, ref: OutputRef) -> Any:
        return self.engine.fetch(ref)

    def fetch_frame(self, ref: OutputRef, index: int = 0) -> np.ndarray:
        return np.asarray(self.engine.fetch_frame(ref, index), dtype=np.float32)

    def fetch_file(self, artifact: FileArtifact) -> pathlib.Path:
        """The written file, here: the path itself (a remote engine downloads it first)."""
        return local_file(artifact)

    def release(self, run_id: str) -> None:
        if self._engine is not None:
            self._engine.outputs.release(run_id)

    # catalogue -------------------------------------------------------------------------------------
    def models(self, kind: str) -> list[str]:
        """Model names in the engine's models folders: kind "checkpoint" or "lora"."""
        from nodes.diffusion.catalog import list_checkpoints, list_loras

        if kind not in ("checkpoint", "lora"):
            raise ValueError(f"unknown model kind '{kind}' (checkpoint or lora)")
        return list_checkpoints() if kind == "checkpoint" else list_loras()

    def shutdown(self, wait_s: float = 3.0) -> None:
        """Cancel every run, wait a little for them to stop, and stop the engine."""
        with self._lock:
            handles = list(self._handles.values())
        for h in handles:
            h.cancel()
        deadline = time.monotonic() + wait_s
        for h in handles:
            try:
                h.wait(max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - closing anyway; the run's error was reported as an event
                pass
        with self._lock:
            if self._engine is not None:
                self._engine.shutdown()
                self._engine = None
