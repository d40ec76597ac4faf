"""Training on the tiny models: the loss falls, the exported files load back through the LoRA node
and reproduce the trained model, kohya and peft exports agree, DoRA keeps its magnitudes, SDXL
gets SGM keys, and the latent/text cache spares the VAE and text encoder on later runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from app.training.loop import Trainer
from tests.diffusion.conftest import run_ok, txt2img_graph
from tests.training.conftest import small_config

PROMPT = "zzstyle, stripes"


def _gen(engine, model, loras=(), seed=1):
    return run_ok(engine, txt2img_graph(model, seed=seed, loras=loras, prompt=PROMPT)).output("gen")


def _own_pipe_image(trainer, seed=1):
    """What the trained pipeline itself draws with the node's settings (euler, 2 steps, 64 px)."""
    from nodes.diffusion.schedulers import make_scheduler

    pipe = trainer.base.pipe
    pipe.scheduler = make_scheduler("euler", dict(pipe.scheduler.config))
    pipe.unet.eval()
    with torch.no_grad():
        out = pipe(PROMPT, width=64, height=64, num_inference_steps=2, guidance_scale=7.0,
                   generator=[torch.Generator("cpu").manual_seed(seed)], output_type="np").images
    return out.astype(np.float32)


@pytest.fixture
def engine():
    from app.engine import Engine, EngineSettings
    from nodes.registry import default_registry

    eng = Engine(default_registry(), EngineSettings(device="cpu", max_workers=2))
    yield eng
    eng.shutdown()


def test_training_lowers_loss_and_both_exports_reproduce_the_trained_model(tmp_path, style_folder, tiny_sd_dir,
                                                                            engine):
    cfg = small_config(tmp_path, style_folder, tiny_sd_dir, max_steps=16, alpha=2.0)
    trainer = Trainer(cfg)
    trainer.prepare()
    before = trainer.validation_loss()
    result = trainer.run()
    after = trainer.validation_loss()
    assert after < 0.97 * before, (before, after)
    assert result.steps == 16 and len(result.losses) == 16

    kohya, peft = result.lora, result.peft
    assert kohya.is_file() and peft.is_file() and peft.name == "style.peft.safetensors"
    with safe_open(str(kohya), framework="pt") as f:
        meta = f.metadata()
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2"
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_steps"] == "16"
    assert meta["modelspec.trigger_phrase"] == "zzstyle"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert json.loads(meta["ss_tag_frequency"])["2_stripes"]["zzstyle"] == 4
    assert float(load_file(str(kohya))["lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.alpha"]) == 2.0

    base = _gen(engine, tiny_sd_dir)
    with_kohya = _gen(engine, tiny_sd_dir, [(kohya, 1.0)])
    with_peft = _gen(engine, tiny_sd_dir, [(peft, 1.0)])
    own = _own_pipe_image(trainer)
    assert np.abs(with_kohya - base).mean() > 1e-3  # the LoRA changes the picture
    np.testing.assert_allclose(with_kohya, with_peft, atol=2e-4)  # kohya and peft exports agree
    np.testing.assert_allclose(with_kohya, own[..., :3], atol=2e-4)  # ...and are the trained model


def test_dora_with_text_encoder_loads_back_through_the_lora_node_with_its_magnitudes(tmp_path, style_folder,
                                                                                    tiny_sd_dir, engine):
    from safetensors.torch import save_file

    from app.training.export import NO_DORA_TWIN, peft_path_for

    cfg = small_config(tmp_path, style_folder, tiny_sd_dir, network="dora", train_text_encoder=True, max_steps=4)
    logs = []
    trainer = Trainer(cfg, log=logs.append)
    result = trainer.run()
    assert result.peft is None and not peft_path_for(result.lora).exists()  # peft cannot express it
    assert any(NO_DORA_TWIN in m for m in logs)
    sd = load_file(str(result.lora))
    assert sd["lora_te_text_model_encoder_layers_0_self_attn_q_proj.dora_scale"].shape == (1, 32)
    assert sd["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.dora_scale"].shape == (1, 32)
    plain = tmp_path / "plain.safetensors"
    save_file({k: v for k, v in sd.items() if not k.endswith(".dora_scale")}, str(plain))

    own = _own_pipe_image(trainer)
    with_dora = _gen(engine, tiny_sd_dir, [(result.lora, 1.0)])
    np.testing.assert_allclose(with_dora, own[..., :3], atol=2e-4)  # the trained DoRA, magnitudes and all
    assert np.abs(with_dora - _gen(engine, tiny_sd_dir, [(plain, 1.0)])).mean() > 1e-4  # magnitudes matter


def test_sdxl_trains_with_sgm_keys_and_loads_through_the_lora_node(tmp_path, style_folder, tiny_sdxl_dir, engine):
    cfg = small_config(tmp_path, style_folder, tiny_sdxl_dir, max_steps=4)
    result = Trainer(cfg).run()
    keys = load_file(str(result.lora))
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    assert "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k.alpha" in keys
    assert "lora_unet_output_blocks_0_1_transformer_blocks_0_attn1_to_out_0.lora_up.weight" in keys
    assert not any(k.startswith("lora_te") for k in keys)  # U-Net only by default
    with safe_open(str(result.lora), framework="pt") as f:
        assert f.metadata()["ss_base_model_version"] == "sdxl_base_v1-0"
    base = _gen(engine, tiny_sdxl_dir)
    assert np.abs(_gen(engine, tiny_sdxl_dir, [(result.lora, 1.0)]) - base).mean() > 1e-4
    logs = []
    engine.events.subscribe(lambda e: logs.append(getattr(e, "message", "")))
    _gen(engine, tiny_sdxl_dir, [(result.peft, 1.0)])
    assert not any("matched nothing" in m for m in logs)


def test_cache_spares_vae_and_text_encoder_and_keeps_caption_dropout(tmp_path, style_folder, tiny_sd_dir):
    cfg = small_config(tmp_path, style_folder, tiny_sd_dir, max_steps=6, caption_dropout=0.5)
    first = Trainer(cfg)
    first.run()
    assert first.cache.encoded_images == 4
    assert first.cache.encoded_texts == 5  # four captions and the empty one, for dropout
    second = Trainer(cfg.replace(out=str(tmp_path / "again.safetensors")))
    again = second.run()
    assert second.cache.encoded_images == 0 and second.cache.encoded_texts == 0
    assert again.losses == pytest.approx(first_losses(first), abs=1e-6)  # same data from the cache


def first_losses(trainer):
    from app.training import checkpoint

    return checkpoint.read_state(checkpoint.latest(trainer.checkpoint_root))["losses"]


def test_sdxl_with_both_text_encoders_exports_te1_and_te2_that_all_load(tmp_path, style_folder, tiny_sdxl_dir, engine):
    cfg = small_config(tmp_path, style_folder, tiny_sdxl_dir, max_steps=2, train_text_encoder=True)
    result = Trainer(cfg).run()
    keys = load_file(str(result.lora))
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in keys
    assert "lora_te2_text_model_encoder_layers_1_self_attn_out_proj.alpha" in keys
    logs = []
    engine.events.subscribe(lambda e: logs.append(getattr(e, "message", "")))
    for path in (result.lora, result.peft):
        _gen(engine, tiny_sdxl_dir, [(path, 1.0)])
    reports = [m for m in logs if "modules" in m]
    assert len(reports) == 2 and not any("matched nothing" in m for m in logs), logs
