"""Stable Diffusion 1.x (and the many fine-tunes of 1.5): CLIP ViT-L text encoder, 4-channel latents."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.engine.families.base import TrainingSpec
from app.engine.families.sd_common import SD_SHARED, StableDiffusion, sd_variants

ORDER = 80


class SD1(StableDiffusion):
    def folder_matches(self, index: Mapping[str, Any], folder: Path) -> bool:
        unet = folder / "unet" / "config.json"
        return not (unet.is_file() and json.loads(unet.read_text(encoding="utf-8")).get("cross_attention_dim") == 1024)


FAMILY = SD1(
    name="sd1", title="Stable Diffusion 1.x", variants=sd_variants("sd1", "SD 1.5", "sd1", 1_719_000_000, 246_000_000),
    cross_attention=768, marker="cond_stage_model.transformer.", lora_words=("-v1", "sd_v1"), **SD_SHARED,
    training=TrainingSpec("style-sd15", "sd_v1", "stable-diffusion-v1"))
