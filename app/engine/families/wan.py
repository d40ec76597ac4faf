"""Wan 2.1 / 2.2 (Alibaba Wan-AI): text-, image- and video-to-video flow-matching DiTs.

A Wan model is a `WanTransformer3DModel` (patches of 1x2x2 latent cells), a UMT5-XXL text
encoder and Wan's causal video VAE (16 channels, 4x temporal and 8x spatial compression, latents
normalised per channel by `latents_mean`/`latents_std`; kept in fp32, as Wan's docs advise).
Latents are (N, 16, (F - 1) / 4 + 1, H / 8, W / 8), so a clip has 4k+1 frames. Wan 2.2 A14B
models are two experts: `transformer` denoises the high-noise steps, `transformer_2` those below
`boundary_ratio` x 1000 (diffusers' WanPipeline / WanImageToVideoPipeline switch between them).

Files come as diffusers folders, or single files in the original Wan-AI naming
(`blocks.N.self_attn.q`, `head.modulation`, optionally behind ComfyUI's `model.diffusion_model.`
/ `diffusion_model.`) or in diffusers naming; the UMT5 and VAE come from split-layout files or the
config folder. One file holds one expert: a 2.2 A14B expert has the keys of a 2.1 14B model
and is read as one model (an I2V expert runs all steps). The original names also name LoRA
modules: ComfyUI / diffusion-pipe files (`diffusion_model.blocks.N.self_attn.q.lora_A.weight`)
and musubi-tuner files (`lora_unet_blocks_N_self_attn_q.lora_down.weight`, `.alpha`). Those
name no expert: on a two-expert model they go to the experts the LoRA node's `expert` picks
(`lora_experts`: both by default, as ComfyUI users load one LoRA per expert and diffusers'
`load_into_transformer_2` does); keys under `transformer_2.` always go to the low-noise expert.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.engine.families.base import NameMap, Target, Variant
from app.engine.families.dit_common import PerChannelLatents, TransformerFamily
from app.engine.families.loading import LoadError, Parts, build_text_model, fill, read_tensors
from app.engine.probe import Probe

ORDER = 25
PREFIXES = ("", "model.diffusion_model.", "diffusion_model.")
UMT5 = 11_360_000_000  # UMT5-XXL encoder, bf16
CLIP_H = 1_260_000_000  # the 2.1 I2V image encoder (open-clip ViT-H/14)
_NOTE_22 = ("Wan 2.2 A14B experts have the keys of Wan 2.1 14B: a single file runs as one model for every step; "
            "load the diffusers folder to use both experts")


@dataclass(frozen=True)
class WanVariant(Variant):
    """A Wan release: its second expert's guidance and switch point, flow shift and frame rate."""

    guidance_2: float = 0.0  # guidance of the low-noise expert (0: the same as `guidance`)
    boundary: float = 0.0  # boundary_ratio of a two-expert model (0: one expert)
    flow_shift: float = 3.0
    fps: int = 16


def round_frames(n: int) -> int:
    """The nearest frame count of the form 4k+1 (at least 1)."""
    k = max(0, round((int(n) - 1) / 4))
    return 4 * k + 1


def _block_names(n: int, image: bool) -> dict[str, str]:
    out = {}
    for attn, new in (("self_attn", "attn1"), ("cross_attn", "attn2")):
        for old, mod in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0")):
            out[f"blocks.{n}.{attn}.{old}"] = f"blocks.{n}.{new}.{mod}"
    if image:
        out[f"blocks.{n}.cross_attn.k_img"] = f"blocks.{n}.attn2.add_k_proj"
        out[f"blocks.{n}.cross_attn.v_img"] = f"blocks.{n}.attn2.add_v_proj"
    out[f"blocks.{n}.ffn.0"] = f"blocks.{n}.ffn.net.0.proj"
    out[f"blocks.{n}.ffn.2"] = f"blocks.{n}.ffn.net.2"
    return out


def original_modules(config: Mapping[str, Any]) -> NameMap:
    """Original Wan-AI module name -> the diffusers module (Linear layers: what LoRAs adapt)."""
    image = bool(config.get("added_kv_proj_dim") or config.get("image_dim"))
    names = {"text_embedding.0": "condition_embedder.text_embedder.linear_1",
             "text_embedding.2": "condition_embedder.text_embedder.linear_2",
             "time_embedding.0": "condition_embedder.time_embedder.linear_1",
             "time_embedding.2": "condition_embedder.time_embedder.linear_2",
             "time_projection.1": "condition_embedder.time_proj", "head.head": "proj_out"}
    if config.get("image_dim"):
        names["img_emb.proj.1"] = "condition_embedder.image_embedder.ff.net.0.proj"
        names["img_emb.proj.3"] = "condition_embedder.image_embedder.ff.net.2"
    for n in range(int(config.get("num_layers", 0))):
        names.update(_block_names(n, image))
    return {k: (Target(v),) for k, v in names.items()}


_SLOT = threading.local()  # the image encoder a single-file read took from its parts (2.1 I2V)


@dataclass
class Wan(PerChannelLatents, TransformerFamily):
    original_marker: str = "head.modulation"

    # -- recognising files -------------------------------------------------------------------
    def detect(self, header: Probe) -> str | None:
        for p in PREFIXES:
            embed = f"{p}patch_embedding.weight"
            if embed not in header:
                continue
            if f"{p}head.modulation" in header:  # Wan-AI / ComfyUI naming
                image = f"{p}img_emb.proj.1.weight" in header
            elif f"{p}scale_shift_table" in header and f"{p}condition_embedder.time_embedder.linear_1.weight" in header:
                image = f"{p}condition_embedder.image_embedder.ff.net.0.proj.weight" in header
            else:
                continue
            if f"{p}vace_blocks.0.after_proj.bias" in header or header.has_prefix(f"{p}motion_encoder."):
                return None  # VACE / Animate: other pipelines
            dim, channels = (int(x) for x in header.shape(embed)[:2])
            return self._variant_of(dim, channels, image, two=False)
        return None

    def detect_folder(self, index: Mapping[str, Any], folder: Path) -> str | None:
        if not str(index.get("_class_name", "")).startswith("Wan") or "transformer" not in index:
            return None
        if str(index["_class_name"]) not in ("WanPipeline", "WanImageToVideoPipeline", "WanVideoToVideoPipeline"):
            return None
        cfg_file = folder / "transformer" / "config.json"
        cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}
        second = index.get("transformer_2")
        two = isinstance(second, list) and bool(second) and second[0] is not None
        dim = int(cfg.get("num_attention_heads", 40)) * int(cfg.get("attention_head_dim", 128))
        return self._variant_of(dim, int(cfg.get("in_channels", 16)), bool(cfg.get("image_dim")), two)

    @staticmethod
    def _variant_of(dim: int, channels: int, image: bool, two: bool) -> str | None:
        if channels == 48:
            return "ti2v-5b"
        if channels == 36:
            return "i2v-14b" if image and not two else "i2v-a14b"
        if channels != 16:
            return None
        if two:
            return "t2v-a14b"
        return "t2v-1.3b" if dim == 1536 else "t2v-14b"

    # -- denoiser names ------------------------------------------------------------------------
    def convert_denoiser(self, state: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
        from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

        return convert_wan_transformer_to_diffusers(dict(state))

    def original_names(self, component: str, config: Mapping[str, Any]) -> NameMap:
        if component not in ("transformer", "transformer_2"):
            return {}
        return original_modules(config)

    # -- reading -------------------------------------------------------------------------------
    def folder_components(self, folder: Path) -> dict[str, Any]:
        """The VAE in fp32 (Wan's VAE is unstable in half precision)."""
        sub = folder / "vae"
        if not any(sub.glob("*.safetensors")):
            return {}
        import torch
        from diffusers import AutoencoderKLWan

        return {"vae": AutoencoderKLWan.from_pretrained(str(sub), local_files_only=True, dtype=torch.float32)}

    def read_single_file(self, path: Path, variant: str, config: Path, dtype: Any, parts: Parts,
                         explicit_config: bool) -> tuple[Any, list[str]]:
        from app.engine.families.loading import model_index

        index = model_index(config)
        parts, image_encoder = self._image_encoder(index, config, parts, dtype)
        _SLOT.image_encoder = image_encoder
        try:
            pipe, warnings = super().read_single_file(path, variant, config, dtype, parts, explicit_config)
        finally:
            _SLOT.image_encoder = None
        values = {k: index[k] for k in ("boundary_ratio", "expand_timesteps") if k in index}
        if values:
            pipe.register_to_config(**values)
        if getattr(pipe.config, "boundary_ratio", None) and getattr(pipe, "transformer_2", None) is None:
            pipe.register_modules(transformer_2=pipe.transformer)  # one expert file: it runs every step
            warnings.append(_NOTE_22)
        return pipe, warnings

    def _image_encoder(self, index: Mapping[str, Any], config: Path, parts: Parts, dtype: Any
                       ) -> tuple[Parts, Any]:
        """(the parts without the CLIP vision file, the image encoder) for 2.1 I2V single files."""
        spec = index.get("image_encoder")
        if not isinstance(spec, list) or spec[0] is None:
            return parts, None
        from app.engine.families.loading import component_class

        cls = component_class(index, "image_encoder")
        model = build_text_model(cls, config, "image_encoder")
        own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        rest = []
        found = None
        for p in parts.text_encoders:
            state = read_tensors(p) if found is None else None
            if state is not None:
                fitted = self._fitting("image_encoder", state, own, model)
                if fitted is not None:
                    found = fill(model, fitted, dtype, p.name)
                    continue
            rest.append(p)
        if found is None and any((config / "image_encoder").glob("*.safetensors")):
            found = cls.from_pretrained(str(config / "image_encoder"), local_files_only=True, dtype=dtype)
        if found is None:
            raise LoadError("Wan 2.1 I2V needs its CLIP image encoder: add clip_vision_h.safetensors (ComfyUI "
                            "models/clip_vision) as one of Load Model's text encoder files, or use a diffusers folder")
        return Parts(tuple(rest), parts.vae), found

    def _from_folder(self, index: Mapping[str, Any], config: Path, name: str, dtype: Any) -> Any:
        if name == "image_encoder" and getattr(_SLOT, "image_encoder", None) is not None:
            return _SLOT.image_encoder
        return super()._from_folder(index, config, name, dtype)

    def _vae(self, index: Mapping[str, Any], config: Path, file: Path | None, rest: dict[str, Any],
             dtype: Any, path: Path) -> Any:
        import torch

        return super()._vae(index, config, file, rest, torch.float32, path)

    def convert_vae(self, state: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
        from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

        return convert_wan_vae_to_diffusers(state)

    # -- latents (N, C, F, h, w), normalised per channel ------------------------------------------
    def vae_decode(self, vae: Any, z: Any) -> Any:
        """Latents (N, C, h, w) of one frame, or (N, C, F, h, w) -> pixels (N, 3, H, W) / (N, 3, F', H, W)."""
        single = z.ndim == 4
        out = vae.decode((z[:, :, None] if single else z).to(vae.dtype)).sample
        return out[:, :, 0] if single else out

    def vae_encode(self, vae: Any, x: Any) -> Any:
        single = x.ndim == 4
        out = vae.encode((x[:, :, None] if single else x).to(vae.dtype)).latent_dist.mode()
        return out[:, :, 0] if single else out

    def describe(self, variant: str) -> str:
        return self.variant(variant).title


_T2V = ("txt2video", "video2video")

FAMILY = Wan(
    name="wan", title="Wan",
    variants=(
        WanVariant("t2v-1.3b", "Wan 2.1 T2V 1.3B", "wan21-t2v-1.3b", 2_840_000_000, UMT5, steps=50, guidance=5.0,
                   tasks=_T2V, flow_shift=3.0),
        WanVariant("t2v-14b", "Wan 2.1 T2V 14B", "wan21-t2v-14b", 28_580_000_000, UMT5, steps=50, guidance=5.0,
                   tasks=_T2V, flow_shift=5.0, note=_NOTE_22),
        WanVariant("i2v-14b", "Wan 2.1 I2V 14B", "wan21-i2v-14b", 32_780_000_000, UMT5 + CLIP_H, steps=40,
                   guidance=5.0, tasks=("img2video",), flow_shift=3.0),
        WanVariant("t2v-a14b", "Wan 2.2 T2V A14B", "wan22-t2v-a14b", 2 * 28_580_000_000, UMT5, steps=40,
                   guidance=4.0, tasks=_T2V, guidance_2=3.0, boundary=0.875, flow_shift=12.0),
        WanVariant("i2v-a14b", "Wan 2.2 I2V A14B", "wan22-i2v-a14b", 2 * 28_600_000_000, UMT5, steps=40,
                   guidance=3.5, tasks=("img2video",), guidance_2=3.5, boundary=0.9, flow_shift=5.0),
        WanVariant("ti2v-5b", "Wan 2.2 TI2V 5B", "wan22-ti2v-5b", 10_000_000_000, UMT5, steps=50, guidance=5.0,
                   tasks=("txt2video", "img2video"), flow_shift=5.0, fps=24,
                   note="Wan 2.2 TI2V 5B ships no offline config: load its diffusers folder (or set a config folder)"),
    ),
    pipelines={"txt2video": "WanPipeline", "img2video": "WanImageToVideoPipeline",
               "video2video": "WanVideoToVideoPipeline"},
    text_encoders=("text_encoder",), latent_channels=16, size_multiple=16,
    lora_components=("transformer", "transformer_2"),
    lora_words=("wan",),
    lora_keys=("self_attn.q.", "self_attn_q.", "cross_attn.k.", "cross_attn_k.", "blocks.0.attn2.add_k_proj",
               "blocks_0_ffn_0.", "blocks.0.ffn.0."),
    kohya_prefixes={"lora_unet_": "transformer", "lora_transformer_": "transformer"},
    dotted_prefixes={"transformer.": "transformer", "transformer_2.": "transformer_2",
                     "diffusion_model.": "transformer", "model.diffusion_model.": "transformer"},
    lora_experts={"both": ("transformer", "transformer_2"), "high_noise": ("transformer",),
                  "low_noise": ("transformer_2",)},
)
