"""Sample images during training: drawn under mixed precision."""

from __future__ import annotations

import numpy as np
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
