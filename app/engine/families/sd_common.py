"""What Stable Diffusion 1.x, 2.x and XL share: U-Net checkpoints in the LDM/SGM layout.

A single file is read whole by diffusers' own converter with the variant's config folder;
inpainting checkpoints (9-channel U-Nets) are their own variant, and SD 2.x files say in their
model-spec metadata whether they predict v or epsilon.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.engine.families.base import Family, Variant
from app.engine.families.loading import LoadError, Parts
from app.engine.probe import Probe

SD_PREVIEW = (((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721),
               (-0.2120, -0.2616, -0.7177)), (0.0, 0.0, 0.0))
UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"


def sd_variants(prefix: str, title: str, config: str, unet_bytes: int, te_bytes: int) -> tuple[Variant, ...]:
    return (Variant("base", title, config, unet_bytes, te_bytes, steps=20, guidance=7.0),
            Variant("inpaint", f"{title} inpainting", config, unet_bytes, te_bytes, steps=20, guidance=7.0,
                    tasks=("inpaint",), inpaint_native=True))


@dataclass
class StableDiffusion(Family):
    """SD 1.x/2.x/XL; a subclass says which text-encoder prefix marks its single files."""

    ip_adapters: bool = True
    marker: str = ""  # key prefix only this family's single files have
    cross_attention: int = 768  # the U-Net's (and its ControlNets') text width
    folder_classes: tuple[str, ...] = ()  # model_index _class_name values of this family

    def detect(self, header: Probe) -> str | None:
        if not header.has_prefix(self.marker):
            return None
        return "inpaint" if UNET_IN in header and header.shape(UNET_IN)[1] != 4 else "base"

    def detect_folder(self, index: Mapping[str, Any], folder: Path) -> str | None:
        if str(index.get("_class_name", "")) not in self.folder_classes or "unet" not in index:
            return None
        if not self.folder_matches(index, folder):
            return None
        unet = folder / "unet" / "config.json"
        import json

        if unet.is_file() and json.loads(unet.read_text(encoding="utf-8")).get("in_channels", 4) != 4:
            return "inpaint"
        return "base"

    def folder_matches(self, index: Mapping[str, Any], folder: Path) -> bool:
        return True

    def read_single_file(self, path: Path, variant: str, config: Path, dtype: Any, parts: Parts,
                         explicit_config: bool) -> tuple[Any, list[str]]:
        if parts:
            raise LoadError(f"{path.name} is a whole {self.title} checkpoint: it carries its own text encoders "
                            "and VAE (leave Load Model's text encoder and VAE inputs empty)")
        cls = self.base_pipeline(variant)
        kwargs: dict[str, Any] = {"dtype": dtype, **self.pipeline_kwargs()}
        if variant == "inpaint":
            from diffusers import UNet2DConditionModel

            from app.engine.probe import probe

            kwargs["unet"] = UNet2DConditionModel.from_single_file(
                str(path), config=str(config), subfolder="unet", local_files_only=True,
                in_channels=int(probe(path).shape(UNET_IN)[1]), dtype=dtype)
        pipe = cls.from_single_file(str(path), config=str(config), local_files_only=True, **kwargs)
        return pipe, self.after_single_file(pipe, path, explicit_config)

    def encode_prompts(self, pipe: Any, captions: list[str], device: str, grad: bool = False) -> dict[str, Any]:
        """{'hidden'[, 'pooled']}: SD 1.x/2.x the last hidden state; SDXL the penultimate of both
        encoders, concatenated, plus the pooled output of the second."""
        import contextlib

        import torch

        penultimate = bool(self.training and self.training.penultimate_hidden)
        ctx = contextlib.nullcontext() if grad else torch.no_grad()
        hidden, pooled = [], None
        with ctx:
            for slot in self.text_encoders:
                te, tok = getattr(pipe, slot), getattr(pipe, slot.replace("text_encoder", "tokenizer"))
                ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
                          return_tensors="pt").input_ids.to(te.device)
                if penultimate:
                    out = te(ids, output_hidden_states=True)
                    hidden.append(out.hidden_states[-2].to(device))
                    if hasattr(out, "text_embeds"):
                        pooled = out.text_embeds.to(device)
                else:
                    hidden.append(te(ids)[0].to(device))
        res = {"hidden": torch.cat(hidden, dim=-1)}
        if pooled is not None:
            res["pooled"] = pooled
        return res

    def pipeline_kwargs(self) -> dict[str, Any]:
        return {"safety_checker": None, "requires_safety_checker": False}

    def controlnet_misfit(self, pipe: Any, model: Any) -> str | None:
        if type(model).__name__ == "T2IAdapter":
            want, got = pipe.unet.config.block_out_channels[0], model.config.channels[0]
            return None if want == got else f"its first width is {got}, the U-Net's {want}"
        if type(model).__name__ not in ("ControlNetModel", "ControlNetUnionModel"):
            return f"it is a {type(model).__name__}, not a U-Net ControlNet"
        want, got = pipe.unet.config.cross_attention_dim, model.config.cross_attention_dim
        if want != got:
            return f"its text width is {got}, the model's {want}"
        return None

    def claims_controlnet(self, model: Any) -> bool:
        cfg = getattr(model, "config", {})
        return type(model).__name__ in ("ControlNetModel", "ControlNetUnionModel") and \
            cfg.get("cross_attention_dim") == self.cross_attention

    def after_single_file(self, pipe: Any, path: Path, explicit_config: bool) -> list[str]:
        return []

    def base_pipeline(self, variant: str) -> Any:
        # an inpainting U-Net is still read as the txt2img class; Inpaint derives its own view
        import diffusers

        return getattr(diffusers, self.pipelines["txt2img"])


SD_CONTROL = {"txt2img": "StableDiffusionControlNetPipeline", "img2img": "StableDiffusionControlNetImg2ImgPipeline",
              "inpaint": "StableDiffusionControlNetInpaintPipeline"}
SD_PIPELINES = {"txt2img": "StableDiffusionPipeline", "img2img": "StableDiffusionImg2ImgPipeline",
                "inpaint": "StableDiffusionInpaintPipeline"}
SD_FOLDER_CLASSES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline")

#: What SD 1.x and 2.x declare alike: one CLIP text encoder, the same pipelines and LoRA names.
SD_SHARED = dict(
    pipelines=SD_PIPELINES, control_pipelines=SD_CONTROL, multi_controlnet="MultiControlNetModel",
    adapter_pipelines={"txt2img": "StableDiffusionAdapterPipeline"}, folder_classes=SD_FOLDER_CLASSES,
    lora_components=("unet", "text_encoder"),
    kohya_prefixes={"lora_unet_": "unet", "lora_te_": "text_encoder", "lora_te1_": "text_encoder"},
    dotted_prefixes={"unet.": "unet", "text_encoder.": "text_encoder"}, preview=SD_PREVIEW)
