"""Tiny random-weight Wan 2.1 / 2.2 and AnimateDiff models (seconds to build, seeded).

Wan keeps the real geometry (16 latent channels, 1x2x2 patches, 4x temporal / 8x spatial VAE)
with widths of a few dozen; the UMT5 stand-in uses the offline T5 tokenizer of
`tests.tiny_families`. AnimateDiff is the tiny SD 1.5 of `tests.tiny_models` plus a
MotionAdapter sized to its U-Net. `wan_original_state` renames a diffusers transformer state
dict to the original Wan-AI names (what single files and ComfyUI hold).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SEED = 2025
TEXT_DIM = 32


def make_wan_transformer(seed: int = SEED, in_channels: int = 16, image_dim: int | None = None) -> Any:
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                 in_channels=in_channels, out_channels=16, text_dim=TEXT_DIM, freq_dim=32,
                                 ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                 rope_max_seq_len=32, image_dim=image_dim,
                                 added_kv_proj_dim=24 if image_dim else None).eval()


def make_wan_vae() -> Any:
    import torch
    from diffusers import AutoencoderKLWan

    torch.manual_seed(SEED + 1)
    return AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True]).eval()


def make_umt5(vocab_size: int) -> Any:
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(SEED + 2)
    cfg = UMT5Config(d_model=TEXT_DIM, d_ff=37, d_kv=8, num_heads=4, num_layers=2, num_decoder_layers=2,
                     relative_attention_num_buckets=8, vocab_size=vocab_size, is_encoder_decoder=False)
    return UMT5EncoderModel(cfg).eval()


def make_wan_pipeline(two_experts: bool = False, image: bool = False) -> Any:
    """WanPipeline (or WanImageToVideoPipeline for `image`: 36 input channels; a 2.2 I2V model
    when `two_experts`, which needs no CLIP image encoder)."""
    from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline, WanPipeline

    from tests.tiny_families import make_t5_tokenizer

    tok = make_t5_tokenizer()
    channels = 36 if image else 16
    parts = dict(tokenizer=tok, text_encoder=make_umt5(len(tok)), vae=make_wan_vae(),
                 scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                   flow_shift=3.0, num_train_timesteps=1000),
                 transformer=make_wan_transformer(SEED, channels))
    if two_experts:
        parts.update(transformer_2=make_wan_transformer(SEED + 7, channels), boundary_ratio=0.875)
    if image:
        if not two_experts:
            raise ValueError("the tiny 2.1 I2V model (CLIP image encoder) is not built here")
        return WanImageToVideoPipeline(image_encoder=None, image_processor=None, **parts)
    return WanPipeline(**parts)


def save_folder(pipe: Any, folder: Path) -> Path:
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def wan_original_state(state: dict[str, Any]) -> dict[str, Any]:
    """A diffusers WanTransformer3DModel state dict in the original Wan-AI names (the inverse of
    diffusers' `convert_wan_transformer_to_diffusers` for T2V/I2V models)."""
    pairs = [("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
             ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
             ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
             ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
             ("condition_embedder.time_proj", "time_projection.1"),
             ("condition_embedder.image_embedder.norm1", "img_emb.proj.0"),
             ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"),
             ("condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"),
             ("condition_embedder.image_embedder.norm2", "img_emb.proj.4"),
             ("attn1", "self_attn"), ("attn2", "cross_attn"), (".to_out.0.", ".o."), (".to_q.", ".q."),
             (".to_k.", ".k."), (".to_v.", ".v."), (".add_k_proj.", ".k_img."), (".add_v_proj.", ".v_img."),
             (".norm_added_k.", ".norm_k_img."), ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"),
             ("proj_out", "head.head")]
    out = {}
    for k, v in state.items():
        new = k
        for a, b in pairs:
            new = new.replace(a, b)
        if new == "scale_shift_table":
            new = "head.modulation"
        elif new.endswith(".scale_shift_table"):
            new = new.replace(".scale_shift_table", ".modulation")
        # diffusers swapped norm2/norm3 (the cross-attention norm is the original norm3)
        new = new.replace(".norm2.", ".norm__tmp.").replace(".norm3.", ".norm2.").replace(".norm__tmp.", ".norm3.")
        out[new] = v.contiguous()
    return out


def write_wan_lora(transformer: Any, path: Path, style: str, rank: int = 2, seed: int = 5) -> Path:
    """A LoRA over every attention and FFN Linear of the Wan blocks, in ComfyUI/diffusion-pipe
    (`diffusion_model.blocks.N.self_attn.q.lora_A.weight`) or musubi-tuner form
    (`lora_unet_blocks_N_self_attn_q.lora_down.weight` + `.alpha`)."""
    import torch
    from safetensors.torch import save_file

    from app.engine.families.wan import original_modules

    g = torch.Generator().manual_seed(seed)
    layers = dict(transformer.named_modules())
    state = {}
    for orig, (target,) in original_modules(dict(transformer.config)).items():
        if not orig.startswith("blocks."):
            continue
        layer = layers[target.module]
        down = torch.randn(rank, layer.in_features, generator=g) * 0.5
        up = torch.randn(layer.out_features, rank, generator=g) * 0.5
        if style == "comfyui":
            state[f"diffusion_model.{orig}.lora_A.weight"] = down
            state[f"diffusion_model.{orig}.lora_B.weight"] = up
        else:
            flat = "lora_unet_" + orig.replace(".", "_")
            state[f"{flat}.lora_down.weight"] = down
            state[f"{flat}.lora_up.weight"] = up
            state[f"{flat}.alpha"] = torch.tensor(float(rank))
    save_file(state, str(path), metadata={"ss_base_model_version": "wan2.1_t2v"} if style == "musubi" else None)
    return path


# ---------------------------------------------------------------------------------- AnimateDiff


def make_motion_adapter(block_out_channels: tuple[int, ...]) -> Any:
    import torch
    from diffusers import MotionAdapter

    torch.manual_seed(SEED + 3)
    adapter = MotionAdapter(block_out_channels=tuple(block_out_channels), motion_layers_per_block=2,
                            motion_transformer_layers_per_block=1, motion_num_attention_heads=8,
                            motion_norm_num_groups=16, motion_max_seq_length=32, use_motion_mid_block=True)
    with torch.no_grad():  # zero-initialised output projections would make the motion modules no-ops
        for name, p in adapter.named_parameters():
            if "proj_out" in name:
                p.normal_(0, 0.3)
    return adapter.eval()


def sd_unet_channels(sd_folder: Path) -> tuple[int, ...]:
    cfg = json.loads((Path(sd_folder) / "unet" / "config.json").read_text(encoding="utf-8"))
    return tuple(cfg["block_out_channels"])


def build_all(root: Path, sd_folder: Path | None = None) -> dict[str, Path]:
    """wan21_dir, wan22_dir (two experts), wan22_i2v_dir (diffusers folders); wan21_file (the
    2.1 transformer in original names, ComfyUI prefix), wan21_config (wan21_dir's configs without
    weights); and, with `sd_folder` (a tiny SD 1.5 folder), motion_dir and motion_file."""
    import shutil

    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    wan21 = make_wan_pipeline()
    out["wan21_dir"] = save_folder(wan21, root / "wan21")
    out["wan22_dir"] = save_folder(make_wan_pipeline(two_experts=True), root / "wan22")
    out["wan22_i2v_dir"] = save_folder(make_wan_pipeline(two_experts=True, image=True), root / "wan22_i2v")
    state = {"model.diffusion_model." + k: v for k, v in wan_original_state(wan21.transformer.state_dict()).items()}
    out["wan21_file"] = root / "wan21_t2v_comfy.safetensors"
    save_file(state, str(out["wan21_file"]))
    cfg = root / "wan21_config"
    shutil.copytree(out["wan21_dir"], cfg, ignore=lambda d, names: [n for n in names if n.endswith(".safetensors")
                                                                     and "transformer" in d])
    out["wan21_config"] = cfg
    if sd_folder is not None:
        adapter = make_motion_adapter(sd_unet_channels(sd_folder))
        out["motion_dir"] = root / "motion_adapter"
        adapter.save_pretrained(str(out["motion_dir"]), safe_serialization=True)
        out["motion_file"] = root / "motion_adapter.safetensors"
        save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, str(out["motion_file"]))
    return out
