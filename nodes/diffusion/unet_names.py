"""diffusers -> LDM/SGM names of U-Net modules: one table for reading LoRAs and for writing them.

diffusers names a U-Net module `down_blocks.1.attentions.0.proj_in`; the original LDM/SGM
checkpoints, and with them kohya, A1111 and ComfyUI (always for SDXL, often for SD 1.x), name the
same module `input_blocks.4.1.proj_in`. The LoRA reader (`nodes.diffusion.lora_keys`) resolves
LDM-named keys through this table, the exporter (`app.training.export`) writes SDXL keys through
it and the tests rename whole state dicts with it, so a fix here reaches reading and writing alike.

The layout follows the U-Net config: block `i` of `n = layers_per_block` has resnets and
attentions `input_blocks.(n+1)*i + j + 1`, then its downsampler `input_blocks.(n+1)*(i+1).0.op`;
up block `i` has `n + 1` of them at `output_blocks.(n+1)*i + j`, its upsampler sitting after the
attention (index 2) in cross-attention blocks and after the resnet (index 1) in the others.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

RESNET_LDM = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
              ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
"""Inside a resnet: diffusers' sub-module names and LDM's."""

_FIXED = (("time_embedding.linear_1", "time_embed.0"), ("time_embedding.linear_2", "time_embed.2"),
          ("add_embedding.linear_1", "label_emb.0.0"), ("add_embedding.linear_2", "label_emb.0.2"),
          ("conv_in", "input_blocks.0.0"), ("conv_norm_out", "out.0"), ("conv_out", "out.2"),
          ("mid_block.attentions.0", "middle_block.1"))

DEFAULT_BLOCKS = 4
"""Blocks assumed when a caller knows only `layers_per_block` (SD 1.x/2.x have 4, SDXL 3); the
extra entries name nothing in a smaller U-Net."""


@functools.lru_cache(maxsize=32)
def ldm_prefixes(layers_per_block: int, up_block_types: tuple[str, ...] = (),
                 n_blocks: int | None = None) -> tuple[tuple[str, str], ...]:
    """(diffusers module prefix, LDM prefix) pairs of a U-Net layout; both without a trailing dot.

    An up block counts as cross-attention (upsampler at index 2) only when `up_block_types` says
    so; `n_blocks` defaults to `len(up_block_types)`, or DEFAULT_BLOCKS when that is empty.
    """
    n = int(layers_per_block)
    if n_blocks is None:
        n_blocks = len(up_block_types) or DEFAULT_BLOCKS
    pairs = list(_FIXED) + [(f"mid_block.resnets.{j}", f"middle_block.{2 * j}") for j in range(2)]
    for i in range(n_blocks):
        for j in range(n):
            k = (n + 1) * i + j + 1
            pairs.append((f"down_blocks.{i}.resnets.{j}", f"input_blocks.{k}.0"))
            pairs.append((f"down_blocks.{i}.attentions.{j}", f"input_blocks.{k}.1"))
        pairs.append((f"down_blocks.{i}.downsamplers.0.conv", f"input_blocks.{(n + 1) * (i + 1)}.0.op"))
        for j in range(n + 1):
            k = (n + 1) * i + j
            pairs.append((f"up_blocks.{i}.resnets.{j}", f"output_blocks.{k}.0"))
            pairs.append((f"up_blocks.{i}.attentions.{j}", f"output_blocks.{k}.1"))
        attn = i < len(up_block_types) and "CrossAttn" in up_block_types[i]
        pairs.append((f"up_blocks.{i}.upsamplers.0", f"output_blocks.{(n + 1) * i + n}.{2 if attn else 1}"))
    return tuple(pairs)


def ldm_unet_prefixes(config: Mapping) -> tuple[tuple[str, str], ...]:
    """The pairs of `ldm_prefixes` for a diffusers UNet2DConditionModel config."""
    return ldm_prefixes(int(config["layers_per_block"]), tuple(config["up_block_types"]),
                        len(config["down_block_types"]))


def to_ldm_name(name: str, pairs: Sequence[tuple[str, str]]) -> str | None:
    """The LDM name of a diffusers U-Net module or parameter name (None when it has none)."""
    for old, new in pairs:
        if name == old or name.startswith(old + "."):
            rest = name[len(old):]  # "" or ".sub.module"
            if ".resnets." in old:
                for a, b in RESNET_LDM:
                    if rest == "." + a or rest.startswith("." + a + "."):
                        rest = "." + b + rest[len(a) + 1:]
                        break
            return new + rest
    return None
