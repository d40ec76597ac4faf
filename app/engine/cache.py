"""The output cache: node results keyed by signature, evicted least-recently-used by bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from nodes.types import value_nbytes


class OutputCache:
    """Maps a node signature to its outputs; holds at most `budget_bytes` (an entry larger than
    the whole budget is not kept)."""

    def __init__(self, budget_bytes: int = 4 << 30) -> None:
        self.budget_bytes = int(budget_bytes)
        self._entries: OrderedDict[str, tuple[dict[str, Any], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, sig: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._entries.get(sig)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(sig)
            self.hits += 1
            return entry[0]

    def put(self, sig: str, outputs: dict[str, Any]) -> None:
        size = sum(value_nbytes(v) for v in outputs.values())
        with self._lock:
            old = self._entries.pop(sig, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.budget_bytes:
                return
            self._entries[sig] = (outputs, size)
            self._bytes += size
            while self._bytes > self.budget_bytes and self._entries:
                _, (_, s) = self._entries.popitem(last=False)
                self._bytes -= s

    def set_budget(self, budget_bytes: int) -> None:
        with self._lock:
            self.budget_bytes = int(budget_bytes)
            while self._bytes > self.budget_bytes and self._entries:
                _, (_, s) = self._entries.popitem(last=False)
                self._bytes -= s

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, sig: str) -> bool:
        return sig in self._entries
