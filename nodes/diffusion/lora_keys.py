"""LoRA file formats -> one neutral form: per target module, (down, up, alpha, DoRA magnitude).

Which components a LoRA may reach, under which key prefixes, and what the original (BFL, SAI,
LDM) checkpoint calls each module all come from the model family (`app.engine.families`), so
this reader knows key *styles*, never families. A key names a module by its diffusers name or
its original name, dotted or flat (dots as underscores), behind any of the family's prefixes:
- kohya / A1111 / LyCORIS / musubi: `lora_unet_<module_flat>.lora_down.weight` / `.lora_up.weight`
  / `.alpha` / `.dora_scale`, text encoders as `lora_te_`, `lora_te1_`, `lora_te2_`, ...;
  OneTrainer's `lora_transformer_<diffusers_flat>`; SD U-Nets also under LDM names
  (`input_blocks_1_1_...`, through `nodes.diffusion.unet_names`, the table the exporter writes with).
- diffusers / peft / ai-toolkit: `<component>.<module>.lora_A.weight` / `lora_B`,
  `base_model.model.<module>...` (a bare peft model), `...lora_magnitude_vector` (DoRA), and the
  old attention-processor form `...processor.to_q_lora.down.weight`.
- ComfyUI: `diffusion_model.<original module>.lora_A.weight` or `.lora_down.weight`, `.alpha`.
- XLabs (Flux): `double_blocks.N.processor.qkv_lora1.down.weight` (`qkv_lora2`: the text stream,
  `proj_lora1/2`: the projections; single blocks `qkv_lora`, `proj_lora`); no alpha (scale 1).

A fused original layer (Flux's `img_attn.qkv`, `single_blocks.N.linear1`) becomes one module per
diffusers target: the down matrix is shared, the up matrix and an output-axis DoRA magnitude are
cut by the target's rows (halves exchanged where diffusers stores them the other way round), an
input-axis magnitude is copied. Names are resolved against the actual modules of the loaded
model, so the `text_model.` level that transformers 5 removed from CLIPTextModel is matched
either way. A key that resolves to no module is reported in `unmatched`, never silently dropped.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.engine.families import Family, NameMap, Target, all_families
from nodes.diffusion.unet_names import ldm_unet_prefixes, to_ldm_name

__all__ = ["KeySpec", "LoraModule", "ModuleTable", "ModuleTables", "ParsedLora", "fit_problem", "key_spec",
           "ldm_unet_prefixes", "magnitude_for", "module_tables", "parse_lora", "shown_key", "to_ldm_name"]

_KOHYA_SUFFIX = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha",
                 "dora_scale": "dora_scale"}
_PEFT_SUFFIX = [(".lora_A.weight", "down"), (".lora_B.weight", "up"), (".lora.down.weight", "down"),
                (".lora.up.weight", "up"), (".lora_down.weight", "down"), (".lora_up.weight", "up"),
                (".lora_magnitude_vector.weight", "magnitude"), (".lora_magnitude_vector", "magnitude"),
                (".dora_scale", "magnitude"), (".alpha", "alpha")]
_PROCESSOR = re.compile(r"\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")
_XLABS = re.compile(r"^(?P<block>(?:.*\.)?(?P<kind>double|single)_blocks\.\d+)\.processor\."
                    r"(?P<layer>qkv|proj)_lora(?P<n>[12]?)\.(?P<part>down|up)\.weight$")
#: XLabs' processor LoRAs -> the original (BFL) module they adapt. A single block's `qkv_lora`
#: covers the q/k/v rows of `linear1` only (the reader takes the targets its rows cover).
_XLABS_NAMES = {("double", "qkv", "1"): "img_attn.qkv", ("double", "qkv", "2"): "txt_attn.qkv",
                ("double", "proj", "1"): "img_attn.proj", ("double", "proj", "2"): "txt_attn.proj",
                ("single", "qkv", ""): "linear1", ("single", "proj", ""): "linear2"}
#: Dotted prefixes that mark a ComfyUI-style file (for naming the style in the load report only).
_COMFY_PREFIXES = ("diffusion_model.", "model.diffusion_model.", "text_encoders.")
_ONETRAINER_PREFIX = "lora_transformer_"


@dataclass
class LoraModule:
    down: Any = None
    up: Any = None
    alpha: float | None = None
    magnitude: Any = None
    source: str = ""  # the fused original module this one was cut from ("" when it was not)

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


@dataclass
class ParsedLora:
    """Modules per component ({component: {module name: LoraModule}}), what matched nothing, and
    what matched but cannot be read (`problems`: an alpha that is not one finite number, an up
    matrix of a fused layer whose rows do not fit it)."""

    modules: dict[str, dict[str, LoraModule]] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    total_keys: int = 0
    style: str = ""
    problems: list[str] = field(default_factory=list)
    family: str = ""  # the family title the tables were built for ("" when unknown)
    rejected: int = 0  # modules named by the file that could not be cut to their layer (in `problems`)

    @property
    def dora(self) -> bool:
        return any(m.magnitude is not None for c in self.modules.values() for m in c.values())

    @property
    def matched_modules(self) -> int:
        return sum(len(c) for c in self.modules.values())


@dataclass(frozen=True)
class KeySpec:
    """What a family says about LoRA keys: components (in search order for unprefixed keys) and
    its flat (kohya) and dotted prefixes, each longest first."""

    components: tuple[str, ...]
    kohya: tuple[tuple[str, str], ...]
    dotted: tuple[tuple[str, str], ...]
    title: str = ""


def _longest_first(pairs: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(pairs.items(), key=lambda kv: -len(kv[0])))


def key_spec(family: Family | None = None, components: Iterable[str] | None = None) -> KeySpec:
    """The key spec of `family`; without one, the union over all families restricted to
    `components` (first family wins a prefix), for callers that hold only a pipeline or tables."""
    if family is not None:
        comps = tuple(family.lora_components)
        dotted = {f"{c}.": c for c in comps}
        dotted.update(family.dotted_prefixes)
        return KeySpec(comps, _longest_first(dict(family.kohya_prefixes)), _longest_first(dotted), family.title)
    families = all_families()
    known = list(dict.fromkeys(c for f in families for c in f.lora_components))
    comps = tuple(components) if components is not None else tuple(known)
    kohya: dict[str, str] = {}
    dotted: dict[str, str] = {f"{c}.": c for c in comps}
    for f in families:
        for prefix, comp in f.kohya_prefixes.items():
            if comp in comps:
                kohya.setdefault(prefix, comp)
        for prefix, comp in f.dotted_prefixes.items():
            if comp in comps:
                dotted.setdefault(prefix, comp)
    return KeySpec(comps, _longest_first(kohya), _longest_first(dotted))


Resolved = tuple[str, "str | tuple[Target, ...]"]
"""(source name, what it is): a real module name, or the targets of a fused original module."""


class ModuleTable:
    """Every name a LoRA may use for a module of one component, mapped to its real name; names
    of fused or re-ordered original modules map to their targets instead."""

    def __init__(self, names: list[str], ldm_pairs: Sequence[tuple[str, str]] | None = None,
                 original: NameMap | None = None) -> None:
        self.dotted: dict[str, str] = {}
        self.flat: dict[str, str] = {}
        self.fused: dict[str, tuple[str, tuple[Target, ...]]] = {}
        self.fused_flat: dict[str, tuple[str, tuple[Target, ...]]] = {}
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
        known = set(names)
        for orig, targets in (original or {}).items():
            if not targets or any(t.module not in known for t in targets):
                continue  # a module this model lacks (a pruned or smaller variant)
            (first, *rest) = targets
            if not rest and first.rows is None and not first.swap:
                self.dotted.setdefault(orig, first.module)
                self.flat.setdefault(orig.replace(".", "_"), first.module)
            else:
                self.fused.setdefault(orig, (orig, tuple(targets)))
                self.fused_flat.setdefault(orig.replace(".", "_"), (orig, tuple(targets)))

    def find(self, name: str, flat: bool = False) -> Resolved | None:
        """(source, module name or targets) for a dotted (or flat) module name, or None."""
        plain = (self.flat if flat else self.dotted).get(name)
        if plain is not None:
            return plain, plain
        return (self.fused_flat if flat else self.fused).get(name)


class ModuleTables(dict[str, ModuleTable]):
    """The tables of a pipeline's components, with the key spec they were built for."""

    def __init__(self, spec: KeySpec) -> None:
        super().__init__()
        self.spec = spec


def _config(module: Any) -> dict[str, Any]:
    config = getattr(module, "config", None)
    if isinstance(config, Mapping):
        return dict(config)
    return dict(config.to_dict()) if hasattr(config, "to_dict") else {}


def module_tables(pipe: Any, family: Family | None = None) -> ModuleTables:
    """Tables for the LoRA-targetable (Linear, Conv2d) modules of a pipeline's components.

    The family gives the components, prefixes and original names; without one, every
    component any family names is looked for. A U-Net without original names from its family
    gets the LDM names of `nodes.diffusion.unet_names`.
    """
    import torch

    spec = key_spec(family)
    present = [c for c in spec.components if getattr(pipe, c, None) is not None]
    if family is None:
        spec = key_spec(None, present)
    tables = ModuleTables(spec)
    for comp in present:
        module = getattr(pipe, comp)
        if not hasattr(module, "named_modules"):
            continue
        names = list(dict.fromkeys(
            n.removesuffix(".base_layer") for n, m in module.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and ".lora_" not in n))
        config = _config(module)
        original = family.original_names(comp, config) if family is not None else {}
        pairs = ldm_unet_prefixes(config) if comp == "unet" and not original else None
        tables[comp] = ModuleTable(names, pairs, original)
    return tables


def shown_key(key: str) -> str:
    """A key as the load report lists it: keys are arbitrary text, and an empty one or one with a
    line break would break the one-line report, so those are shown as their repr."""
    if key and not any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in key):
        return key
    return repr(key)


def _split_kohya(key: str, spec: KeySpec) -> tuple[str, str, str, str] | None:
    """(component, flat stem, part, style) of a flat kohya-style key, or None."""
    for prefix, comp in spec.kohya:
        if key.startswith(prefix):
            stem, _, suffix = key[len(prefix):].partition(".")
            if suffix in _KOHYA_SUFFIX:
                style = "onetrainer" if prefix == _ONETRAINER_PREFIX else "kohya"
                return comp, stem, _KOHYA_SUFFIX[suffix], style
    return None


def _split_dotted(key: str, spec: KeySpec) -> tuple[str, str, str, str] | None:
    """(component or "" for any, dotted module, part, style) of a dotted key, or None."""
    style = ""
    m = _XLABS.match(key)
    if m:
        new = _XLABS_NAMES.get((m.group("kind"), m.group("layer"), m.group("n")))
        if new is None:
            return None
        module, part, style = f"{m.group('block')}.{new}", m.group("part"), "xlabs"
    elif m := _PROCESSOR.search(key):
        module = key[:m.start()] + "." + (m.group(1) if m.group(1) != "to_out" else "to_out.0")
        part, style = m.group(2), "diffusers"
    else:
        found = next(((s, p) for s, p in _PEFT_SUFFIX if key.endswith(s)), None)
        if found is None:
            return None
        module, part = key[: -len(found[0])], found[1]
    for prefix, comp in spec.dotted:
        if module.startswith(prefix):
            style = style or ("comfyui" if prefix.startswith(_COMFY_PREFIXES) else "diffusers")
            return comp, module[len(prefix):], part, style
    if module.startswith("base_model.model."):
        module = module[len("base_model.model."):]
    return "", module, part, style or "peft"


def _resolve(key: str, tables: Mapping[str, ModuleTable], spec: KeySpec
             ) -> tuple[str | None, Resolved | None, str, str]:
    """(component, resolution, part, style) of one key; component None when no style fits."""
    split = _split_kohya(key, spec)
    if split is not None:
        comp, stem, part, style = split
        table = tables.get(comp)
        return comp, (table.find(stem, flat=True) if table else None), part, style
    split = _split_dotted(key, spec)
    if split is None:
        return None, None, "", ""
    comp, module, part, style = split
    for c in ([comp] if comp else [c for c in spec.components if c in tables] or list(tables)):
        table = tables.get(c)
        found = table.find(module) if table else None
        if found is not None:
            return c, found, part, style
    return comp, None, part, style


def parse_lora(state: dict[str, Any], tables: Mapping[str, ModuleTable]) -> ParsedLora:
    """Resolve every key of a LoRA state dict against the model's modules."""
    import torch

    spec = getattr(tables, "spec", None) or key_spec(None, list(tables))
    out = ParsedLora(total_keys=len(state), family=spec.title)
    styles = set()
    raw: dict[tuple[str, str], tuple[LoraModule, str | tuple[Target, ...]]] = {}
    for key, value in state.items():
        comp, found, part, style = _resolve(key, tables, spec)
        if style:
            styles.add(style)
        if comp is None or found is None:
            out.unmatched.append(shown_key(key))
            continue
        source, what = found
        mod = raw.setdefault((comp, source), (LoraModule(), what))[0]
        if part == "alpha":
            alpha = _scalar(value, torch)
            if alpha is None:
                shape = tuple(getattr(value, "shape", ()))
                out.problems.append(f"{shown_key(key)} is not one finite number (shape {shape})")
            mod.alpha = alpha
        elif part in ("dora_scale", "magnitude"):
            mod.magnitude = value
        else:
            setattr(mod, part, value)
    for (comp, source), (mod, what) in raw.items():
        if mod.down is None or mod.up is None:
            has = "lora_up" if mod.up is not None else "lora_down" if mod.down is not None else None
            out.unmatched.append(f"{comp}:{source} ({f'has only {has}' if has else 'has no lora_down/lora_up'})")
            continue
        mods = out.modules.setdefault(comp, {})
        pieces = [(what, mod)] if isinstance(what, str) else _cut(comp, source, what, mod, torch, out)
        for name, piece in pieces:
            if name in mods:
                out.unmatched.append(f"{comp}:{name} (given twice, also as {shown_key(source)})")
                continue
            mods[name] = piece
        if not mods:
            del out.modules[comp]
    if "onetrainer" in styles:
        styles.discard("kohya")  # OneTrainer writes its text encoders kohya-style
    out.style = "+".join(sorted(styles)) or "unknown"
    return out


def _cut(comp: str, source: str, targets: tuple[Target, ...], mod: LoraModule, torch: Any,
         out: ParsedLora) -> list[tuple[str, LoraModule]]:
    """One module per target of a fused original module (see the module docstring)."""
    up = mod.up
    if not isinstance(up, torch.Tensor) or up.ndim < 2 or not isinstance(mod.down, torch.Tensor):
        out.problems.append(f"{comp}:{source}: lora_up/lora_down are not matrices")
        out.rejected += 1
        return []
    rows = int(up.shape[0])
    total = max((t.rows[1] for t in targets if t.rows), default=rows)
    used = list(targets)
    if rows != total:
        # a LoRA of part of the layer (XLabs' single-block qkv): the leading targets its rows cover
        ordered = sorted((t for t in targets if t.rows), key=lambda t: t.rows[0])
        ends = [t.rows[1] for t in ordered]
        if rows not in ends or ordered[0].rows[0] != 0:
            out.problems.append(f"{comp}:{source}: lora_up has {rows} rows, the layer {total}")
            out.rejected += 1
            return []
        used, total = ordered[: ends.index(rows) + 1], rows
    mag = mod.magnitude
    out_axis = (isinstance(mag, torch.Tensor) and mag.ndim >= 1 and mag.numel() == total
                and mag.shape[0] == total)
    pieces = []
    for t in used:
        piece = _take(up, t)
        magnitude = _take(mag, t) if out_axis else mag
        pieces.append((t.module, LoraModule(mod.down, piece, mod.alpha, magnitude, source)))
    return pieces


def _take(t: Any, target: Target) -> Any:
    import torch

    part = t if target.rows is None else t[target.rows[0]:target.rows[1]]
    if target.swap:
        half = part.shape[0] // 2
        part = torch.cat([part[half:], part[:half]], dim=0)
    return part


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
