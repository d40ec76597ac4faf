"""Windowed (temporal) nodes through the real engine: neighbour frames, borders, recursion, memory."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pytest

from app.engine import Engine
from app.graph.model import Graph, Link, NodeInstance
from nodes.registry import NodeDeclarationError, Registry, node
from nodes.types import Frames, FrameWindow, Image, Range, Video, Window

PULLS: list[int] = []


def _clip(n: int) -> Video:
    """A clip whose frame i is filled with the value i (and counts each decode)."""

    def get(i: int) -> np.ndarray:
        PULLS.append(i)
        return np.full((1, 4, 4, 3), float(i), np.float32)

    return Video(n, 10.0, (4, 4), get)


def make_registry() -> Registry:
    reg = Registry(load_packs=False)

    @node("test.clip", registry=reg, category="test")
    def clip(frames: Annotated[int, Range(1, 100_000)] = 10) -> Video:
        """A counting clip."""
        return _clip(frames)

    @node("test.box", registry=reg, category="test", window=Window(before=1, after=1))
    def box(video: Frames) -> Image:
        """Mean of t-1, t, t+1 (clamped at the borders)."""
        assert isinstance(video, FrameWindow)
        return (video[-1] + video[0] + video[1]) / 3.0

    @node("test.ema", registry=reg, category="test", window=Window(previous=True))
    def ema(video: Frames, alpha: float = 0.5) -> Image:
        """out_t = alpha * out_{t-1} + (1 - alpha) * frame_t."""
        if video.previous is None:
            return video[0]
        return alpha * video.previous + (1 - alpha) * video[0]

    @node("test.wide", registry=reg, category="test", window=Window(before=64, after=64))
    def wide(video: Frames, size: int = 3) -> Image:
        """Declares a wide window, reads `size` frames of it (as Deflicker does)."""
        half = size // 2
        return sum(video[k] for k in range(-half, half + 1)) / (2 * half + 1)

    @node("test.peek", registry=reg, category="test", window=Window(after=1))
    def peek(video: Frames) -> Image:
        """Reads outside its declared window (a bug the engine reports)."""
        return video[-1]

    return reg


def _graph(kind: str, frames: int, **params) -> Graph:
    g = Graph()
    g.add_node(NodeInstance("c", "test.clip", params={"frames": frames}))
    g.add_node(NodeInstance("w", kind, params=params))
    g.connect(Link("c", "video", "w", "video"))
    return g


@pytest.fixture
def reg() -> Registry:
    return make_registry()


def test_window_node_is_a_video_on_the_wire(reg):
    spec = reg.get("test.box")
    assert spec.window == Window(1, 1) and spec.window_ports == ("video",)
    assert [(p.name, p.kind) for p in spec.outputs] == [("video", "Video")]
    assert [(p.name, p.kind) for p in spec.inputs] == [("video", "Video")]


def test_neighbours_and_clamped_borders(reg):
    out = Engine(reg).run(_graph("test.box", 6), targets=["w"]).output("w")
    assert isinstance(out, Video) and len(out) == 6
    got = [float(out.frame(i)[0, 0, 0, 0]) for i in range(6)]
    assert got == pytest.approx([(0 + 0 + 1) / 3, 1, 2, 3, 4, (4 + 5 + 5) / 3])


def test_out_of_order_pulls_match_in_order(reg):
    out = Engine(reg).run(_graph("test.box", 12), targets=["w"]).output("w")
    jumbled = {i: out.frame(i).copy() for i in (7, 2, 11, 0, 7, 5)}
    for i, f in jumbled.items():
        assert np.array_equal(f, out.frame(i))
        assert float(f[0, 0, 0, 0]) == pytest.approx((max(i - 1, 0) + i + min(i + 1, 11)) / 3)


def test_recursive_filter_runs_forward_and_is_seamless(reg):
    out = Engine(reg).run(_graph("test.ema", 8, alpha=0.5), targets=["w"]).output("w")
    expected, prev = [], None
    for i in range(8):
        prev = float(i) if prev is None else 0.5 * prev + 0.5 * i
        expected.append(prev)
    # Jumping straight to frame 7 computes 1..7 from what was made, with the same result.
    assert float(out.frame(7)[0, 0, 0, 0]) == pytest.approx(expected[7])
    assert [float(out.frame(i)[0, 0, 0, 0]) for i in range(8)] == pytest.approx(expected)


def test_long_clip_reads_each_frame_about_once(reg):
    PULLS.clear()
    out = Engine(reg).run(_graph("test.box", 5000), targets=["w"]).output("w")
    for i in range(len(out)):
        out.frame(i)
    # a bounded cache of the window: every source frame decoded once, none held beyond it
    assert len(PULLS) <= 5000 + 3
    assert sorted(set(PULLS)) == list(range(5000))


def test_a_wide_window_read_narrowly_holds_few_frames(reg, monkeypatch):
    from app.engine import video_map

    held = []
    real = video_map.FrameCache.keep_from

    def spy(self, i):
        real(self, i)
        held.append(len(self))

    monkeypatch.setattr(video_map.FrameCache, "keep_from", spy)
    PULLS.clear()
    out = Engine(reg).run(_graph("test.wide", 400, size=5), targets=["w"]).output("w")
    frames = [float(out.frame(i)[0, 0, 0, 0]) for i in range(400)]
    assert frames[200] == pytest.approx(200.0)
    assert max(held) <= 5  # the five frames read, not the 130 the declaration allows
    assert len(PULLS) <= 400 + 5


def test_reading_outside_the_window_is_an_error(reg):
    r = Engine(reg).run(_graph("test.peek", 4), targets=["w"])
    assert r.status["w"] == "failed"
    assert "outside the declared window" in r.errors["w"]


def test_declaration_errors():
    reg = Registry(load_packs=False)
    with pytest.raises(NodeDeclarationError, match="needs a `Frames` input"):
        @node("test.nowin", registry=reg, window=Window(1, 1))
        def nowin(image: Image) -> Image:
            """No Frames input."""
            return image
    with pytest.raises(NodeDeclarationError, match="need @node"):
        @node("test.nodecl", registry=reg)
        def nodecl(video: Frames) -> Image:
            """Frames without a window."""
            return video[0]
    with pytest.raises(NodeDeclarationError, match="Image/Mask outputs only"):
        @node("test.num", registry=reg, window=Window(1, 1))
        def num(video: Frames) -> float:
            """A number is not a frame."""
            return 0.0
