"""Emitting a Qt signal from a worker thread whose receiver may be gone.

A worker (frame fetch, engine probe, connection test, cancel) can finish after the window or
panel it reports to was closed; PySide6 then raises RuntimeError for the deleted C++ object.
That is not an error for the worker: the answer simply has nobody left to hear it.
"""

from __future__ import annotations

from typing import Any


def emit_safely(signal: Any, *args: Any) -> bool:
    """`signal.emit(*args)`; False (and nothing raised) when its object was deleted meanwhile."""
    try:
        signal.emit(*args)
    except RuntimeError:
        return False
    return True
