"""The output cache: node results keyed by signature, evicted least-recently-used by bytes.

An entry keeps a node's outputs as `app.engine.wire` hosts them (tensors on the CPU: device
memory belongs to the model manager's budget, not this one) together with the provenance the
node recorded (model and LoRA hashes for Save nodes downstream), so both leave together.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from app.engine.wire import host_outputs, outputs_nbytes


@dataclass
class CacheEntry:
    outputs: dict[str, Any]
    nbytes: int
    annotations: dict[str, Any] = field(default_factory=dict)


class OutputCache:
    """Maps a node signature to its outputs; holds at most `budget_bytes` (an entry larger than
    the whole budget is not kept)."""

    def __init__(self, budget_bytes: int = 4 << 30) -> None:
        self.budget_bytes = int(budget_bytes)
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, sig: str) -> CacheEntry | None:
        with self._lock:
            entry = self._entries.get(sig)
            if entry is not None:
                self._entries.move_to_end(sig)
            return entry

    def put(self, sig: str, outputs: dict[str, Any], kinds: dict[str, str] | None = None,
            annotations: dict[str, Any] | None = None) -> None:
        kinds = kinds or {}
        size = outputs_nbytes(kinds, outputs)
        entry = CacheEntry(host_outputs(kinds, outputs), size, dict(annotations or {})) \
            if size <= self.budget_bytes else None
        with self._lock:
            old = self._entries.pop(sig, None)
            if old is not None:
                self._bytes -= old.nbytes
            if entry is None:
                return
            self._entries[sig] = entry
            self._bytes += size
            while self._bytes > self.budget_bytes and self._entries:
                _, gone = self._entries.popitem(last=False)
                self._bytes -= gone.nbytes

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
