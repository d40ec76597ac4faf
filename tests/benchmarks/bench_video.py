"""Video I/O through the graph engine against plain PyAV, and memory over long clips.

Run from the repo root: `python tests/benchmarks/bench_video.py [--quick]`. Prints one JSON object
per line:
- `export_ratio`: Load Video -> Blend (50 % over a gradient) -> Save Video (H.264) of N frames
  through the real engine, over a plain PyAV decode-blend-encode loop with the same settings
  (aim <= 1.2).
- `mem_growth_ratio`: Load -> Color Adjust -> H.264 at 512x512, each in a fresh subprocess: the
  run's RSS growth (peak minus the RSS after all imports) at 3,000 frames over that at 300 frames
  (aim < 1.1); the ratio of the totals is reported too (`total_ratio`).
- `peak_rss_mb_1080p_3min`: the same chain over a 3-minute 1080p30 clip (5,400 frames), peak RSS
  in MB (aim < 1,500).
`--quick` shrinks every size for a smoke run. Source clips are generated with PyAV (a sliding
yuv420p pattern, x264 ultrafast) and cached in the temp folder across runs. At the end, the rows
of `tests.benchmarks.flicker_rows` are printed when that module exists.
"""

from __future__ import annotations

import importlib
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CACHE = pathlib.Path(tempfile.gettempdir()) / "imagebash_bench_video"


def source_clip(n: int, w: int, h: int, fps: int = 30) -> pathlib.Path:
    """An n-frame moving-pattern H.264 clip, cached in the temp folder across runs.

    Cheap to make: the frames are built in yuv420p (no RGB conversion), as windows sliding over
    one precomputed luma ramp with flat chroma that changes per frame, and encoded ultrafast
    (x264 threads on); a 3-minute 1080p30 source takes about a minute on two cores.
    """
    import av

    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"src2_{n}_{w}x{h}_{fps}.mp4"  # src2: the yuv420p sliding pattern
    if path.is_file():
        return path
    tmp = path.with_suffix(".part.mp4")
    c = av.open(str(tmp), "w")
    s = c.add_stream("libx264", rate=fps)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    s.options = {"preset": "ultrafast", "crf": "23"}
    s.thread_type = "AUTO"
    span = 256
    ramp = ((np.arange(w + span)[None, :] + np.arange(h)[:, None] // 2) & 255).astype(np.uint8)  # (h, w + span)
    frame = np.empty((h * 3 // 2, w), np.uint8)  # Y plane, then U and V (quarter size each)
    for i in range(n):
        k = (i * 3) % span
        frame[:h] = ramp[:, k:k + w]
        frame[h: h + h // 4] = (64 + i) & 255
        frame[h + h // 4:] = (192 - i) & 255
        vf = av.VideoFrame.from_ndarray(frame, format="yuv420p")
        vf.pts = i
        c.mux(s.encode(vf))
    c.mux(s.encode(None))
    c.close()
    tmp.replace(path)
    return path


def _graph(src: pathlib.Path, middle: str, w: int, h: int, preset: str) -> object:
    from tests.image.helpers import make_graph

    if middle == "blend":
        return make_graph({
            "clip": ("video.load", {"path": str(src)}),
            "layer": ("image.gradient", {"width": w, "height": h}),
            "mix": ("image.blend", {"opacity": 0.5}),
            "save": ("video.save", {"filename_prefix": "bench", "codec": "h264", "preset": preset,
                                    "embed_workflow": False}),
        }, ["clip.video -> mix.base", "layer.image -> mix.layer", "mix.image -> save.video"])
    return make_graph({
        "clip": ("video.load", {"path": str(src)}),
        "grade": ("image.color_adjust", {"contrast": 1.1, "saturation": 1.2}),
        "save": ("video.save", {"filename_prefix": "bench", "codec": "h264", "preset": preset,
                                "embed_workflow": False}),
    }, ["clip.video -> grade.image", "grade.image -> save.video"])


def run_graph(src: pathlib.Path, middle: str, w: int, h: int, preset: str) -> float:
    from app.engine import Engine
    from nodes.registry import default_registry

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        result = Engine(default_registry()).run(_graph(src, middle, w, h, preset), output_dir=pathlib.Path(out))
        dt = time.perf_counter() - t0
        if not result.ok:
            raise SystemExit(f"bench graph failed: {result.errors}")
    return dt


def plain_pyav(src: pathlib.Path, w: int, h: int, preset: str) -> float:
    """Decode, blend 50 % over the same gradient, encode H.264 (crf 18): the floor."""
    import av

    from nodes.image.generate import gradient

    layer = np.asarray(gradient(width=w, height=h))[0, ..., :3].astype(np.float32)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        inp = av.open(str(src))
        inp.streams.video[0].thread_type = "AUTO"
        # exactly Save Video's settings for h264: mp4 with the same movflags, yuv420p, crf 18, the
        # same preset, FFmpeg's automatic threads for both decoder and encoder
        o = av.open(str(pathlib.Path(out) / "plain.mp4"), "w", options={"movflags": "use_metadata_tags+faststart"})
        s = o.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "18", "preset": preset}
        s.thread_type = "AUTO"
        for f in inp.decode(video=0):
            a = f.to_ndarray(format="rgb24").astype(np.float32) / 255
            mixed = a + (layer - a) * np.float32(0.5)
            u8 = (np.clip(mixed, 0, 1) * 255 + 0.5).astype(np.uint8)
            o.mux(s.encode(av.VideoFrame.from_ndarray(u8, format="rgb24")))
        o.mux(s.encode(None))
        o.close()
        inp.close()
        return time.perf_counter() - t0


_CHILD = """
import pathlib, resource, sys
sys.path.insert(0, {root!r})
import av, cv2, numpy  # noqa: F401 - everything the run imports, before the baseline
from app.engine import Engine  # noqa: F401
from nodes.registry import default_registry
from tests.benchmarks.bench_video import rss_mb, reset_peak, peak_mb, run_graph
default_registry()
base = rss_mb()
exact = reset_peak()
run_graph(pathlib.Path({src!r}), 'grade', {w}, {h}, {preset!r})
print(base, peak_mb() if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, int(exact))
"""


def rss_mb() -> float:
    """Resident set size now (MB), from /proc/self/statm."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    """Peak RSS (MB) since the last reset_peak() (VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child_peak_rss(n: int, w: int, h: int, fps: int, preset: str) -> tuple[float, float, bool]:
    """(baseline MB after every import, peak MB during the run, exact) of a fresh process running
    Load -> Color Adjust -> H.264 over n frames. `exact`: the peak is VmHWM reset after the imports
    (else ru_maxrss, which includes any transient peak of the imports)."""
    src = source_clip(n, w, h, fps)
    code = _CHILD.format(root=str(ROOT), src=str(src), w=w, h=h, preset=preset)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    base, peak, exact = out.stdout.strip().splitlines()[-1].split()
    return float(base), float(peak), exact == "1"


def main() -> None:
    quick = "--quick" in sys.argv
    n, side = (30, 128) if quick else (300, 512)
    src = source_clip(n, side, side)
    preset = "veryfast"
    run_graph(src, "blend", side, side, preset)  # warm up imports and caches
    graph = min(run_graph(src, "blend", side, side, preset) for _ in range(3))
    plain = min(plain_pyav(src, side, side, preset) for _ in range(3))
    print(json.dumps({"export_ratio": round(graph / plain, 2), "frames": n, "size": side,
                      "graph_s": round(graph, 3), "pyav_s": round(plain, 3)}))

    small, big = (30, 300) if quick else (300, 3000)
    side = 128 if quick else 512
    base_s, peak_s, exact = child_peak_rss(small, side, side, 30, "ultrafast")
    base_b, peak_b, _ = child_peak_rss(big, side, side, 30, "ultrafast")
    grow_s, grow_b = peak_s - base_s, peak_b - base_b
    # the metric is the ratio of the run's own growth (peak minus the RSS after imports): flat
    # memory means 10x the frames costs no more; the ratio of totals is diluted by the ~100+ MB
    # of imports (torch, cv2, PyAV) that every run carries, so it reads ~1.0 even for a leak
    print(json.dumps({"mem_growth_ratio": round(grow_b / max(grow_s, 1e-3), 3),
                      "metric": "run growth (peak - baseline after imports) at big / at small frame count",
                      "growth_mb_small": round(grow_s, 1), "growth_mb_big": round(grow_b, 1),
                      "total_ratio": round(peak_b / peak_s, 3), "peak_mb_small": round(peak_s, 1),
                      "peak_mb_big": round(peak_b, 1), "baseline_mb": [round(base_s, 1), round(base_b, 1)],
                      "peak_exact": exact, "frames": [small, big], "size": side}))

    n, (w, h) = (300, (480, 270)) if quick else (5400, (1920, 1080))
    t0 = time.perf_counter()
    source_clip(n, w, h, 30)
    t_src = time.perf_counter() - t0
    t0 = time.perf_counter()
    base, peak, _ = child_peak_rss(n, w, h, 30, "ultrafast")
    print(json.dumps({"peak_rss_mb_1080p_3min": round(peak, 1), "growth_mb": round(peak - base, 1),
                      "baseline_mb": round(base, 1), "frames": n, "size": f"{w}x{h}", "quick": quick,
                      "source_s": round(t_src, 1), "run_s": round(time.perf_counter() - t0, 1)}))

    try:
        rows = importlib.import_module("tests.benchmarks.flicker_rows")
    except ModuleNotFoundError:
        return
    for row in rows.rows():
        print(json.dumps(row))


if __name__ == "__main__":
    main()
