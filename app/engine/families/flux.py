"""Flux.1 (Black Forest Labs): dev, schnell, Fill and Kontext; a 12B MMDiT on 16-channel latents.

Recognised from its keys in either naming: BFL's original (`double_blocks.N.img_attn.qkv`, as
released and as ComfyUI stores it) or diffusers' (`transformer_blocks.N.attn.to_q`). dev has a
guidance embedder (distilled guidance: one forward per step, no negative prompt), schnell has
none (4 steps); Fill's image input is six times its output (latents, masked image, 8x8 mask).
Kontext has dev's keys exactly, so a single file reads as dev unless its metadata says Kontext;
the edit node runs the Kontext pipeline on either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.engine.families.base import TrainingSpec, Variant
from app.engine.families.dit_common import TransformerFamily
from app.engine.probe import Probe

ORDER = 20
PREFIXES = ("", "model.diffusion_model.", "diffusion_model.")
T5 = 9_524_000_000
CLIP_L = 246_000_000
DENOISER = 23_800_000_000


def _find(header: Probe, *names: str) -> str | None:
    for prefix in PREFIXES:
        for name in names:
            if prefix + name in header:
                return prefix + name
    return None


@dataclass
class Flux(TransformerFamily):
    def detect(self, header: Probe) -> str | None:
        original = _find(header, "double_blocks.0.img_attn.norm.key_norm.scale")
        diffusers = _find(header, "single_transformer_blocks.0.attn.norm_k.weight")
        if not original and not diffusers:
            return None
        if original:
            prefix = original[: -len("double_blocks.0.img_attn.norm.key_norm.scale")]
            x_in, out, guide = "img_in.weight", "final_layer.linear.weight", "guidance_in.in_layer.weight"
        else:
            prefix = diffusers[: -len("single_transformer_blocks.0.attn.norm_k.weight")]
            x_in, out = "x_embedder.weight", "proj_out.weight"
            guide = "time_text_embed.guidance_embedder.linear_1.weight"
        ratio = header.shape(prefix + x_in)[1] // max(1, header.shape(prefix + out)[0])
        if ratio >= 6:
            return "fill"
        if ratio != 1:
            return None  # Canny/Depth "control" models: not supported yet
        if prefix + guide not in header:
            return "schnell"
        arch = " ".join(header.metadata.get(k, "") for k in ("modelspec.architecture", "modelspec.title")).lower()
        return "kontext" if "kontext" in arch else "dev"

    def ip_adapter_state(self, keys: list[str], get: Any) -> dict[str, dict[str, Any]]:
        """XLabs' Flux IP-Adapter layout (`ip_adapter_proj_model.*`, `double_blocks.N.processor.
        ip_adapter_double_stream_k_proj.*`) renamed as diffusers' FluxIPAdapterMixin does; h94-style
        files pass through."""
        sd: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
        for k in keys:
            head, _, rest = k.partition(".")
            if head in ("ip_adapter_proj_model", "image_proj"):
                sd["image_proj"][rest] = get(k)
            elif head in ("double_blocks", "ip_adapter"):
                sd["ip_adapter"][rest.replace("ip_adapter_double_stream_k_proj", "to_k_ip")
                                 .replace("ip_adapter_double_stream_v_proj", "to_v_ip")
                                 .replace("processor.", "")] = get(k)
        return sd

    # -- regional prompts --------------------------------------------------------------------
    def region_inputs(self, pipe: Any, prompt: str, device: str,
                      call: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A region's T5 states, pooled CLIP projection and text ids (Flux's `encode_prompt`)."""
        hidden, pooled, ids = self.region_encode(pipe, prompt, device, call)
        return {"encoder_hidden_states": hidden, "pooled_projections": pooled, "txt_ids": ids}

    def region_expand(self, inputs: Mapping[str, Any], rows: int) -> dict[str, Any]:
        out = super().region_expand({k: v for k, v in inputs.items() if k != "txt_ids"}, rows)
        return {**out, "txt_ids": inputs["txt_ids"]}  # (tokens, 3): no batch dimension

    def region_rows(self, pipe: Any, call: Mapping[str, Any], seen: dict[str, Any]) -> slice | None:
        from app.engine.families.dit_common import separate_cfg_rows

        return separate_cfg_rows(call, seen)  # true CFG calls the transformer again for the negative

    def region_weight(self, pipe: Any, mask: Any, size: tuple[int, int], pred: Any) -> Any:
        from app.engine.families.dit_common import token_weight

        return token_weight(pipe, mask, size, pred)  # packed 2x2 patches (+ Kontext's reference tokens)

    def detect_folder(self, index: Mapping[str, Any], folder: Path) -> str | None:
        name = str(index.get("_class_name", ""))
        if not name.startswith("Flux") or name.startswith("Flux2"):
            return None
        if "Fill" in name:
            return "fill"
        if "Kontext" in name:
            return "kontext"
        import json

        cfg = folder / "transformer" / "config.json"
        guided = cfg.is_file() and json.loads(cfg.read_text(encoding="utf-8")).get("guidance_embeds", False)
        return "dev" if guided else "schnell"

    def call_kwargs(self, variant: str, *, prompt: Any, negative_prompt: Any, guidance: float,
                    steps: int) -> dict[str, Any]:
        return {"prompt": prompt, "num_inference_steps": steps, "guidance_scale": guidance}

    def encode_prompts(self, pipe: Any, captions: list[str], device: str, grad: bool = False) -> dict[str, Any]:
        import contextlib

        import torch

        with contextlib.nullcontext() if grad else torch.no_grad():
            hidden, pooled, _ids = pipe.encode_prompt(prompt=captions, prompt_2=captions, device=device,
                                                      max_sequence_length=self.training.max_sequence_length)
        return {"hidden": hidden, "pooled": pooled}

    def flow_forward(self, pipe: Any, noisy: Any, sigmas: Any, emb: dict[str, Any], guidance: float | None) -> Any:
        import torch

        n, c, h, w = noisy.shape
        model = pipe.transformer
        packed = pipe._pack_latents(noisy, n, c, h, w)
        img_ids = pipe._prepare_latent_image_ids(n, h // 2, w // 2, noisy.device, noisy.dtype)
        txt_ids = torch.zeros(emb["hidden"].shape[1], 3, device=noisy.device, dtype=noisy.dtype)
        g = None
        if model.config.guidance_embeds:
            g = torch.full((n,), float(guidance if guidance is not None else 1.0), device=noisy.device)
        out = model(hidden_states=packed, timestep=sigmas.to(noisy.dtype), guidance=g,
                    pooled_projections=emb["pooled"], encoder_hidden_states=emb["hidden"], txt_ids=txt_ids,
                    img_ids=img_ids, return_dict=False)[0]
        scale = pipe.vae_scale_factor
        return pipe._unpack_latents(out, h * scale, w * scale, scale)

    def claims_controlnet(self, model: Any) -> bool:
        return type(model).__name__ == "FluxControlNetModel" and model.config.joint_attention_dim == 4096

    def controlnet_misfit(self, pipe: Any, model: Any) -> str | None:
        if type(model).__name__ != "FluxControlNetModel":
            return f"it is a {type(model).__name__}, not a Flux ControlNet"
        for key in ("joint_attention_dim", "num_attention_heads", "attention_head_dim"):
            if model.config.get(key) != pipe.transformer.config.get(key):
                return f"its {key} is {model.config.get(key)}, the model's {pipe.transformer.config.get(key)}"
        return None

    def unpack(self, pipe: Any, latents: Any, width: int, height: int) -> Any:
        if latents.ndim == 4:
            return latents
        return pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)

    def pack(self, pipe: Any, latents: Any) -> Any:
        n, c, h, w = latents.shape
        return pipe._pack_latents(latents, n, c, h, w)


_EDIT_NOTE = ("Kontext and dev files have the same keys: edits need FLUX.1 Kontext weights (a dev file "
              "follows the instruction poorly)")

FAMILY = Flux(
    name="flux", title="Flux.1",
    variants=(
        Variant("dev", "Flux.1 dev", "flux-dev", DENOISER, T5 + CLIP_L, steps=28, guidance=3.5,
                tasks=("txt2img", "img2img", "inpaint", "edit"), note=_EDIT_NOTE),
        Variant("schnell", "Flux.1 schnell", "flux-schnell", DENOISER, T5 + CLIP_L, steps=4, guidance=0.0,
                tasks=("txt2img", "img2img", "inpaint")),
        Variant("fill", "Flux.1 Fill", "flux-fill", DENOISER, T5 + CLIP_L, steps=50, guidance=30.0,
                tasks=("inpaint",), inpaint_native=True, pipelines=(("inpaint", "FluxFillPipeline"),)),
        Variant("kontext", "Flux.1 Kontext", "flux-kontext", DENOISER, T5 + CLIP_L, steps=28, guidance=2.5,
                tasks=("txt2img", "edit")),
    ),
    pipelines={"txt2img": "FluxPipeline", "img2img": "FluxImg2ImgPipeline", "inpaint": "FluxInpaintPipeline",
               "edit": "FluxKontextPipeline"},
    text_encoders=("text_encoder", "text_encoder_2"),
    control_pipelines={"txt2img": "FluxControlNetPipeline", "img2img": "FluxControlNetImg2ImgPipeline",
                       "inpaint": "FluxControlNetInpaintPipeline"},
    multi_controlnet="FluxMultiControlNetModel", ip_adapters=True,
    latent_channels=16, size_multiple=16, negative_prompt=False, guidance_kind="distilled",
    lora_components=("transformer", "text_encoder", "text_encoder_2"),
    lora_words=("flux",), lora_keys=("double_blocks", "single_blocks", "single_transformer_blocks"),
    kohya_prefixes={"lora_unet_": "transformer", "lora_transformer_": "transformer", "lycoris_": "transformer",
                    "lora_te1_": "text_encoder",
                    "lora_te_": "text_encoder", "lora_te2_": "text_encoder_2"},
    dotted_prefixes={"transformer.": "transformer", "diffusion_model.": "transformer",
                     "model.diffusion_model.": "transformer", "text_encoder.": "text_encoder",
                     "text_encoders.clip_l.transformer.": "text_encoder", "text_encoder_2.": "text_encoder_2",
                     "text_encoders.t5xxl.transformer.": "text_encoder_2"},
    embedded={"text_encoder": ("text_encoders.clip_l.transformer.",),
              "text_encoder_2": ("text_encoders.t5xxl.transformer.",)},
    names="flux_names", original_marker="img_in.weight",
    # kohya's default distilled guidance for training (1.0: the embedding "off", so the LoRA learns
    # the content and still follows inference guidance; diffusers' script uses 3.5)
    training=TrainingSpec("style-flux-24gb", "flux1", "flux-1-dev", "https://github.com/black-forest-labs/flux",
                          objective="flow", timestep_sampling="sigmoid", shift=3.0, guidance=1.0,
                          attention=("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj",
                                     "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"),
                          ff=("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2", "proj_mlp",
                              "proj_out"),
                          block_only=("proj_out",),
                          block_groups={"double": "transformer_blocks", "single": "single_transformer_blocks"},
                          encoders=("text_encoder",), max_sequence_length=512),
)
