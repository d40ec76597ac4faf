"""Stable Diffusion 2.x: OpenCLIP ViT-H text encoder; the 768 models predict v, the 512 base epsilon.

The weights do not say which objective a file was trained for; its SAI model-spec metadata
(`modelspec.prediction_type`) does when present, else the shipped 768-v config is assumed and
the log says so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.engine.families.base import TrainingSpec
from app.engine.families.sd_common import SD_SHARED, StableDiffusion, sd_variants
from app.engine.probe import probe

ORDER = 79


def prediction_type(path: Path, explicit_config: bool) -> tuple[str | None, str]:
    """(scheduler prediction type to force or None, warning) for an SD 2.x single file."""
    if explicit_config:
        return None, ""
    declared = str(probe(path).metadata.get("modelspec.prediction_type", "")).lower()
    if declared in ("v", "v_prediction", "v-prediction"):
        return "v_prediction", ""
    if declared in ("epsilon", "eps"):
        return "epsilon", ""
    return None, (f"{path.name}: SD 2.x checkpoint assumed to be a 768 v-prediction model (like "
                  "stable-diffusion-2-1); for an epsilon model (512-base, most SD 2 fine-tunes at 512) "
                  "set the Load Model node's `config` port to a diffusers folder of that model, "
                  "e.g. stabilityai/stable-diffusion-2-1-base")


class SD2(StableDiffusion):
    def folder_matches(self, index: Mapping[str, Any], folder: Path) -> bool:
        unet = folder / "unet" / "config.json"
        return unet.is_file() and json.loads(unet.read_text(encoding="utf-8")).get("cross_attention_dim") == 1024

    def claims_lora(self, header: Any) -> bool:
        return header.metadata.get("ss_v2") == "True" or super().claims_lora(header)

    def after_single_file(self, pipe: Any, path: Path, explicit_config: bool) -> list[str]:
        prediction, warning = prediction_type(path, explicit_config)
        if prediction and pipe.scheduler.config.get("prediction_type") != prediction:
            pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=prediction)
        return [warning] if warning else []


FAMILY = SD2(
    name="sd2", title="Stable Diffusion 2.x", variants=sd_variants("sd2", "SD 2.1", "sd2", 1_732_000_000, 708_000_000),
    cross_attention=1024, marker="cond_stage_model.model.", lora_words=("-v2", "sd_v2"), **SD_SHARED,
    training=TrainingSpec("style-sd2", "sd_v2", "stable-diffusion-v2-768-v", v2=True))
