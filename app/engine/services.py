"""Long-lived managers the engine owns (the model manager, API clients), created on first use.

Node modules register a factory by name; the engine builds each service once, on the first
`ctx.service(name)` call, so the engine never imports torch or a client library itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_FACTORIES: dict[str, Callable[[Any], Any]] = {}


def register_service(name: str, factory: Callable[[Any], Any]) -> None:
    """Register `factory(engine) -> service` under `name` (idempotent for the same factory)."""
    _FACTORIES[name] = factory


class Services:
    """The services of one engine."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._made: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Any:
        with self._lock:
            if name not in self._made:
                if name not in _FACTORIES:
                    raise KeyError(f"no service '{name}' is registered (is its node module installed?)")
                self._made[name] = _FACTORIES[name](self._engine)
            return self._made[name]

    def peek(self, name: str) -> Any | None:
        """The service if it was already built, else None (never builds one)."""
        return self._made.get(name)

    def set(self, name: str, service: Any) -> None:
        with self._lock:
            self._made[name] = service
