"""A hub download in Load Model holds neither the engine's device lock nor the model manager's
lock: other models load and GPU nodes sample meanwhile. The download is faked (it returns the tiny
diffusers folder) and waits on events, so the order is observed, not timed."""

from __future__ import annotations

import threading

import pytest

from app.engine import Engine, EngineSettings, NodeFinished
from app.engine import models as models_mod
from tests.diffusion.conftest import make_graph, run_ok, txt2img_graph

WAIT = 60  # seconds; only reached when something is blocked (the old behaviour)


class SlowHub:
    """Stands in for the hub download: records calls, then waits until released."""

    def __init__(self, folder):
        self.folder = folder
        self.calls: list[str] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.released_in_time: list[bool] = []

    def __call__(self, repo_id, progress, half):
        self.calls.append(repo_id)
        self.started.set()
        self.released_in_time.append(self.release.wait(WAIT))
        return self.folder


@pytest.fixture
def slow_hub(monkeypatch, tiny_sd_dir):
    hub = SlowHub(tiny_sd_dir)
    monkeypatch.setattr(models_mod, "_hub_download", hub)
    return hub


def test_a_hub_download_does_not_block_gpu_nodes_or_other_loads(slow_hub, tiny_sd_ckpt, tiny_sd_dir):
    engine = Engine(settings=EngineSettings(device="cpu", max_workers=4))
    other_finished = threading.Event()

    def on_event(e):
        if isinstance(e, NodeFinished) and e.node_id == "gen":
            other_finished.set()
            slow_hub.release.set()  # the download may return once the other run's sampler is done

    engine.events.subscribe(on_event)
    try:
        download = engine.start(make_graph({"hub": ("load_model", {"checkpoint": "someone/tiny-sd"})}, []))
        assert slow_hub.started.wait(WAIT)
        # while the download is in flight: a local checkpoint loads and a GPU node samples with it
        g = txt2img_graph(tiny_sd_ckpt)
        g.set_param("load", "config", str(tiny_sd_dir))
        other = run_ok(engine, g, targets=["gen"])
        assert other.output("gen").shape == (1, 64, 64, 3)
        result = download.wait(WAIT)
        assert result is not None and result.ok, result and result.errors
        assert slow_hub.released_in_time == [True]  # the sampler finished before the download returned
        assert other_finished.is_set()
        assert result.output("hub").family == "sd1"
    finally:
        slow_hub.release.set()
        engine.shutdown()


def test_a_repo_is_downloaded_once_and_other_repos_are_not_held_up(slow_hub, tiny_sd_dir, monkeypatch):
    models = models_mod.ModelManager(EngineSettings(device="cpu"))
    got: dict[str, object] = {}

    def fetch(name, source):
        got[name] = models.fetch(source)

    first = threading.Thread(target=fetch, args=("first", "someone/tiny-sd"))
    first.start()
    assert slow_hub.started.wait(WAIT)
    second = threading.Thread(target=fetch, args=("second", "someone/tiny-sd"))
    second.start()
    second.join(0.5)
    assert slow_hub.calls == ["someone/tiny-sd"]  # the second asker waits for the first download
    # a download of another repo is not queued behind it (the lock is per source)...
    other_hub = SlowHub(tiny_sd_dir)
    other_hub.release.set()
    monkeypatch.setattr(models_mod, "_hub_download", other_hub)
    assert models.fetch("someone/other") == tiny_sd_dir and other_hub.calls == ["someone/other"]
    # ...and neither is loading a local model
    assert models.load(str(tiny_sd_dir)).family == "sd1"
    slow_hub.release.set()
    first.join(WAIT)
    second.join(WAIT)
    assert got == {"first": tiny_sd_dir, "second": tiny_sd_dir}
    assert slow_hub.calls == ["someone/tiny-sd"] and other_hub.calls == ["someone/other"]
