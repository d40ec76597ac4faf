"""Remote engine benchmark: `imagebash serve` on loopback against the same work done locally.

Run from the repo root: `python tests/benchmarks/bench_remote.py`. Prints one JSON object per line:
- remote_overhead_ratio: the tiny-model txt2img workflow (Save included) through the loopback server,
  end to end (inputs checked by hash, job put, events streamed, the PNG downloaded), over the same
  run on an in-process engine; warm models on both sides, a new seed each run, interleaved (aim <= 1.15);
- event_latency_ms_p95: from a node emitting a progress event to the client receiving it (aim < 50);
- reupload_bytes: bytes sent for a workflow whose inputs the server already has (aim 0);
- upload_mb_s_ratio: a 200 MB upload through the API over a raw loopback HTTP PUT of the same bytes
  into a file (aim >= 0.8).
The server is a real process (`python -m tests.server.nodes_for_tests`: imagebash serve plus test
nodes), started and stopped here.
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

ROUNDS = 5


def _txt2img(model: pathlib.Path, config: pathlib.Path, seed: int):
    from app.graph.model import Link, NodeInstance
    from tests.diffusion.conftest import txt2img_graph

    g = txt2img_graph(model, seed=seed, steps=4)
    g.set_param("load", "config", str(config))
    g.add_node(NodeInstance("save", "imagebash.image.save", {"filename_prefix": f"gen{seed}"}))
    g.connect(Link("gen", "image", "save", "image"))
    return g


def _timed_run(client, graph, out: pathlib.Path) -> float:
    from app.engine import events

    done = threading.Event()
    unsubscribe = client.subscribe(lambda e: done.set() if isinstance(e, events.RunFinished) else None)
    t0 = time.perf_counter()
    handle = client.submit(graph, None, out)
    assert done.wait(300)
    while not handle.done:  # a remote run's files are downloaded before it counts as done
        time.sleep(0.001)
    wall = time.perf_counter() - t0
    unsubscribe()
    assert list(out.glob("gen*.png")), "the run wrote no picture"
    return wall


def overhead_and_reupload(remote, tmp: pathlib.Path) -> tuple[float, int]:
    from app.engine import EngineSettings
    from app.engine.client import LocalEngine
    from tests.tiny_models import build_all

    models = build_all(tmp / "tiny")
    ckpt, config = models["sd_ckpt"], models["sd_dir"]
    local = LocalEngine(settings=EngineSettings(device="cpu"))
    sent: list[int] = []
    real = remote.upload
    remote.upload = lambda path, sha, size, progress=None: (sent.append(size), real(path, sha, size, progress))[1]
    try:
        _timed_run(local, _txt2img(ckpt, config, 0), tmp / "warm-local")
        _timed_run(remote, _txt2img(ckpt, config, 0), tmp / "warm-remote")  # uploads and loads once
        sent.clear()
        ours, theirs = [], []
        for i in range(1, ROUNDS + 1):
            theirs.append(_timed_run(local, _txt2img(ckpt, config, i), tmp / f"l{i}"))
            ours.append(_timed_run(remote, _txt2img(ckpt, config, i), tmp / f"r{i}"))
    finally:
        local.shutdown()
    return statistics.median(ours) / statistics.median(theirs), sum(sent)


def event_latency_ms(remote, tmp: pathlib.Path) -> float:
    from app.engine import events
    from app.graph.model import Graph, NodeInstance

    lags: list[float] = []

    def listen(e):
        if isinstance(e, events.NodeProgress) and e.node_id == "p" and e.text and e.text.startswith("t="):
            lags.append((time.time() - float(e.text[2:])) * 1000)

    remote.subscribe(listen, throttle=False)
    g = Graph()
    g.add_node(NodeInstance("p", "test.progress", {"steps": 150, "delay": 0.02, "size": 64}))
    _run_plain(remote, g, tmp / "lat")
    return sorted(lags)[int(0.95 * (len(lags) - 1))] if lags else float("inf")


def _run_plain(client, graph, out: pathlib.Path) -> None:
    handle = client.submit(graph, None, out)
    deadline = time.monotonic() + 120
    while not handle.done and time.monotonic() < deadline:
        time.sleep(0.01)


class _Sink(BaseHTTPRequestHandler):
    """A raw PUT into a file: the baseline the upload path is measured against."""

    def do_PUT(self) -> None:
        left = int(self.headers["Content-Length"])
        with open(self.server.target, "wb") as f:  # type: ignore[attr-defined]
            while left:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    break
                f.write(chunk)
                left -= len(chunk)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def upload_ratio(remote, tmp: pathlib.Path, mb: int = 200) -> float:
    import hashlib

    import httpx

    blob = tmp / "big.bin"
    with open(blob, "wb") as f:
        for _ in range(mb):
            f.write(os.urandom(1 << 20))
    size = blob.stat().st_size
    sha = hashlib.sha256(blob.read_bytes()).hexdigest()
    raw = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    raw.target = tmp / "raw-sink.bin"  # type: ignore[attr-defined]
    threading.Thread(target=raw.serve_forever, daemon=True).start()

    def stream():
        with open(blob, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk

    try:
        t0 = time.perf_counter()
        httpx.put(f"http://127.0.0.1:{raw.server_address[1]}/x", content=stream(),
                  headers={"Content-Length": str(size)}, timeout=120)
        raw_s = time.perf_counter() - t0
    finally:
        raw.shutdown()
    t0 = time.perf_counter()
    remote.upload(blob, sha, size)
    ours_s = time.perf_counter() - t0
    return raw_s / ours_s


def main() -> None:
    from app.engine.remote import RemoteEngine
    from tests.remote.conftest import Server
    from tests.server.nodes_for_tests import make_registry

    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        os.environ.update(IMAGEBASH_DATA_DIR=str(tmp / "home"), IMAGEBASH_CONFIG_DIR=str(tmp / "cfg"),
                          IMAGEBASH_CACHE_DIR=str(tmp / "cache"))
        server = Server(tmp).start()
        remote = RemoteEngine(server.url, server.token, make_registry())
        try:
            ratio, resent = overhead_and_reupload(remote, tmp)
            print(json.dumps({"remote_overhead_ratio": round(ratio, 3)}), flush=True)
            print(json.dumps({"reupload_bytes": resent}), flush=True)
            print(json.dumps({"event_latency_ms_p95": round(event_latency_ms(remote, tmp), 1)}), flush=True)
            print(json.dumps({"upload_mb_s_ratio": round(upload_ratio(remote, tmp), 3)}), flush=True)
        finally:
            remote.shutdown()
            server.stop()


if __name__ == "__main__":
    main()
