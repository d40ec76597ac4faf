"""What a port value is on the wire: one object per kind that checks, sizes, summarises and
stores a value, so the executor, the cache and every client treat a kind the same way.

Events never carry raw values (arrays, lazy Video closures, device tensors): a finished node's
event carries an `OutputSummary` per port (kind, shape, dtype, frame count, a small PNG
thumbnail, small scalars inline) whose `OutputRef` a client hands back to the engine to fetch
the value, one frame of it, or a file. Summaries and refs are plain data (str, int, float, bool,
tuples, bytes), so a remote engine can send them as JSON with the bytes base64-encoded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nodes.types import Latent, Model, Video

THUMB_SIDE = 256
#: str/bytes values up to this size travel inline in a summary (a prompt, a path, a caption).
INLINE_TEXT = 4096


@dataclass(frozen=True)
class OutputRef:
    """Names one output of one node in one run; the engine resolves it to the value."""

    run_id: str
    node_id: str
    port: str

    def __str__(self) -> str:
        return f"{self.run_id}/{self.node_id}.{self.port}"


@dataclass(frozen=True)
class OutputSummary:
    """What a client may know about an output without fetching it."""

    ref: OutputRef
    kind: str  # the port's kind: Image, Mask, Video, Latent, Model, str, float, ...
    shape: tuple[int, ...] = ()
    dtype: str = ""
    frames: int = 0  # images in a batch or frames of a video (0 for non-pictures)
    fps: float = 0.0
    thumbnail: bytes | None = field(default=None, repr=False)  # PNG, at most THUMB_SIDE px
    value: Any = None  # small scalars and text, inline
    text: str = ""  # one line for a tooltip or a log

    @property
    def displayable(self) -> bool:
        """A picture a preview can show (an Image or Mask batch, or a Video)."""
        return self.frames > 0


@dataclass(frozen=True)
class FileArtifact:
    """A file an output node wrote (an image, a video, a LoRA, a training sample)."""

    run_id: str
    node_id: str
    path: str
    kind: str = "file"
    size: int = 0
    frame: int | None = None


def encode_png(frame: np.ndarray, max_side: int = THUMB_SIDE) -> bytes | None:
    """A float (H, W, C) or (1, H, W, C) frame in [0, 1] as a small 8-bit PNG (None if not a picture)."""
    from PIL import Image as PILImage

    a = np.asarray(frame)
    if a.ndim == 4:
        a = a[0]
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4) or 0 in a.shape or a.dtype.kind not in "fiu":
        return None
    if a.dtype.kind == "f":
        a = (np.clip(np.nan_to_num(a, nan=0.0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    else:
        a = np.clip(a, 0, 255).astype(np.uint8)
    im = PILImage.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side), PILImage.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """A thumbnail back as (H, W, C) uint8 (tests, and clients without Qt)."""
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(data)) as im:
        a = np.asarray(im)
    return a[..., None] if a.ndim == 2 else a


class WireType:
    """The behaviour of one kind of value; subclasses override what differs."""

    kinds: tuple[str, ...] = ()

    def check(self, value: Any, node: str, port: str, kind: str) -> None:
        """Raise TypeError naming the node and port when a node returned the wrong shape."""

    def nbytes(self, value: Any) -> int:
        """Memory the value holds (for the cache and store budgets)."""
        return 64

    def host(self, value: Any) -> Any:
        """The value as the cache keeps it: device tensors move to the CPU."""
        return value

    def summarize(self, ref: OutputRef, kind: str, value: Any) -> OutputSummary:
        return OutputSummary(ref, kind, text=type(value).__name__)


class ArrayWire(WireType):
    """Image (N, H, W, C) and Mask (N, H, W) float batches."""

    kinds = ("Image", "Mask")

    def check(self, value: Any, node: str, port: str, kind: str) -> None:
        if isinstance(value, Video):
            return
        if kind == "Mask":
            if not isinstance(value, np.ndarray) or value.ndim != 3:
                raise TypeError(f"{node} returned output '{port}' with shape {getattr(value, 'shape', type(value))}, "
                                "expected a Mask (N, H, W)")
        elif not isinstance(value, np.ndarray) or value.ndim != 4 or value.shape[-1] not in (3, 4):
            raise TypeError(f"{node} returned output '{port}' with shape {getattr(value, 'shape', type(value))}, "
                            "expected an Image (N, H, W, 3|4)")

    def nbytes(self, value: Any) -> int:
        return int(value.nbytes) if isinstance(value, np.ndarray) else 64

    def summarize(self, ref: OutputRef, kind: str, value: Any) -> OutputSummary:
        if isinstance(value, Video):
            return VIDEO.summarize(ref, kind, value)
        a = np.asarray(value)
        frames = int(a.shape[0]) if a.ndim in (3, 4) else 0
        thumb = _safe_png(a[0] if frames else None)
        dims = "×".join(str(d) for d in a.shape)
        return OutputSummary(ref, kind, tuple(int(d) for d in a.shape), str(a.dtype), frames, 0.0, thumb,
                             text=f"{kind} {dims} {a.dtype}")


class VideoWire(WireType):
    kinds = ("Video",)

    def nbytes(self, value: Any) -> int:
        return value.nbytes() if isinstance(value, Video) else ARRAY.nbytes(value)

    def summarize(self, ref: OutputRef, kind: str, value: Any) -> OutputSummary:
        if not isinstance(value, Video):
            return ARRAY.summarize(ref, kind, value)
        w, h = value.size
        thumb = None
        if len(value):
            try:
                thumb = _safe_png(value.frame(0))
            except Exception:  # noqa: BLE001 - a clip whose first frame fails still has a summary
                thumb = None
        return OutputSummary(ref, kind, (len(value), h, w, value.channels), "float32", len(value), value.fps,
                             thumb, text=f"Video {len(value)} frames {w}×{h} at {value.fps:g} fps")


class LatentWire(WireType):
    kinds = ("Latent",)

    def nbytes(self, value: Any) -> int:
        return value.nbytes() if isinstance(value, Latent) else 64

    def host(self, value: Any) -> Any:
        if isinstance(value, Latent):
            return value.to_host()
        return value

    def summarize(self, ref: OutputRef, kind: str, value: Any) -> OutputSummary:
        shape = tuple(int(d) for d in getattr(getattr(value, "samples", None), "shape", ()))
        dtype = str(getattr(getattr(value, "samples", None), "dtype", "")).replace("torch.", "")
        family = getattr(value, "family", "")
        return OutputSummary(ref, kind, shape, dtype, text=f"Latent {'×'.join(map(str, shape))} ({family})")


class ModelWire(WireType):
    kinds = ("Model",)

    def summarize(self, ref: OutputRef, kind: str, value: Any) -> OutputSummary:
        if not isinstance(value, Model):
            return super().summarize(ref, kind, value)
        name = value.source.replace("\\", "/").rsplit("/", 1)[-1]
        loras = "".join(f" + {lr.name or lr.path} ({lr.weight:g})" for lr in value.loras)
        return OutputSummary(ref, kind, text=f"{value.family} model {name}{loras}")


class ScalarWire(WireType):
    """int, float, bool, str, Path, enums: small enough to travel inline."""

    def nbytes(self, value: Any) -> int:
        return len(value) + 49 if isinstance(value, (str, bytes)) else 64

    def summarize(self, ref: OutputRef, kind: str, value: Any) -> OutputSummary:
        if hasattr(value, "value") and not isinstance(value, (int, float, str, bool)):
            value = value.value  # an enum
        if isinstance(value, (bool, int, float)) or value is None:
            return OutputSummary(ref, kind, value=value, text=str(value))
        text = str(value)
        inline = text if len(text) <= INLINE_TEXT else None
        first = text.splitlines()[0] if text else ""
        return OutputSummary(ref, kind, value=inline, text=first[:200])


ARRAY, VIDEO, LATENT, MODEL, SCALAR = ArrayWire(), VideoWire(), LatentWire(), ModelWire(), ScalarWire()
_BY_KIND: dict[str, WireType] = {k: w for w in (ARRAY, VIDEO, LATENT, MODEL) for k in w.kinds}


def wire_for(kind: str, value: Any = None) -> WireType:
    """The wire type of a port kind (by the value itself for `Any` ports)."""
    w = _BY_KIND.get(kind)
    if w is not None:
        return w
    if isinstance(value, Video):
        return VIDEO
    if isinstance(value, np.ndarray):
        return ARRAY
    if isinstance(value, Latent):
        return LATENT
    if isinstance(value, Model):
        return MODEL
    return SCALAR


def check_outputs(node: str, ports: list[Any], outputs: dict[str, Any]) -> None:
    """Catch a node returning the wrong shape early, naming the node and the port."""
    for p in ports:
        v = outputs.get(p.name)
        if v is not None and p.kind in ("Image", "Mask"):
            ARRAY.check(v, node, p.name, p.kind)


def value_nbytes(kind: str, value: Any) -> int:
    if isinstance(value, (tuple, list)):
        return sum(value_nbytes("Any", v) for v in value)
    return wire_for(kind, value).nbytes(value)


def outputs_nbytes(kinds: dict[str, str], outputs: dict[str, Any]) -> int:
    total = 0
    for name, v in outputs.items():
        total += 64 if isinstance(v, (int, float)) else value_nbytes(kinds.get(name, "Any"), v)
    return total


def host_outputs(kinds: dict[str, str], outputs: dict[str, Any]) -> dict[str, Any]:
    """Outputs as the cache keeps them (no device tensors)."""
    out = {}
    for name, v in outputs.items():
        out[name] = wire_for(kinds.get(name, "Any"), v).host(v)
    return out


def summarize(ref: OutputRef, kind: str, value: Any) -> OutputSummary:
    if type(value) in (int, float, bool):  # most outputs of a long chain: the quick way
        return OutputSummary(ref, kind, value=value, text=str(value))
    try:
        return wire_for(kind, value).summarize(ref, kind, value)
    except Exception:  # noqa: BLE001 - a summary is a courtesy; the value itself stays fetchable
        return OutputSummary(ref, kind, text=type(value).__name__)


def _safe_png(frame: np.ndarray | None) -> bytes | None:
    if frame is None:
        return None
    try:
        return encode_png(frame)
    except (ValueError, TypeError, OSError):
        return None
