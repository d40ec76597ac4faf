"""Sample images during training: drawn under mixed precision, and the same picture the Text to
Image node draws with its defaults (sampler and guidance) for the same weights, prompt and seed."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.training.loop import Trainer
from tests.training.conftest import small_config


def test_samples_render_when_training_in_bf16(tmp_path, style_folder, tiny_sd_dir, monkeypatch):
    """The U-Net and text encoder run in bf16 while the VAE stays float32: decoding must match."""
    monkeypatch.setattr(Trainer, "_precision", lambda self, torch: "bf16")
    cfg = small_config(tmp_path, style_folder, tiny_sd_dir, max_steps=1, sample_every=1, sample_steps=2,
                       sample_prompts=("zzstyle",))
    trainer = Trainer(cfg)
    result = trainer.run()
    assert trainer.precision == "bf16" and str(trainer.base.unet.dtype) == "torch.bfloat16"
    (path,) = result.samples
    pixels = np.asarray(Image.open(path)).astype(np.float32)
    assert pixels.shape == (64, 64, 3) and pixels.std() > 1.0


@pytest.fixture
def engine():
    from app.engine import Engine, EngineSettings
    from nodes.registry import default_registry

    eng = Engine(default_registry(), EngineSettings(device="cpu", max_workers=1))
    yield eng
    eng.shutdown()


def test_sample_is_what_the_text_to_image_node_draws_with_its_defaults(tmp_path, tiny_sd_dir, engine):
    from app.training.base import load_base
    from app.training.samples import render_samples
    from tests.diffusion.conftest import run_ok, txt2img_graph

    pipe = load_base(tiny_sd_dir).pipe
    (path,) = render_samples(pipe, ["zzstyle, stripes"], seed=5, steps=2, size=(64, 64), folder=tmp_path,
                             step=1, device="cpu")
    sample = np.asarray(Image.open(path)).astype(np.float32) / 255.0
    graph = txt2img_graph(tiny_sd_dir, seed=5, prompt="zzstyle, stripes")
    for name in ("scheduler", "guidance"):  # the node's own defaults, as a user adding it gets them
        graph.nodes["gen"].params.pop(name, None)
    node = run_ok(engine, graph).output("gen")[0, ..., :3]
    assert np.abs(sample - node).max() <= 1.5 / 255
