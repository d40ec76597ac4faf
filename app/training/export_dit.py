"""Write a LoRA/DoRA trained on a transformer family (Flux.1, SD 3.5, Qwen-Image) in kohya form
(what ComfyUI, Forge and kohya sd-scripts read and write) and as a diffusers/peft twin.

The trainer adapts diffusers modules (`transformer_blocks.0.attn.to_q`), but kohya-style Flux and
SD 3.5 LoRAs name the modules of the original BFL/SAI checkpoint, where q/k/v (and, in a Flux
single block, the MLP input too) are one fused layer. So, from the family's name table
(`Family.original_names`, built from the transformer's config, the same table the LoRA reader
resolves keys with):
- a plain module is renamed: `lora_unet_double_blocks_0_img_attn_proj`, with the halves of B
  exchanged for adaLN layers diffusers stores as (scale, shift) where the original has (shift, scale);
- a fused module whose trained parts are plain LoRA is written fused and exact: lora_down is the
  parts' A stacked (rank k*r), lora_up places each part's B block-diagonally at its rows (zero rows
  for a part that was not trained) and alpha is the parts' alphas summed, so alpha/rank is kept.
  A loader that keeps the layer fused (ComfyUI) and one that splits it (imagebash) both get
  exactly the trained per-part deltas;
- a fused module with a DoRA part is written per part under OneTrainer's names
  (`lora_transformer_<diffusers name>`, which ComfyUI maps onto rows of the fused weight and
  imagebash onto the module): each trained part's input-axis magnitude normalises by the columns
  of that part alone, which no one (1, in) `dora_scale` of the fused layer can express.
Qwen-Image's original names are the diffusers names: `lora_unet_<diffusers name>`. CLIP text
encoders get `lora_te1_` / `lora_te2_` by slot (from the family's prefixes) with the
`text_model_` level kohya and ComfyUI expect; T5 and Qwen2.5-VL are never trained and refused.

The peft twin (`transformer.<module>.lora_A.weight`, `text_encoder.<module>...`) folds alpha/rank
into lora_B, as `export.py` does; a DoRA gets none, for the reason `export.NO_DORA_TWIN` gives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.engine.families import Family, Target, get_family
from app.training.adapters import LayerWeights
from app.training.export import NO_DORA_TWIN

__all__ = ["NO_DORA_TWIN", "DitAdapterExport", "kohya_state_dict", "kohya_te_prefix",
           "original_of", "peft_adapter_metadata", "peft_state_dict"]


UNET_PREFIX = "lora_unet_"  # original (BFL/SAI) module names, as sd-scripts and ComfyUI write them
ONETRAINER_PREFIX = "lora_transformer_"  # diffusers module names (OneTrainer), read by ComfyUI too
_NUMBERED_TE = re.compile(r"lora_te\d+_")


@dataclass
class DitAdapterExport:
    """What the exporter needs: the family, the trained layers by diffusers name and the config."""

    family: str  # the family's name (app.engine.families): "flux", "sd3", "qwen_image"
    denoiser: dict[str, LayerWeights]  # trained layers of pipe.transformer by module name
    denoiser_config: Mapping[str, Any]  # the transformer's config (dict(transformer.config))
    text_encoders: dict[str, dict[str, LayerWeights]] = field(default_factory=dict)  # slot -> CLIP layers

    @property
    def is_dora(self) -> bool:
        """Whether any adapted layer, denoiser or text encoder, carries a DoRA magnitude."""
        layers = (self.denoiser, *self.text_encoders.values())
        return any(w.magnitude is not None for group in layers for w in group.values())


# names -------------------------------------------------------------------------------------------
def _flat(name: str) -> str:
    return name.replace(".", "_")


def original_of(family: Family, config: Mapping[str, Any]) -> dict[str, tuple[str, tuple[Target, ...]]]:
    """diffusers module -> (original module, all its targets): the family's table inverted.

    Empty for a family whose original names are the diffusers ones (Qwen-Image).
    """
    out: dict[str, tuple[str, tuple[Target, ...]]] = {}
    for orig, targets in family.original_names(family.denoiser, config).items():
        for t in targets:
            if t.module in out:
                raise ValueError(f"{family.title}: {t.module} is a part of both {out[t.module][0]} and {orig}")
            out[t.module] = (orig, tuple(targets))
    return out


def kohya_te_prefix(family: Family, slot: str) -> str:
    """`lora_te1_`, `lora_te2_`, ...: the numbered kohya prefix the family reads `slot` under."""
    found = sorted(p for p, comp in family.kohya_prefixes.items() if comp == slot and _NUMBERED_TE.fullmatch(p))
    if slot not in family.lora_components or not found:
        raise ValueError(f"{family.title} LoRAs have no kohya prefix for the text encoder slot '{slot}'")
    return found[0]


def _clip_tail(name: str, slot: str) -> str:
    """A CLIP layer's kohya name after the prefix (`text_model_encoder_layers_0_self_attn_q_proj`).

    transformers 5 dropped the `text_model.` level from CLIPTextModel, kohya and ComfyUI keep it;
    `text_projection` sits beside it, where ComfyUI looks for it. Anything else is not CLIP's.
    """
    inner = name.removeprefix("text_model.")
    if inner == "text_projection":
        return inner
    if not inner.startswith("encoder.layers."):
        raise ValueError(f"{slot}.{name} is not a CLIP text-encoder layer: only CLIP encoders are exported "
                         "(T5 and Qwen2.5-VL are never trained)")
    return "text_model_" + _flat(inner)


# state dicts -------------------------------------------------------------------------------------
def _swap_halves(t: Any) -> Any:
    import torch

    half = t.shape[0] // 2
    return torch.cat([t[half:], t[:half]], dim=0)


def _fuse(orig: str, targets: tuple[Target, ...], parts: Mapping[str, LayerWeights]) -> tuple[Any, Any, float]:
    """(lora_down, lora_up, alpha) of one fused original layer from its trained plain-LoRA parts.

    Equal alpha/rank (the trainer's case): alpha is the parts' sum, B kept as trained. Unequal:
    each part's scale is folded into its B and alpha is the total rank (scale 1). Either way the
    rows of every part get exactly its own scale * B @ A.
    """
    import torch

    trained = [t for t in targets if t.module in parts]
    ws = [parts[t.module] for t in trained]
    scales = [w.alpha / w.rank for w in ws]
    same = all(s == scales[0] for s in scales)
    n_in = {int(w.down.shape[1]) for w in ws}
    if len(n_in) != 1:
        raise ValueError(f"{orig}: its trained parts take different input widths {sorted(n_in)}")
    rows = max(t.rows[1] for t in targets if t.rows)
    rank = sum(w.rank for w in ws)
    up = torch.zeros(rows, rank, dtype=ws[0].up.dtype)
    col = 0
    for t, w, s in zip(trained, ws, scales, strict=True):
        start, end = t.rows if t.rows else (0, rows)
        if int(w.up.shape[0]) != end - start:
            raise ValueError(f"{t.module} has {w.up.shape[0]} output rows where {orig} gives it {end - start} "
                             "(a config of another width?)")
        b = w.up if same else w.up * s
        up[start:end, col:col + w.rank] = (_swap_halves(b) if t.swap else b).to(up.dtype)
        col += w.rank
    down = torch.cat([w.down.to(ws[0].down.dtype) for w in ws], dim=0)
    alpha = float(sum(w.alpha for w in ws)) if same else float(rank)
    return down.contiguous(), up.contiguous(), alpha


def kohya_state_dict(a: DitAdapterExport) -> dict[str, Any]:
    """Tensors in kohya form: `<key>.lora_down.weight`, `.lora_up.weight`, `.alpha`, `.dora_scale`."""
    import torch

    family = get_family(a.family)
    out: dict[str, Any] = {}

    def put(key: str, down: Any, up: Any, alpha: float, magnitude: Any = None) -> None:
        if key + ".lora_down.weight" in out:
            raise ValueError(f"two layers map to the same kohya key {key}")
        out[key + ".lora_down.weight"] = down.contiguous()
        out[key + ".lora_up.weight"] = up.contiguous()
        out[key + ".alpha"] = torch.tensor(float(alpha), dtype=torch.float32)
        if magnitude is not None:
            if magnitude.numel() != down.shape[1]:
                raise ValueError(f"{key}: DoRA magnitude has {magnitude.numel()} values, the layer "
                                 f"{down.shape[1]} inputs (the exporter takes input-axis magnitudes)")
            out[key + ".dora_scale"] = magnitude.reshape(1, -1).contiguous()

    def put_layer(key: str, w: LayerWeights) -> None:
        put(key, w.down, w.up, w.alpha, w.magnitude)

    table = original_of(family, a.denoiser_config)
    groups: dict[str, dict[str, LayerWeights]] = {}
    for name, w in a.denoiser.items():
        if name in table:
            groups.setdefault(table[name][0], {})[name] = w
        elif table:  # a module the original checkpoint lacks: diffusers-named, as OneTrainer does
            put_layer(ONETRAINER_PREFIX + _flat(name), w)
        else:  # original names are the diffusers names (Qwen-Image)
            put_layer(UNET_PREFIX + _flat(name), w)
    for orig, parts in groups.items():
        targets = table[next(iter(parts))][1]
        if len(targets) == 1 and targets[0].rows is None:
            t, w = targets[0], parts[targets[0].module]
            put(UNET_PREFIX + _flat(orig), w.down, _swap_halves(w.up) if t.swap else w.up, w.alpha, w.magnitude)
        elif any(w.magnitude is not None for w in parts.values()):
            for name, w in parts.items():
                put_layer(ONETRAINER_PREFIX + _flat(name), w)
        else:
            put(UNET_PREFIX + _flat(orig), *_fuse(orig, targets, parts))
    for slot, layers in a.text_encoders.items():
        if not layers:
            continue
        prefix = kohya_te_prefix(family, slot)
        for name, w in layers.items():
            put_layer(prefix + _clip_tail(name, slot), w)
    return out


def _groups(a: DitAdapterExport) -> list[tuple[str, dict[str, LayerWeights]]]:
    """(peft key prefix, layers) per adapted component: the denoiser attribute, then the slots."""
    den = get_family(a.family).denoiser
    return [(den, a.denoiser)] + [(slot, te) for slot, te in a.text_encoders.items()]


def peft_state_dict(a: DitAdapterExport) -> dict[str, Any]:
    """Tensors in diffusers' peft form: `transformer.<module>.lora_A.weight` and so on (scale in lora_B).

    Plain LoRA only: an input-axis DoRA has no peft form (`export.NO_DORA_TWIN`).
    """
    if a.is_dora:
        raise ValueError(NO_DORA_TWIN)
    out: dict[str, Any] = {}
    for prefix, layers in _groups(a):
        for name, w in layers.items():
            out[f"{prefix}.{name}.lora_A.weight"] = w.down.contiguous()
            out[f"{prefix}.{name}.lora_B.weight"] = (w.up * (w.alpha / w.rank)).contiguous()
    return out


def peft_adapter_metadata(a: DitAdapterExport) -> dict[str, Any]:
    """diffusers' `lora_adapter_metadata`: the LoraConfig of each part, keys prefixed by the part.

    target_modules are the exact module names; lora_alpha equals the rank because the scale is
    in lora_B; a rank other than the most common one goes in rank_pattern (alpha_pattern alike),
    keyed so that it matches that module only.
    """
    from collections import Counter

    out: dict[str, Any] = {}
    for prefix, layers in _groups(a):
        if not layers:
            continue
        rank = Counter(w.rank for w in layers.values()).most_common(1)[0][0]
        odd = {"^" + re.escape(n): w.rank for n, w in sorted(layers.items()) if w.rank != rank}
        cfg: dict[str, Any] = {"r": rank, "lora_alpha": rank, "target_modules": sorted(layers),
                               "use_dora": any(w.magnitude is not None for w in layers.values()),
                               "init_lora_weights": True}
        if odd:
            cfg |= {"rank_pattern": odd, "alpha_pattern": dict(odd)}
        out |= {f"{prefix}.{k}": v for k, v in cfg.items()}
    return out
