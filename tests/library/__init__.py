"""Tests of the model library; the helpers here write tiny .safetensors files whose key names are
those of real SD 1.x checkpoints and kohya LoRAs (as in tests/tiny_models.py), so detection works."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LORA_KEY = "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"


def write(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def sd1_checkpoint(path: Path, seed: int = 0) -> Path:
    """An SD 1.x single file (its text-encoder prefix and a 4-channel U-Net input conv)."""
    rng = np.random.default_rng(seed)
    return write(path, {"cond_stage_model.transformer.text_model.final_layer_norm.weight": rng.random(8, np.float32),
                        "model.diffusion_model.input_blocks.0.0.weight": rng.random((8, 4, 3, 3), np.float32),
                        "first_stage_model.decoder.conv_in.weight": rng.random((4, 4, 1, 1), np.float32)})


def sd1_lora(path: Path, metadata: dict[str, str] | None = None, seed: int = 1) -> Path:
    """A kohya-format SD 1.x LoRA; `metadata` adds to kohya's ss_base_model_version."""
    rng = np.random.default_rng(seed)
    md = {"ss_base_model_version": "sd_v1", **(metadata or {})}
    return write(path, {LORA_KEY: rng.random((4, 8), np.float32),
                        LORA_KEY.replace("lora_down", "lora_up"): rng.random((8, 4), np.float32)}, md)


def tensors_file(path: Path, seed: int = 2) -> Path:
    """A plain weights file (a VAE or text encoder: what its folder says)."""
    return write(path, {"encoder.conv_in.weight": np.random.default_rng(seed).random((4, 3, 3, 3), np.float32)})


def embedding(path: Path) -> Path:
    """An SD 1.x textual inversion (A1111's safetensors layout: emb_params of width 768)."""
    return write(path, {"emb_params": np.zeros((2, 768), np.float32)})


def diffusers_sd1(folder: Path) -> Path:
    """A diffusers SD 1.x folder: model_index.json and a unet config plus a weights file."""
    (folder / "unet").mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]}))
    (folder / "unet" / "config.json").write_text(json.dumps({"in_channels": 4, "cross_attention_dim": 768}))
    write(folder / "unet" / "diffusion_pytorch_model.safetensors", {"w": np.zeros(16, np.float32)})
    return folder


def use_models(monkeypatch, *folders: Path) -> None:
    """Point the models folders at `folders` (and no extra roots)."""
    import os

    monkeypatch.setenv("IMAGEBASH_MODELS", os.pathsep.join(str(f) for f in folders))
    monkeypatch.delenv("IMAGEBASH_EXTRA_MODELS", raising=False)
    for f in folders:
        f.mkdir(parents=True, exist_ok=True)
