"""Events the engine emits for every node, and a thread-safe bus that fans them out.

Listeners are called on the thread that emits (a pool worker, the scheduler); a UI marshals them
onto its own thread. A listener that raises is logged and kept out of the run's way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    run_id: int
    node_id: str | None


@dataclass(frozen=True)
class NodeStarted(Event):
    title: str = ""


@dataclass(frozen=True)
class NodeProgress(Event):
    fraction: float = 0.0
    text: str | None = None
    preview: Any = None  # an optional (H, W, C) float image, e.g. a decoded latent preview


@dataclass(frozen=True)
class NodeFinished(Event):
    duration: float = 0.0
    cached: bool = False
    outputs: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


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
    duration: float = 0.0
    cancelled: bool = False
    failed: tuple[str, ...] = ()


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
