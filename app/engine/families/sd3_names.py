"""Stability AI's original SD3/3.5 MMDiT module names -> diffusers' `SD3Transformer2DModel` names.

SAI's checkpoints (and kohya's SD 3.5 LoRAs, which diffusers cannot read) name a block
`joint_blocks.N.{x_block,context_block}` with fused `attn.qkv` layers; SD 3.5 medium (MMDiT-X)
adds a second image self-attention `x_block.attn2` in its `dual_attention_layers`, and the last
context block is "pre-only": it keeps only `attn.qkv`, the q/k norms and an adaLN layer of two
chunks, which diffusers' `AdaLayerNormContinuous` stores as (scale, shift) where SAI has
(shift, scale), as in the final layer. The table is built from the config (depth, width, dual
layers), so tiny models convert too; see `flux_names` for how a table is applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.engine.families.base import Target
from app.engine.families.flux_names import fuse_state, fused, split_state


def _layout(config: Mapping[str, Any]) -> tuple[int, int, set[int]]:
    """(blocks, attention width, indices of the blocks with a second attention)."""
    inner = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    return int(config["num_layers"]), inner, {int(i) for i in config.get("dual_attention_layers") or ()}


def original_modules(config: Mapping[str, Any]) -> dict[str, tuple[Target, ...]]:
    """Every SAI module (Linear/Conv2d layers: weight and bias) of an SD3 transformer with `config`."""
    n, d, dual = _layout(config)
    m: dict[str, tuple[Target, ...]] = {
        "x_embedder.proj": (Target("pos_embed.proj"),),
        "context_embedder": (Target("context_embedder"),),
        "t_embedder.mlp.0": (Target("time_text_embed.timestep_embedder.linear_1"),),
        "t_embedder.mlp.2": (Target("time_text_embed.timestep_embedder.linear_2"),),
        "y_embedder.mlp.0": (Target("time_text_embed.text_embedder.linear_1"),),
        "y_embedder.mlp.2": (Target("time_text_embed.text_embedder.linear_2"),),
    }
    qkv = ("to_q", "to_k", "to_v")
    for i in range(n):
        x, c, dst = f"joint_blocks.{i}.x_block.", f"joint_blocks.{i}.context_block.", f"transformer_blocks.{i}."
        pre_only = i == n - 1
        m[x + "attn.qkv"] = fused(dst + "attn.", qkv, (d, d, d))
        m[x + "attn.proj"] = (Target(dst + "attn.to_out.0"),)
        m[x + "mlp.fc1"] = (Target(dst + "ff.net.0.proj"),)
        m[x + "mlp.fc2"] = (Target(dst + "ff.net.2"),)
        m[x + "adaLN_modulation.1"] = (Target(dst + "norm1.linear"),)
        if i in dual:
            m[x + "attn2.qkv"] = fused(dst + "attn2.", qkv, (d, d, d))
            m[x + "attn2.proj"] = (Target(dst + "attn2.to_out.0"),)
        m[c + "attn.qkv"] = fused(dst + "attn.", ("add_q_proj", "add_k_proj", "add_v_proj"), (d, d, d))
        m[c + "adaLN_modulation.1"] = (Target(dst + "norm1_context.linear", swap=pre_only),)
        if not pre_only:
            m[c + "attn.proj"] = (Target(dst + "attn.to_add_out"),)
            m[c + "mlp.fc1"] = (Target(dst + "ff_context.net.0.proj"),)
            m[c + "mlp.fc2"] = (Target(dst + "ff_context.net.2"),)
    m["final_layer.linear"] = (Target("proj_out"),)
    m["final_layer.adaLN_modulation.1"] = (Target("norm_out.linear", swap=True),)
    return m


def original_params(config: Mapping[str, Any]) -> dict[str, str]:
    """Original parameter keys that are not module weights -> diffusers keys: the positional
    embedding (kept as it is) and the q/k RMS norms of SD 3.5 (`qk_norm`)."""
    n, _d, dual = _layout(config)
    p = {"pos_embed": "pos_embed.pos_embed"}
    for i in range(n):
        x, c, dst = f"joint_blocks.{i}.x_block.attn", f"joint_blocks.{i}.context_block.attn", f"transformer_blocks.{i}."
        p[x + ".ln_q.weight"] = dst + "attn.norm_q.weight"
        p[x + ".ln_k.weight"] = dst + "attn.norm_k.weight"
        p[c + ".ln_q.weight"] = dst + "attn.norm_added_q.weight"
        p[c + ".ln_k.weight"] = dst + "attn.norm_added_k.weight"
        if i in dual:
            p[x + "2.ln_q.weight"] = dst + "attn2.norm_q.weight"
            p[x + "2.ln_k.weight"] = dst + "attn2.norm_k.weight"
    return p


def convert_checkpoint(state: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """SAI-named SD3 transformer tensors (no file prefix) -> diffusers' keys for `config`."""
    return split_state(state, original_modules(config), original_params(config), "SD3")


def to_original(state: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """diffusers SD3 transformer tensors -> SAI names: the exact inverse of `convert_checkpoint`."""
    return fuse_state(state, original_modules(config), original_params(config), "SD3")
