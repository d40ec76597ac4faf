"""The engine as a user meets it: results, caching, failures, modes, cancel, events, concurrency."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from app.engine import Engine, events
from app.graph.model import Graph, Link, NodeInstance, NodeMode
from app.graph.validate import ValidationError
from tests.engine.conftest import CALLS, SINK, chain


def test_chain_computes_and_rerun_hits_cache(reg):
    g = chain(20)
    eng = Engine(reg)
    r = eng.run(g)
    assert r.output("n19") == pytest.approx(20.0)
    calls = CALLS["math"]
    r2 = eng.run(g)
    assert r2.output("n19") == pytest.approx(20.0)
    assert CALLS["math"] == calls  # nothing recomputed
    assert set(r2.status.values()) == {"cached"}


def test_param_change_recomputes_only_descendants(reg):
    g = chain(10)
    eng = Engine(reg)
    eng.run(g)
    before = CALLS["math"]
    g.set_param("n7", "y", 5.0)
    r = eng.run(g)
    assert CALLS["math"] - before == 3  # n7, n8, n9
    assert [r.status[f"n{i}"] for i in range(7)] == ["cached"] * 7
    assert r.output("n9") == pytest.approx(10 + 4)


def test_deep_chain_has_no_recursion_limit(reg):
    g = chain(5000)
    r = Engine(reg).run(g)
    assert r.output("n4999") == pytest.approx(5000.0)


def test_failure_fails_only_descendants(reg):
    g = Graph()
    g.add_node(NodeInstance("c", "test.const"))
    g.add_node(NodeInstance("bad", "test.boom"))
    g.add_node(NodeInstance("after_bad", "test.math"))
    g.add_node(NodeInstance("good", "test.math"))
    g.add_node(NodeInstance("s_bad", "test.sink"))
    g.add_node(NodeInstance("s_good", "test.sink"))
    for ln in [("c", "float", "bad", "x"), ("bad", "float", "after_bad", "x"), ("after_bad", "float", "s_bad", "x"),
               ("c", "float", "good", "x"), ("good", "float", "s_good", "x")]:
        g.connect(Link(*ln))
    seen = []
    eng = Engine(reg)
    eng.events.subscribe(seen.append)
    r = eng.run(g)
    assert SINK == {"s_good": 2.0}
    assert r.status["bad"] == "failed" and "boom at 1.0" in r.errors["bad"]
    assert r.status["after_bad"] == "failed" and "upstream node 'bad' failed" in r.errors["after_bad"]
    assert r.status["s_bad"] == "failed"
    failed = [e for e in seen if isinstance(e, events.NodeFailed) and e.node_id == "bad"]
    assert failed and "ValueError" in failed[0].traceback


def test_events_for_every_node(reg):
    g = chain(3)
    g.add_node(NodeInstance("s", "test.sink"))
    g.connect(Link("n2", "float", "s", "x"))
    eng = Engine(reg)
    seen = []
    eng.events.subscribe(seen.append)
    eng.run(g)
    started = [e.node_id for e in seen if isinstance(e, events.NodeStarted)]
    finished = [e for e in seen if isinstance(e, events.NodeFinished)]
    assert started == ["n0", "n1", "n2", "s"]
    assert all(not e.cached and e.duration >= 0 for e in finished)
    assert isinstance(seen[-1], events.RunFinished)
    seen.clear()
    eng.run(g)
    assert all(e.cached for e in seen if isinstance(e, events.NodeFinished) and e.node_id != "s")


def test_listener_errors_do_not_break_run(reg):
    eng = Engine(reg)
    eng.events.subscribe(lambda e: 1 / 0)
    assert eng.run(chain(3)).output("n2") == pytest.approx(3.0)


def test_muted_node_skips_what_depends_on_it(reg):
    g = chain(4)
    g.add_node(NodeInstance("s", "test.sink"))
    g.connect(Link("n3", "float", "s", "x"))
    g.add_node(NodeInstance("other", "test.const", {"value": 7}))
    g.add_node(NodeInstance("s2", "test.sink"))
    g.connect(Link("other", "float", "s2", "x"))
    g.set_mode("n1", NodeMode.MUTED)
    r = Engine(reg).run(g)
    assert r.status["n1"] == "muted"
    assert r.status["n3"] == "skipped" and r.status["s"] == "skipped"
    assert SINK == {"s2": 7.0}


def test_muted_optional_input_becomes_none(reg):
    g = Graph()
    g.add_node(NodeInstance("c", "test.const", {"value": 3}, mode=NodeMode.MUTED))
    g.add_node(NodeInstance("o", "test.optional"))
    g.connect(Link("c", "float", "o", "x"))
    assert Engine(reg).run(g, ["o"]).output("o") == -1.0


def test_bypassed_node_passes_first_input_through(reg):
    g = chain(3)
    g.set_param("n1", "y", 100.0)
    g.set_mode("n1", NodeMode.BYPASSED)
    r = Engine(reg).run(g)
    assert r.output("n2") == pytest.approx(2.0)  # n0=1 passes n1 untouched, n2 adds 1


def test_multiple_outputs_and_legacy_id(reg):
    g = Graph()
    g.add_node(NodeInstance("c", "test.const", {"value": 10}))
    g.add_node(NodeInstance("sp", "test.split"))
    g.add_node(NodeInstance("m", "test.old_math", {"op": "mul"}))
    g.connect(Link("c", "float", "sp", "x"))
    g.connect(Link("sp", "low", "m", "x"))
    g.connect(Link("sp", "high", "m", "y"))
    r = Engine(reg).run(g, ["m"])
    assert r.output("m") == pytest.approx(99.0)
    assert g.nodes["m"].type == "test.old_math"  # running never changes the graph it is given
    from app.graph.validate import upgrade

    upgraded, notes = upgrade(g, reg)  # loading upgrades, once, and says so
    assert upgraded.nodes["m"].type == "test.math" and g.nodes["m"].type == "test.old_math"
    assert notes == ["node 'm': test.old_math is now test.math"]


def test_file_content_invalidates_cache(reg, tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("one")
    g = Graph()
    g.add_node(NodeInstance("r", "test.read", {"path": str(f)}))
    eng = Engine(reg)
    assert eng.run(g).output("r") == "one"
    assert eng.run(g).status["r"] == "cached"
    f.write_text("two!")
    r = eng.run(g)
    assert r.status["r"] == "done" and r.output("r") == "two!"


def test_missing_file_fails_node_with_path(reg, tmp_path):
    g = Graph()
    missing = tmp_path / "nope.txt"
    g.add_node(NodeInstance("r", "test.read", {"path": str(missing)}))
    r = Engine(reg).run(g)
    assert r.status["r"] == "failed" and str(missing) in r.errors["r"]


def test_io_nodes_overlap(reg):
    g = Graph()
    for i in range(4):
        g.add_node(NodeInstance(f"s{i}", "test.sleep", {"seconds": 0.3}))
        g.add_node(NodeInstance(f"k{i}", "test.sink"))
        g.connect(Link(f"s{i}", "float", f"k{i}", "x"))
    t0 = time.perf_counter()
    Engine(reg).run(g)
    assert len(SINK) == 4
    elapsed = time.perf_counter() - t0
    assert elapsed < 4 * 0.3  # overlapped: strictly less than running them one after another


def test_gpu_nodes_serialise(reg):
    g = Graph()
    spans = []
    eng = Engine(reg)
    lock = threading.Lock()
    starts: dict[str, float] = {}

    def listen(e):
        with lock:
            if isinstance(e, events.NodeStarted):
                starts[e.node_id] = time.perf_counter()
            elif isinstance(e, events.NodeFinished) and e.node_id in starts:
                spans.append((starts[e.node_id], time.perf_counter()))

    eng.events.subscribe(listen)
    for i in range(3):
        g.add_node(NodeInstance(f"g{i}", "test.gpu", {"seconds": 0.1}))
        g.add_node(NodeInstance(f"k{i}", "test.sink"))
        g.connect(Link(f"g{i}", "float", f"k{i}", "x"))
    eng.run(g)
    gpu_spans = sorted(spans)[:3]
    # With the device lock held, no two gpu nodes' function bodies overlap: total >= 3 x 0.1 s.
    assert gpu_spans[-1][1] - gpu_spans[0][0] >= 0.3


def test_cancel_stops_image_node_promptly(reg):
    g = Graph()
    g.add_node(NodeInstance("n", "test.noise", {"size": 16}))
    g.add_node(NodeInstance("slow", "test.slow_image", {"seconds": 30}))
    g.connect(Link("n", "image", "slow", "image"))
    eng = Engine(reg)
    handle = eng.start(g, ["slow"])
    time.sleep(0.3)
    t0 = time.perf_counter()
    handle.cancel()
    result = handle.wait(5)
    assert result is not None and result.cancelled
    assert time.perf_counter() - t0 < 1.0
    assert result.status["slow"] == "cancelled"


def test_same_seed_same_pixels(reg):
    g = Graph()
    g.add_node(NodeInstance("n", "test.noise", {"seed": 42}))
    a = Engine(reg).run(g).output("n")
    b = Engine(reg).run(g).output("n")
    g.set_param("n", "seed", 43)
    c = Engine(reg).run(g).output("n")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_cache_budget_evicts_least_recently_used(reg):
    from app.engine.executor import EngineSettings

    eng = Engine(reg, EngineSettings(cache_budget_bytes=3 * 64 * 64 * 3 * 4))
    for seed in range(5):
        g = Graph()
        g.add_node(NodeInstance("n", "test.noise", {"seed": seed}))
        eng.run(g)
    assert eng.cache.nbytes <= eng.cache.budget_bytes
    assert len(eng.cache) == 3
    g = Graph()
    g.add_node(NodeInstance("n", "test.noise", {"seed": 0}))  # evicted first
    assert eng.run(g).status["n"] == "done"


def test_validation_errors_name_node_and_port(reg):
    g = Graph()
    g.add_node(NodeInstance("c", "test.const", {"value": 1000}))
    g.add_node(NodeInstance("m", "test.math"))
    g.add_node(NodeInstance("u", "test.nope"))
    with pytest.raises(ValidationError) as err:
        Engine(reg).run(g, ["c", "m", "u"])
    text = [str(p) for p in err.value.problems]
    assert "node 'c' port 'value': 'value' = 1000.0 is out of range [-100, 100]" in text
    assert "node 'm' port 'x': required input 'x' needs a value or a link" in text
    assert any("unknown node type 'test.nope'" in t for t in text)


def test_cycle_is_reported_with_its_nodes(reg):
    g = chain(3)
    g.connect(Link("n2", "float", "n1", "y"))
    with pytest.raises(ValidationError, match=r"cycle: n1 -> n2 -> n1|cycle: n2 -> n1 -> n2"):
        Engine(reg).run(g)


def test_only_needed_nodes_run(reg):
    g = chain(3)
    g.add_node(NodeInstance("unrelated", "test.boom"))
    g.add_node(NodeInstance("c", "test.const"))
    g.connect(Link("c", "float", "unrelated", "x"))
    r = Engine(reg).run(g, ["n2"])
    assert "unrelated" not in r.status and r.ok


def test_image_node_fed_a_video_maps_lazily(reg):
    from nodes.types import Video

    g = Graph()
    g.add_node(NodeInstance("clip", "test.clip", {"frames": 50}))
    g.add_node(NodeInstance("half", "test.scale", {"factor": 0.5}))
    g.connect(Link("clip", "video", "half", "image"))
    out = Engine(reg).run(g, ["half"]).output("half")
    assert isinstance(out, Video) and len(out) == 50
    assert CALLS["clip_frame"] == 1  # only the first frame, to learn the size
    assert out.frame(20)[0, 0, 0, 0] == pytest.approx(20 / 50 * 0.5)
    assert CALLS["clip_frame"] == 2 and CALLS["scale"] == 2


def test_image_batch_plays_as_video(reg):
    g = Graph()
    g.add_node(NodeInstance("n", "test.noise", {"size": 8}))
    g.add_node(NodeInstance("f", "test.frames"))
    g.connect(Link("n", "image", "f", "video"))
    assert Engine(reg).run(g, ["f"]).output("f") == 1


def test_io_node_over_video_calls_each_frame_once(reg):
    g = Graph()
    g.add_node(NodeInstance("clip", "test.clip", {"frames": 4}))
    g.add_node(NodeInstance("online", "test.online_invert"))
    g.add_node(NodeInstance("a", "test.scale"))
    g.add_node(NodeInstance("b", "test.scale", {"factor": 2.0}))
    g.connect(Link("clip", "video", "online", "image"))
    g.connect(Link("online", "image", "a", "image"))
    g.connect(Link("online", "image", "b", "image"))
    r = Engine(reg).run(g, ["a", "b"])
    for nid in ("a", "b"):
        video = r.output(nid)
        _ = [video.frame(i) for i in range(len(video))]
    assert CALLS["online"] == 4
    assert r.output("a").frame(3)[0, 0, 0, 0] == pytest.approx((1 - 3 / 4) * 0.5)


def test_mask_outputs_over_video_stay_per_frame(reg):
    from nodes.types import Video

    g = Graph()
    g.add_node(NodeInstance("clip", "test.clip", {"frames": 3}))
    g.add_node(NodeInstance("luma", "test.luma"))
    g.connect(Link("clip", "video", "luma", "image"))
    out = Engine(reg).run(g, ["luma"]).output("luma")
    assert isinstance(out, Video) and len(out) == 3
    assert out.frame(2)[0, 0, 0, 0] == pytest.approx(2 / 3)


def test_node_making_several_images_per_frame_fails_clearly(reg):
    g = Graph()
    g.add_node(NodeInstance("clip", "test.clip", {"frames": 3}))
    g.add_node(NodeInstance("double", "test.double"))
    g.connect(Link("clip", "video", "double", "image"))
    r = Engine(reg).run(g, ["double"])
    assert "made 2 images from one video frame" in r.errors["double"]
