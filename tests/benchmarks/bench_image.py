"""Image node overhead against the raw library call they wrap, on 1024x1024 RGB float32 images.

Run from the repo root: `python tests/benchmarks/bench_image.py`. Prints one JSON object per line:
`blend_ratio` (Blend, normal mode at 50 % opacity, vs the bare numpy lerp), `multiply_ratio`
(Blend multiply vs numpy), `resize_ratio` (Resize to 512x512 with area filter vs one cv2.resize),
`blur_ratio` (Blur gaussian vs cv2.GaussianBlur), `color_adjust_ratio` (Color Adjust with
saturation, contrast and gamma vs the same maths in bare numpy). A ratio near 1 means the node
adds little beyond the work itself (batch loop, alpha handling, cancellation checks).
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from nodes.image.blend import BlendMode, blend
from nodes.image.color import color_adjust
from nodes.image.filters import blur
from nodes.image.transform import ResizeMode, resize_image
from nodes.image.util import Interpolation


def best(fn, repeat: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    import cv2

    rng = np.random.default_rng(0)
    a = rng.random((1, 1024, 1024, 3), dtype=np.float32)
    b = rng.random((1, 1024, 1024, 3), dtype=np.float32)

    raw = best(lambda: a[0] + (b[0] - a[0]) * np.float32(0.5))
    node = best(lambda: blend(a, b, BlendMode.NORMAL, 0.5))
    print(json.dumps({"blend_ratio": round(node / raw, 2)}))

    raw = best(lambda: a[0] + (a[0] * b[0] - a[0]) * np.float32(1.0))
    node = best(lambda: blend(a, b, BlendMode.MULTIPLY, 1.0))
    print(json.dumps({"multiply_ratio": round(node / raw, 2)}))

    raw = best(lambda: cv2.resize(a[0], (512, 512), interpolation=cv2.INTER_AREA))
    node = best(lambda: resize_image(a, 512, 512, ResizeMode.STRETCH, Interpolation.AREA))
    print(json.dumps({"resize_ratio": round(node / raw, 2)}))

    raw = best(lambda: cv2.GaussianBlur(a[0], (0, 0), 2.0, borderType=cv2.BORDER_REFLECT_101))
    node = best(lambda: blur(a, radius=4))
    print(json.dumps({"blur_ratio": round(node / raw, 2)}))

    def numpy_grade() -> np.ndarray:
        x = np.clip((a[0] - 0.5) * np.float32(1.1) + 0.5, 0, 1)
        g = (x @ np.array([0.2126, 0.7152, 0.0722], np.float32))[..., None]
        x = np.clip(g + (x - g) * np.float32(1.2), 0, 1)
        return np.power(x, np.float32(1 / 1.1))

    raw = best(numpy_grade)
    node = best(lambda: color_adjust(a, contrast=1.1, saturation=1.2, gamma=1.1))
    print(json.dumps({"color_adjust_ratio": round(node / raw, 2)}))


if __name__ == "__main__":
    main()
