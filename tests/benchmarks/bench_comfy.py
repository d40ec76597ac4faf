"""ComfyUI import speed: a 500-node UI workflow read (app.comfy.formats) and mapped (app.comfy.mapping).

Run from the repo root: `python tests/benchmarks/bench_comfy.py`. Prints one JSON line:
`import_ms_per_node` (best of 5, read + map, per ComfyUI node; the aim is under 1 ms).
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from app.comfy.formats import read
from app.comfy.mapping import to_graph
from nodes.registry import default_registry
from tests.comfy.fixtures import big_ui


def main(n: int = 500) -> None:
    data = json.dumps(big_ui(n)).encode()
    registry = default_registry()
    to_graph(read(data), registry)  # warm: node packs imported once
    times = []
    for _ in range(5):
        t = time.perf_counter()
        to_graph(read(data), registry)
        times.append(time.perf_counter() - t)
    print(json.dumps({"import_ms_per_node": round(min(times) * 1000 / n, 4), "nodes": n}))


if __name__ == "__main__":
    main()
