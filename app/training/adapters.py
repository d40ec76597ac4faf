"""LoRA and DoRA adapters on the U-Net and text encoders, through peft.

LoRA is plain peft. DoRA is peft's DoRA with the magnitude on the *input* axis: W' = (W + dW) *
(m / ||W + dW||_col), m of shape (in,). That is the form kohya/LyCORIS write by default and the
one ComfyUI reads from a `dora_scale` of shape (1, in) (it agrees to ~4e-6, see FACTS.md);
peft's own output-axis magnitude would need ComfyUI's output-axis branch, which normalises by the
original weight and so differs by several per cent. The input-axis form equals feeding
`x * (m / ||W + dW||_col)` to W + dW, which is what the variant's forward does; the norm is
detached as in the DoRA paper (section 4.3), so training costs about the same as peft's DoRA.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

UNET_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
UNET_FF = ("ff.net.0.proj", "ff.net.2")
TE_ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")
TE_FF = ("fc1", "fc2")
ADAPTER = "default"


@dataclass
class LayerWeights:
    """One adapted layer in a tool-neutral form: down (r, in), up (out, r), alpha, magnitude (in,)."""

    down: Any
    up: Any
    alpha: float
    magnitude: Any | None = None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


def target_modules(kind: str, targets: str) -> list[str]:
    """peft target names for `kind` 'unet' or 'te' and the config's `targets` choice."""
    att, ff = (UNET_ATTENTION, UNET_FF) if kind == "unet" else (TE_ATTENTION, TE_FF)
    return list(att) + (list(ff) if targets == "attention+ff" else [])


def denoiser_targets(spec: Any, targets: str, blocks: str = "", title: str = "this model") -> list[str] | str:
    """peft `target_modules` for a family's denoiser: its attention (+ MLP) layer names, as suffixes,
    or a regex over block indices when `blocks` limits training ("double:0-9, single:20-37") or a
    name also occurs outside the blocks (Flux's top-level proj_out)."""
    import re

    names = list(spec.attention) + (list(spec.ff) if targets == "attention+ff" else [])
    chosen = parse_blocks(blocks, spec.block_groups, title)
    if not chosen and not any(n in spec.block_only for n in names):
        return names
    if not chosen:
        chosen = [(prefix, None) for prefix in spec.block_groups.values()]
    inner = "|".join(re.escape(n) for n in names)
    parts = []
    for prefix, indices in chosen:
        index = "|".join(str(i) for i in sorted(indices)) if indices else r"\d+"
        parts.append(rf"{re.escape(prefix)}\.(?:{index})\.(?:{inner})")
    return "|".join(parts)


def parse_blocks(blocks: str, groups: Any, title: str) -> list[tuple[str, set[int] | None]]:
    """`"double:0-9, single:20"` -> [(module prefix, block indices)]; a clear error for bad text."""
    out: dict[str, set[int]] = {}
    for part in [p.strip() for p in str(blocks or "").split(",") if p.strip()]:
        group, _, spans = part.partition(":")
        group = group.strip()
        if group not in groups:
            known = ", ".join(groups) or "none: it has no named blocks"
            raise ValueError(f"blocks: unknown block group '{group}' for {title} (groups: {known})")
        try:
            for span in spans.split("+"):
                lo, _, hi = span.strip().partition("-")
                first, last = int(lo), int(hi or lo)
                if first < 0 or last < first:
                    raise ValueError
                out.setdefault(groups[group], set()).update(range(first, last + 1))
        except ValueError:
            raise ValueError(f"blocks: '{part}' is not group:first-last (e.g. double:0-9)") from None
    return [(prefix, idx) for prefix, idx in out.items()]


def add_adapter(model: Any, *, rank: int, alpha: float, targets: list[str], dora: bool) -> list[str]:
    """Inject a trainable LoRA (or input-axis DoRA) into `model`; returns the adapted layer names."""
    from peft import LoraConfig, inject_adapter_in_model

    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights="gaussian",
                     use_dora=dora, lora_dropout=0.0)
    model.requires_grad_(False)
    inject_adapter_in_model(cfg, model, adapter_name=ADAPTER)
    names = [n for n, m in model.named_modules() if _is_lora_linear(m)]
    if not names:
        raise ValueError(f"no layer of {type(model).__name__} matches the targets {targets}")
    if dora:
        for n in names:
            _make_input_axis(model.get_submodule(n))
    for n, p in model.named_parameters():
        p.requires_grad_(_is_adapter_param(n))
    return names


def _is_lora_linear(m: Any) -> bool:
    return hasattr(m, "lora_A") and ADAPTER in getattr(m, "lora_A", {})


def _is_adapter_param(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name or ".lora_magnitude_vector." in name


def trainable_parameters(model: Any) -> list[Any]:
    return [p for p in model.parameters() if p.requires_grad]


def adapter_tensors(model: Any) -> dict[str, Any]:
    """The adapter's parameters by name (for checkpoints): exactly what training changes."""
    return {n: p.detach() for n, p in model.named_parameters() if _is_adapter_param(n)}


def load_adapter_tensors(model: Any, tensors: dict[str, Any]) -> None:
    """Copy checkpointed adapter parameters back; a missing or extra name is an error."""
    import torch

    params = {n: p for n, p in model.named_parameters() if _is_adapter_param(n)}
    missing = sorted(set(params) - set(tensors))
    extra = sorted(set(tensors) - set(params))
    if missing or extra:
        raise ValueError(f"checkpoint does not match this adapter ({len(missing)} missing, {len(extra)} unexpected "
                         f"tensors, e.g. {(missing or extra)[0]}); were rank, targets or network changed?")
    with torch.no_grad():
        for n, p in params.items():
            t = tensors[n]
            if t.shape != p.shape:
                raise ValueError(f"checkpoint tensor {n} has shape {tuple(t.shape)}, the adapter {tuple(p.shape)}; "
                                 "was the rank changed?")
            p.copy_(t.to(p.device, p.dtype))


def layer_weights(model: Any) -> dict[str, LayerWeights]:
    """Every adapted layer of `model` by module name, in float32 on the CPU."""
    out = {}
    for name, m in model.named_modules():
        if not _is_lora_linear(m):
            continue
        down = m.lora_A[ADAPTER].weight.detach().float().cpu().contiguous()
        up = m.lora_B[ADAPTER].weight.detach().float().cpu().contiguous()
        alpha = float(m.scaling[ADAPTER]) * down.shape[0]
        mag = None
        if ADAPTER in getattr(m, "lora_magnitude_vector", {}):
            mag = m.lora_magnitude_vector[ADAPTER].weight.detach().float().cpu().contiguous()
        out[name] = LayerWeights(down, up, alpha, mag)
    return out


# input-axis DoRA ---------------------------------------------------------------------------------
def set_input_axis_dora(layer: Any, adapter_name: str, magnitude: Any) -> None:
    """Make adapter `adapter_name` of a peft LoRA Linear `layer` an input-axis DoRA with
    `magnitude` ((in,) or a kohya `dora_scale` of shape (1, in)); for loaders of such files."""
    import torch
    from peft.tuners.lora.dora import DoraLinearLayer

    mag = magnitude.reshape(-1)
    base = layer.get_base_layer()
    if mag.numel() != base.in_features:
        raise ValueError(f"input-axis DoRA scale has {mag.numel()} values, the layer {base.in_features} inputs")
    if adapter_name not in layer.lora_magnitude_vector:
        if "lora_magnitude_vector" not in layer.adapter_layer_names:
            layer.adapter_layer_names = (*layer.adapter_layer_names, "lora_magnitude_vector")
        layer.lora_magnitude_vector[adapter_name] = DoraLinearLayer(fan_in_fan_out=False)
    w = base.weight
    layer.lora_magnitude_vector[adapter_name].weight = torch.nn.Parameter(
        mag.to(w.device, torch.float32), requires_grad=False)
    layer.lora_variant[adapter_name] = input_axis_variant()


def _make_input_axis(module: Any) -> None:
    import torch

    w = module.get_base_layer().weight.detach().float()
    mag = module.lora_magnitude_vector[ADAPTER]
    mag.weight = torch.nn.Parameter(torch.linalg.norm(w, dim=0).to(w.device), requires_grad=True)
    module.lora_variant[ADAPTER] = input_axis_variant()


def _input_axis_scale(module: Any, adapter: str) -> Any:
    """m / ||W + dW||_col with the norm detached: shape (in,)."""
    import torch

    a = module.lora_A[adapter].weight
    b = module.lora_B[adapter].weight
    w = module.get_base_layer().weight
    delta = (b.detach().float() @ a.detach().float()) * module.scaling[adapter]
    norm = torch.linalg.norm(w.float() + delta, dim=0)
    return module.lora_magnitude_vector[adapter].weight / norm


@functools.cache
def input_axis_variant() -> type:
    """The peft LoRA variant class for input-axis DoRA (built on first use: peft loads lazily)."""
    import torch.nn.functional as F
    from peft.tuners.lora.variants import DoraLinearVariant

    class InputAxisDora(DoraLinearVariant):
        @staticmethod
        def forward(module: Any, active_adapter: str, x: Any, result: Any, **kwargs: Any) -> Any:
            scale = _input_axis_scale(module, active_adapter).to(x.dtype)
            w = module.get_base_layer().weight
            lora = module.lora_B[active_adapter](module.lora_A[active_adapter](x * scale))
            return result + F.linear(x * (scale - 1), w.to(x.dtype)) + lora * module.scaling[active_adapter]

        @staticmethod
        def merge_safe(module: Any, active_adapter: str, orig_weight: Any) -> Any:
            scale = _input_axis_scale(module, active_adapter).detach()
            merged = (orig_weight.float() + module.get_delta_weight(active_adapter).float()) * scale[None, :]
            return merged.to(orig_weight.dtype)

        @staticmethod
        def merge_unsafe(module: Any, active_adapter: str, orig_weight: Any) -> None:
            orig_weight.data = InputAxisDora.merge_safe(module, active_adapter, orig_weight)

        @staticmethod
        def unmerge(module: Any, active_adapter: str, orig_weight: Any) -> Any:
            raise NotImplementedError("an input-axis DoRA cannot be unmerged; reload the base model")

    return InputAxisDora
