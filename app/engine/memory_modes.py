"""Memory modes for big denoisers (Flux.1 12B, SD 3.5 large 8B, Qwen-Image 20B): policy and apply.

A mode says how the denoiser's weights are stored and where the pipeline's components live.
`plan_memory` picks one from the model's size and the free memory (pure: no torch), `apply_mode`
puts it on a freshly loaded pipeline, `next_cheaper` is the step an out-of-memory retry takes.

Measured (diffusers 0.42 layerwise casting, default skip patterns, real configs on the meta
device): fp8 storage keeps norms, modulation ("norm1.linear", ...) and embeddings in the model
dtype, so it is 0.636 of bf16 for Flux.1 (15.1 of 23.8 GB, not half), 0.667 for SD 3.5 large and
0.500 for Qwen-Image (its modulation layers are named img_mod/txt_mod). The model manager asks
`fp8_storage_ratio` of the loaded denoiser, so no family's figure is written down here.

torch, diffusers, gguf and bitsandbytes are imported inside functions.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

GB = 1_000_000_000
MARGIN_FRACTION = 0.15
"""Working memory (activations, attention, the VAE decode) as a fraction of the resident weights..."""
MARGIN_BYTES = int(1.5 * GB)
"""...plus this much, so a plan leaves room to actually run."""

FP8_RATIO_DEFAULT = 0.667
"""When the denoiser is not at hand: the largest ratio seen, so a plan errs towards fitting."""
NF4_RATIO = 0.30
"""4-bit blocks plus an absmax per 64 weights: ~0.28 of bf16 for Linear weights, the rest stays."""
GROUP_RESIDENT = 0.08
"""Block-level group offload with prefetch keeps ~2 blocks and the top-level layers on the device."""
SEQUENTIAL_RESIDENT = 0.02
"""Sequential offload keeps about one layer (Flux's largest Linear is ~1% of the model)."""


@dataclass(frozen=True)
class ModeSpec:
    """One mode: which device kinds run it and whether it is fixed when the model is loaded."""

    name: str
    devices: frozenset[str]
    at_load: bool
    what: str


_ALL = frozenset({"cpu", "cuda", "mps"})
MODE_SPECS: dict[str, ModeSpec] = {s.name: s for s in (
    ModeSpec("full", _ALL, False, "weights in the model dtype, everything on the device"),
    ModeSpec("fp8", frozenset({"cpu", "cuda"}), False,  # MPS has no float8 dtype
             "fp8 e4m3 weight storage, compute in the model dtype (layerwise casting)"),
    ModeSpec("gguf", _ALL, True, "the denoiser file's own GGUF blocks, dequantized per layer"),
    ModeSpec("nf4", frozenset({"cuda"}), True, "bitsandbytes 4-bit NF4, quantized while loading"),
    ModeSpec("model_offload", frozenset({"cuda", "mps"}), False,
             "whole components moved to the device only while they run"),
    ModeSpec("group_offload", frozenset({"cuda"}), False,
             "denoiser blocks streamed from CPU RAM one group at a time"),
    ModeSpec("sequential_offload", frozenset({"cuda", "mps"}), False,
             "every layer moved to the device only while it runs (slowest)"),
)}
MODES: tuple[str, ...] = tuple(MODE_SPECS)
"""Cheapest last: the order an out-of-memory retry walks (`next_cheaper`)."""
_WEIGHT_MODES = ("full", "fp8", "nf4")  # need the model's own weights: not for a GGUF file
_OFFLOAD_MODES = ("model_offload", "group_offload", "sequential_offload")


def device_kind(device: str) -> str:
    """'cuda' for 'cuda:1', and so on."""
    return (device or "cpu").split(":", 1)[0].lower()


def check_mode(mode: str, device: str, gguf: bool | None = None) -> None:
    """The one place a mode is checked against the device (and the file): ValueError if it cannot run."""
    spec = MODE_SPECS.get(mode)
    if spec is None:
        raise ValueError(f"unknown memory mode {mode!r}: one of {', '.join(MODES)}")
    kind = device_kind(device)
    if kind not in spec.devices:
        raise ValueError(f"memory mode {mode} needs {' or '.join(sorted(spec.devices))}; this device is {device}")
    if gguf is True and mode in _WEIGHT_MODES:
        raise ValueError(f"memory mode {mode} needs the model's own weights, but the denoiser is a GGUF file "
                         "(already quantized): use gguf or an offload mode")
    if gguf is False and mode == "gguf":
        raise ValueError("memory mode gguf comes from loading a .gguf denoiser file; this denoiser is not one")


def has_bitsandbytes() -> bool:
    """Whether bitsandbytes is installed (looked up, not imported: importing it initialises CUDA)."""
    return importlib.util.find_spec("bitsandbytes") is not None


@dataclass(frozen=True)
class MemoryPlan:
    """What `plan_memory` chose, with one line saying why (for the log and the node's status)."""

    mode: str
    reason: str
    resident_bytes: int  # weights on the device at the busiest moment
    peak_bytes: int  # resident plus the working margin
    offload_encoders: bool  # text encoders (and VAE) leave the device while the denoiser runs
    fits: bool  # the estimate fits in the free memory seen
    forced: bool = False
    stream: bool = False  # group offload: prefetch the next group on a CUDA stream
    low_cpu_mem_usage: bool = False  # group offload: pin on the fly (host RAM is short)


def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB"


def _peak(resident: float) -> int:
    return int(resident * (1 + MARGIN_FRACTION) + MARGIN_BYTES)


def plan_memory(title: str, denoiser_bytes: int, encoder_bytes: int, device: str, free_bytes: int,
                host_free_bytes: int, forced: str | None = None, gguf: bool = False, *,
                dtype: str = "bf16", fp8_ratio: float = FP8_RATIO_DEFAULT) -> MemoryPlan:
    """Pick the cheapest-in-quality mode that fits: full, full with the encoders offloaded
    (model_offload), fp8 (with or without the encoders offloaded), group offload, sequential.

    `denoiser_bytes` is in the model dtype `dtype` (for a GGUF file: the file's tensor bytes);
    `encoder_bytes` is the text encoders (and VAE). nf4 is never picked here (it needs
    bitsandbytes and a quantizing load); it is reached by `forced` or an OOM retry.
    """
    kind = device_kind(device)
    den, enc = int(denoiser_bytes), int(encoder_bytes)
    weights = "GGUF" if gguf else dtype
    head = f"{title} {weights} needs {_gb(den)} + {_gb(enc)} text encoders, {_gb(free_bytes)} free"
    if forced:
        check_mode(forced, device, gguf=gguf)
    if kind == "cpu":
        mode = forced or ("gguf" if gguf else "full")
        res = int(den * fp8_ratio) + enc if mode == "fp8" else den + enc
        fits = _peak(res) <= free_bytes
        what = {"fp8": f"fp8 weights ({_gb(den * fp8_ratio)})", "gguf": "GGUF weights"}.get(mode, f"full {dtype}")
        note = "" if fits else "; short of memory, expect swapping"
        return MemoryPlan(mode, f"{head}: {what} on the CPU (CPU RAM is the memory){note}"
                          + (" (forced)" if forced else ""), res, _peak(res), False, fits, bool(forced))

    store = {"full": den, "gguf": den, "fp8": int(den * fp8_ratio), "nf4": int(den * NF4_RATIO)}
    label = {"full": f"{dtype} weights", "gguf": f"GGUF weights ({_gb(den)})",
             "fp8": f"fp8 weights ({_gb(store['fp8'])})", "nf4": f"nf4 weights ({_gb(store['nf4'])})"}
    biggest = max(den, enc)

    def weights_plan(mode: str, force: bool) -> MemoryPlan | None:
        """mode's weights all resident, else with the encoders offloaded (for full: model_offload);
        None when neither fits, unless forced (then the smaller, marked as not fitting)."""
        whole, split = store[mode] + enc, max(store[mode], enc)
        if _peak(whole) <= free_bytes:
            text = "everything on the device" if mode == "full" else label[mode]
            return MemoryPlan(mode, f"{head}: {text}", whole, _peak(whole), False, True, force)
        fits = _peak(split) <= free_bytes
        if not (fits or force):
            return None
        if mode == "full":
            return MemoryPlan("model_offload", f"{head}: {dtype} weights with the text encoders offloaded "
                              "(model offload)", split, _peak(split), True, fits, force)
        return MemoryPlan(mode, f"{head}: {label[mode]} with the text encoders offloaded", split,
                          _peak(split), True, fits, force)

    def offload_plan(mode: str, force: bool) -> MemoryPlan:
        frac = {"model_offload": 1.0, "group_offload": GROUP_RESIDENT, "sequential_offload": SEQUENTIAL_RESIDENT}
        res = int(biggest * frac[mode])
        fits = _peak(res) <= free_bytes
        host = den + enc
        stream = mode == "group_offload" and kind == "cuda"
        low_cpu = stream and host_free_bytes < 2 * host  # streams pin a second copy of the weights
        text = {"model_offload": f"{label['gguf' if gguf else 'full']} with every component offloaded "
                                 "while idle (model offload)",
                "group_offload": f"group offload (blocks streamed from CPU RAM, ~{_gb(res)} resident)",
                "sequential_offload": f"sequential offload (one layer at a time, slowest, ~{_gb(res)} resident)"}
        notes = []
        if low_cpu:
            notes.append("pinning on the fly, host RAM is short for streams")
        if host_free_bytes < host:
            notes.append(f"host RAM {_gb(host_free_bytes)} free is short of {_gb(host)}: expect swapping")
        if not fits:
            notes.append("it may still not fit")
        reason = f"{head}: {text[mode]}" + "".join(f"; {n}" for n in notes)
        return MemoryPlan(mode, reason, res, _peak(res), True, fits, force, stream, low_cpu)

    if forced:
        if forced in _OFFLOAD_MODES:
            plan = offload_plan(forced, True)
        elif forced == "full":  # forced full keeps everything resident, fitting or not
            whole = den + enc
            plan = MemoryPlan("full", f"{head}: everything on the device", whole, _peak(whole), False,
                              _peak(whole) <= free_bytes, True)
        else:
            plan = weights_plan(forced, True)
            assert plan is not None
        note = "" if plan.fits or forced in _OFFLOAD_MODES else "; it may not fit"
        return replace(plan, reason=f"{plan.reason}{note} (forced)")

    for mode in (("gguf",) if gguf else ("full", "fp8")):
        plan = weights_plan(mode, False) if kind in MODE_SPECS[mode].devices else None
        if plan is not None:
            return plan
    for mode in ("group_offload", "sequential_offload"):
        if kind in MODE_SPECS[mode].devices:
            plan = offload_plan(mode, False)
            if plan.fits or mode == "sequential_offload":
                return plan
    raise AssertionError(f"no memory mode for {device}")  # unreachable: CUDA and MPS run sequential offload


def next_cheaper(mode: str, device: str, bitsandbytes: bool | None = None) -> str | None:
    """The mode an out-of-memory retry falls back to, or None when there is nothing cheaper.

    gguf is skipped (a loaded model cannot be switched into it), nf4 needs bitsandbytes (looked
    up unless given), and from gguf only offload modes follow. The offload modes keep whatever
    weights the model was loaded with.
    """
    if mode not in MODE_SPECS:
        raise ValueError(f"unknown memory mode {mode!r}: one of {', '.join(MODES)}")
    kind = device_kind(device)
    bnb = has_bitsandbytes() if bitsandbytes is None else bitsandbytes
    for cand in MODES[MODES.index(mode) + 1:]:
        if cand == "gguf" or (mode == "gguf" and cand in _WEIGHT_MODES) or (cand == "nf4" and not bnb):
            continue
        if kind in MODE_SPECS[cand].devices:
            return cand
    return None


# ----------------------------------------------------------------------------------- applying


def _dtype_name(dtype: Any) -> str:
    text = str(dtype).replace("torch.", "")
    return {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float8_e4m3fn": "fp8"}.get(text, text)


def _has_layerwise_casting(module: Any) -> bool:
    for sub in module.modules():
        registry = getattr(sub, "_diffusers_hook", None)
        if registry is not None and registry.get_hook("layerwise_casting") is not None:
            return True
    return False


def _gguf_types(module: Any) -> list[str]:
    return sorted({getattr(p.quant_type, "name", str(p.quant_type))
                   for p in module.parameters() if getattr(p, "quant_type", None) is not None})


def _is_bnb_4bit(module: Any) -> bool:
    return bool(getattr(module, "is_loaded_in_4bit", False)) or any(
        type(p).__name__ == "Params4bit" for p in module.parameters())


def _weights_text(module: Any, compute_dtype: Any) -> str:
    compute = _dtype_name(compute_dtype)
    types = _gguf_types(module)
    if types:
        return f"GGUF {'/'.join(types)} weights, {compute} compute"
    if _is_bnb_4bit(module):
        return f"nf4 weights, {compute} compute"
    if _has_layerwise_casting(module):
        return f"fp8 weights, {compute} compute"
    return f"{compute} weights"


def apply_mode(pipe: Any, plan: MemoryPlan, device: str, denoiser_attr: str, compute_dtype: Any) -> str:
    """Put `plan` on a pipeline fresh from the loader (weights on the CPU); a short text for the log.

    fp8 casts on the CPU before the move, so the device never holds the full-precision copy.
    nf4 and gguf must have been chosen at load (`nf4_quantization_config`, `load_gguf_denoiser`):
    here they are only checked and placed. Offload hooks cannot be undone; a retry reloads.
    """
    import torch

    check_mode(plan.mode, device)
    den = getattr(pipe, denoiser_attr)
    if plan.mode == "fp8" and not _has_layerwise_casting(den):
        cast_fp8(den, compute_dtype)
    elif plan.mode == "gguf" and not _gguf_types(den):
        raise ValueError(f"memory mode gguf: pipe.{denoiser_attr} was not loaded from a GGUF file "
                         "(load it with load_gguf_denoiser)")
    elif plan.mode == "nf4" and not _is_bnb_4bit(den):
        raise ValueError(f"memory mode nf4: pipe.{denoiser_attr} was not loaded in 4 bits (pass "
                         "nf4_quantization_config(...) as quantization_config when loading it)")
    weights = _weights_text(den, compute_dtype)
    if plan.mode == "group_offload":
        pipe.enable_group_offload(onload_device=torch.device(device), offload_device=torch.device("cpu"),
                                  offload_type="block_level", num_blocks_per_group=1, use_stream=plan.stream,
                                  low_cpu_mem_usage=plan.low_cpu_mem_usage)
        where = "blocks streamed from CPU RAM (group offload" + (", CUDA stream)" if plan.stream else ")")
    elif plan.mode == "sequential_offload":
        pipe.enable_sequential_cpu_offload(device=device)
        where = "layers moved in one at a time (sequential offload)"
    elif plan.mode == "model_offload" or plan.offload_encoders:
        pipe.enable_model_cpu_offload(device=device)
        where = "components moved in while they run (model offload)"
    else:
        pipe.to(device)
        where = f"all on {device}"
    return f"{weights}, {where}"


def _sequential_hook(module: Any) -> Any:
    """An accelerate hook of a module under sequential offload (its weights live in such hooks, its
    parameters are on the meta device); None when it is not so offloaded."""
    if not any(p.device.type == "meta" for p in module.parameters()):
        return None
    for sub in module.modules():
        hook = getattr(sub, "_hf_hook", None)
        if getattr(hook, "execution_device", None) is not None:
            return hook
    return None


@contextlib.contextmanager
def layers_changeable(module: Any) -> Iterator[None]:
    """While layers are added to (or read from) an offloaded `module`, as peft does to inject a
    LoRA. Sequential offload: the hooks come off first (peft's new layers would land on the meta
    device and their weights load as a no-op) and go back on after, holding the new weights too.
    Group offload: the groups are rebuilt after, so the new layers move in with their blocks."""
    hook = _sequential_hook(module)
    if hook is not None:
        from accelerate.hooks import remove_hook_from_module

        remove_hook_from_module(module, recurse=True)  # puts the weights back from the hooks
    try:
        yield
    finally:
        if hook is not None:
            from accelerate import cpu_offload

            cpu_offload(module, hook.execution_device, offload_buffers=bool(getattr(hook, "offload_buffers", False)))
        else:  # diffusers' own LoRA loader does this (a no-op without group offload)
            from diffusers.hooks.group_offloading import _maybe_remove_and_reapply_group_offloading

            _maybe_remove_and_reapply_group_offloading(module)


def nf4_quantization_config(compute_dtype: Any, device: str = "cuda") -> Any:
    """diffusers' BitsAndBytesConfig for a 4-bit NF4 load (`quantization_config=` of from_pretrained /
    from_single_file). Checked first: CUDA only, and bitsandbytes must be installed."""
    check_mode("nf4", device)
    if not has_bitsandbytes():
        raise ImportError("memory mode nf4 needs bitsandbytes, which is not installed: "
                          "`pip install bitsandbytes` (CUDA only), or use fp8 or an offload mode")
    from diffusers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)


# ---------------------------------------------------------------------------------------- GGUF


def is_gguf(path: str | os.PathLike[str]) -> bool:
    """True when the file starts with the GGUF magic (whatever its name says)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def holds_nf4(module: Any) -> bool:
    """Whether a loaded model keeps bitsandbytes 4-bit weights."""
    return _is_bnb_4bit(module)


def holds_gguf(module: Any) -> bool:
    """Whether a loaded model keeps GGUF-quantized weights (it was read from a .gguf file)."""
    return bool(_gguf_types(module))


def gguf_header(path: str | os.PathLike[str]) -> Any:
    """A `Probe` of a GGUF file (tensor names and torch-order shapes, no weights), so family
    detection reads GGUF denoisers the way it reads safetensors headers."""
    from types import MappingProxyType

    from gguf import GGUFReader

    from app.engine.probe import Probe, TensorInfo

    p = Path(path).absolute()
    st = p.stat()
    reader = GGUFReader(str(p))
    tensors = {t.name: TensorInfo("GGUF:" + t.tensor_type.name, tuple(int(d) for d in reversed(t.shape)), (0, 0))
               for t in reader.tensors}
    return Probe(p, st.st_size, st.st_mtime_ns, MappingProxyType(tensors), MappingProxyType({}))


def gguf_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Tensor count, quant types present (e.g. {"Q8_0": 120, "F32": 30}), stored bytes and the
    architecture field, read from the header and tensor index (the data is memory-mapped, not read)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    types: dict[str, int] = {}
    nbytes = 0
    for t in reader.tensors:
        name = t.tensor_type.name
        types[name] = types.get(name, 0) + 1
        nbytes += int(t.n_bytes)
    arch = ""
    field = reader.fields.get("general.architecture")
    if field is not None and field.data:
        arch = bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
    return {"tensors": len(reader.tensors), "types": dict(sorted(types.items())), "bytes": nbytes,
            "architecture": arch}


def load_gguf_denoiser(path: str | os.PathLike[str], model_cls: Any, config_folder: str | os.PathLike[str],
                       subfolder: str | None, compute_dtype: Any) -> Any:
    """A diffusers model from a .gguf file, its weights kept as GGUF blocks and dequantized per layer.

    The config comes from `config_folder`/`subfolder` (offline). diffusers' from_single_file loads
    a file whose keys are exactly the model's as is, and sends any other layout (city96's BFL-key
    Flux files) through the model's own converter, which keeps the quantized blocks.
    """
    if not is_gguf(path):
        raise ValueError(f"{Path(path).name} is not a GGUF file (no GGUF magic at its start)")
    if importlib.util.find_spec("gguf") is None:
        raise ImportError("loading a .gguf denoiser needs the gguf package: `pip install gguf`")
    from diffusers import GGUFQuantizationConfig

    return model_cls.from_single_file(
        str(path), quantization_config=GGUFQuantizationConfig(compute_dtype=compute_dtype),
        torch_dtype=compute_dtype, config=str(config_folder), subfolder=subfolder or None,
        local_files_only=True)


# ------------------------------------------------------------------------------ compile, bytes


def compile_denoiser(pipe: Any, denoiser_attr: str, device: str, mode: str | None = None) -> str:
    """torch.compile the denoiser in place on CUDA (its repeated blocks where the model names them:
    the same speed-up for a fraction of the compile time); a text saying what was done or why not.

    In place, so state-dict keys and LoRA loading are unchanged; dynamic=False caches one graph
    per shape, so a re-run at the same size reuses it. A second call is a no-op.
    """
    kind = device_kind(device)
    if kind != "cuda":
        return f"torch.compile skipped on {device}: it is only used on CUDA"
    den = getattr(pipe, denoiser_attr)
    done = getattr(pipe, "_imagebash_compiled", None) or {}
    if done.get(denoiser_attr) is den:
        return f"{denoiser_attr} already compiled"
    if any(hasattr(m, "_hf_hook") and getattr(m._hf_hook, "offload", False) for m in den.modules()):
        return "torch.compile skipped: sequential offload moves every layer in and out"
    kwargs = {"fullgraph": False, "dynamic": False}
    if mode:
        kwargs["mode"] = mode
    if getattr(den, "_repeated_blocks", None):
        den.compile_repeated_blocks(**kwargs)
        what = f"{denoiser_attr} compiled (repeated blocks {', '.join(den._repeated_blocks)})"
    else:
        den.compile(**kwargs)
        what = f"{denoiser_attr} compiled"
    pipe._imagebash_compiled = {**done, denoiser_attr: den}
    return what


def resident_weight_bytes(module: Any) -> int:
    """Bytes the module's parameters and buffers take as stored (fp8: 1 a weight, GGUF: its uint8
    blocks), counting shared tensors once and skipping meta tensors (offloaded by accelerate)."""
    seen: set[int] = set()
    total = 0
    for t in [*module.parameters(), *module.buffers()]:
        if t.device.type == "meta" or id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


FP8_SKIP = ("pos_embed", "time_text_embed", "time_embed", "^proj_in$", "^proj_out$")
"""Layers fp8 storage leaves in the model dtype: the timestep/guidance/pooled-text embedders and
the last projection to latents (small, and where precision shows most). Unlike diffusers'
defaults (which keep every layer under a `norm*` module), the adaLN modulation Linears
(`norm1.linear`, `norm1_context.linear`, ...) are stored in fp8 too, as ComfyUI's fp8 Flux
checkpoints store them: they are a third of Flux.1's weights, and keeping them made fp8 0.64 of
bf16 instead of ~0.5. The norms themselves are never cast (layerwise casting only touches Linear
and Conv layers)."""


def cast_fp8(module: Any, compute_dtype: Any) -> None:
    """Store `module`'s big Linear/Conv weights in float8_e4m3fn, upcast per layer to
    `compute_dtype` while it runs (diffusers' layerwise casting hooks, with `FP8_SKIP`)."""
    import torch
    from diffusers.hooks import apply_layerwise_casting

    apply_layerwise_casting(module, storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype,
                            skip_modules_pattern=FP8_SKIP)


def fp8_storage_ratio(module: Any, dtype_bytes: int = 2) -> float:
    """fp8 layerwise-cast bytes / bytes in a `dtype_bytes` dtype (2: bf16) for `module` under
    `FP8_SKIP`; works on a meta-device model, so a plan can use it before any weight is read."""
    import re

    from diffusers.hooks._common import _GO_LC_SUPPORTED_PYTORCH_LAYERS

    patterns = FP8_SKIP
    total = sum(p.numel() for p in module.parameters())
    cast = 0

    def walk(mod: Any, prefix: str) -> None:
        nonlocal cast
        if prefix and any(re.search(p, prefix) for p in patterns):
            return
        if isinstance(mod, _GO_LC_SUPPORTED_PYTORCH_LAYERS):
            cast += sum(p.numel() for p in mod.parameters())
            return
        for name, child in mod.named_children():
            walk(child, f"{prefix}.{name}" if prefix else name)

    walk(module, "")
    return (cast + (total - cast) * dtype_bytes) / (total * dtype_bytes) if total else 1.0
