"""Stable Diffusion 1.x (and the many fine-tunes of 1.5): CLIP ViT-L text encoder, 4-channel latents."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.engine.families.base import TrainingSpec
from app.engine.families.sd_common import (
    SD_CONTROL,
    SD_FOLDER_CLASSES,
    SD_PIPELINES,
    SD_PREVIEW,
    StableDiffusion,
    sd_variants,
)

ORDER = 80


class SD1(StableDiffusion):
    def folder_matches(self, index: Mapping[str, Any], folder: Path) -> bool:
        unet = folder / "unet" / "config.json"
        return not (unet.is_file() and json.loads(unet.read_text(encoding="utf-8")).get("cross_attention_dim") == 1024)


FAMILY = SD1(
    name="sd1", title="Stable Diffusion 1.x", variants=sd_variants("sd1", "SD 1.5", "sd1", 1_719_000_000, 246_000_000),
    pipelines=SD_PIPELINES, control_pipelines=SD_CONTROL, multi_controlnet="MultiControlNetModel",
    adapter_pipelines={"txt2img": "StableDiffusionAdapterPipeline"},
    cross_attention=768, marker="cond_stage_model.transformer.", folder_classes=SD_FOLDER_CLASSES,
    lora_words=("-v1", "sd_v1"),
    lora_components=("unet", "text_encoder"),
    kohya_prefixes={"lora_unet_": "unet", "lora_te_": "text_encoder", "lora_te1_": "text_encoder"},
    dotted_prefixes={"unet.": "unet", "text_encoder.": "text_encoder"},
    preview=SD_PREVIEW,
    training=TrainingSpec("style-sd15", "sd_v1", "stable-diffusion-v1"))
