"""Prompt travel: a prompt whose `blend` mixes several prompts samples the weighted sum of their embeddings.

A blend is encoded exactly as the pipeline encodes a plain prompt (after the LoRA stack is active, with the
same clip skip and empty negative), so a blend of one prompt with itself is that prompt's image. (The engine
turns a str parameter into a plain str, so a TravelPrompt put straight into a graph's params would lose its
blend: here the node is called directly, and through the engine the schedule is on a node mapped over a
Video, as prompt travel runs.)"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import numpy as np

from app.engine import Engine, EngineSettings
from app.graph.model import Graph, Link, NodeInstance
from nodes.diffusion.generate import img2img, txt2img
from nodes.registry import Registry, node
from nodes.schedule import Schedule, TravelPrompt
from nodes.types import Model, Video

D = "imagebash.diffusion."


class _Ctx:
    """What txt2img needs of the engine: the shared model manager, logs, no cancellation."""

    def __init__(self, models: Any) -> None:
        self.models, self.logs, self.cancel_event, self.settings = models, [], threading.Event(), None

    def service(self, name: str) -> Any:
        assert name == "models"
        return self.models

    def progress(self, *_a: Any, **_k: Any) -> None:
        pass

    def log(self, message: str, level: str = "info") -> None:
        self.logs.append(message)

    def check_cancelled(self) -> None:
        pass

    def device_lock(self) -> Any:
        return contextlib.nullcontext()

    @property
    def cancelled(self) -> bool:
        return False

    def annotate(self, *_a: Any) -> None:
        pass


def _model(shared_models, path) -> Model:
    from nodes.diffusion.model_nodes import load_model

    return load_model(checkpoint=str(path), ctx=_Ctx(shared_models))


def _image(shared_models, model, prompt, seed=1):
    return txt2img(model, prompt=prompt, width=64, height=64, steps=2, guidance=5.0, seed=seed,
                   ctx=_Ctx(shared_models))


def test_blend_weights_lerp_the_conditioning(shared_models, tiny_sd_dir):
    model = _model(shared_models, tiny_sd_dir)
    travel = Schedule.parse("0:(a cat), 10:(a dog house)", kind="str")
    assert isinstance(travel.at(5), TravelPrompt) and len(travel.at(5).blend) == 2
    plain = _image(shared_models, model, "a cat")
    dog = _image(shared_models, model, "a dog house")
    same = _image(shared_models, model, TravelPrompt((("a cat", 0.5), ("a cat", 0.5))))  # the embeddings path
    half = _image(shared_models, model, travel.at(5))
    quarter = _image(shared_models, model, travel.at(2))
    np.testing.assert_allclose(same, plain, atol=1e-5)  # a blend of one prompt is that prompt
    np.testing.assert_array_equal(_image(shared_models, model, travel.at(0)), plain)
    np.testing.assert_array_equal(_image(shared_models, model, travel.at(10)), dog)
    assert np.abs(half - plain).mean() > 1e-3 and np.abs(half - dog).mean() > 1e-3
    assert 1e-4 < np.abs(quarter - plain).mean() < np.abs(half - plain).mean()


def test_blend_on_sdxl_is_the_plain_prompt_at_one(shared_models, tiny_sdxl_dir):
    """SDXL: both encoders and the pooled embedding blend; the empty negative stays the encoding of ''."""
    model = _model(shared_models, tiny_sdxl_dir)
    plain = _image(shared_models, model, "a cat")
    same = _image(shared_models, model, TravelPrompt((("a cat", 0.25), ("a cat", 0.75))))
    np.testing.assert_allclose(same, plain, atol=1e-5)
    half = _image(shared_models, model, TravelPrompt((("a cat", 0.5), ("a dog house", 0.5))))
    assert np.abs(half - plain).mean() > 1e-3


def _frames_registry() -> Registry:
    reg = Registry()

    @node("test.frames", registry=reg, category="test")
    def frames() -> Video:
        """Three small frames."""
        rng = np.random.default_rng(3)
        one = rng.random((1, 64, 64, 3)).astype(np.float32)
        return Video.from_batch(np.repeat(one, 3, axis=0), fps=8.0)

    return reg


def _img2img_graph(model_dir, prompt) -> Graph:
    g = Graph()
    g.add_node(NodeInstance("load", D + "load_model", {"checkpoint": str(model_dir)}))
    g.add_node(NodeInstance("src", "test.frames", {}))
    g.add_node(NodeInstance("i2i", D + "img2img", {"prompt": prompt, "strength": 0.8, "steps": 3,
                                                   "guidance": 5.0, "seed": 4}))
    g.connect(Link("load", "model", "i2i", "model"))
    g.connect(Link("src", "video", "i2i", "image"))
    return g


def test_prompt_schedule_over_video_frames(shared_models, tiny_sd_dir):
    """The engine evaluates the prompt schedule per frame of a Video: frame 1 is the 50/50 blend."""
    engine = Engine(_frames_registry(), EngineSettings(device="cpu", max_workers=2))
    engine.services.set("models", shared_models)
    try:
        result = engine.run(_img2img_graph(tiny_sd_dir, {"schedule": "0:(a cat), 2:(a dog)"}), targets=["i2i"])
        assert result.ok, result.errors
        video = result.output("i2i", "image")
        assert isinstance(video, Video) and len(video) == 3
        f0, f1, f2 = (np.asarray(video.frame(i)) for i in range(3))
        plain = engine.run(_img2img_graph(tiny_sd_dir, "a cat"), targets=["i2i"])
        assert plain.ok, plain.errors
        cat = np.asarray(plain.output("i2i", "image").frame(0))
    finally:
        engine.shutdown()
    np.testing.assert_array_equal(f0, cat)  # the same source frame, seed and prompt
    assert np.abs(f1 - f0).mean() > 1e-3 and np.abs(f1 - f2).mean() > 1e-3 and np.abs(f2 - f0).mean() > 1e-3
    # the blend is between its ends: closer to each of them than they are to each other
    assert np.abs(f1 - f0).mean() < np.abs(f2 - f0).mean()


def test_blend_batches_with_img2img(shared_models, tiny_sd_dir):
    """Two source images (a prompt per image) with a travelling prompt: each image gets the blend."""
    model = _model(shared_models, tiny_sd_dir)
    src = np.random.default_rng(0).random((2, 64, 64, 3)).astype(np.float32)
    kw = dict(strength=0.8, steps=2, guidance=5.0, seed=2, ctx=_Ctx(shared_models))
    plain = img2img(model, src, prompt="a cat", **kw)
    same = img2img(model, src, prompt=TravelPrompt((("a cat", 0.5), ("a cat", 0.5))), **kw)
    assert plain.shape == same.shape == (2, 64, 64, 3)
    np.testing.assert_allclose(same, plain, atol=1e-5)
