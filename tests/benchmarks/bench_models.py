"""Model library benchmarks (one JSON object per line).

- scan_s_per_100_models: `app.library.scan.scan()` over a models folder of 100 safetensors files
  of ~50 MB each (sparse files with real headers: their size is real, their disk use is not), on
  the second run, when every sha256 is in the cache (aim < 0.2 s). Beside it, the first (hashing)
  run and `vs_stat_ratio`: the cached scan / a bare os.scandir + stat of the same files, which is
  the least any listing must do.
- download_throughput_ratio: a 500 MB .safetensors download through `app.library.download.
  download()` (streamed to a .part file, hashed while written, checked, renamed) from a local HTTP
  server on 127.0.0.1 / a raw httpx stream of the same URL into a file (`iter_raw`, no hashing, no
  checks: the least a download can do) (aim >= 0.9). Both sides alternate, three pairs; the
  median ratio is the headline. `vs_raw_with_sha256_ratio` compares with a raw stream that also
  hashes, as a download must before the file takes its final name: what is left is our code.

No assertion on wall-clock. Run from the repo root: `python tests/benchmarks/bench_models.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.pairs import emit

MODELS = 100
MODEL_BYTES = 50 << 20
DOWNLOAD_BYTES = 500 << 20


def sparse_safetensors(path: Path, size: int, metadata: dict[str, str] | None = None) -> None:
    """A valid .safetensors file of `size` bytes: one F32 tensor filling it, written sparse."""
    n = (size - 512) // 4
    header = {"weight": {"dtype": "F32", "shape": [n], "data_offsets": [0, n * 4]}}
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + n * 4)


def bench_scan(root: Path) -> None:
    from app.library.scan import scan

    folder = root / "models" / "checkpoints"
    folder.mkdir(parents=True)
    for i in range(MODELS):
        sparse_safetensors(folder / f"model_{i:03d}.safetensors", MODEL_BYTES)
    os.environ["IMAGEBASH_MODELS"] = str(root / "models")
    os.environ["IMAGEBASH_CACHE_DIR"] = str(root / "cache")
    t0 = time.perf_counter()
    first = scan()
    cold = time.perf_counter() - t0
    assert len(first) == MODELS and all(m.sha256 for m in first), "the first scan must list and hash every file"
    warm, bare = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        again = scan()
        warm.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with os.scandir(folder) as it:
            stats = [e.stat() for e in it if e.name.endswith(".safetensors")]
        bare.append(time.perf_counter() - t0)
    assert [m.sha256 for m in again] == [m.sha256 for m in first] and len(stats) == MODELS
    median = statistics.median(warm)
    emit(scan_s_per_100_models=round(median * 100 / MODELS, 4), aim="< 0.2", first_scan_s=round(cold, 2),
         vs_stat_ratio=round(median / max(statistics.median(bare), 1e-9), 1), models=MODELS,
         model_mb=MODEL_BYTES >> 20)


def bench_download(root: Path) -> None:
    import httpx

    from app.library.download import download
    from tests.library.fake_servers import FileServer, serve

    source = root / "big.safetensors"
    sparse_safetensors(source, DOWNLOAD_BYTES)
    size = source.stat().st_size
    dest = root / "dl"
    os.environ["IMAGEBASH_MODELS"] = str(dest)

    def ours(url: str) -> float:
        for p in dest.rglob("*.safetensors*"):
            p.unlink()
        t0 = time.perf_counter()
        got = download(url, kind="checkpoint", dest_root=dest)
        took = time.perf_counter() - t0
        assert got.stat().st_size == size
        return took

    def raw(url: str, hashed: bool = False) -> float:
        out = root / "raw.bin"
        h = hashlib.sha256()
        t0 = time.perf_counter()
        with httpx.Client(timeout=60) as client, client.stream("GET", url) as r, open(out, "wb") as f:
            for chunk in r.iter_raw():
                f.write(chunk)
                if hashed:
                    h.update(chunk)
        h.hexdigest()
        took = time.perf_counter() - t0
        assert out.stat().st_size == size
        out.unlink()
        return took

    with serve(FileServer(), {"/big.safetensors": source}) as server:
        url = server.url("/big.safetensors")
        ours(url), raw(url)  # warm the page cache and both code paths
        pairs, hashed = [], []
        for i in range(3):  # alternate which side goes first
            if i % 2 == 0:
                a = ours(url)
                b = raw(url)
            else:
                b = raw(url)
                a = ours(url)
            pairs.append((a, b))
            hashed.append(raw(url, hashed=True) / a)
    ratio = statistics.median(b / a for a, b in pairs)  # throughput ratio = raw time / our time
    emit(download_throughput_ratio=round(ratio, 3), aim=">= 0.9",
         vs_raw_with_sha256_ratio=round(statistics.median(hashed), 3), ours_mb_s=round(
        DOWNLOAD_BYTES / 2**20 / statistics.median(a for a, _ in pairs)), raw_mb_s=round(
        DOWNLOAD_BYTES / 2**20 / statistics.median(b for _, b in pairs)), mb=DOWNLOAD_BYTES >> 20, pairs=len(pairs))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bench_scan(Path(tmp) / "scan")
    with tempfile.TemporaryDirectory() as tmp:
        bench_download(Path(tmp))


if __name__ == "__main__":
    main()
