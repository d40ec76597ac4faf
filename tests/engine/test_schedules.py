"""Keyframe schedules: the syntax, the interpolations, and per-frame values through the engine."""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
import pytest

from app.engine import Engine, events
from app.graph.model import Graph, Link, NodeInstance
from app.graph.validate import ValidationError
from nodes.registry import Registry, node
from nodes.schedule import Schedule, ScheduleError, TravelPrompt, split_keyframes
from nodes.types import Image, Range, Video


def test_linear_ease_and_step_between_keyframes():
    text = "0:(1.0), 48:(0.4), 96:(1.0)"
    lin = Schedule.parse(text)
    assert [lin.at(t) for t in (0, 24, 48, 72, 96, 500)] == pytest.approx([1.0, 0.7, 0.4, 0.7, 1.0, 1.0])
    ease = Schedule.parse(text, interp="ease")
    w = 0.5 - 0.5 * math.cos(math.pi * 12 / 48)
    assert ease.at(12) == pytest.approx(1.0 + (0.4 - 1.0) * w)
    assert ease.at(24) == pytest.approx(0.7)  # the middle of an ease is the middle
    step = Schedule.parse(text, interp="step")
    assert [step.at(t) for t in (0, 47, 48, 95, 96)] == pytest.approx([1.0, 1.0, 0.4, 0.4, 1.0])
    assert Schedule.parse("10:(3)").at(0) == 3.0  # held before the first keyframe


def test_expressions_in_t_and_integer_kinds():
    s = Schedule.parse("0:(0.6 + 0.1*sin(2*pi*t/24))")
    assert s.at(6) == pytest.approx(0.7)
    seeds = Schedule.parse("0:(1234 + t)", kind="Seed")
    assert [seeds.at(t) for t in range(3)] == [1234, 1235, 1236]
    ints = Schedule.parse("0:(0), 10:(5)", kind="int")
    assert ints.at(3) == 2 and isinstance(ints.at(3), int)
    # seeds are never blended between keyframes: a seed halfway between two is a third seed
    assert Schedule.parse("0:(10), 10:(20)", kind="Seed").at(5) == 10


def test_prompt_travel_blends():
    s = Schedule.parse('0:(a (red:1.2) cat), 10: "a dog"', kind="str")
    assert split_keyframes('0:(a (red:1.2) cat), 10: "a dog"') == [(0, "a (red:1.2) cat"), (10, "a dog")]
    p = s.at(3)
    assert isinstance(p, TravelPrompt) and str(p) == "a (red:1.2) cat"
    assert [t for t, _ in p.blend] == ["a (red:1.2) cat", "a dog"]
    assert [w for _, w in p.blend] == pytest.approx([0.7, 0.3])
    assert s.at(10).blend == (("a dog", 1.0),)


@pytest.mark.parametrize("text, words", [
    ("0:(1.0), x:(2)", "keyframe 'x' is not a frame number"),
    ("0:(1.0), 24:(0.5", "keyframe 24: '(' is not closed"),
    ("0:(1), 12:(foo*2)", "keyframe 12: unknown name 'foo'"),
    ('0:(__import__("os").system("x"))', "keyframe 0: "),
    ("0:(1), 5:(1/0)", "keyframe 5: '1/0' fails"),
    ("0:(1), 0:(2)", "keyframe 0 is given twice"),
    ("", "no keyframes"),
    ("0:(9**9**9)", "keyframe 0"),
])
def test_bad_schedules_name_the_keyframe(text, words):
    with pytest.raises(ScheduleError) as err:
        Schedule.parse(text)
    assert words in str(err.value) and "\n" not in str(err.value)


def make_registry() -> Registry:
    reg = Registry(load_packs=False)

    @node("test.clip", registry=reg, category="test")
    def clip(frames: int = 5) -> Video:
        """A grey clip."""
        return Video(frames, 12.0, (2, 2), lambda i: np.full((1, 2, 2, 3), 0.5, np.float32))

    @node("test.gain", registry=reg, category="test")
    def gain(image: Image, amount: Annotated[float, Range(0, 4)] = 1.0) -> Image:
        """Multiply."""
        return image * amount

    @node("test.fill", registry=reg, category="test")
    def fill(amount: Annotated[float, Range(0, 4)] = 1.0) -> Image:
        """A one-pixel image of a value (not a per-frame node)."""
        return np.full((1, 1, 1, 3), amount, np.float32)

    return reg


def test_per_frame_values_through_the_engine():
    reg = make_registry()
    g = Graph()
    g.add_node(NodeInstance("c", "test.clip", params={"frames": 5}))
    g.add_node(NodeInstance("g", "test.gain", params={"amount": {"schedule": "0:(0), 4:(2)", "interp": "linear"}}))
    g.connect(Link("c", "video", "g", "image"))
    out = Engine(reg).run(g, targets=["g"]).output("g")
    assert isinstance(out, Video)
    assert [float(out.frame(i)[0, 0, 0, 0]) for i in range(5)] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])


def test_a_schedule_on_a_still_node_takes_frame_zero_and_says_so():
    reg = make_registry()
    g = Graph()
    g.add_node(NodeInstance("f", "test.fill", params={"amount": {"schedule": "0:(0.25), 10:(1)"}}))
    eng = Engine(reg)
    logs = []
    eng.events.subscribe(lambda e: logs.append(e) if isinstance(e, events.NodeLog) else None)
    r = eng.run(g, targets=["f"])
    assert float(r.output("f")[0, 0, 0, 0]) == pytest.approx(0.25)
    assert any(e.node_id == "f" and "takes its value at frame 0" in e.message for e in logs)


def test_schedule_json_round_trip_and_range_check():
    reg = make_registry()
    port = reg.get("test.gain").input("amount")
    sched = port.coerce({"schedule": "0:(1), 8:(3)", "interp": "ease"})
    assert isinstance(sched, Schedule) and port.to_json(sched) == {"schedule": "0:(1), 8:(3)", "interp": "ease"}
    with pytest.raises(ValueError, match="keyframe 8 = 9 is out of range"):
        port.coerce({"schedule": "0:(1), 8:(9)"})


def test_a_bad_schedule_fails_validation_with_one_line():
    reg = make_registry()
    g = Graph()
    g.add_node(NodeInstance("f", "test.fill", params={"amount": {"schedule": "0:(1), 24:(oops)"}}))
    with pytest.raises(ValidationError) as err:
        Engine(reg).run(g, targets=["f"])
    assert "keyframe 24" in str(err.value) and "oops" in str(err.value)
