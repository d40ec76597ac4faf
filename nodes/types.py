"""The types that travel on the wires, and the annotation markers that describe ports.

A node's signature is its declaration: `Image`, `Mask` and `Seed` are `Annotated` aliases that
carry a `Port` marker, `Latent`, `Model` and `Video` are small classes, scalars are plain Python
types, and `Range`, `Multiline`, `FileFilter`, `Choices` and `Help` refine a port inside
`Annotated[...]`. Nothing here imports torch: a `Latent` holds a tensor but does not need to
know what one is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Port:
    """Marks an `Annotated` alias as a named port kind (Image, Mask, Seed)."""

    kind: str


@dataclass(frozen=True)
class Range:
    """Inclusive numeric bounds for a number port; `step` guides sliders and spin boxes."""

    min: float | None = None
    max: float | None = None
    step: float | None = None


@dataclass(frozen=True)
class Multiline:
    """A str port edited in a multi-line text box (prompts)."""


@dataclass(frozen=True)
class FileFilter:
    """A Path port edited with a file picker; `patterns` like ("*.png", "*.jpg"), `folder` for dirs."""

    patterns: tuple[str, ...] = ()
    folder: bool = False
    save: bool = False


@dataclass(frozen=True)
class Choices:
    """Suggestions for a str port, computed when a UI asks (model and LoRA lists).

    `model` says the value names a model file of that kind ("checkpoint", "lora"): a remote
    engine's client uploads such a file when it exists only on the client's disk.
    """

    provider: Callable[[], list[str]]
    model: str | None = None


@dataclass(frozen=True)
class Help:
    """A one-line help text for a port."""

    text: str


Image = Annotated[np.ndarray, Port("Image")]
"""float32 (N, H, W, C), C in {3, 4}, values in [0, 1]; N is batch or frames."""

Mask = Annotated[np.ndarray, Port("Mask")]
"""float32 (N, H, W) in [0, 1]."""

Seed = Annotated[int, Port("Seed")]
"""An explicit random seed: the same workflow and seed give the same pixels."""


@dataclass
class Latent:
    """Latent samples (a torch tensor, N x C x h x w) and the model family they belong to."""

    samples: Any
    family: str
    scale_factor: int = 8
    #: Where a sampler may change the samples (torch (N, 1, H, W) in [0, 1], pixel size), as
    #: ComfyUI's SetLatentNoiseMask / VAEEncodeForInpaint carry it; None = everywhere.
    noise_mask: Any = None

    def nbytes(self) -> int:
        s = self.samples
        return int(s.numel() * s.element_size()) if hasattr(s, "numel") else 0

    def to_host(self) -> Latent:
        """These samples on the CPU (what the engine's cache keeps: GPU memory is the models')."""
        device = getattr(self.samples, "device", None)
        if device is None or getattr(device, "type", "cpu") == "cpu":
            return self
        mask = self.noise_mask.to("cpu") if hasattr(self.noise_mask, "to") else self.noise_mask
        return replace(self, samples=self.samples.to("cpu"), noise_mask=mask)


@dataclass(frozen=True)
class LoraRef:
    """One LoRA in a stack: its file, its weight and a short content hash (for provenance); on a
    two-expert model, which experts its generic keys reach ("" for the family's default)."""

    path: str
    weight: float
    hash: str = ""
    name: str = ""
    expert: str = ""


@dataclass(frozen=True)
class ControlRef:
    """One ControlNet in a stack: the loaded net (its manager key), its control image and how
    strongly and over which fraction of the steps it steers."""

    key: str
    source: str
    strength: float
    start: float = 0.0
    end: float = 1.0
    image_hash: str = ""
    image: Any = field(default=None, compare=False, hash=False)  # (N, H, W, 3) float32 in [0, 1]
    mode: int = -1  # a Union ControlNet's control type (-1: none)
    mask_hash: str = ""
    mask: Any = field(default=None, compare=False, hash=False)  # (H, W) float32: where it steers; None: everywhere


@dataclass(frozen=True)
class AdapterRef:
    """One IP-Adapter in a stack: its file, its image encoder, its weight and the reference image."""

    path: str
    encoder: str
    weight: float
    image_hash: str = ""
    image: Any = field(default=None, compare=False, hash=False)  # (N, H, W, 3) float32 in [0, 1]
    start: float = 0.0  # fraction of the steps where it starts steering
    end: float = 1.0
    mask_hash: str = ""
    mask: Any = field(default=None, compare=False, hash=False)  # (H, W) float32: where it applies; None: everywhere


@dataclass(frozen=True)
class RegionRef:
    """A prompt that applies inside a mask or a rectangle (area conditioning), with its strength."""

    prompt: str
    strength: float
    mask_hash: str = ""
    mask: Any = field(default=None, compare=False, hash=False)  # (H, W) float32 in [0, 1]; None: the rectangle
    rect: tuple[int, int, int, int] | None = None  # (x, y, width, height) in pixels of the sampled image


@dataclass(frozen=True)
class Model:
    """A handle to a pipeline held by the model manager, never the weights themselves.

    `key` names the loaded base in the manager; `loras` is the stack applied at sampling time,
    so changing a LoRA weight makes a new handle without touching the base.
    """

    key: str
    family: str
    source: str = ""
    hash: str = ""
    loras: tuple[LoraRef, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    controls: tuple[ControlRef, ...] = ()
    ip_adapters: tuple[AdapterRef, ...] = ()
    regions: tuple[RegionRef, ...] = ()

    def with_lora(self, lora: LoraRef) -> Model:
        return replace(self, loras=(*self.loras, lora))


class Video:
    """A lazy frame source: length, fps, size, and frame i on demand as a (1, H, W, C) Image.

    Image nodes fed a Video map over it lazily (the engine wraps them), so an export pulls one
    frame at a time and memory stays flat however long the clip is.
    """

    def __init__(self, length: int, fps: float, size: tuple[int, int],
                 get_frame: Callable[[int], np.ndarray], channels: int = 3, audio: Any = None) -> None:
        self.length = int(length)
        self.fps = float(fps)
        self.size = (int(size[0]), int(size[1]))  # (width, height)
        self.channels = channels
        self.audio = audio  # the sound that plays with these frames (nodes.video.audio.AudioTrack) or None
        self._get = get_frame

    def __len__(self) -> int:
        return self.length

    def frame(self, i: int) -> np.ndarray:
        if not 0 <= i < self.length:
            raise IndexError(f"frame {i} out of range 0..{self.length - 1}")
        f = self._get(i)
        return f if f.ndim == 4 else f[None]

    def frames(self) -> Iterator[np.ndarray]:
        for i in range(self.length):
            yield self.frame(i)

    def to_batch(self) -> np.ndarray:
        """Materialise every frame as one Image batch (only for short clips)."""
        return np.concatenate(list(self.frames()), axis=0) if self.length else np.zeros(
            (0, self.size[1], self.size[0], self.channels), np.float32)

    @classmethod
    def from_batch(cls, images: np.ndarray, fps: float = 24.0) -> Video:
        images = np.asarray(images)
        n, h, w, c = images.shape
        return cls(n, fps, (w, h), lambda i: images[i:i + 1], channels=c)

    def nbytes(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"Video({self.length} frames, {self.fps:g} fps, {self.size[0]}x{self.size[1]})"


@dataclass(frozen=True)
class Window:
    """What a temporal node reads around frame t: `before` and `after` neighbours, and with
    `previous` its own output at t - 1 (a recursive filter). Declared as `@node(window=...)`."""

    before: int = 0
    after: int = 0
    previous: bool = False


class Frames:
    """Annotation of a windowed node's clip input: a Video on the wire, a `FrameWindow` per call."""


class FrameWindow:
    """The frames a windowed node sees when it computes frame `index` of its output.

    `w[0]` is the current frame, `w[-1]` the one before, `w[2]` two ahead, each (1, H, W, C);
    offsets outside the clip are clamped to its first or last frame (so borders need no special
    case) and offsets outside the declared window raise. `previous` is the node's own output at
    `index - 1` (None at frame 0) when the node declared `Window(previous=True)`.
    """

    def __init__(self, index: int, length: int, fps: float, get: Callable[[int], np.ndarray],
                 window: Window, previous: np.ndarray | None = None) -> None:
        self.index = index
        self.length = length
        self.fps = fps
        self.window = window
        self.previous = previous
        self._get = get

    def __getitem__(self, offset: int) -> np.ndarray:
        if not -self.window.before <= offset <= self.window.after:
            raise IndexError(f"offset {offset} is outside the declared window "
                             f"(-{self.window.before}..+{self.window.after})")
        return self._get(min(max(self.index + offset, 0), self.length - 1))

    def exists(self, offset: int) -> bool:
        """Whether frame `index + offset` is in the clip (not a clamped copy of a border frame)."""
        return 0 <= self.index + offset < self.length


class Cancelled(Exception):
    """Raised inside a node when the user cancelled the run."""


class Context(Protocol):
    """What a node may ask of the engine; declare a parameter `ctx: Context` to receive it."""

    node_id: str
    output_dir: Any
    device: str

    def progress(self, fraction: float, preview: np.ndarray | None = None,
                 text: str | None = None, metrics: dict[str, Any] | None = None) -> None: ...

    def log(self, message: str, level: str = "info") -> None: ...

    def add_file(self, path: Any, kind: str = "file", frame: int | None = None) -> None:
        """Report a file this node wrote (Save nodes, a trained LoRA, samples), as an artefact."""

    def check_cancelled(self) -> None: ...

    @property
    def cancelled(self) -> bool: ...

    def service(self, name: str) -> Any: ...

    def device_lock(self) -> Any:
        """The engine's device lock (a context manager), for io nodes that do device work later."""

    def annotate(self, key: str, value: Any) -> None: ...

    @property
    def workflow(self) -> dict | None: ...

    @property
    def provenance(self) -> dict: ...
