"""Stable Diffusion 3.5 (Stability AI): medium (MMDiT-X, 2.5B), large (8B) and large turbo.

Three text encoders: CLIP-L, CLIP-G and T5-XXL; T5 is optional (the pipeline feeds zeros
without it, saving 9.5 GB at some cost in prompt adherence). Recognised from SAI's original keys
(`joint_blocks.N.x_block.attn.qkv`) or diffusers' (`transformer_blocks.N.attn.add_k_proj`);
medium's first blocks have a second self-attention (`attn2`). Large and large turbo share keys:
a file is turbo when its metadata says so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.engine.families.base import TrainingSpec, Variant
from app.engine.families.dit_common import TransformerFamily
from app.engine.probe import Probe

ORDER = 30
PREFIXES = ("", "model.diffusion_model.", "diffusion_model.")
ENCODERS = 9_524_000_000 + 1_390_000_000 + 247_000_000


def _prefix(header: Probe, name: str) -> str | None:
    return next((p for p in PREFIXES if p + name in header), None)


@dataclass
class SD3(TransformerFamily):
    def detect(self, header: Probe) -> str | None:
        original = _prefix(header, "joint_blocks.0.x_block.attn.qkv.weight")
        if original is not None:
            medium = f"{original}joint_blocks.0.x_block.attn2.qkv.weight" in header
        else:
            p = _prefix(header, "transformer_blocks.0.attn.add_k_proj.weight")
            if p is None or f"{p}pos_embed.proj.weight" not in header:
                return None
            medium = f"{p}transformer_blocks.0.attn2.to_q.weight" in header
        if medium:
            return "medium"
        text = " ".join(header.metadata.get(k, "") for k in ("modelspec.title", "modelspec.architecture")).lower()
        return "large-turbo" if "turbo" in text else "large"

    def detect_folder(self, index: Mapping[str, Any], folder: Path) -> str | None:
        if not str(index.get("_class_name", "")).startswith("StableDiffusion3"):
            return None
        cfg = folder / "transformer" / "config.json"
        conf = json.loads(cfg.read_text(encoding="utf-8")) if cfg.is_file() else {}
        return "medium" if conf.get("dual_attention_layers") else "large"


    def encode_prompts(self, pipe: Any, captions: list[str], device: str, grad: bool = False) -> dict[str, Any]:
        import contextlib

        import torch

        with contextlib.nullcontext() if grad else torch.no_grad():
            hidden, _neg, pooled, _neg_pooled = pipe.encode_prompt(
                prompt=captions, prompt_2=captions, prompt_3=captions, device=device,
                do_classifier_free_guidance=False, max_sequence_length=self.training.max_sequence_length)
        return {"hidden": hidden, "pooled": pooled}

    def flow_forward(self, pipe: Any, noisy: Any, sigmas: Any, emb: dict[str, Any], guidance: float | None) -> Any:
        return pipe.transformer(hidden_states=noisy, timestep=(sigmas * 1000).to(noisy.dtype),
                                encoder_hidden_states=emb["hidden"], pooled_projections=emb["pooled"],
                                return_dict=False)[0]

    # -- regional prompts (the prediction is (N, C, h, w), as a U-Net's: the base weight fits) ---
    def region_inputs(self, pipe: Any, prompt: str, device: str,
                      call: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A region's joint CLIP+T5 states and pooled CLIP projections."""
        hidden, _negative, pooled, _negative_pooled = self.region_encode(pipe, prompt, device, call)
        return {"encoder_hidden_states": hidden, "pooled_projections": pooled}

    def region_rows(self, pipe: Any, call: Mapping[str, Any], seen: dict[str, Any]) -> slice | None:
        if call.get("skip_layers") is not None:  # skip-layer guidance's extra pass: the prompt's rows only
            return slice(0, int(call["encoder_hidden_states"].shape[0]))
        return super().region_rows(pipe, call, seen)  # [negative, prompt] in one call under CFG


FAMILY = SD3(
    name="sd3", title="Stable Diffusion 3.5",
    variants=(
        Variant("medium", "SD 3.5 medium", "sd35-medium", 4_940_000_000, ENCODERS, steps=40, guidance=4.5),
        Variant("large", "SD 3.5 large", "sd35-large", 16_120_000_000, ENCODERS, steps=28, guidance=3.5),
        Variant("large-turbo", "SD 3.5 large turbo", "sd35-large-turbo", 16_120_000_000, ENCODERS, steps=4,
                guidance=1.0),
    ),
    pipelines={"txt2img": "StableDiffusion3Pipeline", "img2img": "StableDiffusion3Img2ImgPipeline",
               "inpaint": "StableDiffusion3InpaintPipeline"},
    text_encoders=("text_encoder", "text_encoder_2", "text_encoder_3"), optional_slots=("text_encoder_3",),
    latent_channels=16, size_multiple=16,
    lora_components=("transformer", "text_encoder", "text_encoder_2", "text_encoder_3"),
    lora_words=("stable-diffusion-3", "sd3"), lora_keys=("joint_blocks", "context_block", "x_block"),
    kohya_prefixes={"lora_unet_": "transformer", "lora_transformer_": "transformer", "lycoris_": "transformer",
                    "lora_te1_": "text_encoder",
                    "lora_te_": "text_encoder", "lora_te2_": "text_encoder_2", "lora_te3_": "text_encoder_3"},
    dotted_prefixes={"transformer.": "transformer", "diffusion_model.": "transformer",
                     "model.diffusion_model.": "transformer", "text_encoder.": "text_encoder",
                     "text_encoder_2.": "text_encoder_2", "text_encoder_3.": "text_encoder_3",
                     "text_encoders.clip_l.transformer.": "text_encoder",
                     "text_encoders.clip_g.transformer.": "text_encoder_2",
                     "text_encoders.t5xxl.transformer.": "text_encoder_3"},
    embedded={"text_encoder": ("text_encoders.clip_l.transformer.",),
              "text_encoder_2": ("text_encoders.clip_g.transformer.",),
              "text_encoder_3": ("text_encoders.t5xxl.transformer.",)},
    names="sd3_names", original_marker="joint_blocks.0.x_block.attn.qkv.weight",
    # diffusers' SD3 DreamBooth script: logit-normal timesteps, no loss weighting, the model's shift
    training=TrainingSpec("style-sd35", "sd3", "stable-diffusion-v3-5", objective="flow",
                          timestep_sampling="logit_normal", shift=3.0,
                          attention=("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj",
                                     "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out", "attn2.to_q",
                                     "attn2.to_k", "attn2.to_v", "attn2.to_out.0"),
                          ff=("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"),
                          block_groups={"joint": "transformer_blocks"},
                          encoders=("text_encoder", "text_encoder_2"), max_sequence_length=256),
)
