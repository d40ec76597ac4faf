"""Black Forest Labs' original Flux.1 module names -> diffusers' `FluxTransformer2DModel` names.

BFL's checkpoints (and with them kohya, ComfyUI and XLabs LoRAs) fuse layers diffusers keeps
apart: a double block's `img_attn.qkv` is diffusers' `to_q`/`to_k`/`to_v`, a single block's
`linear1` is `to_q`/`to_k`/`to_v`/`proj_mlp` stacked by rows, and the final adaLN layer stores
(shift, scale) where diffusers stores (scale, shift). diffusers' own converters hard-code the
12B geometry (3072 wide, 38 single blocks), so tiny and pruned models cannot go through them;
these tables are built from the model config instead, and one table serves the LoRA reader,
`convert_checkpoint` (original -> diffusers) and its exact inverse `to_original`.

`split_state` and `fuse_state` apply any such table and are shared with `sd3_names`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.engine.families.base import Target

SUFFIXES = ("weight", "bias")
MLP_RATIO = 4.0  # FluxTransformer2DModel's fixed MLP ratio; a config may say otherwise


def _width(config: Mapping[str, Any]) -> tuple[int, int]:
    """(attention width, MLP hidden width) of a Flux config."""
    inner = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    return inner, int(inner * float(config.get("mlp_ratio", MLP_RATIO)))


def fused(prefix: str, names: tuple[str, ...], widths: tuple[int, ...]) -> tuple[Target, ...]:
    """Targets of a layer whose output rows are `names` stacked in order, `widths` rows each."""
    out, start = [], 0
    for name, width in zip(names, widths, strict=True):
        out.append(Target(prefix + name, (start, start + width)))
        start += width
    return tuple(out)


def original_modules(config: Mapping[str, Any]) -> dict[str, tuple[Target, ...]]:
    """Every BFL module (Linear layers: weight and bias) of a Flux transformer with `config`."""
    d, mlp = _width(config)
    m: dict[str, tuple[Target, ...]] = {
        "img_in": (Target("x_embedder"),),
        "txt_in": (Target("context_embedder"),),
        "time_in.in_layer": (Target("time_text_embed.timestep_embedder.linear_1"),),
        "time_in.out_layer": (Target("time_text_embed.timestep_embedder.linear_2"),),
        "vector_in.in_layer": (Target("time_text_embed.text_embedder.linear_1"),),
        "vector_in.out_layer": (Target("time_text_embed.text_embedder.linear_2"),),
    }
    if config.get("guidance_embeds", False):
        m["guidance_in.in_layer"] = (Target("time_text_embed.guidance_embedder.linear_1"),)
        m["guidance_in.out_layer"] = (Target("time_text_embed.guidance_embedder.linear_2"),)
    for i in range(int(config["num_layers"])):
        src, dst = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        m[src + "img_attn.qkv"] = fused(dst + "attn.", ("to_q", "to_k", "to_v"), (d, d, d))
        m[src + "txt_attn.qkv"] = fused(dst + "attn.", ("add_q_proj", "add_k_proj", "add_v_proj"), (d, d, d))
        m[src + "img_attn.proj"] = (Target(dst + "attn.to_out.0"),)
        m[src + "txt_attn.proj"] = (Target(dst + "attn.to_add_out"),)
        m[src + "img_mlp.0"] = (Target(dst + "ff.net.0.proj"),)
        m[src + "img_mlp.2"] = (Target(dst + "ff.net.2"),)
        m[src + "txt_mlp.0"] = (Target(dst + "ff_context.net.0.proj"),)
        m[src + "txt_mlp.2"] = (Target(dst + "ff_context.net.2"),)
        m[src + "img_mod.lin"] = (Target(dst + "norm1.linear"),)
        m[src + "txt_mod.lin"] = (Target(dst + "norm1_context.linear"),)
    for i in range(int(config["num_single_layers"])):
        src, dst = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        m[src + "linear1"] = fused(dst, ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), (d, d, d, mlp))
        m[src + "linear2"] = (Target(dst + "proj_out"),)
        m[src + "modulation.lin"] = (Target(dst + "norm.linear"),)
    m["final_layer.linear"] = (Target("proj_out"),)
    m["final_layer.adaLN_modulation.1"] = (Target("norm_out.linear", swap=True),)
    return m


def original_params(config: Mapping[str, Any]) -> dict[str, str]:
    """Original parameter keys that are not module weights (the RMS norms' `scale`s) -> diffusers keys."""
    p: dict[str, str] = {}
    for i in range(int(config["num_layers"])):
        src, dst = f"double_blocks.{i}.", f"transformer_blocks.{i}.attn."
        p[src + "img_attn.norm.query_norm.scale"] = dst + "norm_q.weight"
        p[src + "img_attn.norm.key_norm.scale"] = dst + "norm_k.weight"
        p[src + "txt_attn.norm.query_norm.scale"] = dst + "norm_added_q.weight"
        p[src + "txt_attn.norm.key_norm.scale"] = dst + "norm_added_k.weight"
    for i in range(int(config["num_single_layers"])):
        src, dst = f"single_blocks.{i}.norm.", f"single_transformer_blocks.{i}.attn."
        p[src + "query_norm.scale"] = dst + "norm_q.weight"
        p[src + "key_norm.scale"] = dst + "norm_k.weight"
    return p


def convert_checkpoint(state: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """BFL-named Flux transformer tensors (no file prefix) -> diffusers' keys for `config`."""
    return split_state(state, original_modules(config), original_params(config), "Flux")


def to_original(state: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """diffusers Flux transformer tensors -> BFL names: the exact inverse of `convert_checkpoint`."""
    return fuse_state(state, original_modules(config), original_params(config), "Flux")


# -- applying a table ------------------------------------------------------------------------
def swap_halves(t: Any) -> Any:
    """The two halves of `t`'s rows exchanged ((shift, scale) <-> (scale, shift)); its own inverse."""
    import torch

    half = t.shape[0] // 2
    return torch.cat([t[half:], t[:half]], dim=0)


def _take(t: Any, target: Target) -> Any:
    part = t if target.rows is None else t[target.rows[0]:target.rows[1]]
    return swap_halves(part) if target.swap else part


def _leftovers(what: str, layout: str, keys: list[str]) -> ValueError:
    shown = ", ".join(sorted(keys)[:6]) + (", ..." if len(keys) > 6 else "")
    return ValueError(f"{what} checkpoint: {len(keys)} keys are not in the {layout} layout this config "
                      f"describes (another model, or a config of other depth?): {shown}")


def split_state(state: Mapping[str, Any], modules: Mapping[str, tuple[Target, ...]], params: Mapping[str, str],
                what: str) -> dict[str, Any]:
    """Original tensors -> diffusers tensors through `modules` (rows split, halves swapped) and
    `params` (plain renames); a key neither names is a ValueError listing them."""
    left = dict(state)
    out: dict[str, Any] = {}
    for name, targets in modules.items():
        for suffix in SUFFIXES:
            t = left.pop(f"{name}.{suffix}", None)
            if t is None:
                continue
            end = max((tg.rows[1] for tg in targets if tg.rows), default=None)
            if end is not None and t.shape[0] != end:
                raise ValueError(f"{what} checkpoint: {name}.{suffix} has {t.shape[0]} rows where this config "
                                 f"has {end} (a model of another width?)")
            for tg in targets:
                out[f"{tg.module}.{suffix}"] = _take(t, tg)
    for old, new in params.items():
        if old in left:
            out[new] = left.pop(old)
    if left:
        raise _leftovers(what, "original", list(left))
    return out


def fuse_state(state: Mapping[str, Any], modules: Mapping[str, tuple[Target, ...]], params: Mapping[str, str],
               what: str) -> dict[str, Any]:
    """diffusers tensors -> original tensors: the inverse of `split_state` (bit-exact)."""
    import torch

    left = dict(state)
    out: dict[str, Any] = {}
    for name, targets in modules.items():
        for suffix in SUFFIXES:
            keys = [f"{tg.module}.{suffix}" for tg in targets]
            have = [k for k in keys if k in left]
            if not have:
                continue
            if len(have) != len(keys):
                missing = ", ".join(k for k in keys if k not in left)
                raise ValueError(f"{what} checkpoint: {name}.{suffix} needs {missing} as well")
            parts = []
            for tg, k in zip(targets, keys, strict=True):
                t = left.pop(k)
                if tg.rows and t.shape[0] != tg.rows[1] - tg.rows[0]:
                    raise ValueError(f"{what} checkpoint: {k} has {t.shape[0]} rows where this config has "
                                     f"{tg.rows[1] - tg.rows[0]} (a model of another width?)")
                parts.append((tg, swap_halves(t) if tg.swap else t))
            if len(parts) == 1:
                out[f"{name}.{suffix}"] = parts[0][1]
                continue
            parts.sort(key=lambda p: p[0].rows[0] if p[0].rows else 0)
            out[f"{name}.{suffix}"] = torch.cat([p for _tg, p in parts], dim=0)
    for old, new in params.items():
        if new in left:
            out[old] = left.pop(new)
    if left:
        raise _leftovers(what, "diffusers", list(left))
    return out
