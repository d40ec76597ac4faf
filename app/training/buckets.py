"""Aspect-ratio buckets: train on the shape an image has instead of squashing it into a square.

Buckets are sizes whose sides are multiples of 64 and whose area stays at or just under the
training resolution squared. An image goes to the bucket whose aspect ratio is nearest in log
space, which is the one that crops least: after scaling the image to cover the bucket, the kept
fraction is min(a, b) / max(a, b) for aspect ratios a and b. Images are scaled uniformly, then
centre-cropped, never stretched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

STEP = 64


@dataclass(frozen=True)
class Fit:
    """How one image becomes one bucket: uniform scale to (resized), then crop at (left, top)."""

    bucket: tuple[int, int]
    resized: tuple[int, int]
    left: int
    top: int


def make_buckets(resolution: int, step: int = STEP) -> list[tuple[int, int]]:
    """Bucket sizes (w, h) for `resolution`, as kohya makes them: area <= resolution**2, sides
    multiples of `step` between resolution / 2 and 2 * resolution, sorted by aspect ratio."""
    area = resolution * resolution
    lo = max(step, resolution // 2 // step * step)
    hi = 2 * resolution
    out: set[tuple[int, int]] = set()
    for w in range(lo, hi + 1, step):
        h = min(hi, (area // w) // step * step)
        if h >= lo:
            out.add((w, h))
            out.add((h, w))
    # keep the largest area per aspect ratio
    best: dict[float, tuple[int, int]] = {}
    for b in out:
        r = round(b[0] / b[1], 6)
        if r not in best or b[0] * b[1] > best[r][0] * best[r][1]:
            best[r] = b
    return sorted(best.values(), key=lambda b: (b[0] / b[1], b[0]))


def pick_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket that crops least for a width x height image (ties: the larger bucket)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    a = math.log(width / height)
    return min(buckets, key=lambda b: (round(abs(a - math.log(b[0] / b[1])), 9), -b[0] * b[1]))


def fit(width: int, height: int, bucket: tuple[int, int]) -> Fit:
    """Scale uniformly so the image covers `bucket`, then centre-crop; never stretches."""
    bw, bh = bucket
    scale = max(bw / width, bh / height)
    rw = max(bw, round(width * scale))
    rh = max(bh, round(height * scale))
    return Fit(bucket, (rw, rh), (rw - bw) // 2, (rh - bh) // 2)


def kept_fraction(width: int, height: int, bucket: tuple[int, int]) -> float:
    """Fraction of the image's area that survives the crop into `bucket`."""
    a, b = width / height, bucket[0] / bucket[1]
    return min(a, b) / max(a, b)
