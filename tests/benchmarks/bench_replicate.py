"""Replicate benchmark: do four independent Replicate nodes overlap?

Against the fake Replicate server (each prediction answers after 0.5 s), through the real
client: `parallel_ratio` = wall time of a run with four independent Replicate nodes / 0.5 s.
Run one after the other they would take ~4; side by side ~1 plus polling and decoding (aim < 1.5).
`single_ratio` is one node alone (the per-call overhead), `cached_ratio` an unchanged re-run.
Run from the repo root: `python tests/benchmarks/bench_replicate.py`. One JSON object per line.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

DELAY = 0.5


def graph(n: int, seed0: int):
    from app.graph.model import Graph, NodeInstance

    g = Graph()
    for i in range(n):
        g.add_node(NodeInstance(f"r{i}", "imagebash.replicate.run",
                                {"model": "fake/txt2img", "prompt": "bench", "seed": seed0 + i}))
    return g


def timed(engine, g) -> float:
    t0 = time.perf_counter()
    result = engine.run(g, list(g.nodes))
    dt = time.perf_counter() - t0
    if not result.ok:
        raise SystemExit(f"benchmark run failed: {result.errors}")
    return dt


def main() -> None:
    from tests.replicate.fake_server import TOKEN, FakeReplicate

    server = FakeReplicate(delay=DELAY).start()
    os.environ.update(REPLICATE_BASE_URL=server.url, REPLICATE_API_TOKEN=TOKEN, REPLICATE_POLL_INTERVAL="0.02",
                      IMAGEBASH_CACHE_DIR=tempfile.mkdtemp(prefix="imagebash-bench-"))
    from app.engine import Engine

    engine = Engine()
    try:
        timed(engine, graph(1, 1000))  # warm-up: imports, schema fetch, connection pool
        single = min(timed(engine, graph(1, 2000 + k)) for k in range(2))
        parallel = min(timed(engine, graph(4, 3000 + 10 * k)) for k in range(2))
        cached = timed(engine, graph(4, 3000))
    finally:
        engine.shutdown()
        server.stop()
    print(json.dumps({"parallel_ratio": round(parallel / DELAY, 3), "nodes": 4, "delay_s": DELAY}))
    print(json.dumps({"single_ratio": round(single / DELAY, 3)}))
    print(json.dumps({"cached_ratio": round(cached / DELAY, 4)}))


if __name__ == "__main__":
    main()
