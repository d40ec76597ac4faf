"""Workflows and engines for the pool tests: a seed sweep, a batch, a clip with a windowed node."""

from __future__ import annotations

import pathlib
import threading
import time

import numpy as np

from app.graph.model import Graph, Link, NodeInstance
from nodes.registry import Registry, node
from nodes.types import Frames, Image, Video, Window


def registry() -> Registry:
    """The built-in nodes plus a temporal box filter, a recursive one and a batch-wide one."""
    reg = Registry()

    @node("test.box", registry=reg, category="test", window=Window(before=2, after=1))
    def box(video: Frames) -> Image:
        """Mean of t-2 .. t+1."""
        return (video[-2] + video[-1] + video[0] + video[1]) / 4.0

    @node("test.ema", registry=reg, category="test", window=Window(previous=True))
    def ema(video: Frames) -> Image:
        """A recursive filter."""
        return video[0] if video.previous is None else 0.5 * (video.previous + video[0])

    @node("test.normalize", registry=reg, category="test", device="gpu")
    def normalize(image: Image) -> Image:
        """Needs the whole batch (divides by its max), on the GPU."""
        return image / max(float(image.max()), 1e-6)

    return reg


def sweep(base: int = 10, count: int = 6, seeds: str = "", save: bool = True, size: int = 48) -> Graph:
    g = Graph()
    g.add_node(NodeInstance("s", "imagebash.seeds", params={"base": base, "count": count, "seeds": seeds}))
    g.add_node(NodeInstance("n", "imagebash.seeds.noise", params={"width": size, "height": size}))
    g.add_node(NodeInstance("b", "imagebash.image.blur", params={"radius": 2}))
    g.connect(Link("s", "seed", "n", "seed"))
    g.connect(Link("s", "count", "n", "batch_size"))
    g.connect(Link("n", "image", "b", "image"))
    if save:
        g.add_node(NodeInstance("save", "imagebash.image.save", params={}))
        g.connect(Link("b", "image", "save", "image"))
    return g


def batch(count: int = 5, seed: int = 3) -> Graph:
    g = Graph()
    g.add_node(NodeInstance("n", "imagebash.seeds.noise", params={"seed": seed, "batch_size": count,
                                                                  "width": 32, "height": 32}))
    g.add_node(NodeInstance("b", "imagebash.image.blur", params={"radius": 1}))
    g.add_node(NodeInstance("grid", "imagebash.image.grid", params={}))
    g.connect(Link("n", "image", "b", "image"))
    g.connect(Link("b", "image", "grid", "image"))
    return g


def make_clip(path: pathlib.Path, frames: int = 24, size: int = 32) -> pathlib.Path:
    """A lossless clip whose frames all differ (FFV1 in .mkv)."""
    from nodes.video.codecs import VideoCodec
    from nodes.video.writer import write_video

    rng = np.random.default_rng(7)
    batch = rng.random((frames, size, size, 3), dtype=np.float32)
    write_video(Video.from_batch(batch, 12.0), path, VideoCodec.FFV1)
    return path


def clip_graph(path: pathlib.Path, windowed: str = "test.box", save: bool = False, start: int = 0,
               max_frames: int = 0) -> Graph:
    g = Graph()
    g.add_node(NodeInstance("v", "imagebash.video.load", params={"path": str(path), "start": start,
                                                                 "max_frames": max_frames}))
    g.add_node(NodeInstance("b", "imagebash.image.blur", params={"radius": 1}))
    g.add_node(NodeInstance("w", windowed, params={}))
    g.connect(Link("v", "video", "b", "image"))
    g.connect(Link("b", "image", "w", "video"))
    if save:
        g.add_node(NodeInstance("save", "imagebash.video.save", params={"codec": "ffv1"}))
        g.connect(Link("w", "video", "save", "video"))
    return g


class Flaky:
    """An EngineClient wrapper whose connection fails after `ok` runs (a box that dropped out),
    each submit `delay` seconds late (a slower box)."""

    def __init__(self, engine, ok: int, name: str = "flaky", delay: float = 0.0) -> None:
        self.inner, self.ok, self.name, self.runs, self.delay = engine, ok, name, 0, delay
        self.lock = threading.Lock()

    def submit(self, graph, targets=None, output_dir=None, run_id=None):
        with self.lock:
            self.runs += 1
            if self.runs > self.ok:
                raise ConnectionError(f"the engine {self.name} cannot be reached")
        if self.delay:
            time.sleep(self.delay)
        return self.inner.submit(graph, targets, output_dir, run_id)

    def __getattr__(self, name):
        return getattr(self.inner, name)
