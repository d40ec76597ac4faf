"""Full-size Flux.1 dev and SD 3.5 large denoisers on one CUDA GPU, per memory mode, as ratios
(one JSON object per line): imagebash's path / the raw diffusers calls for the same mode.

Random weights, no download and no weights file: each denoiser is built from the shipped config
(`app.engine.model_configs.shipped_config`, subfolder transformer) on the meta device, allocated
once in bf16 on the GPU, filled with normal(0, 0.02) and copied to the CPU as the master weights.
Every run then starts as the model manager's load leaves a pipeline: a fresh model whose bf16
weights are on the CPU (the master tensors, assigned).

Modes, each once through imagebash's path and once through diffusers' own calls:

- bf16: `memory_modes.apply_mode` (plan forced "full") on a pipeline holding only the denoiser /
  `model.to("cuda")`.
- fp8: apply_mode (forced "fp8": layerwise casting on the CPU, then the move) /
  `model.enable_layerwise_casting(float8_e4m3fn, bf16)` + `model.to("cuda")`.
- group_offload: apply_mode (forced "group_offload": `pipe.enable_group_offload`, block level, one
  block a group, CUDA stream) / `model.enable_group_offload(...)` with the same settings.
- nf4 (only when bitsandbytes imports): the master is saved once as a diffusers model folder (in
  /dev/shm when it has room), then `from_pretrained(quantization_config=memory_modes.
  nf4_quantization_config(bf16))` + apply_mode (forced "nf4") / `from_pretrained(
  quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
  bnb_4bit_compute_dtype=bf16))`; otherwise a JSON line says it was skipped.

Each run times ONE denoiser forward at 1024x1024, batch 1 (Flux: 4096 packed image tokens + 512
text tokens, guidance embedding; SD 3.5: a 128x128 latent, patch 2, so 4096 tokens, + 333 text
tokens = 77 CLIP + 256 T5): 2 warm-ups, then 3 timed forwards with torch.cuda.synchronize
around each; s/step is their median. Peak VRAM is torch.cuda.max_memory_allocated over the
warm-ups and the timed forwards (reset once the mode is in place, so the resident weights count but
set-up transients do not). Memory is freed between runs. Aim: s/step ratio <= 1.02.

Without CUDA it prints {"skipped": "no CUDA"} and exits 0. `--dry-run-cpu` runs the same code on
the CPU with tiny configs of the same classes (bf16 and fp8 only; the CUDA-only modes print a
skipped line), so the logic is exercised where there is no GPU.

Run from the repo root: `python tests/benchmarks/gpu_families.py [--dry-run-cpu] [--families
flux-dev,sd35-large] [--modes bf16,fp8,group_offload,nf4] [--steps 3] [--warmup 2]`. Not yet run
on a GPU; estimated 3-5 minutes on one H200, most of it moving weights (24 GB for Flux: CPU->GPU
copies, pinning for group offload, writing and quantizing the NF4 folder); each line carries its
set-up seconds, and --families / --modes split the run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.gpu_helpers import allocated, free_device, sync  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GIB = 2**30
AIM = "<= 1.02"
MODES = ("bf16", "fp8", "group_offload", "nf4")
IMAGEBASH_MODE = {"bf16": "full", "fp8": "fp8", "group_offload": "group_offload", "nf4": "nf4"}
CUDA_ONLY = ("group_offload", "nf4")


@dataclass(frozen=True)
class FamilySpec:
    name: str  # the shipped config's family name
    cls_name: str  # the diffusers model class
    pipeline: str  # the diffusers pipeline class the model manager would hold
    #: the dry run's overrides: tiny widths and depths of the same class
    tiny: dict[str, Any]


FAMILIES = {
    "flux-dev": FamilySpec(
        "flux-dev", "FluxTransformer2DModel", "FluxPipeline",
        dict(num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
             joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])),
    "sd35-large": FamilySpec(
        "sd35-large", "SD3Transformer2DModel", "StableDiffusion3Pipeline",
        dict(num_layers=2, attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
             joint_attention_dim=32, pooled_projection_dim=64, pos_embed_max_size=32, sample_size=32)),
}


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return text[0][:400] if text else type(exc).__name__


# ------------------------------------------------------------------------------ building


def model_class(spec: FamilySpec) -> Any:
    return getattr(importlib.import_module("diffusers"), spec.cls_name)


def load_family_config(spec: FamilySpec, tiny: bool) -> dict[str, Any]:
    from app.engine.model_configs import shipped_config

    cfg = dict(model_class(spec).load_config(str(shipped_config(spec.name)), subfolder="transformer"))
    if tiny:
        cfg.update(spec.tiny)
    return cfg


def meta_model(spec: FamilySpec, cfg: dict[str, Any]) -> Any:
    import torch

    with torch.device("meta"):
        return model_class(spec).from_config(cfg)


def build_master(spec: FamilySpec, cfg: dict[str, Any], device: str) -> dict[str, Any]:
    """Random bf16 weights of the whole denoiser, on the CPU (made on `device`, which is fast on a GPU)."""
    import torch

    model = meta_model(spec, cfg).to(torch.bfloat16).to_empty(device=device)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.normal_(0.0, 0.02, generator=g)
    master = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    del model
    free_device(device)
    return master


def fresh_model(spec: FamilySpec, cfg: dict[str, Any], master: dict[str, Any]) -> Any:
    """A new model whose weights are the master's CPU bf16 tensors (as a load leaves them)."""
    import torch

    changed = [k for k, v in master.items() if v.dtype != torch.bfloat16 or v.device.type != "cpu"]
    if changed:  # a mode must never cast or move the master tensors themselves
        raise RuntimeError(f"master weights changed by an earlier run: {changed[:3]}")
    model = meta_model(spec, cfg)
    model.load_state_dict(master, strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"{spec.cls_name}: tensors left on meta after loading the master: {left[:5]}")
    return model.eval()


def pipeline_of(spec: FamilySpec, model: Any) -> Any:
    """The family's diffusers pipeline holding only the denoiser (every other component None):
    apply_mode calls the pipeline's own `to` / `enable_group_offload`, as on a loaded pipeline."""
    import inspect

    cls = getattr(importlib.import_module("diffusers"), spec.pipeline)
    params = inspect.signature(cls.__init__).parameters
    empty = inspect.Parameter.empty
    required = [n for n, p in params.items() if n not in ("self", "transformer") and p.default is empty]
    pipe = cls(transformer=model, **dict.fromkeys(required))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def denoiser_inputs(spec: FamilySpec, cfg: dict[str, Any], device: str, size: int, text_tokens: int) -> dict:
    """Batch-1 inputs of one forward at `size` x `size` pixels (VAE factor 8), as the pipeline passes them."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(1)
    bf16 = torch.bfloat16

    def rand(*shape: int) -> Any:
        return torch.randn(*shape, generator=g).to(device=device, dtype=bf16)

    lat = size // 8
    if spec.cls_name == "FluxTransformer2DModel":
        from diffusers import FluxPipeline

        side = lat // 2  # 2x2 packing
        x = {"hidden_states": rand(1, side * side, cfg["in_channels"]),
             "encoder_hidden_states": rand(1, text_tokens, cfg["joint_attention_dim"]),
             "pooled_projections": rand(1, cfg["pooled_projection_dim"]),
             "timestep": torch.tensor([0.75], device=device, dtype=bf16),  # the pipeline passes t / 1000
             "img_ids": FluxPipeline._prepare_latent_image_ids(1, side, side, device, bf16),
             "txt_ids": torch.zeros(text_tokens, 3, device=device, dtype=bf16)}
        if cfg.get("guidance_embeds"):
            x["guidance"] = torch.tensor([3.5], device=device, dtype=torch.float32)
        return x
    return {"hidden_states": rand(1, cfg["in_channels"], lat, lat),
            "encoder_hidden_states": rand(1, text_tokens, cfg["joint_attention_dim"]),
            "pooled_projections": rand(1, cfg["pooled_projection_dim"]),
            "timestep": torch.tensor([750.0], device=device)}  # scheduler units, float32 as the pipeline passes


def image_tokens(spec: FamilySpec, cfg: dict[str, Any], size: int) -> int:
    lat = size // 8
    return (lat // 2) ** 2 if spec.cls_name == "FluxTransformer2DModel" else (lat // cfg["patch_size"]) ** 2


# ------------------------------------------------------------------------------ device helpers


def time_forward(model: Any, inputs: dict, device: str, steps: int, warmup: int) -> dict[str, Any]:
    """Median s/step of `steps` forwards after `warmup` untimed ones, and peak VRAM over them all."""
    import torch

    cuda = device.startswith("cuda")
    sync(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    resident = allocated(device)
    times = []
    with torch.no_grad():
        for _ in range(warmup):  # kernels, cuBLAS handles, attention backend choice, hooks' first onload
            model(**inputs, return_dict=False)
        sync(device)
        for _ in range(steps):
            t0 = time.perf_counter()
            out = model(**inputs, return_dict=False)[0]
            sync(device)
            times.append(time.perf_counter() - t0)
    peak = int(torch.cuda.max_memory_allocated()) if cuda else None
    return {"s_per_step": statistics.median(times), "times": [round(t, 4) for t in times],
            "peak_bytes": peak, "resident_bytes": resident,
            "finite": bool(torch.isfinite(out.float()).all())}  # random weights: reported, not required


# ------------------------------------------------------------------------------ the two paths


def plan_for(mode: str, model: Any, device: str, title: str) -> Any:
    """The plan the model manager makes for a forced mode: its sizes and the free memory seen."""
    from app.engine import memory_modes as mm
    from app.engine.devices import free_memory

    den = mm.resident_weight_bytes(model)
    host = free_memory("cpu")
    free = host if device == "cpu" else free_memory(device)
    return mm.plan_memory(title, den, 0, device, free, host, forced=IMAGEBASH_MODE[mode], dtype="bf16",
                          fp8_ratio=mm.fp8_storage_ratio(model))


def imagebash_setup(mode: str, spec: FamilySpec, cfg: dict, master: dict, device: str,
                    nf4_folder: Path | None) -> tuple[Any, dict[str, Any]]:
    """(model ready to run, notes) through memory_modes, the calls the model manager makes."""
    import torch

    from app.engine import memory_modes as mm

    if mode == "nf4":
        assert nf4_folder is not None
        model = model_class(spec).from_pretrained(
            str(nf4_folder), quantization_config=mm.nf4_quantization_config(torch.bfloat16, device),
            torch_dtype=torch.bfloat16, local_files_only=True)
    else:
        model = fresh_model(spec, cfg, master)
    pipe = pipeline_of(spec, model)
    plan = plan_for(mode, model, device, spec.name)
    text = mm.apply_mode(pipe, plan, device, "transformer", torch.bfloat16)
    return pipe.transformer, {"plan_mode": plan.mode, "plan_stream": plan.stream,
                              "plan_low_cpu_mem_usage": plan.low_cpu_mem_usage,
                              "plan_offload_encoders": plan.offload_encoders, "mode_text": text}


def raw_nf4_config() -> Any:
    import torch
    from diffusers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)


def diffusers_setup(mode: str, spec: FamilySpec, cfg: dict, master: dict, device: str,
                    nf4_folder: Path | None, low_cpu_mem_usage: bool) -> tuple[Any, dict[str, Any]]:
    """(model ready to run, notes) through diffusers' own calls for the same mode."""
    import torch

    if mode == "nf4":
        from app.engine import memory_modes as mm

        assert nf4_folder is not None
        qc = raw_nf4_config()
        model = model_class(spec).from_pretrained(str(nf4_folder), quantization_config=qc,
                                                  torch_dtype=torch.bfloat16, local_files_only=True)
        if next(model.parameters()).device.type != device.split(":")[0]:
            model.to(device)
        same = qc.to_dict() == mm.nf4_quantization_config(torch.bfloat16, device).to_dict()
        return model, {"same_quantization_config": same}
    model = fresh_model(spec, cfg, master)
    if mode == "bf16":
        model.to(device)
    elif mode == "fp8":
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
        model.to(device)
    elif mode == "group_offload":  # the settings diffusers' docs give for streamed block offload
        model.enable_group_offload(onload_device=torch.device(device), offload_device=torch.device("cpu"),
                                   offload_type="block_level", num_blocks_per_group=1, use_stream=True,
                                   low_cpu_mem_usage=low_cpu_mem_usage)
    else:
        raise ValueError(mode)
    return model, {}


def run_path(path: str, mode: str, spec: FamilySpec, cfg: dict, master: dict, device: str, inputs: dict,
             steps: int, warmup: int, nf4_folder: Path | None, low_cpu_mem_usage: bool) -> dict[str, Any]:
    from app.engine import memory_modes as mm

    base = allocated(device)
    t0 = time.perf_counter()
    if path == "imagebash":
        model, notes = imagebash_setup(mode, spec, cfg, master, device, nf4_folder)
    else:
        model, notes = diffusers_setup(mode, spec, cfg, master, device, nf4_folder, low_cpu_mem_usage)
    setup_s = time.perf_counter() - t0
    try:
        result = time_forward(model, inputs, device, steps, warmup)
        result.update(notes, setup_s=round(setup_s, 2), weight_bytes=mm.resident_weight_bytes(model))
    finally:
        del model
        free_device(device)
    after = allocated(device)
    if base is not None and after is not None:
        result["left_allocated_bytes"] = after - base  # what the run left behind (should be ~0)
    return result


# ------------------------------------------------------------------------------ NF4 folder


@contextlib.contextmanager
def nf4_weights_folder(spec: FamilySpec, cfg: dict, master: dict) -> Iterator[Path]:
    """The master saved as a diffusers model folder (safetensors), in /dev/shm when it has room."""
    need = sum(t.numel() * t.element_size() for t in master.values())
    roots = [Path("/dev/shm"), Path(tempfile.gettempdir())]
    root = next((r for r in roots if r.is_dir() and shutil.disk_usage(r).free > 1.2 * need), None)
    if root is None:
        raise RuntimeError(f"no room for the {need / GIB:.1f} GiB NF4 source folder in {', '.join(map(str, roots))}")
    folder = Path(tempfile.mkdtemp(prefix=f"imagebash-{spec.name}-", dir=root))
    try:
        fresh_model(spec, cfg, master).save_pretrained(str(folder), safe_serialization=True, max_shard_size="10GB")
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def dry_check(mode: str, spec: FamilySpec, cfg: dict, master: dict) -> str:
    """What of a CUDA-only mode's path the dry run can still check on the CPU."""
    import inspect

    import torch

    if mode == "group_offload":  # both calls bind to diffusers' signatures
        model = fresh_model(spec, cfg, master)
        kwargs = dict(onload_device=torch.device("cuda"), offload_device=torch.device("cpu"),
                      offload_type="block_level", num_blocks_per_group=1, use_stream=True, low_cpu_mem_usage=False)
        pipe = pipeline_of(spec, model)
        inspect.signature(type(model).enable_group_offload).bind(model, **kwargs)
        inspect.signature(type(pipe).enable_group_offload).bind(pipe, **kwargs)
        return "model and pipeline enable_group_offload signatures bind"
    with nf4_weights_folder(spec, cfg, master) as folder:  # the NF4 source folder loads back exactly
        back = model_class(spec).from_pretrained(str(folder), torch_dtype=torch.bfloat16, local_files_only=True)
        state = back.state_dict()
        if set(state) != set(master) or not all(torch.equal(state[k], master[k]) for k in master):
            raise RuntimeError("the NF4 source folder does not load back to the master weights")
        where = folder.parent
    return f"NF4 source folder ({where}) loads back to the master weights, {len(state)} tensors"


def nf4_unavailable(device: str) -> str | None:
    """Why NF4 cannot run here, or None."""
    from app.engine import memory_modes as mm

    if not device.startswith("cuda"):
        return "nf4 needs CUDA"
    if not mm.has_bitsandbytes():
        return "bitsandbytes is not installed"
    try:
        importlib.import_module("bitsandbytes")
    except Exception as exc:  # an install that cannot load its CUDA library
        return f"bitsandbytes does not import: {one_line(exc)}"
    return None


# ------------------------------------------------------------------------------ main


def report_line(prefix: str, family: str, mode: str, runs: dict[str, dict[str, Any]],
                order: tuple[str, ...]) -> dict[str, Any]:
    ib, raw = runs["imagebash"], runs["diffusers"]
    line: dict[str, Any] = {
        f"{prefix}_{mode}_s_per_step_ratio": round(ib["s_per_step"] / raw["s_per_step"], 3), "aim": AIM,
        "family": family, "mode": mode,
        "imagebash_s_per_step": round(ib["s_per_step"], 4), "diffusers_s_per_step": round(raw["s_per_step"], 4)}
    if ib["peak_bytes"] is not None and raw["peak_bytes"]:
        line.update(peak_ratio=round(ib["peak_bytes"] / raw["peak_bytes"], 3),
                    imagebash_peak_gib=round(ib["peak_bytes"] / GIB, 2),
                    diffusers_peak_gib=round(raw["peak_bytes"] / GIB, 2),
                    imagebash_resident_gib=round(ib["resident_bytes"] / GIB, 2),
                    diffusers_resident_gib=round(raw["resident_bytes"] / GIB, 2))
    line.update(weight_bytes_ratio=round(ib["weight_bytes"] / raw["weight_bytes"], 3),
                imagebash_times=ib["times"], diffusers_times=raw["times"],
                imagebash_setup_s=ib["setup_s"], diffusers_setup_s=raw["setup_s"], first=order[0],
                finite=[ib["finite"], raw["finite"]], mode_text=ib.get("mode_text"), plan_mode=ib.get("plan_mode"),
                plan_stream=ib.get("plan_stream"),
                plan_low_cpu_mem_usage=ib.get("plan_low_cpu_mem_usage"),
                plan_offload_encoders=ib.get("plan_offload_encoders"))
    if "same_quantization_config" in raw:
        line["same_quantization_config"] = raw["same_quantization_config"]
    if "left_allocated_bytes" in ib:
        line["left_allocated_bytes"] = [ib["left_allocated_bytes"], raw.get("left_allocated_bytes")]
    return line


def bench_family(spec: FamilySpec, modes: list[str], device: str, steps: int, warmup: int, tiny: bool,
                 size: int) -> bool:
    """Every mode of one family; False when a mode failed (its error is printed, the rest still run)."""
    import torch

    t0 = time.perf_counter()
    cfg = load_family_config(spec, tiny)
    master = build_master(spec, cfg, device)
    params = sum(t.numel() for t in master.values())
    text_tokens = (512 if spec.cls_name == "FluxTransformer2DModel" else 333) if not tiny else 16
    inputs = denoiser_inputs(spec, cfg, device, size, text_tokens)
    geometry = {"size": size, "image_tokens": image_tokens(spec, cfg, size), "text_tokens": text_tokens,
                "steps": steps, "warmup": warmup, "dry_run": tiny, "device": device}
    emit(family=spec.name, params=params, bf16_bytes=2 * params, build_s=round(time.perf_counter() - t0, 2),
         **geometry)
    prefix = spec.name.replace("-", "_")
    ok = True
    for i, mode in enumerate(modes):
        reason = f"{mode} needs CUDA" if mode in CUDA_ONLY and not device.startswith("cuda") else None
        if mode == "nf4" and reason is None:
            reason = nf4_unavailable(device)
        if reason:
            extra = {"checked": dry_check(mode, spec, cfg, master)} if tiny else {}
            emit(family=spec.name, mode=mode, skipped=reason, **extra)
            continue
        try:
            with contextlib.ExitStack() as stack:
                t_prep = time.perf_counter()
                nf4_folder = stack.enter_context(nf4_weights_folder(spec, cfg, master)) if mode == "nf4" else None
                prep_s = time.perf_counter() - t_prep
                # diffusers' group offload gets the plan's low_cpu_mem_usage, so both pin alike
                low_cpu = False
                if mode == "group_offload":
                    low_cpu = plan_for(mode, fresh_model(spec, cfg, master), device, spec.name).low_cpu_mem_usage
                order = ("imagebash", "diffusers") if i % 2 == 0 else ("diffusers", "imagebash")
                runs = {path: run_path(path, mode, spec, cfg, master, device, inputs, steps, warmup, nf4_folder,
                                       low_cpu) for path in order}
            emit(**report_line(prefix, spec.name, mode, runs, order), prep_s=round(prep_s, 2), dry_run=tiny)
        except Exception as exc:
            ok = False
            emit(family=spec.name, mode=mode, error=one_line(exc),
                 where=traceback.extract_tb(exc.__traceback__)[-1].name)
        finally:
            free_device(device)
    del master, inputs
    free_device(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run-cpu", action="store_true",
                    help="tiny configs of the same classes on the CPU, bf16 and fp8 only (checks the logic)")
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma-separated: " + ", ".join(FAMILIES))
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES))
    ap.add_argument("--steps", type=int, default=3, help="timed forwards")
    ap.add_argument("--warmup", type=int, default=2, help="untimed forwards before them")
    ap.add_argument("--size", type=int, default=0, help="image side in pixels (default 1024; 128 in the dry run)")
    args = ap.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [f for f in families if f not in FAMILIES] + [m for m in modes if m not in MODES]
    if bad:
        ap.error(f"unknown family or mode: {', '.join(bad)}")

    import torch

    if args.dry_run_cpu:
        device, size = "cpu", args.size or 128
        torch.set_num_threads(1)  # tiny ops: spare threads only spin-wait on a shared machine
    elif not torch.cuda.is_available():
        emit(skipped="no CUDA")
        return 0
    else:
        device, size = "cuda", args.size or 1024
    started = time.perf_counter()
    import diffusers

    emit(device=torch.cuda.get_device_name(0) if device == "cuda" else "cpu (dry run)", torch=torch.__version__,
         diffusers=diffusers.__version__, families=families, modes=modes, steps=args.steps, warmup=args.warmup,
         size=size)
    ok = True
    for name in families:
        try:
            ok = bench_family(FAMILIES[name], modes, device, args.steps, args.warmup, args.dry_run_cpu, size) and ok
        except Exception as exc:  # building the family failed: say so, go on with the next
            ok = False
            emit(family=name, error=one_line(exc), where=traceback.extract_tb(exc.__traceback__)[-1].name)
            free_device(device)
    emit(total_s=round(time.perf_counter() - started, 1), ok=ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
