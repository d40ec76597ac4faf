"""A tiny SD 2.x-style single-file checkpoint, loadable through the real offline-config path.

The shipped `resources/model_configs/sd2` folder has the real SD 2.1 geometry (~1.3 B weights),
too big for a test file. `sd2_resources` writes a resources tree whose `model_configs/sd2` has
the tiny geometry but the shipped scheduler config (DDIM, v-prediction: the 768-v assumption)
and tokenizer config, plus the shipped CLIP BPE file; pointing `app.paths.RESOURCES` at it makes
`shipped_config("sd2")`, and so every single-file load, use it unchanged.

The checkpoint has SD 2.x's layout: the LDM U-Net (`model.diffusion_model.`, linear attention
projections, cross-attention on the text width), the LDM VAE and an open_clip text encoder
(`cond_stage_model.model.transformer.resblocks.N.attn.in_proj_weight`, ...), which is what
`detect_family` and diffusers' single-file converter recognise as SD 2.x.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from app.engine.model_configs import BPE_FILE
from tests.tiny_models import SEED, _text_config, make_vae, unet_to_ldm, vae_to_ldm

CLIP_VOCAB = 49408  # shipped_config writes OpenAI CLIP's full vocabulary into the tokenizer folder


def make_sd2_unet():
    from diffusers import UNet2DConditionModel

    from tests.tiny_models import TE_HIDDEN

    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(16, 32, 32, 32), norm_num_groups=8, cross_attention_dim=TE_HIDDEN,
        attention_head_dim=8, use_linear_projection=True, upcast_attention=True,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)


def te_to_open_clip(sd: dict) -> dict:
    """A transformers CLIPTextModel state dict in open_clip's layout under `cond_stage_model.model.`."""
    import torch

    out, qkv = {}, {}
    for key, value in sd.items():
        k = key.removeprefix("text_model.")
        if k == "embeddings.position_ids":
            continue
        if k == "embeddings.token_embedding.weight":
            name = "token_embedding.weight"
        elif k == "embeddings.position_embedding.weight":
            name = "positional_embedding"
        elif k.startswith("final_layer_norm."):
            name = "ln_final." + k.split(".", 1)[1]
        elif k.startswith("encoder.layers."):
            _, _, n, rest = k.split(".", 3)
            block = f"transformer.resblocks.{n}."
            for a, b in (("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."), ("mlp.fc1.", "mlp.c_fc."),
                         ("mlp.fc2.", "mlp.c_proj."), ("self_attn.out_proj.", "attn.out_proj.")):
                if rest.startswith(a):
                    name = block + b + rest[len(a):]
                    break
            else:  # self_attn.{q,k,v}_proj.{weight,bias}: open_clip keeps them as one in_proj
                proj, kind = rest.removeprefix("self_attn.").split(".")
                qkv.setdefault((block, kind), {})[proj[0]] = value
                continue
        else:
            raise KeyError(f"no open_clip name for text encoder key {key}")
        out["cond_stage_model.model." + name] = value
    for (block, kind), parts in qkv.items():
        out[f"cond_stage_model.model.{block}attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def make_sd2_pipeline(tmp: Path):
    """A tiny StableDiffusionPipeline with SD 2.x geometry traits (random weights, seeded)."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    from tests.tiny_models import make_tokenizer

    torch.manual_seed(SEED + 2)
    cfg = _text_config(CLIP_VOCAB)
    cfg.hidden_act = "gelu"  # open_clip's activation (SD 1.x's CLIP uses quick_gelu)
    return StableDiffusionPipeline(
        vae=make_vae(), text_encoder=CLIPTextModel(cfg), tokenizer=make_tokenizer(tmp / "_tok"),
        unet=make_sd2_unet(), scheduler=DDIMScheduler(prediction_type="v_prediction"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def save_sd2_checkpoint(root: Path) -> dict[str, Path]:
    """Write under `root`: `sd2.safetensors` (no metadata), `sd2-eps.safetensors` and
    `sd2-v.safetensors` (the same weights with `modelspec.prediction_type` epsilon / v) and the
    tiny `resources/` tree (see the module docstring). Returns their paths."""
    from safetensors.torch import save_file

    from app.paths import RESOURCES

    pipe = make_sd2_pipeline(root / "_build")
    folder = root / "_build" / "folder"
    pipe.save_pretrained(folder, safe_serialization=True)
    sd = unet_to_ldm(pipe.unet.state_dict(), dict(pipe.unet.config))
    sd.update(vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config)))
    sd.update(te_to_open_clip(pipe.text_encoder.state_dict()))
    sd = {k: v.contiguous() for k, v in sd.items()}
    paths = {"plain": root / "sd2.safetensors", "eps": root / "sd2-eps.safetensors", "v": root / "sd2-v.safetensors"}
    save_file(sd, str(paths["plain"]))
    save_file(sd, str(paths["eps"]), metadata={"modelspec.prediction_type": "epsilon"})
    save_file(sd, str(paths["v"]), metadata={"modelspec.prediction_type": "v"})

    configs = root / "resources" / "model_configs"
    cfg = configs / "sd2"
    for comp in ("unet", "vae", "text_encoder"):
        (cfg / comp).mkdir(parents=True)
        shutil.copy(folder / comp / "config.json", cfg / comp / "config.json")
    shipped = RESOURCES / "model_configs"
    for comp in ("scheduler", "tokenizer"):
        shutil.copytree(shipped / "sd2" / comp, cfg / comp)
    index = json.loads((shipped / "sd2" / "model_index.json").read_text(encoding="utf-8"))
    (cfg / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    bpe = shipped / BPE_FILE
    shutil.copy(bpe, configs / bpe.name)
    paths["resources"] = root / "resources"
    return paths
