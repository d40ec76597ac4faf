"""Running a node over a Video: frame by frame, lazily where that is safe.

An Image (or Mask) port fed a Video calls the node once per frame. A pure node's Image and Mask
outputs become lazy Videos (frame i is computed when a consumer pulls it, so an export keeps
memory flat). Nodes with side effects (outputs such as Save) and io nodes (online APIs, which cost
money and may not be deterministic) run every frame exactly once, up front.

A windowed node (`@node(window=Window(before, after, previous))`) gets, for output frame t, a
FrameWindow over each `Frames` input: frames t-before .. t+after come from a small LRU cache of
the input, so a temporal filter over a 10,000-frame clip holds a window's worth of frames and
has no seams; with `previous` it also gets its own output at t-1 (computed forward from the
last frame it made when a consumer jumps ahead).

Keyframe schedules in a node's parameters are evaluated at each frame here, so every frame sees
its own value; the Video outputs carry the input's audio.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from nodes.schedule import Schedule
from nodes.types import Cancelled, FrameWindow, Video

Call = Callable[[dict[str, Any]], dict[str, Any]]
_FRAME_KINDS = ("Image", "Mask")


def scheduled(kwargs: dict[str, Any]) -> dict[str, Schedule]:
    """The parameters that hold a keyframe schedule."""
    return {k: v for k, v in kwargs.items() if isinstance(v, Schedule)}


def at_frame(kwargs: dict[str, Any], schedules: dict[str, Schedule], i: int) -> dict[str, Any]:
    """`kwargs` with every schedule replaced by its value at frame `i`."""
    if not schedules:
        return kwargs
    kw = dict(kwargs)
    for name, sched in schedules.items():
        kw[name] = sched.at(i, where=f"'{name}'")
    return kw


def map_over_video(call: Call, spec: Any, port_kinds: dict[str, str], kwargs: dict[str, Any],
                   video_ports: list[str], cancel: threading.Event) -> dict[str, Any]:
    """Outputs of `call` mapped over the frames of the Videos in `video_ports`."""
    videos = {name: kwargs[name] for name in video_ports}
    length = min(len(v) for v in videos.values())
    first_video = next(iter(videos.values()))
    fps, audio = first_video.fps, first_video.audio
    ctx = kwargs.get("ctx")
    schedules = {} if getattr(spec, "schedules", False) else scheduled(kwargs)

    def call_frame(i: int) -> dict[str, Any]:
        kw = at_frame(kwargs, schedules, i)
        for name, v in videos.items():
            frame = v.frame(i)
            kw[name] = frame[..., 0] if port_kinds[name] == "Mask" else frame
        out = call(kw)
        for p in spec.outputs:
            val = out.get(p.name)
            if p.kind in _FRAME_KINDS and isinstance(val, np.ndarray) and val.shape[0] != 1:
                raise ValueError(f"{spec.title} made {val.shape[0]} images from one video frame; "
                                 "use Video to Images to work on the frames as a batch")
        return out

    frame_outputs = [p for p in spec.outputs if p.kind in _FRAME_KINDS]
    if spec.output or spec.io or not frame_outputs:
        results = []
        for i in range(length):
            if cancel.is_set():
                raise Cancelled("cancelled")
            results.append(call_frame(i))
            if ctx is not None:
                ctx.progress((i + 1) / max(length, 1), text=f"frame {i + 1}/{length}")
        joined = {p.name: _join(p.kind, [r.get(p.name) for r in results], fps) for p in spec.outputs}
        for v in joined.values():
            if isinstance(v, Video):
                v.audio = audio
        return joined

    lock = threading.Lock()
    memo: dict[int, dict[str, Any]] = {}

    def outputs_at(i: int) -> dict[str, Any]:
        with lock:
            if i in memo:
                return memo[i]
        out = call_frame(i)
        with lock:
            memo.clear()  # consumers pull frames in order: one frame of memory is enough
            memo[i] = out
        return out

    first = outputs_at(0) if length else {}
    result: dict[str, Any] = {}
    for p in spec.outputs:
        val = first.get(p.name)
        if p.kind in _FRAME_KINDS and isinstance(val, np.ndarray):
            h, w = val.shape[1:3]
            channels = val.shape[3] if val.ndim == 4 else 1
            result[p.name] = Video(length, fps, (w, h), lambda i, name=p.name: _as_frame(outputs_at(i)[name]),
                                   channels, audio=audio)
        else:
            result[p.name] = val
    return result


def _as_frame(value: np.ndarray) -> np.ndarray:
    """Video frames are (1, H, W, C); a Mask frame (1, H, W) travels as one channel."""
    return value[..., None] if value.ndim == 3 else value


def _join(kind: str, values: list[Any], fps: float) -> Any:
    """One value from per-frame results: frames become a Video, text is joined line by line."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if kind in _FRAME_KINDS and all(isinstance(v, np.ndarray) for v in present):
        return Video.from_batch(np.concatenate([_as_frame(v) for v in present]), fps)
    if kind == "str":
        return "\n".join(str(v) for v in present)
    return present[-1]


class FrameCache:
    """Frames pulled from a Video, kept while they may be read again, thread-safe.

    At most `capacity` frames stay (least recently used out), and `keep_from(i)` drops every
    frame before `i`: a node declared with a wide window (Deflicker allows 129 frames) but asked
    for five holds five, not 129.
    """

    def __init__(self, video: Video, capacity: int) -> None:
        self.video = video
        self.capacity = max(1, capacity)
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.lowest_read: int | None = None  # the smallest index read since the last keep_from

    def __call__(self, i: int) -> np.ndarray:
        with self._lock:
            self.lowest_read = i if self.lowest_read is None else min(self.lowest_read, i)
            hit = self._frames.get(i)
            if hit is not None:
                self._frames.move_to_end(i)
                return hit
        frame = self.video.frame(i)
        with self._lock:
            self._frames[i] = frame
            while len(self._frames) > self.capacity:
                self._frames.popitem(last=False)
        return frame

    def keep_from(self, i: int) -> None:
        """Forget the frames before `i` (a forward pass will not read them again)."""
        with self._lock:
            for k in [k for k in self._frames if k < i]:
                del self._frames[k]
            self.lowest_read = None

    def __len__(self) -> int:
        return len(self._frames)


def map_windowed(call: Call, spec: Any, kwargs: dict[str, Any], cancel: threading.Event) -> dict[str, Any]:
    """A windowed node's outputs as lazy Videos: frame t computed from a FrameWindow per input."""
    window = spec.window
    videos: dict[str, Video] = {}
    for name in spec.window_ports:
        v = kwargs.get(name)
        if v is None:
            continue
        if not isinstance(v, Video):
            raise TypeError(f"'{name}' needs a video or an image batch, got {type(v).__name__}")
        videos[name] = v
    if not videos:
        raise ValueError(f"{spec.title} needs a clip on '{spec.window_ports[0]}'")
    main = videos[spec.window_ports[0]] if spec.window_ports[0] in videos else next(iter(videos.values()))
    length = min(len(v) for v in videos.values())
    if length == 0:
        raise ValueError(f"{spec.title}: the clip has no frames")
    caches = {name: FrameCache(v, window.before + window.after + 2) for name, v in videos.items()}
    schedules = {} if getattr(spec, "schedules", False) else scheduled(kwargs)
    first_out = spec.outputs[0].name
    lock = threading.RLock()
    made: OrderedDict[int, dict[str, Any]] = OrderedDict()  # recent outputs (and t-1 for `previous`)
    keep = 2

    def compute(i: int, previous: np.ndarray | None) -> dict[str, Any]:
        if cancel.is_set():
            raise Cancelled("cancelled")
        kw = at_frame(kwargs, schedules, i)
        for name, cache in caches.items():
            kw[name] = FrameWindow(i, length, videos[name].fps, cache, window, previous)
        out = call(kw)
        for cache in caches.values():
            # Frame i + 1 of a forward pass reads from one past frame i's lowest read on (frame 0
            # stays while borders clamp to it).
            low = cache.lowest_read
            if low is not None:
                cache.keep_from(low + 1 if low > 0 else 0)
        for p in spec.outputs:
            val = out.get(p.name)
            if isinstance(val, np.ndarray) and (val.ndim not in (3, 4) or val.shape[0] != 1):
                raise ValueError(f"{spec.title} made frames of shape {val.shape} for frame {i}; a windowed "
                                 "node returns one (1, H, W, C) image or (1, H, W) mask per call")
        return out

    def outputs_at(i: int) -> dict[str, Any]:
        with lock:
            if i in made:
                made.move_to_end(i)
                return made[i]
            if not window.previous:
                out = compute(i, None)
            else:
                # A recursive filter: frame i needs frame i-1's output, so run forward from the last
                # frame made before i (or from the start) instead of recursing.
                start = max((k for k in made if k < i), default=-1)
                prev = made[start][first_out] if start >= 0 else None
                for k in range(start + 1, i + 1):
                    out = compute(k, prev)
                    prev = out[first_out]
                    made[k] = out
                    while len(made) > keep:
                        made.popitem(last=False)
                return out
            made[i] = out
            while len(made) > keep:
                made.popitem(last=False)
            return out

    first = outputs_at(0)
    result: dict[str, Any] = {}
    for p in spec.outputs:
        val = first.get(p.name)
        if not isinstance(val, np.ndarray):
            raise TypeError(f"{spec.title} returned {type(val).__name__} for '{p.name}', not a frame")
        frame = _as_frame(val)
        h, w, c = frame.shape[1:4]
        result[p.name] = Video(length, main.fps, (w, h),
                               lambda i, name=p.name: _as_frame(outputs_at(i)[name]), c, audio=main.audio)
    return result
