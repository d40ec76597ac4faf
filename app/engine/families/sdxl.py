"""Stable Diffusion XL (and its derivatives: Pony, Illustrious, ...): two CLIP text encoders."""

from __future__ import annotations

from typing import Any

from app.engine.families.base import TrainingSpec
from app.engine.families.sd_common import StableDiffusion, sd_variants

ORDER = 70

SDXL_PREVIEW = (((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
                 (-0.3165, -0.2492, -0.2188)), (0.1084, -0.0175, -0.0011))


class SDXL(StableDiffusion):
    def pipeline_kwargs(self) -> dict[str, Any]:
        return {}


FAMILY = SDXL(
    name="sdxl", title="Stable Diffusion XL",
    variants=sd_variants("sdxl", "SDXL", "sdxl", 5_135_000_000, 1_639_000_000),
    pipelines={"txt2img": "StableDiffusionXLPipeline", "img2img": "StableDiffusionXLImg2ImgPipeline",
               "inpaint": "StableDiffusionXLInpaintPipeline"},
    text_encoders=("text_encoder", "text_encoder_2"),
    marker="conditioner.embedders.1.", cross_attention=2048,
    control_pipelines={"txt2img": "StableDiffusionXLControlNetPipeline",
                       "img2img": "StableDiffusionXLControlNetImg2ImgPipeline",
                       "inpaint": "StableDiffusionXLControlNetInpaintPipeline"},
    multi_controlnet="MultiControlNetModel",
    union_pipelines={"txt2img": "StableDiffusionXLControlNetUnionPipeline",
                     "img2img": "StableDiffusionXLControlNetUnionImg2ImgPipeline",
                     "inpaint": "StableDiffusionXLControlNetUnionInpaintPipeline"},
    multi_union="MultiControlNetUnionModel",
    adapter_pipelines={"txt2img": "StableDiffusionXLAdapterPipeline"}, adapter_window=True,
    lora_words=("-xl-", "sdxl"), lora_keys=("lora_te2_", "text_encoder_2."),
    folder_classes=("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline",
                    "StableDiffusionXLInpaintPipeline"),
    lora_components=("unet", "text_encoder", "text_encoder_2"),
    kohya_prefixes={"lora_unet_": "unet", "lora_te1_": "text_encoder", "lora_te2_": "text_encoder_2",
                    "lora_te_": "text_encoder"},
    dotted_prefixes={"unet.": "unet", "text_encoder.": "text_encoder", "text_encoder_2.": "text_encoder_2"},
    preview=SDXL_PREVIEW,
    training=TrainingSpec("style-sdxl", "sdxl_base_v1-0", "stable-diffusion-xl-v1-base",
                          "https://github.com/Stability-AI/generative-models", size_conditioning=True,
                          penultimate_hidden=True, sgm_lora_names=True, numbered_te_prefixes=True))
