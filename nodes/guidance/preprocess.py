"""Control-image preprocessors: the pictures ControlNets and T2I-Adapters are conditioned on.

Canny, Tile/Blur, Scribble (from a drawn mask), Pose (checks and fits an OpenPose skeleton made
elsewhere) and Depth (Depth Anything V2 through transformers). Each returns an RGB image (alpha
dropped: control models read three channels) of the input's size unless the node says otherwise;
an (N, H, W, C) batch is processed image by image, and the engine maps a Video over its frames.
There is no Invert here: `imagebash.image.invert` already does it (white-on-black <-> black-on-white).
Line Art and Soft Edge (HED/PiDiNet) are left out because their only implementations
(controlnet_aux) need torchvision and timm, which this project cannot install, and their weights
are pickled .pth files from the hub that we neither ship nor may fetch at run time.
OpenCV and torch are imported inside the functions, so listing nodes stays fast.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from nodes.image.filters import gaussian
from nodes.image.util import Interpolation, check_image, check_mask, each, map_images, resize, to_uint8
from nodes.registry import node
from nodes.types import Choices, Context, Help, Image, Mask, Range

#: Preprocessors ControlNet users expect that are not here, and why (listed by `imagebash nodes`).
LEFT_OUT = {
    "Line Art": "its only implementation (controlnet_aux) needs torchvision and timm, and its weights are "
                "pickled .pth files; make line art elsewhere and load it as the control image",
    "Soft Edge (HED / PiDiNet)": "the same: controlnet_aux with torchvision and pickled weights; Canny or "
                                 "Tile / Blur steer similarly",
}

CATEGORY = "guidance/preprocess"
DEPTH_DIR = "depth"
DEPTH_EXAMPLE = "depth-anything/Depth-Anything-V2-Small-hf"


def _rgb(img: np.ndarray) -> np.ndarray:
    """The colour of one (H, W, C) image (an alpha channel is dropped, not composited)."""
    return np.ascontiguousarray(img[..., :3], dtype=np.float32)


def _white_on_black(binary: np.ndarray) -> np.ndarray:
    """An (H, W) bool/0-255 map as a float32 (H, W, 3) white-on-black image."""
    on = (np.asarray(binary) > 0).astype(np.float32)
    return np.repeat(on[..., None], 3, axis=-1)


# Canny ---------------------------------------------------------------------------------------


def canny_one(rgb: np.ndarray, low: float, high: float, l2_gradient: bool) -> np.ndarray:
    """cv2.Canny on the 8-bit grey (OpenCV's RGB2GRAY) version of one (H, W, 3) image."""
    import cv2

    grey = cv2.cvtColor(to_uint8(_rgb(rgb)), cv2.COLOR_RGB2GRAY)
    return _white_on_black(cv2.Canny(grey, float(low), float(high), L2gradient=bool(l2_gradient)))


@node("imagebash.guidance.canny", title="Canny", category=CATEGORY)
def canny(image: Image, low_threshold: Annotated[int, Range(0, 1000)] = 100,
          high_threshold: Annotated[int, Range(0, 1000)] = 200, l2_gradient: bool = False,
          ctx: Context = None) -> Image:
    """Edges as white lines on black: the control image of Canny ControlNets and T2I-Adapters.

    OpenCV's Canny on the 8-bit grey image, so a threshold means what it means in other tools
    (ComfyUI's Canny preprocessor defaults to 100/200 too).

    Args:
        image: The images to trace.
        low_threshold: Gradient below this is never an edge; between low and high only next to an edge.
        high_threshold: Gradient above this always starts an edge (raise it for fewer lines).
        l2_gradient: Use the exact gradient magnitude (a little cleaner, a little slower).
    """
    if low_threshold < 0 or high_threshold < 0:
        raise ValueError("Canny thresholds must not be negative")
    if low_threshold > high_threshold:
        raise ValueError(f"Canny low threshold ({low_threshold}) must not be above the high one ({high_threshold})")
    return map_images(image, lambda img: canny_one(img, low_threshold, high_threshold, l2_gradient), ctx)


# Tile / Blur ---------------------------------------------------------------------------------


def tile_blur_one(rgb: np.ndarray, factor: float, blur_radius: float) -> np.ndarray:
    """Shrink by `factor` (area average), grow back (bicubic), then blur: detail gone, layout kept."""
    import cv2

    img = _rgb(rgb)
    h, w = img.shape[:2]
    if factor > 1:
        small = cv2.resize(img, (max(1, round(w / factor)), max(1, round(h / factor))),
                           interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    if blur_radius > 0:
        img = gaussian(img, blur_radius)
    return np.clip(img, 0.0, 1.0)


@node("imagebash.guidance.tile_blur", title="Tile / Blur", category=CATEGORY)
def tile_blur(image: Image, factor: Annotated[float, Range(1, 64, step=0.5)] = 4.0,
              blur_radius: Annotated[float, Range(0, 256, step=0.5)] = 0.0, ctx: Context = None) -> Image:
    """A softened copy of the image: the control image of tile ControlNets (upscaling, detailing).

    The ControlNet redraws the detail this removes, so a larger factor gives it more freedom.

    Args:
        image: The images to soften.
        factor: Shrink by this much before growing back (1 = no resampling).
        blur_radius: Gaussian blur radius in pixels after resampling (0 = none).
    """
    if not factor >= 1:
        raise ValueError(f"tile factor must be at least 1, got {factor}")
    if blur_radius < 0:
        raise ValueError(f"blur radius must not be negative, got {blur_radius}")
    return map_images(image, lambda img: tile_blur_one(img, factor, blur_radius), ctx)


# Scribble ------------------------------------------------------------------------------------


def thin(binary: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of an (H, W) bool map to one-pixel-wide lines (numpy, whole-array steps;
    OpenCV's ximgproc.thinning is only in the contrib build)."""
    img = np.pad(np.asarray(binary, bool), 1)
    while True:
        changed = False
        for step in (0, 1):
            p = img
            # neighbours P2..P9, clockwise from north
            n = [p[:-2, 1:-1], p[:-2, 2:], p[1:-1, 2:], p[2:, 2:], p[2:, 1:-1], p[2:, :-2], p[1:-1, :-2], p[:-2, :-2]]
            nb = [x.astype(np.uint8) for x in n]
            count = sum(nb)
            transitions = sum(((nb[i] == 0) & (nb[(i + 1) % 8] == 1)).astype(np.uint8) for i in range(8))
            p2, p4, p6, p8 = n[0], n[2], n[4], n[6]
            if step == 0:
                side = ~(p2 & p4 & p6) & ~(p4 & p6 & p8)
            else:
                side = ~(p2 & p4 & p8) & ~(p2 & p6 & p8)
            remove = p[1:-1, 1:-1] & (count >= 2) & (count <= 6) & (transitions == 1) & side
            if remove.any():
                img = img.copy()
                img[1:-1, 1:-1] &= ~remove
                changed = True
        if not changed:
            return img[1:-1, 1:-1]


@node("imagebash.guidance.scribble", title="Scribble from Mask", category=CATEGORY)
def scribble(mask: Mask, thickness: Annotated[int, Range(0, 64)] = 0, thin_lines: bool = False,
             threshold: Annotated[float, Range(0, 1, step=0.01)] = 0.5, ctx: Context = None) -> Image:
    """A drawn mask (white strokes) as white-on-black lines: the control image of scribble ControlNets.

    Thinning first and thickening after gives every stroke the same width, whatever brush drew it.

    Args:
        mask: The strokes (1 = drawn).
        thickness: Widen every stroke by this many pixels on each side (0 = as drawn).
        thin_lines: Reduce strokes to one-pixel centre lines first.
        threshold: Mask values at or above this (and above 0) count as stroke.
    """
    import cv2

    masks = check_mask(mask)
    if thickness < 0:
        raise ValueError(f"scribble thickness must not be negative, got {thickness}")
    drawn = (masks >= threshold) & (masks > 0)
    if not drawn.any():
        raise ValueError("the scribble mask covers nothing")
    kernel = (cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * thickness + 1, 2 * thickness + 1))
              if thickness else None)

    def one(i: int) -> np.ndarray:
        m = thin(drawn[i]) if thin_lines else drawn[i]
        m = m.astype(np.uint8)
        if kernel is not None:
            m = cv2.dilate(m, kernel)
        return _white_on_black(m)

    return each(len(masks), one, ctx, "mask")


# Pose ----------------------------------------------------------------------------------------

POSE_DARK = 16 / 255  # a background pixel: every channel at most this
POSE_MIN_BACKGROUND = 0.5  # an OpenPose skeleton is mostly background


def fit_pad(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale one (H, W, 3) image to fit inside width x height keeping its aspect, centred on black."""
    h, w = img.shape[:2]
    scale = min(width / w, height / h)
    nw, nh = max(1, min(width, round(w * scale))), max(1, min(height, round(h * scale)))
    interp = Interpolation.AREA if scale < 1 else Interpolation.BILINEAR
    inner = np.clip(resize(img, nw, nh, interp), 0.0, 1.0)
    out = np.zeros((height, width, 3), np.float32)
    top, left = (height - nh) // 2, (width - nw) // 2
    out[top:top + nh, left:left + nw] = inner
    return out


@node("imagebash.guidance.pose_image", title="Pose Image", category=CATEGORY)
def pose_image(image: Image, width: Annotated[int, Range(0, 16384)] = 0,
               height: Annotated[int, Range(0, 16384)] = 0, ctx: Context = None) -> Image:
    """Check and fit an OpenPose skeleton image (coloured bones on black) for an OpenPose ControlNet.

    OpenPose detection itself is not included: it needs the OpenPose body/hand/face weights and
    their detector code, which imagebash does not ship; make the skeleton in a pose editor or
    another tool and load it here. Transparent pixels count as background (black). With both
    width and height the skeleton is scaled to fit and padded with black, so its proportions
    (and so the pose) never stretch; with one of them it is scaled to it keeping its aspect.

    Args:
        image: The skeleton images (coloured lines on black).
        width: Output width in pixels (0 = from height, or the input's).
        height: Output height in pixels (0 = from width, or the input's).
    """
    images = check_image(image)
    if width < 0 or height < 0:
        raise ValueError("pose image width and height must not be negative")
    if images.shape[-1] == 4:  # transparent = background: premultiply onto black
        images = images[..., :3] * images[..., 3:4]
    images = np.clip(images[..., :3], 0.0, 1.0)
    dark = float((images.max(axis=-1) <= POSE_DARK).mean()) if images.size else 1.0
    if dark < POSE_MIN_BACKGROUND:
        raise ValueError(f"this does not look like an OpenPose skeleton: only {dark:.0%} of it is black background "
                         "(pose detection from photos is not included; give a skeleton drawn on black)")
    h, w = images.shape[1:3]

    def one(i: int) -> np.ndarray:
        img = images[i]
        if width and height:
            return fit_pad(img, width, height)
        if width or height:
            tw = width or max(1, round(w * height / h))
            th = height or max(1, round(h * width / w))
            return fit_pad(img, tw, th)
        return img

    return each(len(images), one, ctx)


# Depth ---------------------------------------------------------------------------------------


def depth_dirs() -> list[Path]:
    """The `depth/` subfolder of every models folder (catalog.DIRS has no depth kind)."""
    from app.paths import models_dirs

    return [root / DEPTH_DIR for root in models_dirs()]


def _is_model_folder(p: Path) -> bool:
    return p.is_dir() and (p / "config.json").is_file()


def list_depth_models() -> list[str]:
    """Depth model folders in the models folders' depth/, by name: `name` for depth/name and
    `owner/name` for depth/owner/name (a hub id laid out as a folder resolves locally first)."""
    found: dict[str, None] = {}
    for folder in depth_dirs():
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if _is_model_folder(p):
                found.setdefault(p.name, None)
            elif p.is_dir():
                for q in sorted(p.iterdir()):
                    if _is_model_folder(q):
                        found.setdefault(f"{p.name}/{q.name}", None)
    return list(found)


def _missing_depth(name: str = "") -> ValueError:
    root = depth_dirs()[0].parent if depth_dirs() else Path("<models>")
    head = f"depth model '{name}' not found. " if name else ""
    return ValueError(f"{head}Depth needs a Depth Anything V2 model: get it with `imagebash models download "
                      f"hf:{DEPTH_EXAMPLE} --kind depth` (or the Models panel's Download…), or put its folder "
                      f"in {root}/{DEPTH_DIR}/")


def resolve_depth(model: str) -> str:
    """The local folder (as a resolved path string) or hub id `model` names, like checkpoints resolve:
    an existing path, then a name in the models folders' depth/, then an owner/name hub id."""
    name = str(model or "").strip()
    if not name:
        raise _missing_depth()
    try:
        p = Path(name).expanduser()
        candidates = [p] if p.is_absolute() else [p, *(d / p for d in depth_dirs())]
        for c in candidates:
            if _is_model_folder(c):
                return str(c.resolve())
    except (OSError, RuntimeError, ValueError):
        raise _missing_depth(name) from None
    if name.count("/") == 1 and not p.is_absolute() and not name.startswith(".") and all(name.split("/")):
        return name
    raise _missing_depth(name)


def _depth_key(params: dict[str, Any]) -> str:
    """The model folder's content, so replacing the weights in place re-runs Depth."""
    from app.engine.fingerprint import fingerprint

    try:
        source = resolve_depth(str(params.get("model", "")))
    except ValueError:
        return "missing"
    return fingerprint(source) if Path(source).is_absolute() else f"hub:{source}"


DEPTH_CACHE_SIZE = 2
_depth_cache: OrderedDict[tuple[str, str, str], tuple[Any, Any]] = OrderedDict()
_depth_lock = threading.Lock()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _load_depth(source: str, device: str) -> tuple[Any, Any]:
    """(model, image processor) for a folder or hub id, on `device`. The PIL/numpy image processor
    (backend="pil") is asked for explicitly: the default one needs torchvision, which we lack (and
    a broken torchvision install would otherwise be picked)."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    from app.engine.devices import pick_dtype

    local = Path(source).is_absolute()
    if local and not (Path(source) / "preprocessor_config.json").is_file():
        raise ValueError(f"the depth model in {source} has no preprocessor_config.json "
                         "(copy the whole Depth Anything V2 folder, not only its weights)")
    kw: dict[str, Any] = {"local_files_only": True} if local else {}
    try:
        model = AutoModelForDepthEstimation.from_pretrained(source, dtype=pick_dtype(device), **kw)
        processor = AutoImageProcessor.from_pretrained(source, backend="pil", **kw)
    except OSError as exc:  # not on disk, not in the hub cache, offline
        if local:
            raise ValueError(f"cannot load the depth model in {source}: {_first_line(exc)}") from None
        raise _missing_depth(source) from None
    except (ValueError, KeyError) as exc:  # a folder or repo of another kind of model
        raise ValueError(f"{source} is not a Depth Anything model: {_first_line(exc)}") from None
    return model.to(device).eval(), processor


def depth_model(source: str, device: str) -> tuple[Any, Any]:
    """The (model, processor) for (source, device), loaded once: a small LRU of DEPTH_CACHE_SIZE."""
    from app.engine.fingerprint import fingerprint

    key = (source, device, fingerprint(source) if Path(source).is_absolute() else "hub")
    with _depth_lock:
        hit = _depth_cache.get(key)
        if hit is not None:
            _depth_cache.move_to_end(key)
            return hit
        loaded = _load_depth(source, device)
        _depth_cache[key] = loaded
        while len(_depth_cache) > DEPTH_CACHE_SIZE:
            _depth_cache.popitem(last=False)
        return loaded


def clear_depth_cache() -> None:
    """Drop the loaded depth models (their memory goes back once nothing else holds them)."""
    with _depth_lock:
        _depth_cache.clear()


def normalise(depth: np.ndarray) -> np.ndarray:
    """Min-max scale one map to [0, 1] (a constant map becomes black)."""
    d = np.asarray(depth, np.float64)
    lo, hi = float(d.min()), float(d.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(d.shape, np.float32)
    return ((d - lo) / (hi - lo)).astype(np.float32)


DEPTH_CHUNK = 4  # images per forward pass: bounded memory, and a cancel is seen between chunks


@node("imagebash.guidance.depth", title="Depth", category=CATEGORY, device="gpu", cache_key=_depth_key)
def depth(image: Image,
          model: Annotated[str, Choices(list_depth_models),
                           Help("a Depth Anything V2 folder in <models>/depth/, or a hub id when online")] = "",
          resolution: Annotated[int, Range(0, 4096, step=14)] = 0, ctx: Context = None) -> Image:
    """Depth as a grey image, near = white: the control image of depth ControlNets and T2I-Adapters.

    Depth Anything V2 (through transformers) predicts relative inverse depth; each image's map is
    scaled to fill 0..1 and resized back to the image's size. The model is loaded once per folder
    and device (the last two are kept). Its PIL/numpy image processor is used, since the default
    one needs torchvision.

    Args:
        image: The images to measure.
        model: The Depth Anything V2 model folder (e.g. Depth-Anything-V2-Small-hf) or hub id.
        resolution: The size the model sees (a multiple of 14; 0 = the model's own, 518 for V2).
    """
    import torch
    import torch.nn.functional as F

    from app.engine.devices import pick_device

    images = check_image(image)
    if resolution < 0:
        raise ValueError(f"depth resolution must not be negative, got {resolution}")
    source = resolve_depth(model)
    device = pick_device(getattr(ctx, "device", None) or "auto")
    net, processor = depth_model(source, device)
    dtype = next(net.parameters()).dtype
    n, h, w = images.shape[:3]
    extra: dict[str, Any] = {}
    if resolution:
        side = max(14, round(resolution / 14) * 14)
        extra["size"] = {"height": side, "width": side}
    out = np.empty((n, h, w, 3), np.float32)
    for start in range(0, n, DEPTH_CHUNK):
        if ctx is not None:
            ctx.check_cancelled()
        chunk = [to_uint8(_rgb(images[i])) for i in range(start, min(n, start + DEPTH_CHUNK))]
        inputs = processor(images=chunk, return_tensors="pt", **extra)
        pixels = inputs["pixel_values"].to(device=device, dtype=dtype)
        with torch.inference_mode():
            pred = net(pixel_values=pixels).predicted_depth
            pred = F.interpolate(pred[:, None].float(), size=(h, w), mode="bicubic", align_corners=False)[:, 0]
        for j, d in enumerate(pred.cpu().numpy()):
            out[start + j] = normalise(d)[..., None]
        if ctx is not None and n > 1:
            ctx.progress(min(n, start + DEPTH_CHUNK) / n, text=f"depth {min(n, start + DEPTH_CHUNK)}/{n}")
    return out
