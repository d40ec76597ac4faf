"""Options that change how a run trains: gradient checkpointing, text encoder, samples, optimizer."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.training.loop import Trainer
from tests.training.conftest import small_config


def test_gradient_checkpointing_trains_the_same_weights(tmp_path, style_folder, tiny_sd_dir):
    plain = Trainer(small_config(tmp_path / "a", style_folder, tiny_sd_dir, max_steps=3, train_text_encoder=True))
    ckpt = Trainer(small_config(tmp_path / "b", style_folder, tiny_sd_dir, max_steps=3, train_text_encoder=True,
                                gradient_checkpointing=True))
    a, b = plain.run(), ckpt.run()
    assert ckpt.base.unet.is_gradient_checkpointing
    assert b.losses == pytest.approx(a.losses, rel=1e-4, abs=1e-5)


def test_samples_every_n_steps_use_fixed_seed_and_the_node_default_sampler(tmp_path, style_folder, tiny_sd_dir):
    from app.training.samples import sampler_scheduler

    cfg = small_config(tmp_path, style_folder, tiny_sd_dir, max_steps=6, sample_every=3, sample_steps=2,
                       sample_prompts=("zzstyle, stripes", "zzstyle"), learning_rate=1e-9)
    seen = []
    trainer = Trainer(cfg)
    trainer.on_samples = seen.append
    result = trainer.run()
    names = sorted(p.name for p in result.samples)
    assert names == ["step_000003_0.png", "step_000003_1.png", "step_000006_0.png", "step_000006_1.png"]
    assert trainer._parked  # epoch 1 ended at step 4: the encoders were parked, and came back for step 6
    assert len(seen) == 2 and all(p.parent.name == "samples" for p in result.samples)
    a, b = (np.asarray(Image.open(result.checkpoint.parent / "samples" / n)) for n in names[::2])
    assert a.shape == (64, 64, 3) and np.abs(a.astype(int) - b.astype(int)).max() <= 2  # same seed, ~same weights
    assert type(sampler_scheduler(trainer.base.pipe)).__name__ == "EulerAncestralDiscreteScheduler"


def test_adamw8bit_without_bitsandbytes_falls_back_with_a_warning(tmp_path, style_folder, tiny_sd_dir):
    try:
        import bitsandbytes  # noqa: F401
        has_bnb = True
    except ImportError:
        has_bnb = False
    logs = []
    trainer = Trainer(small_config(tmp_path, style_folder, tiny_sd_dir, max_steps=1, optimizer="adamw8bit"),
                      log=logs.append)
    trainer.run()
    if has_bnb:
        assert trainer.optimizer_name == "bitsandbytes.optim.AdamW8bit"
    else:
        assert trainer.optimizer_name == "torch.optim.AdamW"
        assert any("needs bitsandbytes" in line for line in logs)


def test_v_prediction_models_train_on_velocity_with_min_snr(tmp_path, style_folder, tiny_sd_dir):
    import json
    import shutil

    from safetensors import safe_open

    base = shutil.copytree(tiny_sd_dir, tmp_path / "tiny-v")
    sched = base / "scheduler" / "scheduler_config.json"
    sched.write_text(json.dumps({**json.loads(sched.read_text()), "prediction_type": "v_prediction"}))
    trainer = Trainer(small_config(tmp_path, style_folder, base, max_steps=3, min_snr_gamma=5.0))
    result = trainer.run()
    assert trainer.prediction_type == "v_prediction"
    assert all(np.isfinite(result.losses))
    with safe_open(str(result.lora), framework="pt") as f:
        assert f.metadata()["modelspec.prediction_type"] == "v"


def test_epochs_set_the_step_count_and_feed_forward_targets_export(tmp_path, style_folder, tiny_sd_dir):
    from safetensors.torch import load_file

    cfg = small_config(tmp_path, style_folder, tiny_sd_dir, max_steps=0, epochs=1, targets="attention+ff",
                       train_text_encoder=True)
    result = Trainer(cfg).run()
    assert result.steps == 4  # 4 images x 2 repeats, batch 2
    keys = load_file(str(result.lora))
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj.lora_down.weight" in keys
    assert "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2.alpha" in keys
    assert "lora_te_text_model_encoder_layers_1_mlp_fc2.lora_up.weight" in keys
