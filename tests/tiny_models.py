"""Tiny random-weight Stable Diffusion models and LoRA files for tests and benchmarks.

The models keep real SD geometry where it matters to the code under test: a 4-block VAE with
scale factor 8 (the diffusers test VAE has factor 2), a 4-block UNet with two layers per block
and cross-attention in the first three blocks (SD 1.x layout, so the LDM key conversion is the
real one), a CLIP text model (hidden size 32) and a CLIP BPE tokenizer built from a small vocab
this module writes. The SD model is saved as a diffusers folder and as a single-file
checkpoint in the original LDM key layout; the SDXL-style one has two text encoders.

LoRA writers produce kohya/A1111 files (`lora_unet_...`, `lora_te_text_model_...` with
`lora_down`/`lora_up`/`alpha`), peft/diffusers files (`unet....lora_A.weight`) and kohya DoRA
files (`dora_scale`, input axis (1, in) by default, or output axis (out, 1)).
"""

from __future__ import annotations

import json
from pathlib import Path

from app.engine.model_configs import byte_chars
from nodes.diffusion.unet_names import ldm_unet_prefixes, to_ldm_name

SEED = 1234
TE_HIDDEN = 32

# ---------------------------------------------------------------------------------- tokenizer


_MERGES = ["t h", "th e</w>", "a n", "o n", "e r", "i n", "r e", "a r", "o r", "s t"]


def write_tokenizer_files(folder: Path) -> Path:
    """Write a small CLIP BPE vocab.json + merges.txt into `folder` (covers every byte)."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = byte_chars()  # CLIP's byte table, the same the shipped tokenizers use
    tokens = chars + [c + "</w>" for c in chars]
    for m in _MERGES:
        tokens.append(m.replace(" ", ""))
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(_MERGES) + "\n", encoding="utf-8")
    return folder


def make_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    write_tokenizer_files(folder)
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    merges = [tuple(m.split()) for m in _MERGES]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


# --------------------------------------------------------------------------------- components


def _text_config(vocab_size: int, projection: bool = False):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        hidden_size=TE_HIDDEN, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=vocab_size, max_position_embeddings=77, bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1, projection_dim=TE_HIDDEN,
        hidden_act="quick_gelu" if not projection else "gelu")


def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        block_out_channels=(8, 16, 16, 16), norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=64, scaling_factor=0.18215)


def make_sd_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(16, 32, 32, 32), norm_num_groups=8, cross_attention_dim=TE_HIDDEN,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)


def make_sdxl_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(16, 32, 32), norm_num_groups=8, cross_attention_dim=2 * TE_HIDDEN,
        attention_head_dim=(4, 8, 8), use_linear_projection=True,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + TE_HIDDEN, transformer_layers_per_block=1)


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  num_train_timesteps=1000, steps_offset=1)


def make_sd_pipeline(tmp: Path):
    """A tiny StableDiffusionPipeline with random weights (seeded, so always the same)."""
    import torch
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel

    torch.manual_seed(SEED)
    tok = make_tokenizer(tmp / "_tok")
    te = CLIPTextModel(_text_config(len(tok)))
    return StableDiffusionPipeline(
        vae=make_vae(), text_encoder=te, tokenizer=tok, unet=make_sd_unet(), scheduler=_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def make_sdxl_pipeline(tmp: Path):
    import torch
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(SEED + 1)
    tok = make_tokenizer(tmp / "_tok")
    tok2 = make_tokenizer(tmp / "_tok2")
    return StableDiffusionXLPipeline(
        vae=make_vae(), text_encoder=CLIPTextModel(_text_config(len(tok))), tokenizer=tok,
        text_encoder_2=CLIPTextModelWithProjection(_text_config(len(tok2), projection=True)),
        tokenizer_2=tok2, unet=make_sdxl_unet(), scheduler=_scheduler(),
        force_zeros_for_empty_prompt=True)


def save_sd_folder(folder: Path) -> Path:
    pipe = make_sd_pipeline(folder.parent / (folder.name + "_build"))
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def save_sdxl_folder(folder: Path) -> Path:
    pipe = make_sdxl_pipeline(folder.parent / (folder.name + "_build"))
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


# ------------------------------------------------------------------- diffusers -> LDM layout


def unet_to_ldm(sd: dict, config: dict) -> dict:
    """Rename a diffusers UNet state dict to the original LDM (`model.diffusion_model.`) layout."""
    pairs = ldm_unet_prefixes(config)
    out = {}
    for key, value in sd.items():
        name = to_ldm_name(key, pairs)
        if name is None:
            raise KeyError(f"no LDM name for UNet key {key}")
        out["model.diffusion_model." + name] = value
    return out


_VAE_ATTN = [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."),
             ("to_out.0.", "proj_out.")]


def vae_to_ldm(sd: dict, config: dict) -> dict:
    """Rename a diffusers AutoencoderKL state dict to the LDM (`first_stage_model.`) layout."""
    nblocks = len(config["down_block_types"])
    prefixes = [("encoder.conv_norm_out.", "encoder.norm_out."), ("decoder.conv_norm_out.", "decoder.norm_out.")]
    for part in ("encoder", "decoder"):
        prefixes.append((f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1."))
        for j in range(2):
            prefixes.append((f"{part}.mid_block.resnets.{j}.", f"{part}.mid.block_{j + 1}."))
    for i in range(nblocks):
        prefixes.append((f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."))
        prefixes.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."))
        prefixes.append((f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{nblocks - 1 - i}.block."))
        prefixes.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{nblocks - 1 - i}.upsample."))
    out = {}
    for key, value in sd.items():
        new = key
        for old, repl in prefixes:
            if key.startswith(old):
                rest = key[len(old):]
                if "mid.attn_1" in repl:
                    for a, b in _VAE_ATTN:
                        if rest.startswith(a):
                            rest = b + rest[len(a):]
                    if value.ndim == 2:
                        value = value[:, :, None, None]
                new = repl + rest
                break
        out["first_stage_model." + new.replace("conv_shortcut", "nin_shortcut")] = value
    return out


def save_sd_checkpoint(folder: Path, path: Path) -> Path:
    """Write the diffusers folder's weights as one LDM-layout .safetensors file (SD 1.x)."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    sd = unet_to_ldm(pipe.unet.state_dict(), dict(pipe.unet.config))
    sd.update(vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config)))
    for k, v in pipe.text_encoder.state_dict().items():
        k = k if k.startswith("text_model.") else "text_model." + k
        sd["cond_stage_model.transformer." + k] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


# ------------------------------------------------------------------------------------ LoRAs


def _lora_targets(pipe, unet_only: bool = False) -> list[tuple[str, str, int, int]]:
    """(component, module path, in, out) for the attention projections LoRAs usually target."""
    import torch

    found = []
    parts = [("unet", pipe.unet)] + ([] if unet_only else [("text_encoder", pipe.text_encoder)])
    for comp, module in parts:
        for name, sub in module.named_modules():
            if not isinstance(sub, torch.nn.Linear):
                continue
            leaf = name.rsplit(".", 1)[-1]
            parent = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
            if comp == "unet" and (leaf in ("to_q", "to_k", "to_v") or name.endswith("to_out.0")):
                found.append((comp, name, sub.in_features, sub.out_features))
            elif comp == "text_encoder" and parent == "self_attn":
                found.append((comp, name, sub.in_features, sub.out_features))
    return found


def _kohya_name(comp: str, name: str) -> str:
    if comp == "unet":
        return "lora_unet_" + name.replace(".", "_")
    name = name if name.startswith("text_model.") else "text_model." + name
    return "lora_te_" + name.replace(".", "_")


def lora_tensors(pipe, rank: int = 4, seed: int = 7, scale: float = 0.6,
                 unet_only: bool = False) -> dict:
    """Random (down, up) pairs per target module: {(comp, module): (down, up)}."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for comp, name, fin, fout in _lora_targets(pipe, unet_only):
        down = torch.randn(rank, fin, generator=g) * scale
        up = torch.randn(fout, rank, generator=g) * scale
        out[(comp, name)] = (down, up)
    return out


def write_kohya_lora(pipe, path: Path, rank: int = 4, seed: int = 7, alpha: float | None = None,
                     dora: bool = False, unet_only: bool = False, dora_axis: str = "in",
                     dora_jitter: float = 0.5) -> Path:
    """A kohya/A1111-style LoRA, or a LyCORIS-style DoRA: `dora_scale` of shape (1, in) (input axis,
    the kohya/LyCORIS default) or (out, 1) (output axis, peft's), set to the norm of W + dW along
    that axis times (1 + jitter * uniform noise); jitter 0 makes the DoRA equal the plain LoRA."""
    import torch
    from safetensors.torch import save_file

    sd = {}
    g = torch.Generator().manual_seed(seed + 1000)
    modules = dict(pipe.unet.named_modules())
    modules.update({("te", k): v for k, v in pipe.text_encoder.named_modules()})
    for (comp, name), (down, up) in lora_tensors(pipe, rank, seed, unet_only=unet_only).items():
        base = _kohya_name(comp, name)
        sd[base + ".lora_down.weight"] = down
        sd[base + ".lora_up.weight"] = up
        sd[base + ".alpha"] = torch.tensor(float(alpha if alpha is not None else rank))
        if dora:
            w = (modules[name] if comp == "unet" else modules[("te", name)]).weight.detach()
            delta = up @ down * ((alpha if alpha is not None else rank) / rank)
            norm = (w + delta).norm(dim=0 if dora_axis == "in" else 1, keepdim=True)
            sd[base + ".dora_scale"] = norm * (1.0 + dora_jitter * torch.rand(norm.shape, generator=g))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path),
              metadata={"ss_network_module": "lycoris.kohya" if dora else "networks.lora"})
    return path


def write_peft_lora(pipe, path: Path, rank: int = 4, seed: int = 11) -> Path:
    """A diffusers/peft-style LoRA (`unet.<module>.lora_A.weight`, `text_encoder.<module>...`)."""
    from safetensors.torch import save_file

    sd = {}
    for (comp, name), (down, up) in lora_tensors(pipe, rank, seed).items():
        if comp == "text_encoder" and not name.startswith("text_model."):
            name = "text_model." + name
        sd[f"{comp}.{name}.lora_A.weight"] = down
        sd[f"{comp}.{name}.lora_B.weight"] = up
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def build_all(root: Path) -> dict[str, Path]:
    """Build every tiny artefact under `root` (used by the fixtures and benchmarks)."""
    from diffusers import StableDiffusionPipeline

    root.mkdir(parents=True, exist_ok=True)
    sd_dir = save_sd_folder(root / "tiny-sd")
    ckpt = save_sd_checkpoint(sd_dir, root / "checkpoints" / "tiny-sd.safetensors")
    pipe = StableDiffusionPipeline.from_pretrained(sd_dir, local_files_only=True)
    loras = root / "loras"
    return {
        "sd_dir": sd_dir,
        "sd_ckpt": ckpt,
        "sdxl_dir": save_sdxl_folder(root / "tiny-sdxl"),
        "lora_kohya": write_kohya_lora(pipe, loras / "style_kohya.safetensors", seed=7),
        "lora_kohya_b": write_kohya_lora(pipe, loras / "style_b_kohya.safetensors", seed=21),
        "lora_peft": write_peft_lora(pipe, loras / "style_peft.safetensors", seed=11),
        "dora": write_kohya_lora(pipe, loras / "style_dora.safetensors", seed=31, dora=True),
        "dora_plain": write_kohya_lora(pipe, loras / "style_dora_plain.safetensors", seed=31),
    }
