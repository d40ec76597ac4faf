"""The nodes that stand in for a split run's joined result in its finishing graph (run here, once),
and the registry that has them. The items live in part files written as shards finish
(`PartStore`), read lazily, so a long clip is never all in memory."""

from __future__ import annotations

import pathlib
import threading
from typing import Any

import numpy as np

from nodes.registry import Registry, node
from nodes.types import Image, Video

#: key -> (PartStore, cut index): what a joined node of a running finish graph reads.
_SOURCES: dict[str, tuple[Any, int]] = {}
_LOCK = threading.Lock()
_REGISTRY: Registry | None = None


def publish(key: str, store: Any, cut: int) -> None:
    with _LOCK:
        _SOURCES[key] = (store, cut)


def withdraw(key: str) -> None:
    with _LOCK:
        _SOURCES.pop(key, None)


def _source(key: str) -> tuple[Any, int]:
    with _LOCK:
        if key not in _SOURCES:
            raise ValueError(f"no joined result '{key}' here (a pool's finishing step runs in the process "
                             "that split it)")
        return _SOURCES[key]


def finish_registry() -> Registry:
    """The built-in nodes plus the two joined-result nodes."""
    global _REGISTRY
    with _LOCK:
        if _REGISTRY is None:
            reg = Registry()

            @node("imagebash.pool.joined", registry=reg, category="pool", cacheable=False)
            def joined(key: str = "") -> Image:
                """The joined images of a split run (internal to the engine pool)."""
                store, cut = _source(key)
                return store.batch(cut)

            @node("imagebash.pool.joined_video", registry=reg, category="pool", cacheable=False)
            def joined_video(key: str = "") -> Video:
                """The joined frames of a split run, as a lazy clip (internal to the engine pool)."""
                store, cut = _source(key)
                return store.video(cut)

            _REGISTRY = reg
        return _REGISTRY


def as_part(a: np.ndarray, dtype: str = "float32") -> np.ndarray:
    """A shard's array as a part keeps it: uint8 (0..255, rounded) for 8-bit parts."""
    a = np.asarray(a)
    if dtype == "uint8" and a.dtype != np.uint8:
        return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return a


def write_part(path: pathlib.Path, a: np.ndarray, dtype: str = "float32") -> pathlib.Path:
    """`a` as a .npy file at `path` (written beside it, then renamed: never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npy")
    np.save(tmp, as_part(a, dtype), allow_pickle=False)
    tmp.replace(path)
    return path


class PartStore:
    """Shard results as files `DIR/part_<cut>_<shard>.npy`, each accepted once; joined in order."""

    def __init__(self, folder: pathlib.Path, shards: list[Any], cuts: int, fps: float = 24.0,
                 dtype: str = "float32", audio: Any = None) -> None:
        self.folder = pathlib.Path(folder)
        self.shards = sorted(shards, key=lambda s: s.lo)
        self.cuts = cuts
        self.fps = fps
        self.dtype = dtype
        self.audio = audio  # the sound of the whole range (frames mode), or None
        self.done: dict[int, str] = {}  # shard index -> the engine whose result was accepted
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int], np.ndarray] | None = None

    def path(self, cut: int, index: int) -> pathlib.Path:
        return self.folder / f"part_{cut}_{index:05d}.npy"

    @property
    def incoming(self) -> pathlib.Path:
        """Where a worker on this machine writes a shard's part files for `accept` to adopt."""
        return self.folder / "incoming"

    def accept(self, index: int, arrays: list[Any], engine: str) -> bool:
        """Keep a shard's result (arrays, or part files a worker wrote in `incoming` in this
        store's dtype) unless one was kept already (then False: it is dropped)."""
        with self._lock:
            if index in self.done:
                for a in arrays:
                    if isinstance(a, pathlib.Path):
                        a.unlink(missing_ok=True)
                return False
            self.folder.mkdir(parents=True, exist_ok=True)
            for cut, a in enumerate(arrays):
                if isinstance(a, pathlib.Path):
                    a.replace(self.path(cut, index))
                else:
                    write_part(self.path(cut, index), a, self.dtype)
            self.done[index] = engine
            return True

    @property
    def complete(self) -> bool:
        return all(s.index in self.done for s in self.shards)

    def _part(self, cut: int, index: int) -> np.ndarray:
        with self._lock:
            if self._cache is not None and self._cache[0] == (cut, index):
                return self._cache[1]
        a = np.load(self.path(cut, index), mmap_mode="r")
        with self._lock:
            self._cache = ((cut, index), a)
        return a

    @staticmethod
    def _float(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else np.asarray(a, dtype=np.float32)

    def batch(self, cut: int) -> np.ndarray:
        return self._float(np.concatenate([np.asarray(self._part(cut, s.index)) for s in self.shards
                                           if s.index in self.done]))

    def frame(self, cut: int, i: int) -> np.ndarray:
        for s in self.shards:
            if s.lo <= i < s.hi:
                a = self._part(cut, s.index)
                return self._float(np.asarray(a[i - s.lo:i - s.lo + 1]))
        raise IndexError(i)

    def video(self, cut: int) -> Video:
        kept = [s for s in self.shards if s.index in self.done]
        length = sum(s.size for s in kept)
        first = self._part(cut, kept[0].index)
        h, w = first.shape[1:3]
        c = first.shape[3] if first.ndim == 4 else 1
        order = [i for s in kept for i in range(s.lo, s.hi)]
        return Video(length, self.fps, (w, h), lambda i: self.frame(cut, order[i]), c, audio=self.sound(kept))

    def sound(self, kept: list[Any]) -> Any:
        """The source's sound under the kept frames: the whole range's, trimmed to those frames (a
        run that lost shards keeps the sound of the stretches it has, in order)."""
        if self.audio is None or not kept:
            return None
        track = None
        lo = hi = None
        for s in [*kept, None]:
            if s is not None and hi == s.lo:
                hi = s.hi
                continue
            if lo is not None:
                piece = self.audio.trim(lo / self.fps, (hi - lo) / self.fps)
                track = piece if track is None else track + piece
            if s is not None:
                lo, hi = s.lo, s.hi
        return track
