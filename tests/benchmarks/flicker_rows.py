"""Temporal Blend against flicker on a synthetic clip, through the real engine: the benchmark rows.

The clip is a smooth random texture translating a few pixels per frame, then given per-frame
random brightness and contrast flicker and a little noise. Temporal Blend (its default strength,
motion from the clean clip) runs as a windowed node in an Engine; the rows are the warping-error
ratio after/before (Lai et al.'s metric, flow from the clean clip; aim <= 0.7) and the PSNR gain
to the unflickered frames (aim >= +3 dB).

Run from the repo root: `python tests/benchmarks/flicker_rows.py [--frames 120 --size 256]`; it
prints one JSON object per line. `rows()` returns the same dicts for a benchmark table.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from nodes.registry import Registry, node
from nodes.types import Image, Video

#: Clips and images the test source nodes hand out, by name (run_node fills it).
CLIPS: dict[str, Any] = {}


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random colour texture (H, W, 3) in [0, 1], with detail at a few scales."""
    import cv2

    rng = np.random.default_rng(seed)
    out = np.zeros((height, width, 3), np.float32)
    for sigma, weight in ((1.5, 0.35), (4.0, 0.4), (12.0, 0.25)):
        n = rng.random((height, width, 3), dtype=np.float32)
        n = cv2.GaussianBlur(n, (0, 0), sigma)
        n = (n - n.mean()) / (n.std() + 1e-6)
        out += weight * n
    out = 0.5 + 0.18 * out
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def moving_clip(frames: int, size: int, step: tuple[int, int] = (2, 1), seed: int = 0) -> np.ndarray:
    """(frames, size, size, 3): a window sliding `step` (dx, dy) pixels per frame over a texture."""
    dx, dy = step
    tex = texture(size + abs(dy) * frames + 1, size + abs(dx) * frames + 1, seed)
    return np.stack([tex[i * dy:i * dy + size, i * dx:i * dx + size] for i in range(frames)]).astype(np.float32)


def add_flicker(clip: np.ndarray, seed: int = 1, brightness: float = 0.06, contrast: float = 0.1,
                noise: float = 0.03) -> np.ndarray:
    """Per-frame random brightness and contrast changes and a little per-pixel noise, clipped."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(clip)
    for i, f in enumerate(clip):
        b = rng.uniform(-brightness, brightness)
        c = 1.0 + rng.uniform(-contrast, contrast)
        n = rng.normal(0.0, noise, f.shape).astype(np.float32)
        out[i] = np.clip((f - 0.5) * c + 0.5 + b + n, 0.0, 1.0)
    return out


def make_registry(*extra: Any) -> Registry:
    """A registry with the temporal and metric nodes, `bench.clip` and `bench.image` (a clip or an
    image from CLIPS by name); `extra` modules (e.g. nodes.diffusion) are added too."""
    from nodes.video import metrics, temporal

    reg = Registry(load_packs=False)
    for module in (temporal, metrics, *extra):
        reg.add_module(module)

    @node("bench.clip", registry=reg, category="test", cacheable=False)
    def clip(name: str = "") -> Video:
        """A clip registered in CLIPS."""
        return CLIPS[name]

    @node("bench.image", registry=reg, category="test", cacheable=False)
    def image(name: str = "") -> Image:
        """An image batch registered in CLIPS."""
        return CLIPS[name]

    return reg


def run_node(node_type: str, params: dict[str, Any], inputs: dict[str, Any],
             registry: Registry | None = None, port: str | None = None,
             links: dict[str, tuple[str, str, dict[str, Any]]] | None = None, services: dict[str, Any] | None = None,
             ) -> Any:
    """Run one node in a real Engine with `inputs` (port -> a Video, fed by a `bench.clip` node, or
    an image batch, fed by `bench.image`) and `links` (port -> (node type, output, params) of an
    upstream node); return its output `port` (default the first: a lazy Video for a windowed node)."""
    from app.engine import Engine, EngineSettings
    from app.graph.model import Graph, Link, NodeInstance

    reg = registry or make_registry()
    spec = reg.get(node_type)
    g = Graph()
    wires = []
    for name, value in inputs.items():
        key = f"{node_type}:{name}:{id(value)}"
        CLIPS[key] = value
        video = isinstance(value, Video)
        g.add_node(NodeInstance(f"in_{name}", "bench.clip" if video else "bench.image", {"name": key}))
        wires.append((f"in_{name}", "video" if video else "image", name))
    for name, (typ, out, p) in (links or {}).items():
        g.add_node(NodeInstance(f"up_{name}", typ, dict(p)))
        wires.append((f"up_{name}", out, name))
    g.add_node(NodeInstance("n", node_type, dict(params)))
    for src, out, name in wires:
        g.connect(Link(src, out, "n", name))
    engine = Engine(reg, EngineSettings(device="cpu", max_workers=2))
    for name, service in (services or {}).items():
        engine.services.set(name, service)
    try:
        result = engine.run(g, ["n"])
        if not result.ok:
            raise RuntimeError(f"{node_type} failed: {result.errors}")
        return result.output("n", port or spec.outputs[0].name)
    finally:
        engine.shutdown()


def measure(frames: int = 120, size: int = 256, strength: float | None = None) -> dict[str, Any]:
    """Warping error and PSNR of the flickering clip before and after Temporal Blend."""
    from nodes.video.metrics import mean_psnr, warping_error

    clean = Video.from_batch(moving_clip(frames, size), 24.0)
    flick = Video.from_batch(add_flicker(clean.to_batch()), 24.0)
    params = {} if strength is None else {"strength": strength}
    t0 = time.perf_counter()
    out = run_node("imagebash.video.temporal_blend", params, {"frames": flick, "source": clean})
    steady = Video.from_batch(out.to_batch(), out.fps)  # pull every frame once, in order
    seconds = time.perf_counter() - t0
    before, after = warping_error(flick, clean), warping_error(steady, clean)
    psnr_before, psnr_after = mean_psnr(flick, clean), mean_psnr(steady, clean)
    return {"frames": frames, "size": size, "before": before, "after": after, "floor": warping_error(clean, clean),
            "psnr_before": psnr_before, "psnr_after": psnr_after, "seconds": seconds}


def rows(frames: int = 120, size: int = 256) -> list[dict[str, Any]]:
    """The benchmark rows: warp_error_ratio (aim <= 0.7) and temporal_psnr_db gain (aim >= +3)."""
    m = measure(frames, size)
    clip = f"{frames} frames {size}x{size}, texture moving (2, 1) px/frame, brightness/contrast flicker + noise"
    ms_per_frame = round(m["seconds"] / frames * 1000, 2)
    return [
        {"metric": "warp_error_ratio", "value": round(m["after"] / m["before"], 4), "aim": "<= 0.7",
         "node": "imagebash.video.temporal_blend", "clip": clip, "warp_error_before": round(m["before"], 6),
         "warp_error_after": round(m["after"], 6), "warp_error_floor": round(m["floor"], 6),
         "ms_per_frame": ms_per_frame},
        {"metric": "temporal_psnr_db", "value": round(m["psnr_after"] - m["psnr_before"], 3), "aim": ">= +3",
         "node": "imagebash.video.temporal_blend", "clip": clip, "psnr_before_db": round(m["psnr_before"], 3),
         "psnr_after_db": round(m["psnr_after"], 3), "ms_per_frame": ms_per_frame},
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--size", type=int, default=256)
    a = p.parse_args()
    for row in rows(a.frames, a.size):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
