"""The pool on a local Ray instance (2 CPUs, started and shut down here): identical pixels to one
engine for a seed sweep and a frame range; an address that does not answer is one line."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("ray")

from app.engine.executor import Engine
from app.engine.pool import ray_backend as rb
from app.engine.pool import run_pool
from app.graph.model import Graph, Link, NodeInstance
from nodes.registry import default_registry
from tests.pool import helpers


@pytest.fixture(scope="module")
def actors():
    ray = rb.connect(None, num_cpus=2)
    try:
        yield rb.actors(ray)
    finally:
        rb.shutdown()


def test_seed_sweep_on_ray(actors, tmp_path):
    reg = default_registry()
    r = run_pool(helpers.sweep(count=6), [], reg, output_dir=tmp_path, workers=actors, per_engine=2)
    assert r.error is None and len(r.files) == 6
    one = Engine(reg).run(helpers.sweep(count=6, save=False), targets=["b"]).output("b")
    np.testing.assert_array_equal(r.joined(), one)
    assert sum(r.per_engine.values()) == len(r.plan.shards)


def test_frame_range_on_ray(actors, tmp_path):
    reg = default_registry()
    clip = helpers.make_clip(tmp_path / "c.mkv", frames=16)
    g = Graph()
    g.add_node(NodeInstance("v", "imagebash.video.load", params={"path": str(clip)}))
    g.add_node(NodeInstance("b", "imagebash.image.blur", params={"radius": 2}))
    g.connect(Link("v", "video", "b", "image"))
    r = run_pool(g, [], reg, output_dir=tmp_path / "o", workers=actors, per_engine=2)
    assert r.error is None and r.plan.mode == "frames" and len(r.plan.shards) == 4
    np.testing.assert_array_equal(r.joined(), Engine(reg).run(g, targets=["b"]).output("b").to_batch())


def test_actors_have_a_core_each_and_write_parts_here(actors):
    """On the local 2-CPU instance each actor is pinned to its own core (every thread) and writes
    its shards' part files itself (same machine: nothing large through the object store)."""
    import ray

    where = ray.get([w.actor.ping.remote() for w in actors])
    assert len(actors) == 2 and all(w.same_node for w in actors)
    cores = [tuple(x["cores"]) for x in where]
    assert all(len(c) == 1 for c in cores) and len(set(cores)) == 2
    assert all(ray.get(w.actor.loaded.remote()) == [] for w in actors)  # no model loaded yet


def test_unreachable_ray_address_is_one_line():
    t0 = time.monotonic()
    with pytest.raises(rb.RayUnavailable) as err:
        rb._probe("ray://127.0.0.1:1")
    assert "does not answer" in str(err.value) and "\n" not in str(err.value)
    assert time.monotonic() - t0 < 5


def test_cancel_ends_the_shards_running_in_the_actors(actors, tmp_path):
    """A cancel reaches a shard already running in its actor (a threaded actor takes the call):
    both shards were running when it came and neither is kept; the actors take shards after it."""
    import threading

    import ray

    reg = default_registry()
    clip = helpers.make_clip(tmp_path / "c.mkv", frames=24, size=512)
    g = Graph()
    g.add_node(NodeInstance("v", "imagebash.video.load", params={"path": str(clip)}))
    prev = ("v", "video")
    for k in range(12):  # seconds of work a shard on one core
        g.add_node(NodeInstance(f"b{k}", "imagebash.image.blur", params={"radius": 40}))
        g.connect(Link(*prev, f"b{k}", "image"))
        prev = (f"b{k}", "image")
    workers = [rb.RayWorker(w.actor, w.name, w.same_node) for w in actors]
    cancel = threading.Event()
    seen: list[list[str]] = []

    def cancel_once_both_run():
        while not cancel.is_set():
            seen[:] = ray.get([w.actor.running.remote() for w in workers])
            if all(seen):
                cancel.set()
            time.sleep(0.05)

    threading.Thread(target=cancel_once_both_run, daemon=True).start()
    r = run_pool(g, [], reg, output_dir=tmp_path / "o", workers=workers, per_engine=1, cancel=cancel)
    assert all(seen) and len(r.plan.shards) == 2
    assert r.cancelled and r.error.startswith("cancelled; 0 of 2 shards finished")
    assert ray.get([w.actor.running.remote() for w in workers]) == [[], []]
    again = run_pool(helpers.sweep(count=2, save=False), [], reg, output_dir=tmp_path / "p",
                     workers=[rb.RayWorker(w.actor, w.name, w.same_node) for w in actors], per_engine=1)
    assert again.error is None and len(again.joined()) == 2
