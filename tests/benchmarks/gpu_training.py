"""Full-size Flux.1 dev LoRA training steps on one CUDA GPU, for the style-flux-24gb and
style-flux-80gb presets: s/step and peak VRAM through imagebash's training path / a plain peft
loop in the same mode (one JSON object per line).

Random weights, no download and no weights file: the transformer is built from the shipped
config (`app.engine.model_configs.shipped_config("flux-dev")`, subfolder transformer) on the
meta device, `to_empty` on the GPU in bf16 and filled with normal(0, 0.02) (the same seed for
both paths). Inputs are random tensors of the cached kind: latents (B, 16, 128, 128) for 1024 px
(packed (B, 4096, 64)), T5 embeddings (B, 512, 4096) and pooled CLIP (B, 768), float32 as the
cache holds them. Each run is a fresh model.

- imagebash: a real `Trainer` holding the preset's config, with the base and device set by hand
  (no dataset, no loading), then the calls `Trainer.prepare` makes for the denoiser, in its order:
  `_store_base` (fp8: enable_layerwise_casting storage float8_e4m3fn, compute bf16),
  `adapters.add_adapter` with `adapters.denoiser_targets(get_family("flux").training, targets)`,
  the adapter to float32 (the base is built in bf16, as the Trainer reads it),
  gradient checkpointing, `_optimizer` (bitsandbytes AdamW8bit for the 24 GB preset when it
  imports), the lr scheduler and `objective_for` (FlowObjective); a step is the Trainer's: the
  batch's latents and embeddings stacked and moved from the CPU, `objective.loss` (sigmoid
  timesteps, shift 3, x_t = (1 - s) x0 + s noise, the family's `flow_forward` on a minimal pipe
  with transformer, FluxPipeline's _pack_latents / _unpack_latents / _prepare_latent_image_ids
  and vae_scale_factor 8, guidance 1.0, under `Trainer.autocast`), backward, grad clipping,
  optimizer and scheduler step, zero_grad, the loss read back.
- plain: peft `LoraConfig` + `inject_adapter_in_model` with the same targets and rank (after
  `enable_layerwise_casting` for fp8), the adapter cast to float32 (diffusers' cast_training_params),
  the same optimizer class, inputs resident on the GPU, and the raw transformer call on the packed
  latents under bf16 autocast, F.mse_loss against noise - x0.

Per path: 1 warm-up step, then 3 timed steps with torch.cuda.synchronize around each; s/step is
their median. `peak_gib` is torch.cuda.max_memory_allocated over the timed steps (reset after the
warm-up), `peak_with_warmup_gib` over the warm-up too (reset after set-up), `reserved_peak_gib`
the allocator's reservation (what has to fit on the card). The 24 GB line says whether both
peaks are under 24 GiB. Each path line also gives the frozen weights' stored dtype after set-up
and after the warm-up (`base_dtype_after_*`: float8_e4m3fn for the fp8 preset from the start) and
whether the adapter changed over the steps (`adapter_trained`; the presets' warm-up
schedule gives the first step lr 0). An out-of-memory is a line (`oom`), and the preset is then tried at the
next smaller batch (4 -> 2 -> 1), so a line always says what fits. Aim: ratio ~1.0.

Without CUDA it prints {"skipped": "no CUDA"} and exits 0. `--dry-run-cpu` runs the same code on
the CPU with a tiny Flux config (1+1 blocks, 2 heads of 16), 64 px, 1 warm-up + 1 timed step,
bf16 autocast forced (the Trainer itself would train in float32 on a CPU), to prove the logic.
Run from the repo root: `python tests/benchmarks/gpu_training.py [--dry-run-cpu] [--presets
24gb,80gb] [--steps 3] [--warmup 1]`. Not yet run on a GPU; estimated 1-3 minutes on one H200
(about 1 s/step at batch 1 with checkpointing, a few seconds at batch 2-4 without).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
import traceback
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from app.engine.devices import is_oom  # noqa: E402
from tests.benchmarks.gpu_helpers import allocated, free_device, sync  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GIB = 2**30
AIM = "~1.0"
PRESETS = {"24gb": ("style-flux-24gb", 24), "80gb": ("style-flux-80gb", 80)}
TEXT_TOKENS = 512
#: the dry run's Flux: the class and layout of the real one, tiny widths and depths
TINY = dict(num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
            joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return text[0][:400] if text else type(exc).__name__


def gib(n: int | None) -> float | None:
    return None if n is None else round(n / GIB, 2)


# ------------------------------------------------------------------------------ building


def flux_config(tiny: bool) -> dict[str, Any]:
    from diffusers import FluxTransformer2DModel

    from app.engine.model_configs import shipped_config

    cfg = dict(FluxTransformer2DModel.load_config(str(shipped_config("flux-dev")), subfolder="transformer"))
    if tiny:
        cfg.update(TINY)
    return cfg


def build_model(cfg: dict[str, Any], device: str, seed: int = 0) -> Any:
    """A random bf16 Flux transformer on `device`: meta, to_empty, normal(0, 0.02); no file."""
    import torch
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        model = FluxTransformer2DModel.from_config(cfg)
    model = model.to(torch.bfloat16).to_empty(device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.normal_(0.0, 0.02, generator=g)
    return model


class MiniPipe:
    """What `Flux.flow_forward` reads from a pipeline: the transformer and FluxPipeline's packing."""

    vae_scale_factor = 8

    def __init__(self, transformer: Any) -> None:
        from diffusers import FluxPipeline

        self.transformer = transformer
        self._pack_latents = FluxPipeline._pack_latents
        self._unpack_latents = FluxPipeline._unpack_latents
        self._prepare_latent_image_ids = FluxPipeline._prepare_latent_image_ids


def preset_config(name: str, device: str) -> Any:
    from app.training.config import load_preset

    return load_preset(name).replace(device="cpu" if device == "cpu" else "cuda", max_steps=1500).validate()


def make_inputs(cfg: dict[str, Any], batch: int, size: int) -> dict[str, Any]:
    """Per-item CPU float32 tensors, as the latent / text cache returns them."""
    import torch

    g = torch.Generator().manual_seed(1)
    lat = size // 8
    return {"latents": [torch.randn(16, lat, lat, generator=g) for _ in range(batch)],
            "text": [{"hidden": torch.randn(TEXT_TOKENS, cfg["joint_attention_dim"], generator=g),
                      "pooled": torch.randn(cfg["pooled_projection_dim"], generator=g)} for _ in range(batch)]}


# ------------------------------------------------------------------------------ device helpers






def reset_peak(device: str) -> None:
    import torch

    sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peaks(device: str) -> tuple[int | None, int | None]:
    import torch

    if not device.startswith("cuda"):
        return None, None
    return int(torch.cuda.max_memory_allocated()), int(torch.cuda.max_memory_reserved())






# ------------------------------------------------------------------------------ the two paths


def adapted_layers(model: Any) -> int:
    return sum(1 for _, m in model.named_modules() if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {}))


def imagebash_setup(preset: str, cfg: dict[str, Any], device: str, batch: int, data: dict[str, Any]):
    """(step function, notes): the Trainer's own preparation of the denoiser and its step."""
    import torch
    from diffusers.optimization import get_scheduler

    from app.engine.families import get_family
    from app.training import adapters
    from app.training.base import BaseModel
    from app.training.loop import Trainer
    from app.training.objectives import objective_for

    tcfg = preset_config(preset, device).replace(batch_size=batch)
    logs: list[str] = []
    t = Trainer(tcfg, log=logs.append)
    t.device = "cuda" if device.startswith("cuda") else device
    t.precision = tcfg.mixed_precision  # what _precision gives on a bf16 GPU (forced on the CPU dry run)
    t.trained_tes = []
    fam = get_family("flux")
    spec = fam.training
    t.base = BaseModel("flux", MiniPipe(build_model(cfg, device)), "random-weights")
    den = t.base.denoiser
    # --- as Trainer.prepare, for the denoiser
    t._store_base(torch, fam)
    t.unet_targets = adapters.denoiser_targets(spec, tcfg.targets, tcfg.blocks, fam.title)
    adapters.add_adapter(den, rank=tcfg.rank, alpha=tcfg.alpha, targets=t.unet_targets, dora=tcfg.network == "dora")
    for p in den.parameters():  # the base is already in the training dtype, as load_base reads it
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    if tcfg.gradient_checkpointing:
        den.enable_gradient_checkpointing()
    den.train()
    t.optimizer, t.optimizer_name = t._optimizer(torch)
    t.total_steps = tcfg.max_steps
    t.lr_scheduler = get_scheduler(tcfg.lr_scheduler, t.optimizer, num_warmup_steps=tcfg.warmup_steps,
                                   num_training_steps=t.total_steps)
    t.objective = objective_for(t)
    params = [p for group in t.optimizer.param_groups for p in group["params"]]
    g = torch.Generator().manual_seed(tcfg.seed)
    dev = t.device

    def step() -> float:
        # as Trainer._loss (frozen text encoders: cached embeddings, collated) and Trainer.run
        latents = torch.stack(data["latents"]).to(dev)
        emb = {k: v.to(dev) for k, v in fam.collate_text(data["text"]).items()}
        loss = t.objective.loss(latents, emb, [], g) / tcfg.grad_accum
        loss.backward()
        if tcfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, tcfg.max_grad_norm)
        t.optimizer.step()
        t.lr_scheduler.step()
        t.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    notes = {"optimizer": t.optimizer_name, "objective": t.objective.describe(), "adapted_layers": adapted_layers(den),
             "trainable_params": sum(p.numel() for p in params), "base_precision": tcfg.base_precision,
             "gradient_checkpointing": tcfg.gradient_checkpointing, "rank": tcfg.rank, "targets": tcfg.targets,
             "log": logs}
    return step, notes, {"model": den, "trainer": t}


def plain_setup(preset: str, cfg: dict[str, Any], device: str, batch: int, data: dict[str, Any]):
    """(step function, notes): what a person writes with peft and diffusers for the same mode."""
    import torch
    import torch.nn.functional as F
    from diffusers import FluxPipeline
    from peft import LoraConfig, inject_adapter_in_model

    from app.engine.families import get_family
    from app.training import adapters

    tcfg = preset_config(preset, device)
    targets = adapters.denoiser_targets(get_family("flux").training, tcfg.targets)  # the same target_modules
    model = build_model(cfg, device)
    if tcfg.base_precision == "fp8":
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    model.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=tcfg.rank, lora_alpha=tcfg.alpha, target_modules=targets,
                                       init_lora_weights="gaussian", lora_dropout=0.0), model)
    for n, p in model.named_parameters():
        p.requires_grad_(".lora_A." in n or ".lora_B." in n)
        if p.requires_grad:
            p.data = p.data.float()  # diffusers.training_utils.cast_training_params
    if tcfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    name = "torch.optim.AdamW"
    opt = None
    if tcfg.optimizer == "adamw8bit":
        with contextlib.suppress(ImportError):
            import bitsandbytes as bnb

            opt, name = bnb.optim.AdamW8bit(params, lr=tcfg.learning_rate, weight_decay=1e-2), "bitsandbytes AdamW8bit"
    if opt is None:
        opt = torch.optim.AdamW(params, lr=tcfg.learning_rate, weight_decay=1e-2)
    dev = "cuda" if device.startswith("cuda") else device
    x0 = torch.stack(data["latents"]).to(dev)
    hidden = torch.stack([d["hidden"] for d in data["text"]]).to(dev)
    pooled = torch.stack([d["pooled"] for d in data["text"]]).to(dev)
    n, c, h, w = x0.shape
    img_ids = FluxPipeline._prepare_latent_image_ids(n, h // 2, w // 2, dev, torch.float32)
    txt_ids = torch.zeros(hidden.shape[1], 3, device=dev)
    guidance = torch.full((n,), 1.0, device=dev)
    shift = float(tcfg.shift)

    def step() -> float:
        noise = torch.randn_like(x0)
        u = torch.sigmoid(torch.randn(n, device=dev)).clamp(1e-5, 1 - 1e-5)
        sigmas = shift * u / (1 + (shift - 1) * u)
        s = sigmas.view(-1, 1, 1, 1)
        noisy = (1 - s) * x0 + s * noise
        with torch.autocast(dev.split(":")[0], dtype=torch.bfloat16):
            out = model(hidden_states=FluxPipeline._pack_latents(noisy, n, c, h, w), timestep=sigmas,
                        guidance=guidance, pooled_projections=pooled, encoder_hidden_states=hidden, txt_ids=txt_ids,
                        img_ids=img_ids, return_dict=False)[0]
        pred = FluxPipeline._unpack_latents(out, h * 8, w * 8, 8)
        loss = F.mse_loss(pred.float(), (noise - x0).float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    notes = {"optimizer": name, "adapted_layers": adapted_layers(model),
             "trainable_params": sum(p.numel() for p in params)}
    return step, notes, {"model": model, "optimizer": opt}


def base_weight_dtype(model: Any) -> str:
    """The stored dtype of the first adapted layer's frozen weight (fp8 storage shows here)."""
    layer = model.transformer_blocks[0].attn.to_q
    return str(getattr(layer, "base_layer", layer).weight.dtype).replace("torch.", "")


def first_lora_b(model: Any) -> Any:
    return next(p for n, p in model.named_parameters() if ".lora_B." in n)


def run_path(path: str, preset: str, cfg: dict[str, Any], device: str, batch: int, size: int,
             steps: int, warmup: int) -> dict[str, Any]:
    """Set up one path on a fresh model, time its steps, free everything; the result or the OOM."""
    base = allocated(device)
    data = make_inputs(cfg, batch, size)
    out: dict[str, Any] = {"path": path, "batch": batch}
    stage = "setup"
    step = keep = None
    try:
        reset_peak(device)
        t0 = time.perf_counter()
        setup = imagebash_setup if path == "imagebash" else plain_setup
        step, notes, keep = setup(preset, cfg, device, batch, data)
        sync(device)
        out.update(notes, setup_s=round(time.perf_counter() - t0, 2))
        out["setup_peak_gib"] = gib(peaks(device)[0])
        out["resident_gib"] = gib(allocated(device))
        out["base_dtype_after_setup"] = base_weight_dtype(keep["model"])
        before = first_lora_b(keep["model"]).detach().clone()
        reset_peak(device)
        stage = "warm-up"
        losses = [step() for _ in range(warmup)]
        sync(device)
        out["peak_with_warmup_gib"] = gib(peaks(device)[0])
        out["base_dtype_after_warmup"] = base_weight_dtype(keep["model"])
        reset_peak(device)
        stage = "timed steps"
        times = []
        for _ in range(steps):
            t1 = time.perf_counter()
            losses.append(step())
            sync(device)
            times.append(time.perf_counter() - t1)
        peak, reserved = peaks(device)
        # lora_B starts at zero; the Trainer's constant_with_warmup gives step 1 lr 0, so look after all steps
        out["adapter_trained"] = bool((first_lora_b(keep["model"]).detach() != before).any())
        del before
        out.update(s_per_step=round(statistics.median(times), 4), times=[round(x, 4) for x in times],
                   peak_gib=gib(peak), reserved_peak_gib=gib(reserved), peak_bytes=peak,
                   losses_finite=all(x == x and abs(x) != float("inf") for x in losses))  # random weights: reported
    except Exception as exc:  # an OOM (or anything else) is a line; the next run starts clean
        out.update(error=one_line(exc), oom=is_oom(exc), stage=stage, peak_gib=gib(peaks(device)[0]))
        if not is_oom(exc):
            out["traceback"] = traceback.format_exc(limit=6)[-1500:]
    finally:
        del step, keep, data  # the model, its optimizer and inputs go before the memory is freed
    free_device(device)
    after = allocated(device)
    if base is not None and after is not None:
        out["left_allocated_gib"] = gib(after - base)  # what the run left behind (should be ~0)
    return out


def run_preset(key: str, cfg: dict[str, Any], device: str, size: int, steps: int, warmup: int) -> None:
    name, card_gib = PRESETS[key]
    preset_batch = preset_config(name, device).batch_size
    batches = [b for b in (preset_batch, 2, 1) if b <= preset_batch]
    batches = sorted(set(batches), reverse=True)
    for batch in batches:
        ours = run_path("imagebash", name, cfg, device, batch, size, steps, warmup)
        emit(preset=name, **ours)
        if ours.get("oom"):
            continue  # the next smaller batch
        plain = run_path("plain", name, cfg, device, batch, size, steps, warmup)
        emit(preset=name, **plain)
        line: dict[str, Any] = {"preset": name, "batch": batch, "preset_batch": preset_batch, "aim": AIM}
        if "s_per_step" in ours and "s_per_step" in plain:
            line.update(s_per_step_ratio=round(ours["s_per_step"] / plain["s_per_step"], 3),
                        imagebash_s_per_step=ours["s_per_step"], plain_s_per_step=plain["s_per_step"],
                        same_adapted_layers=ours["adapted_layers"] == plain["adapted_layers"])
            if ours.get("peak_gib") is not None:
                worst = max(ours["peak_gib"], ours["peak_with_warmup_gib"] or 0)
                line.update(imagebash_peak_gib=ours["peak_gib"],
                            imagebash_peak_with_warmup_gib=ours["peak_with_warmup_gib"],
                            plain_peak_gib=plain.get("peak_gib"),
                            plain_peak_with_warmup_gib=plain.get("peak_with_warmup_gib"),
                            card_gib=card_gib, fits_card=worst < card_gib, steady_fits_card=ours["peak_gib"] < card_gib)
        else:
            line.update(note="no ratio: a path did not finish", plain_error=plain.get("error"))
        emit(**line)
        return
    emit(preset=name, note=f"out of memory at every batch tried: {batches}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run-cpu", action="store_true", help="tiny Flux config on the CPU: checks the logic")
    ap.add_argument("--presets", default="24gb,80gb", help="comma list of: " + ", ".join(PRESETS))
    ap.add_argument("--steps", type=int, default=None, help="timed steps (3; 1 in the dry run)")
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    import torch

    if args.dry_run_cpu:
        device, size, steps = "cpu", 64, args.steps or 1
        torch.set_num_threads(min(2, torch.get_num_threads()))
    elif not torch.cuda.is_available():
        emit(skipped="no CUDA")
        return 0
    else:
        device, size, steps = "cuda", 1024, args.steps or 3
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    cfg = flux_config(tiny=args.dry_run_cpu)
    info: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (dry run)",
                            "torch": torch.__version__, "diffusers": diffusers.__version__,
                            "resolution": size, "text_tokens": TEXT_TOKENS, "steps": steps, "warmup": args.warmup,
                            "packed_latents_per_item": [(size // 16) ** 2, 64]}
    try:
        import bitsandbytes

        info["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        info["bitsandbytes"] = None
    if device == "cuda":
        info["total_gib"] = gib(torch.cuda.get_device_properties(0).total_memory)
    emit(**info)
    started = time.perf_counter()
    for key in [k.strip() for k in args.presets.split(",") if k.strip()]:
        if key not in PRESETS:
            emit(error=f"unknown preset {key!r} (known: {', '.join(PRESETS)})")
            continue
        run_preset(key, cfg, device, size, steps, args.warmup)
    emit(total_s=round(time.perf_counter() - started, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
