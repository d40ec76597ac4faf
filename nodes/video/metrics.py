"""Flicker metrics: the warping error of Lai et al. (ECCV 2018) and the mean luma jump.

The warping error says how much a clip changes between frames beyond what its motion explains:
for each pair the flow and the occlusion mask come from the *source* video (the reference when
one is given, else the clip itself), frame t is warped back onto frame t-1 and the masked mean
squared difference over the three channels is taken; the clip's value is the mean over pairs
(lower is steadier). The reference's own value, with the same flow, is the floor (motion blur and
compression give a nonzero one), so `warp_error / floor` is the number to compare across clips.
The mean luma jump (mean |ΔY-mean| of consecutive frames) is the global brightness pumping that
Deflicker targets. Both stream two frames at a time, downscaled to at most 540p, so memory stays
flat whatever the clip's length.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from nodes.image.util import luminance
from nodes.registry import node
from nodes.types import Cancelled, Context, Video
from nodes.video.flow import MAX_FLOW_SIDE, shrink, trusted_flow, warp

#: Warping errors are MSEs of [0, 1] values: reports show them x 1000, as papers do.
REPORT_SCALE = 1e3


@dataclass
class FlickerStats:
    """What one pass over a clip (and its reference) measured."""

    warp_error: float
    luma_jump: float
    frames: int
    floor: float | None = None  # the reference's own warping error (same flow), when there is one
    reference_luma_jump: float | None = None

    @property
    def ratio(self) -> float | None:
        """warp_error / floor (None without a reference; inf when the floor is 0 and the error is not)."""
        if self.floor is None:
            return None
        if self.floor <= 0:
            return 1.0 if self.warp_error <= 0 else math.inf
        return self.warp_error / self.floor

    def as_dict(self) -> dict:
        ratio = self.ratio
        return {"warp_error": self.warp_error, "floor": self.floor,
                "ratio": ratio if ratio is None or math.isfinite(ratio) else None,
                "luma_jump": self.luma_jump, "reference_luma_jump": self.reference_luma_jump,
                "frames": self.frames}

    def line(self) -> str:
        """One line for a terminal or a node's report."""
        parts = [f"warp_error {self.warp_error * REPORT_SCALE:.4g}e-3"]
        if self.floor is not None:
            ratio = self.ratio
            parts.append(f"floor {self.floor * REPORT_SCALE:.4g}e-3")
            parts.append(f"ratio {ratio:.3g}" if ratio is not None and math.isfinite(ratio) else "ratio inf")
        parts.append(f"luma_jump {self.luma_jump:.4g}")
        parts.append(f"frames {self.frames}")
        return ", ".join(parts)


def _rgb(frame: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """(h, w, 3) float32 at <= 540p, or resized to `size` (w, h) to match the flow's frame."""
    import cv2

    f = shrink(frame, MAX_FLOW_SIDE)[..., :3]
    if f.shape[-1] == 1:
        f = np.repeat(f, 3, -1)
    if size is not None and (f.shape[1], f.shape[0]) != size:
        f = cv2.resize(np.ascontiguousarray(f), size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(f, dtype=np.float32)


def pair_error(prev: np.ndarray, cur: np.ndarray, fw: np.ndarray, mask: np.ndarray) -> float:
    """E_pair: the masked MSE between `prev` and `cur` warped onto it by `fw` (flow prev -> cur);
    all pixels count when the mask is empty."""
    d = ((prev - warp(cur, fw)) ** 2).sum(-1, dtype=np.float64)
    m = mask.astype(np.float64)
    total = m.sum()
    if total <= 0:
        return float(d.mean() / 3.0)
    return float((m * d).sum() / (3.0 * total))


def flicker_stats(video: Video, reference: Video | None = None,
                  progress: Callable[[int, int], None] | None = None) -> FlickerStats:
    """Warping error and mean luma jump of `video` (and the reference's floor) in one streaming pass.

    Flow and occlusion come from `reference` when given (frame i pairs with frame i; the shorter
    clip sets the length), else from `video` itself. `progress(done, total)` is called per frame
    and may raise Cancelled.
    """
    length = len(video) if reference is None else min(len(video), len(reference))
    err = floor = jump = ref_jump = 0.0
    prev_out = prev_src = None
    prev_y = prev_ry = 0.0
    for i in range(length):
        src = _rgb(video.frame(i) if reference is None else reference.frame(i))
        out = src if reference is None else _rgb(video.frame(i), (src.shape[1], src.shape[0]))
        y = float(luminance(out).mean())
        ry = float(luminance(src).mean())
        if prev_out is not None and prev_src is not None:
            fw, mask = trusted_flow(prev_src, src)
            err += pair_error(prev_out, out, fw, mask)
            jump += abs(y - prev_y)
            if reference is not None:
                floor += pair_error(prev_src, src, fw, mask)
                ref_jump += abs(ry - prev_ry)
        prev_out, prev_src, prev_y, prev_ry = out, src, y, ry
        if progress is not None:
            progress(i + 1, length)
    pairs = max(length - 1, 1)
    return FlickerStats(err / pairs, jump / pairs, length,
                        floor / pairs if reference is not None else None,
                        ref_jump / pairs if reference is not None else None)


def warping_error(video: Video, reference: Video | None = None) -> float:
    """Lai et al.'s warping error of `video` (flow and occlusion from `reference` when given); 0 for
    a clip of fewer than two frames."""
    return flicker_stats(video, reference).warp_error


def mean_luma_jump(video: Video) -> float:
    """Mean |ΔY-mean| between consecutive frames (Rec.709 luma in [0, 1]), streaming."""
    total, prev = 0.0, None
    for i in range(len(video)):
        y = float(luminance(_rgb(video.frame(i))).mean())
        if prev is not None:
            total += abs(y - prev)
        prev = y
    return total / max(len(video) - 1, 1)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images with values in [0, 1] (inf when they are equal)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def mean_psnr(video: Video, target: Video) -> float:
    """Mean per-frame PSNR (dB) of `video` against `target`, frame by frame."""
    n = min(len(video), len(target))
    return sum(psnr(video.frame(i)[..., :3], target.frame(i)[..., :3]) for i in range(n)) / max(n, 1)


class FlickerReport(NamedTuple):
    warp_error: float
    luma_jump: float
    report: str


@node("imagebash.video.flicker_metrics", title="Flicker Metrics", category="video")
def flicker_metrics(video: Video, reference: Video | None = None, ctx: Context = None) -> FlickerReport:
    """Measure flicker: Lai et al.'s warping error and the mean luma jump between frames.

    The warping error (a mean squared difference after motion compensation; lower is steadier) uses
    the motion of `reference` when it is connected, and then also reports the reference's own
    value (the floor) and the ratio, the number to compare. Streams two frames at a time at <= 540p.

    Args:
        video: The clip to measure (a processed clip).
        reference: The source clip it was made from (its motion and occlusions are used).
    """
    def progress(done: int, total: int) -> None:
        if ctx is not None:
            if ctx.cancelled:
                raise Cancelled("cancelled")
            ctx.progress(done / max(total, 1), text=f"frame {done}/{total}")

    stats = flicker_stats(video, reference, progress)
    if ctx is not None:
        ctx.annotate("flicker", stats.as_dict())
    return FlickerReport(stats.warp_error, stats.luma_jump, stats.line())
