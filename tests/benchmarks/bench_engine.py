"""Engine benchmark: per-node overhead, its growth with graph size, re-run ratio, io concurrency,
and what following a run through the client costs (the editor's way: a summary and an output
reference per node, events to a subscriber), against the bare engine in the same process.

Run from the repo root: `python tests/benchmarks/bench_engine.py`. Prints one JSON object per line.
"""

from __future__ import annotations

import json
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import numpy as np

from app.engine import Engine
from app.graph.model import Graph, Link, NodeInstance
from nodes.registry import Registry, node
from nodes.types import Image

REG = Registry(load_packs=False)


@node("bench.const", registry=REG)
def const(value: float = 1.0) -> float:
    """A constant."""
    return value


@node("bench.inc", registry=REG)
def inc(x: float, by: float = 1.0) -> float:
    """x + by."""
    return x + by


@node("bench.noise", registry=REG)
def noise(size: int = 1024, seed: int = 0) -> Image:
    """Seeded noise."""
    return np.random.default_rng(seed).random((1, size, size, 3), dtype=np.float32)


@node("bench.grade", registry=REG)
def grade(image: Image, gain: float = 1.01, lift: float = 0.0) -> Image:
    """A cheap per-pixel operation on a large image."""
    out = image * np.float32(gain) + np.float32(lift)
    np.clip(out, 0.0, 1.0, out=out)
    return out


@node("bench.wait", registry=REG, io=True, cacheable=False)
def wait(seconds: float = 0.5, tag: int = 0) -> float:
    """Sleep like a network call."""
    time.sleep(seconds)
    return float(tag)


def chain(n: int) -> Graph:
    g = Graph()
    g.nodes["n0"] = NodeInstance("n0", "bench.const")
    for i in range(1, n):
        g.nodes[f"n{i}"] = NodeInstance(f"n{i}", "bench.inc")
        g.links.append(Link(f"n{i - 1}", "float", f"n{i}", "x"))
    return g


def per_node_us(n: int, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        g = chain(n)
        eng = Engine(REG)
        t0 = time.perf_counter()
        eng.run(g)
        times.append((time.perf_counter() - t0) / n * 1e6)
        eng.shutdown()
    return min(times)


def client_overhead_ratio(n: int = 1000, repeats: int = 3) -> float:
    """Per-node time of a chain run through LocalEngine with a listener, over the bare engine's."""
    import threading

    from app.engine import events
    from app.engine.client import LocalEngine

    bare, client_times = [], []
    for _ in range(repeats):
        bare.append(per_node_us(n, repeats=1))
        client = LocalEngine(REG)
        done = threading.Event()
        client.subscribe(lambda e, done=done: done.set() if isinstance(e, events.RunFinished) else None)
        g = chain(n)
        t0 = time.perf_counter()
        client.submit(g)
        done.wait(60)
        client_times.append((time.perf_counter() - t0) / n * 1e6)
        client.shutdown()
    return min(client_times) / min(bare)


def rerun_ratio(n: int = 30) -> float:
    g = Graph()
    g.nodes["src"] = NodeInstance("src", "bench.noise")
    prev = "src"
    for i in range(n - 1):
        g.nodes[f"g{i}"] = NodeInstance(f"g{i}", "bench.grade")
        g.links.append(Link(prev, "image", f"g{i}", "image"))
        prev = f"g{i}"
    eng = Engine(REG)
    t0 = time.perf_counter()
    eng.run(g)
    first = time.perf_counter() - t0
    reruns = []
    for k in range(3):
        g.set_param(prev, "lift", 0.001 * (k + 1))
        t0 = time.perf_counter()
        eng.run(g)
        reruns.append(time.perf_counter() - t0)
    eng.shutdown()
    return statistics.median(reruns) / first


def concurrency_ratio() -> float:
    g = Graph()
    for i in range(4):
        g.nodes[f"w{i}"] = NodeInstance(f"w{i}", "bench.wait", {"seconds": 0.5, "tag": i})
    eng = Engine(REG)
    t0 = time.perf_counter()
    eng.run(g)
    wall = time.perf_counter() - t0
    eng.shutdown()
    return wall / 0.5


def main() -> None:
    small = per_node_us(1000)
    print(json.dumps({"per_node_overhead_us": round(small, 1)}), flush=True)
    big = per_node_us(10_000, repeats=2)
    print(json.dumps({"per_node_overhead_us_10k": round(big, 1)}), flush=True)
    print(json.dumps({"overhead_growth_ratio": round(big / small, 3)}), flush=True)
    print(json.dumps({"rerun_ratio": round(rerun_ratio(), 4)}), flush=True)
    print(json.dumps({"concurrency_ratio": round(concurrency_ratio(), 3)}), flush=True)
    print(json.dumps({"client_overhead_ratio": round(client_overhead_ratio(), 3)}), flush=True)


if __name__ == "__main__":
    main()
