"""Temporal nodes against flicker: Deflicker, Temporal Blend, Colour Lock and Warped Init.

- Deflicker evens out global brightness pumping as ffmpeg's `deflicker` does: each frame's luma
  is scaled by (window's mean luma / frame's mean luma), chroma kept.
- Temporal Blend is the classical flow-guided recursive filter (Lai et al.'s post-process without
  the network): the previous output, warped by the source's optical flow onto the current frame,
  is mixed in where the flow is trusted (the forward-backward test), and nowhere after a cut.
- Colour Lock grades every frame to one reference image (Reinhard mean/std in Lab, or histogram
  matching per channel), like Deforum's `maintain_colors`.
- Warped Init is Deforum/Disco's warped-previous img2img: each frame is sampled from the previous
  output warped by the source's flow and blended with the source frame, with the same noise
  every frame by default.

The windowed nodes get their neighbour frames and their own previous output from the engine
(`nodes.types.FrameWindow`), so a clip of any length streams with no seams.
"""

from __future__ import annotations

import enum
import threading
import weakref
from typing import Annotated

import numpy as np

from nodes.diffusion.schedulers import Scheduler
from nodes.image.color import MatchSpace, match_one
from nodes.image.util import LUMA, check_image, map_images, split_alpha, with_alpha
from nodes.registry import node
from nodes.types import Context, Frames, FrameWindow, Help, Image, Model, Multiline, Range, Seed, Window
from nodes.video.flow import resize_flow, resize_mask, scene_cut, trusted_flow, warp

#: Deflicker's largest window (as ffmpeg's); the window is centred, so it reaches 64 frames each way.
MAX_DEFLICKER = 129
_HALF = (MAX_DEFLICKER - 1) // 2

Strength = Annotated[float, Range(0.0, 1.0, step=0.01)]
SceneThreshold = Annotated[float, Range(0.0, 1.0, step=0.01),
                           Help("Reset at a cut: 1 - the luma-histogram overlap of two source frames above "
                                "this (1 never resets).")]


# Deflicker ----------------------------------------------------------------------------------------
class DeflickerMode(str, enum.Enum):
    AM = "am"  # arithmetic mean
    GM = "gm"  # geometric mean
    HM = "hm"  # harmonic mean
    MEDIAN = "median"


_means: dict[int, tuple[weakref.ref, float]] = {}
_means_lock = threading.Lock()


def luma_mean(frame: np.ndarray) -> float:
    """Mean Rec.709 luma of a (1, H, W, C) or (H, W, C) frame, remembered while the frame lives
    (the engine hands the same array to every window that holds it)."""
    key = id(frame)
    with _means_lock:
        hit = _means.get(key)
    if hit is not None and hit[0]() is frame:
        return hit[1]
    rgb = frame[..., :3].reshape(-1, min(frame.shape[-1], 3))
    chan = rgb.mean(axis=0, dtype=np.float64)
    value = float(chan @ LUMA.astype(np.float64)) if chan.shape[0] == 3 else float(chan[0])

    def forget(ref: weakref.ref, k: int = key) -> None:
        with _means_lock:
            if _means.get(k, (None,))[0] is ref:
                del _means[k]

    try:
        ref = weakref.ref(frame, forget)
    except TypeError:
        return value
    with _means_lock:
        _means[key] = (ref, value)
    return value


def window_average(values: list[float], mode: DeflickerMode) -> float:
    """The window's luma by `mode` (as ffmpeg's deflicker modes)."""
    v = np.maximum(np.asarray(values, np.float64), 1e-6)
    if mode is DeflickerMode.GM:
        return float(np.exp(np.log(v).mean()))
    if mode is DeflickerMode.HM:
        return float(len(v) / (1.0 / v).sum())
    if mode is DeflickerMode.MEDIAN:
        return float(np.median(v))
    return float(v.mean())


def scale_luma(frame: np.ndarray, gain: float) -> np.ndarray:
    """`frame` with its luma multiplied by `gain` and its chroma (Cb, Cr) kept, alpha untouched.

    Y' = gain * Y with R - Y and B - Y unchanged is R + (gain - 1) Y on every channel (the luma
    weights sum to 1), so no colour-space round trip is needed.
    """
    rgb, alpha = split_alpha(frame)
    if gain == 1.0:
        return frame.astype(np.float32, copy=False)
    y = rgb @ LUMA
    out = np.clip(rgb + np.float32(gain - 1.0) * y[..., None], 0.0, 1.0)
    return with_alpha(out.astype(np.float32, copy=False), alpha)


def deflicker_gain(frames: FrameWindow, size: int, mode: DeflickerMode) -> float:
    """The gain for the window's current frame: window luma / frame luma, clamped to [0.5, 2]."""
    before, after = (size - 1) // 2, size // 2
    lumas = [luma_mean(frames[k]) for k in range(-before, after + 1) if frames.exists(k)]
    cur = luma_mean(frames[0])
    if cur <= 1e-4:  # a black frame stays black (no division blow-up)
        return 1.0
    return float(np.clip(window_average(lumas, DeflickerMode(mode)) / cur, 0.5, 2.0))


@node("imagebash.video.deflicker", title="Deflicker", category="video/temporal",
      window=Window(before=_HALF, after=_HALF))
def deflicker(frames: Frames, size: Annotated[int, Range(2, MAX_DEFLICKER)] = 5,
              mode: DeflickerMode = DeflickerMode.AM) -> Image:
    """Even out brightness pumping: scale each frame's luma toward the mean luma of its neighbours.

    As ffmpeg's `deflicker`: gain = (window's mean luma) / (frame's mean luma), applied to luma
    only (chroma and alpha kept). The window of `size` frames is centred on the frame (ffmpeg's
    looks ahead), so a real fade passes through unshifted; near the clip's ends it is cut to the
    frames that exist. Fixes global brightness flicker only, not texture flicker (use Temporal
    Blend for that).

    Args:
        frames: The clip to deflicker.
        size: Frames in the averaging window (2..129); more smooths slower changes.
        mode: How the window's luma is averaged: am (arithmetic), gm (geometric), hm (harmonic), median.
    """
    return scale_luma(frames[0], deflicker_gain(frames, int(size), mode))


# Temporal Blend -----------------------------------------------------------------------------------
def pull_previous(previous: np.ndarray, cur_src: np.ndarray, prev_src: np.ndarray,
                  size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(the previous output warped onto the current frame's pixels, the (H, W) trusted mask), with
    the flow from the current source frame to the previous one; `size` is the output's (w, h)."""
    fb, mask = trusted_flow(cur_src, prev_src)  # cur(x) ~ prev(x + fb(x)): a backward warp pulls prev
    w, h = size
    fb, mask = resize_flow(fb, w, h), resize_mask(mask, w, h)
    if previous.shape[1:3] != (h, w):
        import cv2

        previous = cv2.resize(np.ascontiguousarray(previous[0], dtype=np.float32), (w, h),
                              interpolation=cv2.INTER_LINEAR)[None]
    return warp(previous, fb), mask


@node("imagebash.video.temporal_blend", title="Temporal Blend", category="video/temporal",
      window=Window(before=1, previous=True))
def temporal_blend(frames: Frames, source: Frames | None = None, strength: Strength = 0.5,
                   scene_threshold: SceneThreshold = 0.5) -> Image:
    """Steady a per-frame processed clip: blend in the previous output, moved along the motion.

    out_t = M·(α·warp(out_t-1) + (1-α)·frame_t) + (1-M)·frame_t, with the optical flow (DIS) and the
    trusted-pixel mask M (forward-backward check) from the source clip, so texture that flickers
    from frame to frame settles while moving things stay sharp; it starts afresh at scene cuts.
    A recursive filter: its memory fades as α^k.

    Args:
        frames: The processed clip (e.g. img2img'd frame by frame).
        source: The original clip the motion is read from; without it, from `frames` (less reliable
            when they flicker).
        strength: α, the weight of the warped previous output (0 = off; higher = steadier, more ghosting).
        scene_threshold: Where a cut resets the blend.
    """
    cur = frames[0]
    prev = frames.previous
    if prev is None or strength <= 0:
        return cur
    src = source if source is not None else frames
    s_cur, s_prev = src[0], src[-1]
    if scene_threshold < 1.0 and scene_cut(s_prev, s_cur, scene_threshold):
        return cur
    h, w = cur.shape[1:3]
    pulled, mask = pull_previous(prev, s_cur, s_prev, (w, h))
    if pulled.shape[-1] != cur.shape[-1]:
        return cur
    weight = (np.float32(strength) * mask)[None, ..., None]
    return (cur + weight * (pulled - cur)).astype(np.float32, copy=False)


# Colour Lock --------------------------------------------------------------------------------------
class LockMethod(str, enum.Enum):
    MEAN_STD = "mean_std"  # Reinhard: mean and spread per channel in Lab
    HISTOGRAM = "histogram"  # the whole distribution, per RGB channel


_BINS = 1024


def match_histogram(rgb: np.ndarray, ref: np.ndarray, alpha: np.ndarray | None = None,
                    ref_alpha: np.ndarray | None = None) -> np.ndarray:
    """Per channel, map `rgb`'s values so their distribution is `ref`'s (CDF matching on 1024 bins);
    alpha < 0.5 pixels do not count."""
    out = np.empty_like(rgb, dtype=np.float32)
    keep = alpha.reshape(-1) > 0.5 if alpha is not None else None
    rkeep = ref_alpha.reshape(-1) > 0.5 if ref_alpha is not None else None
    centres = (np.arange(_BINS, dtype=np.float64) + 0.5) / _BINS
    for c in range(rgb.shape[-1]):
        src = rgb[..., c].reshape(-1)
        r = ref[..., c].reshape(-1)
        if keep is not None and keep.any():
            src_counted = src[keep]
        else:
            src_counted = src
        if rkeep is not None and rkeep.any():
            r = r[rkeep]
        bins = lambda v: np.clip((v * _BINS).astype(np.int64), 0, _BINS - 1)  # noqa: E731
        cdf_s = np.cumsum(np.bincount(bins(src_counted), minlength=_BINS)) / max(src_counted.size, 1)
        cdf_r = np.cumsum(np.bincount(bins(r), minlength=_BINS)) / max(r.size, 1)
        # each source bin goes to the reference value at the same quantile (mid-bin of its CDF step)
        lo = np.concatenate([[0.0], cdf_s[:-1]])
        quant = (lo + cdf_s) / 2.0
        lut = np.interp(quant, cdf_r, centres)
        frac = np.clip(src * _BINS - 0.5, 0, _BINS - 1)  # interpolate the LUT between bin centres
        out[..., c] = np.interp(frac, np.arange(_BINS), lut).reshape(rgb.shape[:-1])
    return np.clip(out, 0.0, 1.0)


def lock_one(img: np.ndarray, ref: np.ndarray, method: LockMethod, strength: float) -> np.ndarray:
    """One (H, W, C) image graded to `ref` by `method`, mixed with the original by `strength`."""
    method = LockMethod(method)
    if method is LockMethod.MEAN_STD:
        return match_one(img, ref, MatchSpace.LAB, strength)
    rgb, alpha = split_alpha(img)
    ref_rgb, ref_alpha = split_alpha(ref)
    out = match_histogram(rgb, ref_rgb, alpha, ref_alpha)
    if strength != 1.0:
        out = rgb + (out - rgb) * np.float32(strength)
    return with_alpha(out.astype(np.float32, copy=False), alpha)


@node("imagebash.video.colour_lock", title="Colour Lock", category="video/temporal")
def colour_lock(image: Image, reference: Image, method: LockMethod = LockMethod.MEAN_STD,
                strength: Strength = 1.0, ctx: Context = None) -> Image:
    """Hold a clip's colours to one reference image, so grading does not drift from frame to frame.

    Fed a video, it grades every frame to the same reference (its first image). mean_std moves each
    frame's mean and spread per channel onto the reference's in CIE Lab (Reinhard); histogram
    matches the whole distribution of each RGB channel (stronger, can posterise). Alpha is kept.

    Args:
        image: The frames (or images) to grade.
        reference: The image whose colours every frame takes, e.g. a chosen good frame.
        method: mean_std (Lab mean and spread) or histogram (per-channel distribution).
        strength: 0 = unchanged, 1 = fully matched.
    """
    ref = check_image(reference, "reference")[0]
    if strength <= 0:
        return check_image(image)
    return map_images(image, lambda img: lock_one(img, ref, method, strength), ctx)


# Warped Init --------------------------------------------------------------------------------------
Prompt = Annotated[str, Multiline()]


@node("imagebash.video.warped_init", title="Warped Init (img2img)", category="video/temporal", device="gpu",
      window=Window(before=1, previous=True))
def warped_init(model: Model, source: Frames, prompt: Prompt = "", negative_prompt: Prompt = "",
                strength: Strength = 0.45,
                steps: Annotated[int, Range(0, 200), Help("0 uses the model's default")] = 0,
                guidance: Annotated[float, Range(0.0, 30.0, step=0.5), Help("0 uses the model's default")] = 0.0,
                scheduler: Scheduler = Scheduler.AUTO, seed: Seed = 0, vary_seed: bool = False,
                flow_blend: Strength = 0.8, scene_threshold: SceneThreshold = 0.5,
                ctx: Context = None) -> Image:
    """Restyle a clip frame by frame, each frame started from the previous result moved along the motion.

    Frame t is img2img of: the previous output warped by the source's optical flow onto frame t,
    mixed with source frame t by `flow_blend` (only where the flow is trusted; the source shows
    through at occlusions and after a cut). Frame 0 is plain img2img of the source. The same seed
    every frame (the default) keeps the noise still, which steadies texture further.

    Args:
        model: The model (with its LoRAs, ControlNets, ...).
        source: The clip to restyle; sides must be multiples of 8 (16 for Flux and SD 3.5).
        prompt: What every frame should look like.
        negative_prompt: What to steer away from.
        strength: Denoise of each frame: lower follows the init (steadier), higher restyles more.
        steps: Denoising steps.
        guidance: How strongly to follow the prompt.
        scheduler: The sampler (auto: the model's own).
        seed: The noise seed.
        vary_seed: Use seed + frame index instead of the same noise every frame.
        flow_blend: Weight of the warped previous output in each init (0 = plain per-frame img2img).
        scene_threshold: Where a cut restarts from the source frame.
    """
    from nodes.diffusion.generate import img2img

    cur = source[0][..., :3]
    init = cur
    prev = source.previous
    if prev is not None and flow_blend > 0:
        s_prev = source[-1][..., :3]
        if not (scene_threshold < 1.0 and scene_cut(s_prev, cur, scene_threshold)):
            h, w = cur.shape[1:3]
            pulled, mask = pull_previous(prev[..., :3], cur, s_prev, (w, h))
            weight = (np.float32(flow_blend) * mask)[None, ..., None]
            init = np.clip(cur + weight * (pulled - cur), 0.0, 1.0).astype(np.float32)
    frame_seed = int(seed) + (source.index if vary_seed else 0)
    out = img2img(model, np.ascontiguousarray(init, dtype=np.float32), prompt, negative_prompt, float(strength),
                  int(steps), float(guidance), scheduler, 0.0, frame_seed, 1, ctx=ctx)
    if ctx is not None:
        ctx.progress((source.index + 1) / max(source.length, 1), text=f"frame {source.index + 1}/{source.length}")
    return out[:1]
