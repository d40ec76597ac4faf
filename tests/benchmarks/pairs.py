"""Timing helpers the benchmarks share: back-to-back pairs under the same load, and their ratios.

On a small shared machine a run's wall time swings with whatever else runs; two calls made back
to back see about the same load, so the headline of a comparison is the median of per-pair
ratios, with the ratio of medians, of best times and of CPU times printed beside it.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any


def emit(**fields: Any) -> None:
    """One JSON object per line, flushed (the benchmarks' output format)."""
    print(json.dumps(fields), flush=True)


def cpu_engine() -> Any:
    from app.engine import Engine, EngineSettings
    from nodes.registry import default_registry

    return Engine(default_registry(), EngineSettings(device="cpu"))


class Timed:
    """Wall and process-CPU seconds of one call (CPU time counts every thread of this process, so
    it is less disturbed by other work on a shared machine; the wall time is the headline)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> Timed:
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall, self.cpu = time.perf_counter() - self._w, time.process_time() - self._c


def engine_runner(engine: Any, graph: Any, images: dict[str, Any], node: str = "gen") -> Callable[[], Timed]:
    """A call that runs `graph` with the engine's cache cleared (so `node` really samples), checks
    it did, keeps its image in `images["engine"]` and returns its time."""
    import numpy as np

    def run() -> Timed:
        engine.cache.clear()
        with Timed() as t:
            result = engine.run(graph)
        assert result.ok, result.errors
        assert result.status[node] == "done"
        images["engine"] = np.asarray(result.output(node))
        return t

    return run


def interleaved(a: Callable[[], Timed], b: Callable[[], Timed], repeat: int) -> list[tuple[Timed, Timed]]:
    """(a's, b's) times of `repeat` adjacent pairs, alternating which goes first, after one warm
    call of each."""
    a(), b()
    pairs = []
    for i in range(repeat):
        if i % 2:
            ta = a()
            tb = b()
        else:
            tb = b()
            ta = a()
        pairs.append((ta, tb))
    return pairs


def ratios(pairs: list[tuple[Timed, Timed]]) -> dict[str, float]:
    """The median of the per-pair wall ratios, and for reference the ratio of the median times, of
    the best times, and of the median CPU times."""
    med = statistics.median
    wa, wb = [p[0].wall for p in pairs], [p[1].wall for p in pairs]
    return {"ratio": round(med(x / y for x, y in zip(wa, wb, strict=True)), 3),
            "ratio_of_medians": round(med(wa) / med(wb), 3), "ratio_of_best": round(min(wa) / min(wb), 3),
            "cpu_ratio": round(med(p[0].cpu for p in pairs) / med(p[1].cpu for p in pairs), 3),
            "a_s": round(med(wa), 4), "b_s": round(med(wb), 4)}
