"""Upload speed of `imagebash serve`: a blob PUT through the API (8 MB chunks as the client
sends them, and one request) against a raw loopback HTTP PUT of the same bytes into a file.

Run from the repo root: `python tests/server/bench_upload.py [MB] [ROUNDS]` (default 200 MB, 5
rounds, interleaved, medians). Prints one JSON line per round and a summary line with
upload_ratio_chunks / upload_ratio_one (aim >= 0.8). The server is a real `python -m app.server`
process on 127.0.0.1; the baseline is the stdlib ThreadingHTTPServer writing what it reads.
"""

from __future__ import annotations

import hashlib
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

CHUNK = 8 << 20


class _RawSink(BaseHTTPRequestHandler):
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

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    import httpx

    from tests.server.conftest import ServerProcess

    mb = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    tmp = pathlib.Path(tempfile.mkdtemp())
    server = ServerProcess(tmp, tmp / "srv").start()
    raw = ThreadingHTTPServer(("127.0.0.1", 0), _RawSink)
    raw.target = tmp / "raw.bin"  # type: ignore[attr-defined]
    threading.Thread(target=raw.serve_forever, daemon=True).start()
    headers = server.headers()
    results: dict[str, list[float]] = {"raw": [], "chunks": [], "one": []}
    try:
        with httpx.Client(timeout=120) as c:
            for i in range(rounds):
                blob = tmp / "blob.bin"
                with open(blob, "wb") as f:
                    for _ in range(mb):
                        f.write(os.urandom(1 << 20))
                size = blob.stat().st_size

                def stream(path: pathlib.Path = blob) -> object:
                    with open(path, "rb") as f:
                        while chunk := f.read(1 << 20):
                            yield chunk

                t0 = time.perf_counter()
                c.put(f"http://127.0.0.1:{raw.server_address[1]}/x", content=stream(),
                      headers={"Content-Length": str(size)})
                results["raw"].append(time.perf_counter() - t0)

                sha = hashlib.sha256(blob.read_bytes()).hexdigest()
                t0 = time.perf_counter()
                with open(blob, "rb") as f:
                    off = 0
                    while off < size:
                        chunk = f.read(CHUNK)
                        r = c.put(f"{server.url}/api/v1/blobs/{sha}", params={"offset": off}, content=chunk,
                                  headers={**headers, "X-Blob-Size": str(size)})
                        assert r.status_code in (200, 201), r.text
                        off += len(chunk)
                results["chunks"].append(time.perf_counter() - t0)

                with open(blob, "ab") as f:  # other bytes: another blob
                    f.write(b"!")
                size += 1
                sha = hashlib.sha256(blob.read_bytes()).hexdigest()
                t0 = time.perf_counter()
                r = c.put(f"{server.url}/api/v1/blobs/{sha}", params={"offset": 0}, content=stream(),
                          headers={**headers, "X-Blob-Size": str(size), "Content-Length": str(size)})
                assert r.status_code == 201, r.text
                results["one"].append(time.perf_counter() - t0)
                print(json.dumps({"round": i, **{k: round(mb / v[-1]) for k, v in results.items()}}), flush=True)
                for p in (tmp / "srv" / "blobs").glob("??/*"):  # keep the disk from filling over rounds
                    p.chmod(0o644)
                    p.unlink()
    finally:
        raw.shutdown()
        server.stop()
    med = {k: statistics.median(v) for k, v in results.items()}
    print(json.dumps({"mb": mb, "raw_MBps": round(mb / med["raw"]), "chunks_MBps": round(mb / med["chunks"]),
                      "one_MBps": round(mb / med["one"]), "upload_ratio_chunks": round(med["raw"] / med["chunks"], 3),
                      "upload_ratio_one": round(med["raw"] / med["one"], 3)}), flush=True)


if __name__ == "__main__":
    main()
