"""LoRA file formats -> one neutral form: per target module, (down, up, alpha, DoRA magnitude).

Accepted key styles:
- kohya / A1111 / LyCORIS: `lora_unet_<module_with_underscores>.lora_down.weight` / `.lora_up.weight`
  / `.alpha` / `.dora_scale`, text encoders as `lora_te_` (SD), `lora_te1_` / `lora_te2_` (SDXL).
  UNet names may be diffusers-style (`down_blocks_0_attentions_0_...`) or LDM-style
  (`input_blocks_1_1_...`, through `nodes.diffusion.unet_names`, the table the exporter writes with).
- diffusers / peft: `unet.<module>.lora_A.weight` / `lora_B`, `text_encoder.` / `text_encoder_2.`,
  `base_model.model.<module>...` (a bare peft model), `...lora_magnitude_vector` (DoRA), and the
  old attention-processor form `...processor.to_q_lora.down.weight`.

Names are resolved against the actual modules of the loaded model, so the `text_model.` level
that transformers 5 removed from CLIPTextModel is matched either way. A key that resolves to no
module is reported in `unmatched`, never silently dropped.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nodes.diffusion.unet_names import ldm_unet_prefixes, to_ldm_name

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
_KOHYA_PREFIX = {"lora_unet_": "unet", "lora_te_": "text_encoder", "lora_te1_": "text_encoder",
                 "lora_te2_": "text_encoder_2"}
_KOHYA_SUFFIX = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha",
                 "dora_scale": "dora_scale"}
_PEFT_SUFFIX = [(".lora_A.weight", "down"), (".lora_B.weight", "up"), (".lora.down.weight", "down"),
                (".lora.up.weight", "up"), (".lora_down.weight", "down"), (".lora_up.weight", "up"),
                (".lora_magnitude_vector.weight", "magnitude"), (".lora_magnitude_vector", "magnitude"),
                (".alpha", "alpha")]
_PROCESSOR = re.compile(r"\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")


@dataclass
class LoraModule:
    down: Any = None
    up: Any = None
    alpha: float | None = None
    magnitude: Any = None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


@dataclass
class ParsedLora:
    """Modules per component ({component: {module name: LoraModule}}), what matched nothing, and
    what matched but cannot be read (`problems`: an alpha that is not one finite number)."""

    modules: dict[str, dict[str, LoraModule]] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    total_keys: int = 0
    style: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def dora(self) -> bool:
        return any(m.magnitude is not None for c in self.modules.values() for m in c.values())

    @property
    def matched_modules(self) -> int:
        return sum(len(c) for c in self.modules.values())


class ModuleTable:
    """Every name a LoRA may use for a module of one component, mapped to its real name."""

    def __init__(self, names: list[str], ldm_pairs: Sequence[tuple[str, str]] | None = None) -> None:
        self.dotted: dict[str, str] = {}
        self.flat: dict[str, str] = {}
        for name in names:
            aliases = {name}
            if name.startswith("text_model."):
                aliases.add(name[len("text_model."):])
            else:
                aliases.add("text_model." + name)
            if ldm_pairs:
                ldm = to_ldm_name(name, ldm_pairs)
                if ldm:
                    aliases.add(ldm)
            for a in aliases:
                self.dotted.setdefault(a, name)
                self.flat.setdefault(a.replace(".", "_"), name)


def module_tables(pipe: Any) -> dict[str, ModuleTable]:
    """Tables for the LoRA-targetable (Linear, Conv2d) modules of a pipeline's components."""
    import torch

    tables = {}
    for comp in COMPONENTS:
        module = getattr(pipe, comp, None)
        if module is None:
            continue
        names = list(dict.fromkeys(
            n.removesuffix(".base_layer") for n, m in module.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and ".lora_" not in n))
        pairs = ldm_unet_prefixes(dict(module.config)) if comp == "unet" else None
        tables[comp] = ModuleTable(names, pairs)
    return tables


def shown_key(key: str) -> str:
    """A key as the load report lists it: keys are arbitrary text, and an empty one or one with a
    line break would break the one-line report, so those are shown as their repr."""
    if key and not any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in key):
        return key
    return repr(key)


def _split_kohya(key: str) -> tuple[str, str, str] | None:
    for prefix, comp in sorted(_KOHYA_PREFIX.items(), key=lambda kv: -len(kv[0])):
        if key.startswith(prefix):
            stem, _, suffix = key[len(prefix):].partition(".")
            if suffix in _KOHYA_SUFFIX:
                return comp, stem, _KOHYA_SUFFIX[suffix]
    return None


def _split_peft(key: str) -> tuple[str, str, str] | None:
    m = _PROCESSOR.search(key)
    if m:
        module = key[:m.start()] + "." + (m.group(1) if m.group(1) != "to_out" else "to_out.0")
        part = "down" if m.group(2) == "down" else "up"
    else:
        found = next(((s, p) for s, p in _PEFT_SUFFIX if key.endswith(s)), None)
        if found is None:
            return None
        module, part = key[: -len(found[0])], found[1]
    for comp in ("text_encoder_2", "text_encoder", "unet"):
        if module.startswith(comp + "."):
            return comp, module[len(comp) + 1:], part
    if module.startswith("base_model.model."):
        module = module[len("base_model.model."):]
    return "", module, part


def parse_lora(state: dict[str, Any], tables: dict[str, ModuleTable]) -> ParsedLora:
    """Resolve every key of a LoRA state dict against the model's modules."""
    import torch

    out = ParsedLora(total_keys=len(state))
    styles = set()
    for key, value in state.items():
        split = _split_kohya(key)
        if split is not None:
            comp, stem, part = split
            table = tables.get(comp)
            name = table.flat.get(stem) if table else None
            styles.add("kohya")
        else:
            split = _split_peft(key)
            if split is None:
                out.unmatched.append(shown_key(key))
                continue
            comp, module, part = split
            styles.add("peft")
            name = None
            for c in ([comp] if comp else ["unet", "text_encoder", "text_encoder_2"]):
                table = tables.get(c)
                if table and module in table.dotted:
                    comp, name = c, table.dotted[module]
                    break
        if name is None:
            out.unmatched.append(shown_key(key))
            continue
        mod = out.modules.setdefault(comp, {}).setdefault(name, LoraModule())
        if part == "alpha":
            alpha = _scalar(value, torch)
            if alpha is None:
                shape = tuple(getattr(value, "shape", ()))
                out.problems.append(f"{shown_key(key)} is not one finite number (shape {shape})")
            mod.alpha = alpha
        elif part == "dora_scale" or part == "magnitude":
            mod.magnitude = value
        else:
            setattr(mod, part, value)
    for comp, mods in list(out.modules.items()):
        for name, mod in list(mods.items()):
            if mod.down is None or mod.up is None:
                prefix = f"{comp}:{name}"
                out.unmatched.append(f"{prefix} (has only {'lora_up' if mod.down is None else 'lora_down'})")
                del mods[name]
        if not mods:
            del out.modules[comp]
    out.style = "+".join(sorted(styles)) or "unknown"
    return out


def _scalar(value: Any, torch: Any) -> float | None:
    """A one-element, finite alpha as a float, else None (a NaN or inf alpha scales to NaN)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex():
            return None
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def fit_problem(mod: LoraModule, layer: Any) -> str | None:
    """Why `mod` cannot adapt `layer` (a torch Linear or Conv2d), in a few words, or None.

    peft would fail on any of these with a state-dict error naming no file, or (rank 0, a
    0-d tensor) with an IndexError; a LoRA made for another model family usually fails here on
    its sizes. A Linear takes down (r, in) and up (out, r), also with trailing 1x1 dims as kohya
    writes them; a Conv2d takes down (r, in) or (r, in, kh, kw) with the layer's kernel, and up
    (out, r) or (out, r, 1, 1).
    """
    import torch

    base = getattr(layer, "base_layer", layer)
    down, up = mod.down, mod.up
    for what, t in (("lora_down", down), ("lora_up", up)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            return f"{what} is not a float tensor ({getattr(t, 'dtype', type(t).__name__)})"
        if t.ndim < 2 or 0 in t.shape:
            return f"{what} has shape {tuple(t.shape)}"
    rank = int(down.shape[0])
    if isinstance(base, torch.nn.Linear):
        n_out, n_in = base.out_features, base.in_features
        ok = (down.numel() == rank * n_in and all(d == 1 for d in down.shape[2:])
              and up.shape[0] == n_out and up.numel() == n_out * rank and all(d == 1 for d in up.shape[2:]))
    elif isinstance(base, torch.nn.Conv2d):
        n_out, n_in = base.out_channels, base.in_channels
        kernel = tuple(base.kernel_size)
        ok = ((tuple(down.shape) == (rank, n_in) and kernel == (1, 1))
              or tuple(down.shape) == (rank, n_in, *kernel)) and tuple(up.shape) in ((n_out, rank), (n_out, rank, 1, 1))
    else:
        return f"targets a {type(base).__name__}, not a Linear or Conv2d layer"
    if not ok:
        return (f"lora_down {tuple(down.shape)} / lora_up {tuple(up.shape)} do not fit the layer "
                f"({n_in} in, {n_out} out)")
    return None


def magnitude_for(mod: LoraModule, out_features: int, in_features: int) -> tuple[Any, str]:
    """(magnitude, axis) of a DoRA module: axis "out", "in", "" (no DoRA) or "bad".

    peft's `lora_magnitude_vector` is 1-D on the output axis; kohya/LyCORIS `dora_scale` is
    (out, 1) on the output axis or (1, in) on the input axis (what kohya, LyCORIS and the
    imagebash trainer write by default, and what ComfyUI reads).
    """
    mag = mod.magnitude
    if mag is None:
        return None, ""
    if not hasattr(mag, "ndim") or mag.ndim == 0 or not mag.is_floating_point():
        return None, "bad"
    if mag.ndim == 1 or (mag.shape[0] == out_features and mag.numel() == out_features):
        return (mag.reshape(out_features), "out") if mag.numel() == out_features else (None, "bad")
    if mag.shape[0] == 1 and mag.numel() == in_features:
        return mag.reshape(in_features), "in"
    return None, "bad"
