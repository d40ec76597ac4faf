"""The values behind output references: what a client may fetch after a node finished.

The scheduler drops a value as soon as its consumers have it; a client (the preview panel, an
export, a remote desktop) asks for outputs later, by `OutputRef`. The store keeps the outputs of
recent runs under a byte budget, least recently used out first (most bytes are shared with the
output cache, which holds the same arrays). A ref whose value was evicted, or that never
existed, raises `OutputGone` with a line saying to run the node again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from app.engine.wire import OutputRef, outputs_nbytes

#: Besides the byte budget: this many node results at most (scalars are counted as 64 bytes).
MAX_ENTRIES = 20_000


class OutputGone(LookupError):
    """The output was never made, or was dropped to stay within the store's budget."""


class OutputStore:
    """(run id, node id) -> that node's outputs in that run, LRU under `budget_bytes`."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = int(budget_bytes)
        self._entries: OrderedDict[tuple[str, str], tuple[dict[str, Any], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0

    def put(self, run_id: str, node_id: str, outputs: dict[str, Any], kinds: dict[str, str]) -> None:
        if not self.enabled:
            return
        size = outputs_nbytes(kinds, outputs)
        with self._lock:
            old = self._entries.pop((run_id, node_id), None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.budget_bytes:
                return
            self._entries[(run_id, node_id)] = (outputs, size)
            self._bytes += size
            while self._entries and (self._bytes > self.budget_bytes or len(self._entries) > MAX_ENTRIES):
                _, (_, s) = self._entries.popitem(last=False)
                self._bytes -= s

    def get(self, ref: OutputRef) -> Any:
        with self._lock:
            entry = self._entries.get((ref.run_id, ref.node_id))
            if entry is not None:
                self._entries.move_to_end((ref.run_id, ref.node_id))
        if entry is None or ref.port not in entry[0]:
            raise OutputGone(f"the output {ref.node_id}.{ref.port} of run {ref.run_id} is no longer kept: "
                             "run the node again")
        return entry[0][ref.port]

    def release(self, run_id: str) -> None:
        """Forget every output of a run (a client that no longer shows it)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == run_id]:
                self._bytes -= self._entries.pop(key)[1]

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)
