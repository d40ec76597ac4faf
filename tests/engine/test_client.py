"""The engine seen through its client, as the editor and a remote desktop see it: runs followed by
events alone, outputs as references and summaries (never raw values), values fetched by
reference, files as artefacts, and every event plain JSON."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from app.engine import EngineSettings, events
from app.engine.client import LocalEngine, Throttle
from app.engine.store import OutputGone
from app.engine.wire import OutputSummary, decode_png
from app.graph.model import Graph, Link, NodeInstance
from tests.engine.conftest import chain


def _graph(size: int = 300) -> Graph:
    g = Graph()
    g.add_node(NodeInstance("noise", "test.noise", {"size": size, "seed": 3}))
    g.add_node(NodeInstance("half", "test.scale", {"factor": 0.5}))
    g.add_node(NodeInstance("clip", "test.clip", {"frames": 6, "size": 8}))
    g.add_node(NodeInstance("luma", "test.luma"))
    g.connect(Link("noise", "image", "half", "image"))
    g.connect(Link("clip", "video", "luma", "image"))
    return g


def _follow(client: LocalEngine, graph: Graph, **kw) -> tuple[str, list[events.Event]]:
    """Submit and collect that run's events until its RunFinished (what a front end does)."""
    seen: list[events.Event] = []
    done = threading.Event()

    def listen(e: events.Event) -> None:
        seen.append(e)
        if isinstance(e, events.RunFinished):
            done.set()

    unsubscribe = client.subscribe(listen, throttle=False)
    handle = client.submit(graph, **kw)
    assert done.wait(30)
    unsubscribe()
    return handle.run_id, [e for e in seen if e.run_id == handle.run_id]


def _ref(seen: list[events.Event], node_id: str, port: str = "image"):
    return next(e for e in seen if isinstance(e, events.NodeFinished) and e.node_id == node_id).outputs[port].ref


@pytest.fixture
def client(reg):
    c = LocalEngine(reg, EngineSettings(device="cpu"))
    yield c
    c.shutdown()


def test_a_run_is_followed_by_events_that_carry_references_not_values(client):
    _run_id, seen = _follow(client, _graph(), targets=["half", "luma"])
    assert isinstance(seen[0], events.RunStarted) and isinstance(seen[-1], events.RunFinished)
    assert sum(isinstance(e, events.RunFinished) for e in seen) == 1
    finished = {e.node_id: e for e in seen if isinstance(e, events.NodeFinished)}
    for e in finished.values():  # no arrays, closures or tensors: only summaries
        for port, s in e.outputs.items():
            assert isinstance(s, OutputSummary) and s.ref.node_id == e.node_id and s.ref.port == port
            assert not isinstance(s.value, np.ndarray)
    img = finished["half"].outputs["image"]
    assert img.kind == "Image" and img.shape == (1, 300, 300, 3) and img.dtype == "float32" and img.frames == 1
    thumb = decode_png(img.thumbnail)
    assert max(thumb.shape[:2]) == 256  # a thumbnail, not the picture
    value = client.fetch(img.ref)  # the value itself, by reference
    expected = np.random.default_rng(3).random((1, 300, 300, 3), dtype=np.float32) * 0.5
    np.testing.assert_allclose(value, expected)
    np.testing.assert_allclose(client.fetch_frame(img.ref, 0), expected[0])
    video = finished["luma"].outputs["mask"]
    assert video.frames == 6 and video.fps == 12.0
    frame = client.fetch_frame(video.ref, 3)  # a lazy frame, made in the engine when asked
    assert frame.shape == (8, 8, 1) and frame.mean() == pytest.approx(3 / 6)


def test_every_event_is_plain_json_and_reads_back(client):
    _run_id, seen = _follow(client, _graph(40), targets=["half", "luma"])
    kinds = set()
    for e in seen:
        text = json.dumps(events.to_wire(e))  # raises on an array, a closure, a tensor
        back = events.from_wire(json.loads(text))
        assert back == e and type(back) is type(e)
        if isinstance(e, events.NodeFinished):
            assert back.outputs == e.outputs  # compared field by field, thumbnails included
        kinds.add(type(e).__name__)
    assert {"RunStarted", "NodeStarted", "NodeFinished", "RunFinished"} <= kinds


def test_a_run_that_cannot_start_ends_with_its_problems(client):
    g = chain(2)
    g.add_node(NodeInstance("bad", "test.nope"))
    _run_id, seen = _follow(client, g)
    (end,) = seen
    assert isinstance(end, events.RunFinished) and end.error
    assert ("bad", None, "unknown node type 'test.nope' (is its node pack installed?)") in end.problems
    assert not client.busy


def test_a_client_chosen_run_id_submitted_twice_is_one_run(client, reg):
    from tests.engine.conftest import CALLS

    g = Graph()
    g.add_node(NodeInstance("s", "test.sleep", {"seconds": 0.3}))
    first = client.submit(g, run_id="job-42")
    again = client.submit(g, run_id="job-42")  # a retry after a dropped connection
    assert again is first
    first.wait(10)
    assert first.result.ok and first.run_id == "job-42" and CALLS.get("sleep", 0) == 0  # uncounted node
    assert not client.busy


def test_released_or_evicted_outputs_say_so(reg):
    client = LocalEngine(reg, EngineSettings(device="cpu", output_store_bytes=1_000_000, cache_budget_bytes=0))
    try:
        _run_a, seen_a = _follow(client, _graph(300), targets=["half"])  # 1 MB of floats per image
        ref_a = _ref(seen_a, "half")
        with pytest.raises(OutputGone, match="no longer kept: run the node again"):
            client.fetch(ref_a)  # over the store's budget: not kept
        run_b, seen_b = _follow(client, _graph(100), targets=["half"])
        ref_b = _ref(seen_b, "half")
        assert client.fetch(ref_b).shape == (1, 100, 100, 3)
        client.release(run_b)
        with pytest.raises(OutputGone):
            client.fetch(ref_b)
    finally:
        client.shutdown()


def test_progress_is_thinned_per_subscriber_but_a_finished_step_always_passes():
    got: list[events.Event] = []
    thin = Throttle(got.append, rate=30)
    for i in range(10_000):
        thin(events.NodeProgress("r1", "n", i / 10_000))
    thin(events.NodeProgress("r1", "n", 1.0))
    thin(events.NodeProgress("r1", "other", 0.5))
    fractions = [e.fraction for e in got if e.node_id == "n"]
    assert len(fractions) < 50 and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert [e.node_id for e in got][-1] == "other"


def test_settings_change_waits_for_the_run_in_flight(reg):
    client = LocalEngine(reg, EngineSettings(device="cpu"))
    try:
        g = Graph()
        g.add_node(NodeInstance("s", "test.sleep", {"seconds": 0.5}))
        engine = client.engine
        handle = client.submit(g)
        client.apply_settings(EngineSettings(device="cpu", cache_budget_bytes=1 << 20))
        assert client.engine is engine  # not rebuilt under a running job
        handle.wait(10)
        assert handle.result.ok
        _follow(client, chain(2))
        assert client.engine is not engine and client.engine.settings.cache_budget_bytes == 1 << 20
    finally:
        client.shutdown()


def test_save_image_fed_a_video_reports_every_file(tmp_path):
    """Each frame a Save node writes is an artefact (the old runner saw only the last one)."""
    from PIL import Image as PILImage

    from nodes.registry import default_registry

    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        PILImage.new("RGB", (16, 8), (60 * i, 0, 0)).save(src / f"f{i}.png")
    g = Graph()
    g.add_node(NodeInstance("load", "imagebash.image.load_folder", {"folder": str(src)}))
    g.add_node(NodeInstance("frames", "imagebash.video.from_images", {"fps": 4}))
    g.add_node(NodeInstance("save", "imagebash.image.save", {"filename_prefix": "seq/f"}))
    g.connect(Link("load", "image", "frames", "image"))
    g.connect(Link("frames", "video", "save", "image"))
    client = LocalEngine(default_registry(), EngineSettings(device="cpu"))
    try:
        _run_id, seen = _follow(client, g, output_dir=tmp_path / "out")
    finally:
        client.shutdown()
    files = [e.file for e in seen if isinstance(e, events.NodeFile)]
    written = sorted((tmp_path / "out" / "seq").glob("f_*.png"))
    assert len(written) == 4 and [f.kind for f in files] == ["image"] * 4
    assert sorted(client.fetch_file(f) for f in files) == written
    assert all(f.size == p.stat().st_size for f, p in zip(sorted(files, key=lambda f: f.path), written, strict=True))
