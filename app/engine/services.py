"""Long-lived managers the engine owns (the model manager, API clients), created on first use.

Node packs declare service factories in a module-level `SERVICES = {name: factory}` dict, which
the registry collects when it loads the pack; each engine builds each service once, on the
first `ctx.service(name)` call, so the engine never imports torch or a client library itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any


class Services:
    """The services of one engine, built from the factories its registry's packs declared."""

    def __init__(self, engine: Any, factories: Mapping[str, Callable[[Any], Any]] | None = None) -> None:
        self._engine = engine
        self._factories = factories if factories is not None else {}
        self._made: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Any:
        with self._lock:
            if name not in self._made:
                if name not in self._factories:
                    raise KeyError(f"no service '{name}' is registered (is its node module installed?)")
                self._made[name] = self._factories[name](self._engine)
            return self._made[name]

    def peek(self, name: str) -> Any | None:
        """The service if it was built, else None (asking builds nothing: a pool asks an idle
        engine what it holds without loading torch)."""
        with self._lock:
            return self._made.get(name)

    def set(self, name: str, service: Any) -> None:
        with self._lock:
            self._made[name] = service
