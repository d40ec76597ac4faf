"""Events the engine emits for every node and run, and a thread-safe bus that fans them out.

Events are plain data by construction: str, int, float, bool, None, tuples, bytes and the wire
records of `app.engine.wire` (output summaries, file artefacts), never arrays, closures or
device tensors, so `to_wire` / `from_wire` turn every one of them into JSON and back (bytes as
base64) for a remote engine. Listeners are called on the thread that emits (a pool worker, the
scheduler); a UI marshals them onto its own thread. A listener that raises is logged and kept
out of the run's way.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.engine.wire import FileArtifact, OutputRef, OutputSummary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    run_id: str
    node_id: str | None


@dataclass(frozen=True)
class RunStarted(Event):
    """The run was accepted and planned; `nodes` are the ids it will run, in order."""

    nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeStarted(Event):
    title: str = ""


@dataclass(frozen=True)
class NodeProgress(Event):
    fraction: float = 0.0
    text: str | None = None
    preview: bytes | None = field(default=None, repr=False)  # a small PNG, e.g. a decoded latent
    #: Numbers a front end may plot (a trainer's step, total and loss), JSON scalars only.
    metrics: tuple[tuple[str, Any], ...] = ()

    def metric(self, name: str, default: Any = None) -> Any:
        return dict(self.metrics).get(name, default)


@dataclass(frozen=True)
class NodeFinished(Event):
    duration: float = 0.0
    cached: bool = False
    #: A summary (and reference) per output port; fetch values from the engine by `summary.ref`.
    outputs: dict[str, OutputSummary] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class NodeFile(Event):
    """A node wrote a file (Save Image, Save Video, a trained LoRA, a training sample)."""

    file: FileArtifact | None = None


@dataclass(frozen=True)
class NodeFailed(Event):
    message: str = ""
    traceback: str = ""
    upstream: str | None = None  # set when this node did not run because `upstream` failed


@dataclass(frozen=True)
class NodeSkipped(Event):
    reason: str = ""


@dataclass(frozen=True)
class NodeLog(Event):
    """A line for the log panel (e.g. 'retrying with tiled VAE after out-of-memory')."""

    message: str = ""
    level: str = "info"


@dataclass(frozen=True)
class RunFinished(Event):
    """The last event of every run, including one that could not start (`error`, `problems`)."""

    duration: float = 0.0
    cancelled: bool = False
    failed: tuple[str, ...] = ()
    error: str | None = None
    #: Validation problems when the run could not start: (node id, port, message) triples.
    problems: tuple[tuple[str | None, str | None, str], ...] = ()


@dataclass(frozen=True)
class EngineStatus(Event):
    """A client's link to its engine changed (a remote engine went away, or is back): not about
    one run (`run_id` is empty). An in-process engine never sends it."""

    connected: bool = True
    message: str = ""


EVENT_TYPES: dict[str, type[Event]] = {
    c.__name__: c for c in (RunStarted, NodeStarted, NodeProgress, NodeFinished, NodeFile, NodeFailed,
                            NodeSkipped, NodeLog, RunFinished, EngineStatus)
}


def to_wire(event: Event) -> dict[str, Any]:
    """A JSON-able dict for an event: its type name and fields, bytes as base64 text."""
    return {"type": type(event).__name__, **{f.name: _encode(getattr(event, f.name))
                                             for f in dataclasses.fields(event)}}


def from_wire(doc: dict[str, Any]) -> Event:
    """The event `to_wire` described (raises ValueError for an unknown type)."""
    cls = EVENT_TYPES.get(str(doc.get("type")))
    if cls is None:
        raise ValueError(f"unknown event type {doc.get('type')!r}")
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name in doc:
            kw[f.name] = _decode(f.name, doc[f.name])
    return cls(**kw)


def _encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, (OutputSummary, OutputRef, FileArtifact)):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    return value


def _decode(name: str, value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if name == "outputs" and isinstance(value, dict):
        return {port: _summary(s) for port, s in value.items()}
    if name == "file" and isinstance(value, dict):
        return FileArtifact(**value)
    if isinstance(value, list):
        return tuple(_decode("", v) for v in value)
    return value


def _summary(doc: dict[str, Any]) -> OutputSummary:
    kw = {k: _decode(k, v) for k, v in doc.items() if k != "ref"}
    return OutputSummary(ref=OutputRef(**doc["ref"]), **kw)


Listener = Callable[[Event], None]


class EventBus:
    """Any number of listeners; add and remove them from any thread."""

    def __init__(self) -> None:
        self._listeners: tuple[Listener, ...] = ()
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = tuple(x for x in self._listeners if x is not listener)

        return unsubscribe

    @property
    def active(self) -> bool:
        return bool(self._listeners)

    def emit(self, event: Event) -> None:
        for listener in self._listeners:  # a tuple snapshot: safe against concurrent (un)subscribe
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed on %s", type(event).__name__)
