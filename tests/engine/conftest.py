"""A small registry of test nodes, declared the same way real nodes are."""

from __future__ import annotations

import enum
import pathlib
import threading
import time
from typing import Annotated, NamedTuple

import numpy as np
import pytest

from app.graph.model import Graph, Link, NodeInstance
from nodes.registry import Registry, node
from nodes.types import Context, Image, Mask, Range, Video


class Op(str, enum.Enum):
    ADD = "add"
    MUL = "mul"


class Pair(NamedTuple):
    low: float
    high: float


CALLS: dict[str, int] = {}


def _count(name: str) -> None:
    CALLS[name] = CALLS.get(name, 0) + 1


def make_registry() -> Registry:
    reg = Registry(load_packs=False)  # no built-in packs

    @node("test.const", registry=reg, category="test")
    def const(value: Annotated[float, Range(-100, 100)] = 1.0) -> float:
        """A constant number."""
        _count("const")
        return value

    @node("test.math", registry=reg, category="test", legacy_ids=("test.old_math",))
    def math(x: float, y: float = 1.0, op: Op = Op.ADD) -> float:
        """Add or multiply.

        Args:
            x: the left operand
            y: the right operand
        """
        _count("math")
        return x + y if op is Op.ADD else x * y

    @node("test.split", registry=reg, category="test")
    def split(x: float) -> Pair:
        """Two outputs."""
        return Pair(x - 1, x + 1)

    @node("test.boom", registry=reg, category="test")
    def boom(x: float) -> float:
        """Always fails."""
        raise ValueError(f"boom at {x}")

    @node("test.sleep", registry=reg, category="test", io=True, cacheable=False)
    def sleep(seconds: float = 0.5, x: float = 0.0) -> float:
        """Sleep (io-bound)."""
        time.sleep(seconds)
        return x + 1

    @node("test.gpu", registry=reg, category="test", device="gpu", cacheable=False)
    def gpu(seconds: float = 0.2, x: float = 0.0) -> float:
        """Pretend GPU work: serialised on the device lock."""
        time.sleep(seconds)
        return x

    @node("test.noise", registry=reg, category="test")
    def noise(size: int = 64, seed: int = 0) -> Image:
        """A seeded noise image."""
        _count("noise")
        return np.random.default_rng(seed).random((1, size, size, 3), dtype=np.float32)

    @node("test.scale", registry=reg, category="test")
    def scale(image: Image, factor: float = 0.5, ctx: Context = None) -> Image:
        """Scale pixel values, checking for cancel between images."""
        _count("scale")
        out = []
        for im in image:
            ctx.check_cancelled()
            out.append(im * factor)
        ctx.progress(1.0)
        return np.stack(out)

    @node("test.slow_image", registry=reg, category="test")
    def slow_image(image: Image, seconds: float = 5.0, ctx: Context = None) -> Image:
        """A long image job that checks for cancel every 10 ms."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ctx.check_cancelled()
            time.sleep(0.01)
        return image

    @node("test.clip", registry=reg, category="test")
    def clip(frames: int = 5, size: int = 8) -> Video:
        """A clip whose frame i is filled with i / frames; counts frames pulled."""
        def frame(i: int) -> np.ndarray:
            _count("clip_frame")
            return np.full((1, size, size, 3), i / frames, np.float32)
        return Video(frames, 12.0, (size, size), frame)

    @node("test.frames", registry=reg, category="test")
    def frames(video: Video) -> int:
        """Number of frames of a Video input (an Image batch arrives as a Video)."""
        return len(video)

    @node("test.online_invert", registry=reg, category="test", io=True)
    def online_invert(image: Image) -> Image:
        """Stands in for a paid online call: counts every call."""
        _count("online")
        return 1.0 - image

    @node("test.luma", registry=reg, category="test")
    def luma(image: Image) -> Mask:
        """The mean of the channels as a mask."""
        return image.mean(axis=-1)

    @node("test.double", registry=reg, category="test")
    def double(image: Image) -> Image:
        """Two images for every one given."""
        return np.concatenate([image, image])

    @node("test.read", registry=reg, category="test")
    def read(path: pathlib.Path) -> str:
        """Read a text file."""
        _count("read")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        return path.read_text()

    @node("test.sink", registry=reg, category="test", output=True)
    def sink(x: float, ctx: Context = None) -> None:
        """Record the value it gets."""
        SINK[ctx.node_id] = x

    @node("test.optional", registry=reg, category="test")
    def optional(x: float | None = None) -> float:
        """Uses -1 when nothing is linked."""
        return -1.0 if x is None else x

    return reg


SINK: dict[str, float] = {}
LOCK = threading.Lock()


@pytest.fixture
def reg() -> Registry:
    CALLS.clear()
    SINK.clear()
    return make_registry()


def chain(n: int, first: str = "test.const", step: str = "test.math") -> Graph:
    g = Graph()
    g.add_node(NodeInstance("n0", first))
    for i in range(1, n):
        g.add_node(NodeInstance(f"n{i}", step))
        g.connect(Link(f"n{i - 1}", "float", f"n{i}", "x"))
    return g
