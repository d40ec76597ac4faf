"""LoRA/DoRA adapters inside a shared base pipeline: load each file once, weight them per run.

A file becomes a named peft adapter (named after its content hash) injected into the components
the model's family lets LoRAs reach (U-Net or transformer, text encoders); the family also says
under which prefixes and original module names its files name them (`lora_keys`), so nothing
here knows one family from another. Its modules keep their own rank and alpha, and DoRA
magnitudes survive (diffusers' own loaders drop `dora_scale`): output-axis ones go in as
peft's `lora_magnitude_vector`, input-axis ones (kohya/LyCORIS default, what the imagebash
trainer writes) through the trainer's input-axis DoRA variant. Before every sampling call the
handle's stack is activated: each tuner layer enables exactly the adapters in the stack, with
the stack's weights as scales. A weight change is therefore a scale change, never a reload, and
a workflow without LoRAs sees the base.

On a two-expert model (Wan 2.2 A14B: the family's `lora_experts`), keys that name the denoiser
without saying which expert go to the experts the LoRA node picks (both by default); keys for
the second expert (`transformer_2.`) always go there. The choice is part of the adapter's name,
so one file may be loaded for each choice side by side. A one-expert file read as such a model
holds the same module under both names: it gets each LoRA module once.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.engine.families import Family, get_family
from app.engine.memory_modes import layers_changeable
from app.engine.models import Entry, refuse_pickle
from app.training.adapters import set_input_axis_dora
from nodes.diffusion.lora_keys import (
    LoraModule,
    fit_problem,
    key_spec,
    magnitude_for,
    module_tables,
    parse_lora,
    shown_key,
)

MAX_ADAPTERS = 12
"""Adapters kept per pipeline: beyond this the least recently used one not in the stack being
applied is deleted (a stack longer than this keeps all of its own adapters)."""


@dataclass
class AdapterInfo:
    name: str
    path: str
    style: str
    matched_modules: int
    total_keys: int
    dora: bool
    unmatched: list[str] = field(default_factory=list)
    family: str = ""  # title of the model family it was loaded into
    experts: str = ""  # on a two-expert model: which experts it reached, in words

    def report(self) -> str:
        text = (f"{shown_key(Path(self.path).name)}: {self.style} {'DoRA' if self.dora else 'LoRA'}, "
                f"{self.matched_modules} modules")
        if self.experts:
            text += f" ({self.experts})"
        if self.unmatched:
            sample = ", ".join(self.unmatched[:3])
            text += f"; {len(self.unmatched)} of {self.total_keys} keys matched nothing in the model ({sample}...)"
        return text


def adapter_name(file_hash: str, expert: str = "") -> str:
    """The adapter of a file (and of a non-default expert choice: see `expert_choice`)."""
    return "lora_" + file_hash + (f"_{expert}" if expert else "")


def expert_choice(entry: Entry, expert: str = "") -> tuple[str, str]:
    """(the expert choice that applies to this model: "" for the default or where there is no
    choice; a one-line note when `expert` was asked for but does not apply).

    Raises ValueError for a choice the model's family does not know.
    """
    wanted = str(getattr(expert, "value", expert) or "")
    family = entry_family(entry)
    choices = dict(family.lora_experts) if family is not None else {}
    title = family.title if family is not None else entry.family
    if not choices:
        return "", (f"expert {wanted!r} ignored: {title} models have one denoiser" if wanted else "")
    default = next(iter(choices))
    if wanted in ("", default):
        return "", ""
    if wanted not in choices:
        raise ValueError(f"unknown expert {wanted!r} for {title}: one of {', '.join(choices)}")
    if len(_distinct_experts(entry.pipe, family)) < 2:
        return "", f"expert {wanted!r} ignored: this {title} model has one expert (it runs every step)"
    return wanted, ""


def _distinct_experts(pipe: Any, family: Family) -> dict[int, str]:
    """id(module) -> its first component name, over the family's expert components the pipe has."""
    out: dict[int, str] = {}
    for comps in family.lora_experts.values():
        for comp in comps:
            module = getattr(pipe, comp, None)
            if module is not None:
                out.setdefault(id(module), comp)
    return out


def _route_experts(pipe: Any, family: Family | None, parsed: Any, expert: str) -> str:
    """Send the denoiser's modules of `parsed` to the chosen experts (in place); words for the
    load report ("" on a model without two experts)."""
    if family is None or not family.lora_experts:
        return ""
    experts = _distinct_experts(pipe, family)
    for comp in list(parsed.modules):  # one module under two names: give it each LoRA module once
        module = getattr(pipe, comp, None)
        first = experts.get(id(module)) if module is not None else None
        if first is None or first == comp:
            continue
        own = parsed.modules.setdefault(first, {})
        for name, mod in parsed.modules.pop(comp).items():
            if name in own:
                parsed.unmatched.append(f"{comp}:{name} (also given for {first}: the same module here)")
            else:
                own[name] = mod
    if len(experts) < 2:
        return ""
    den = family.denoiser
    reached = [c for c in experts.values() if c in parsed.modules]
    named = [c for c in reached if c != den]
    if named or den not in parsed.modules:  # the file says which expert each key is for
        where = " and ".join(reached)
        return f"keys name their experts: {where}" + (f"; expert {expert!r} not applied" if expert else "")
    choice = expert or next(iter(family.lora_experts))
    targets = [c for c in family.lora_experts[choice] if getattr(pipe, c, None) is not None]
    mods = parsed.modules.pop(den)
    for i, comp in enumerate(targets):
        parsed.modules[comp] = mods if i == 0 else {n: replace(m) for n, m in mods.items()}
    return f"{choice.replace('_', '-')}: {' and '.join(targets)}"


def _adapters(entry: Entry) -> dict[str, AdapterInfo]:
    return entry.state.setdefault("adapters", {})


def entry_family(entry: Entry) -> Family | None:
    """The family object of an entry (None for a family name no module declares)."""
    try:
        return get_family(entry.family)
    except KeyError:
        return None


def _components(entry: Entry) -> tuple[str, ...]:
    family = entry_family(entry)
    return tuple(family.lora_components) if family is not None else key_spec().components


def ensure_adapter(entry: Entry, path: Path, file_hash: str, keep: Collection[str] = (),
                   expert: str = "") -> AdapterInfo:
    """Load `path` into the entry's pipeline as an adapter unless it is already there.

    Adapters named in `keep` (the rest of the stack being applied) are never evicted for it.
    `expert` picks the experts of a two-expert model its generic keys reach (`expert_choice`).
    """
    from safetensors.torch import load_file

    expert, _note = expert_choice(entry, expert)
    name = adapter_name(file_hash, expert)
    with entry.lock:
        known = _adapters(entry)
        if name in known:
            known[name] = known.pop(name)  # most recently used last
            return known[name]
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"LoRA file not found: {shown_key(str(path))}")
        refuse_pickle(path)
        file = shown_key(path.name)  # a file name may hold a line break: messages stay on one line
        try:
            state = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - a corrupt file is one clear line
            why = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise ValueError(f"{file} is not a readable .safetensors LoRA: {why}") from None
        family = entry_family(entry)
        title = family.title if family is not None else entry.family
        parsed = parse_lora(state, module_tables(entry.pipe, family))
        if not parsed.matched_modules and not parsed.rejected:
            raise ValueError(f"{file}: none of its {parsed.total_keys} keys match a module of this "
                             f"{title} model (a LoRA for another model family?)")
        experts = _route_experts(entry.pipe, family, parsed, expert)
        bad = parsed.problems + misfits(entry.pipe, parsed.modules)
        if bad:  # checked before anything is injected: a refused file leaves the pipeline as it was
            raise ValueError(f"{file}: {len(bad)} of its modules do not fit this {title} model, "
                             f"e.g. {bad[0]} (a LoRA for another model family, or a damaged file?)")
        unmatched = list(parsed.unmatched)
        with contextlib.ExitStack() as offloaded:  # an offloaded component's weights within reach
            for comp in parsed.modules:
                offloaded.enter_context(layers_changeable(getattr(entry.pipe, comp)))
            fused_input_axis(entry.pipe, parsed.modules)
            try:
                for comp, mods in parsed.modules.items():
                    unmatched += _inject(getattr(entry.pipe, comp), mods, name)
            except Exception as exc:
                # what the checks above missed: take the half-injected adapter out again, and say
                # which file it was (peft's own message names only the model class)
                _delete(entry, name)
                first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
                raise ValueError(f"{file}: cannot load it into this {title} model: {first}") from exc
        info = AdapterInfo(name, str(path), parsed.style, parsed.matched_modules, parsed.total_keys,
                           parsed.dora, unmatched, title, experts)
        known[name] = info
        entry.state["lora_loads"] = entry.state.get("lora_loads", 0) + 1
        entry.state.pop("tuner_layers", None)
        protected = {*keep, name}
        for old in [n for n in known if n not in protected][:max(0, len(known) - MAX_ADAPTERS)]:
            _delete(entry, old)
        return info


def misfits(pipe: Any, modules: dict[str, dict[str, LoraModule]]) -> list[str]:
    """'component:module: why' for each parsed module whose tensors cannot adapt its layer."""
    out = []
    for comp, mods in modules.items():
        layers = dict(getattr(pipe, comp).named_modules())
        for target, mod in mods.items():
            problem = fit_problem(mod, layers[target])
            if problem:
                out.append(f"{comp}:{target}: {problem}")
    return out


def _inject(module: Any, mods: dict[str, LoraModule], name: str) -> list[str]:
    """Inject one adapter into one component; returns the keys peft could not place."""
    import torch
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    subs = dict(module.named_modules())
    state: dict[str, Any] = {}
    problems: list[str] = []
    input_axis: dict[str, Any] = {}
    for target, mod in mods.items():
        layer = subs[target]
        base = getattr(layer, "base_layer", layer)
        down, up = mod.down, mod.up
        linear = isinstance(base, torch.nn.Linear)
        if linear:
            down, up = down.reshape(down.shape[0], -1), up.reshape(up.shape[0], -1)
            sizes = (base.out_features, base.in_features)
        else:
            if down.ndim == 2:
                down = down[:, :, None, None]
            if up.ndim == 2:
                up = up[:, :, None, None]
            sizes = (base.out_channels, base.in_channels)
        state[f"{target}.lora_A.weight"] = down
        state[f"{target}.lora_B.weight"] = up
        mag, axis = magnitude_for(mod, *sizes)
        if axis == "out":  # peft keeps a Conv2d's magnitude as (1, out, 1, 1)
            state[f"{target}.lora_magnitude_vector"] = mag if linear else mag.reshape(1, -1, 1, 1)
        elif axis == "in" and linear:
            input_axis[target] = mag
        elif axis:
            problems.append(f"{target}.dora_scale (shape {tuple(mod.magnitude.shape)} does not fit the layer)")
    use_dora = any(k.endswith(".lora_magnitude_vector") for k in state)
    ranks = Counter(m.rank for m in mods.values())
    rank = ranks.most_common(1)[0][0]
    alphas = Counter(m.alpha if m.alpha is not None else m.rank for m in mods.values())
    alpha = alphas.most_common(1)[0][0]
    # exact names: a list entry would also match by suffix (Flux's top-level `proj_out` would
    # reach every `single_transformer_blocks.N.proj_out`), and pattern keys are regexes
    config = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules="|".join(re.escape(t) for t in sorted(mods)),
        use_dora=use_dora,
        rank_pattern={_exact(t): m.rank for t, m in mods.items() if m.rank != rank},
        alpha_pattern={_exact(t): a for t, m in mods.items()
                       if (a := (m.alpha if m.alpha is not None else m.rank)) != alpha})
    with warnings.catch_warnings():  # "multiple adapters in the model" is exactly the intent here
        warnings.filterwarnings("ignore", message=".*peft_config.*")
        inject_adapter_in_model(config, module, adapter_name=name)
    result = set_peft_model_state_dict(module, state, adapter_name=name)
    problems += [f"{k} (not placed)" for k in getattr(result, "unexpected_keys", []) or []]
    for target, mag in input_axis.items():
        set_input_axis_dora(module.get_submodule(target), name, mag)
    if use_dora:  # peft makes every target DoRA: the file's modules without a magnitude stay plain LoRA
        for target in mods:
            if f"{target}.lora_magnitude_vector" not in state and target not in input_axis:
                layer = module.get_submodule(target)
                layer.lora_variant.pop(name, None)
                layer.use_dora[name] = False
                if name in layer.lora_magnitude_vector:
                    del layer.lora_magnitude_vector[name]
    for p in module.parameters():
        p.requires_grad_(False)
    return problems


def _exact(name: str) -> str:
    r"""A peft rank/alpha pattern key that matches module `name` only (peft tries `(.*\.)?key$`)."""
    return "^" + re.escape(name)


def fused_input_axis(pipe: Any, modules: dict[str, dict[str, LoraModule]]) -> None:
    """Input-axis DoRA magnitudes of the modules cut from one fused original layer, rescaled so
    each piece normalises by the fused layer's column norms (as a loader keeping the layer
    fused does), exactly at weight 1: m_i = m * |W_i + dW_i| / |W + dW| per input column."""
    import torch

    groups: dict[tuple[str, str], list[tuple[Any, LoraModule]]] = {}
    for comp, mods in modules.items():
        layers = dict(getattr(pipe, comp).named_modules())
        for target, mod in mods.items():
            base = getattr(layers[target], "base_layer", layers[target])
            mag = mod.magnitude
            if (mod.source and isinstance(base, torch.nn.Linear) and isinstance(mag, torch.Tensor)
                    and mag.ndim == 2 and mag.shape[0] == 1 and mag.numel() == base.in_features
                    and tuple(base.weight.shape) == (base.out_features, base.in_features)):  # not packed
                groups.setdefault((comp, mod.source), []).append((base, mod))
    for members in groups.values():
        if len(members) < 2:
            continue
        norms = []
        for base, mod in members:
            w = base.weight.detach().float()
            scale = (mod.alpha if mod.alpha is not None else mod.rank) / mod.rank
            delta = mod.up.float().reshape(mod.up.shape[0], -1) @ mod.down.float().reshape(mod.rank, -1)
            norms.append(torch.linalg.norm(w + scale * delta.to(w.device), dim=0).cpu())
        whole = torch.sqrt(sum(n ** 2 for n in norms))
        for (_base, mod), norm in zip(members, norms, strict=True):
            mag = mod.magnitude
            ratio = torch.where(whole > 0, norm / whole.clamp_min(1e-30), torch.ones_like(norm))
            mod.magnitude = (mag.float() * ratio.reshape(mag.shape)).to(mag.dtype)


def _tuner_layers(entry: Entry) -> list[Any]:
    layers = entry.state.get("tuner_layers")
    if layers is None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = []
        seen: set[int] = set()
        for comp in _components(entry):
            module = getattr(entry.pipe, comp, None)
            if module is not None and id(module) not in seen:  # one module may have two names
                seen.add(id(module))
                layers += [m for m in module.modules() if isinstance(m, BaseTunerLayer)]
        entry.state["tuner_layers"] = layers
    return layers


def _delete(entry: Entry, name: str) -> None:
    for layer in _tuner_layers(entry):
        if name in getattr(layer, "lora_A", {}):
            layer.delete_adapter(name)
    for comp in _components(entry):
        config = getattr(getattr(entry.pipe, comp, None), "peft_config", None)
        if isinstance(config, dict):
            config.pop(name, None)
    _adapters(entry).pop(name, None)
    entry.state.pop("tuner_layers", None)


def activate(entry: Entry, stack: list[tuple[str, float]]) -> None:
    """Enable exactly the adapters of `stack` with their weights (weight 0 = off)."""
    missing = [name for name, _w in stack if name not in _adapters(entry)]
    if missing:
        raise RuntimeError(f"LoRA adapter(s) {', '.join(missing)} of this stack are not loaded in the "
                           "pipeline (evicted?): run again to reload them")
    weights: dict[str, float] = {}
    for name, weight in stack:
        if weight:
            weights[name] = weights.get(name, 0.0) + float(weight)
    for layer in _tuner_layers(entry):
        active = [n for n in weights if n in layer.lora_A]
        if not active:
            layer.enable_adapters(False)
            continue
        layer.enable_adapters(True)
        layer.set_adapter(active, inference_mode=True)
        for n in active:
            layer.set_scale(n, weights[n])
