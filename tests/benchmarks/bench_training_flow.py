"""Flow-matching (Flux.1 dev) training speed against a plain peft + diffusers loop, and what the
latent and text-embedding cache saves.

Run from the repository root: `python tests/benchmarks/bench_training_flow.py`. Prints JSON lines:
  flux_step_time_ratio    median seconds per optimizer step of our Trainer (`result.step_times`,
                          after the warm-up steps; latents and T5/CLIP embeddings cached) divided by
                          a plain loop written below: the same tiny Flux dev folder loaded with
                          diffusers, the same peft LoraConfig (targets, rank, alpha, gaussian init),
                          batch, resolution, AdamW, grad clipping, sigmoid timesteps with shift 3,
                          x_t = (1 - s) x0 + s noise, target noise - x0, guidance 1.0, latents and
                          embeddings precomputed (aim <= 1.05). `flux_step_cpu_ratio` is the same
                          in process CPU seconds (less skewed by other work on a shared runner).
  flux_cached_step_ratio  the cached Trainer step / the same Trainer step with live encoders: the
                          run's EmbeddingCache is bypassed on the instance after prepare() (`latent`
                          decodes the image and runs the VAE, `text` runs CLIP + T5 through
                          `encode_prompts`, for every item of every step: the calls the cache makes
                          once per item), so the step is the Trainer's own, only the encoders run
                          every time, as in a trainer without a cache (aim < 0.8).
  flux_precache_warm_vs_cold  the Trainer encodes every image and caption in prepare(), before
                          the first step (then parks the encoders): the seconds of that stage with
                          a warm disk cache (a repeated run: read, hash) / with a fresh one (decode,
                          VAE, CLIP + T5); `flux_epoch2_vs_epoch1` beside it is ~1 since nothing is
                          encoded inside epoch 1 any more (its first step is the slowest, though).
Training at 256x256 (latents 16x32x32, 256 packed image tokens + 512 T5 tokens), batch 2, rank 8,
4 images; one torch thread. ROUNDS rounds, each one run of every side (plain, ours, ours with live
encoders; ABC then CBA), each run a fresh model; a run's figure is the median of its steps after
the warm-up, the headline the median over rounds of the per-round ratio (a round's runs share
the load other work puts on the machine), with the ratio of the pooled step medians and of the
best rounds beside it. No assertion on wall-clock.
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

RES, BATCH, RANK, IMAGES, STEPS, WARMUP, ROUNDS = 256, 2, 8, 4, 30, 4, 8
LIVE_STEPS = 10  # the live-encoder side is slower: fewer steps (same warm-up)
SHIFT, GUIDANCE, LR = 3.0, 1.0, 1e-4


def emit(**kv) -> None:
    print(json.dumps(kv), flush=True)


def make_images(folder: pathlib.Path, n: int, size: int) -> None:
    from tests.training.conftest import write_image

    for i in range(n):
        write_image(folder / f"img{i}.png", i, (size, size), caption=f"stripes, pattern {i}")


def build_model(root: pathlib.Path) -> pathlib.Path:
    """The tiny Flux dev folder of tests/tiny_families.py (the one build_all saves as flux_dev_dir)."""
    from tests.tiny_families import make_flux_pipeline, save_folder

    return save_folder(make_flux_pipeline(root / "_build", "dev"), root / "tiny-flux-dev")


def targets() -> list[str] | str:
    from app.engine.families import get_family
    from app.training import adapters

    return adapters.denoiser_targets(get_family("flux").training, "attention")


def plain_loop(model_dir: pathlib.Path, data: pathlib.Path, steps: int) -> tuple[list[float], list[float]]:
    """The reference: diffusers' Flux LoRA example reduced to its step; (wall, CPU) seconds per step."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from diffusers import FluxPipeline
    from peft import LoraConfig
    from PIL import Image

    torch.manual_seed(0)
    pipe = FluxPipeline.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    tr, vae = pipe.transformer, pipe.vae
    for m in (tr, vae, pipe.text_encoder, pipe.text_encoder_2):
        m.requires_grad_(False)
    tr.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights="gaussian", lora_dropout=0.0,
                              target_modules=targets()))
    params = [p for p in tr.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=1e-2)
    files = sorted(data.glob("*.png"))
    with torch.no_grad():
        px = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32))
                          .permute(2, 0, 1) / 127.5 - 1 for f in files])
        lat = vae.encode(px).latent_dist.mode()
        latents = (lat - vae.config.shift_factor) * vae.config.scaling_factor
        captions = [f.with_suffix(".txt").read_text() for f in files]
        hidden, pooled, _ = pipe.encode_prompt(captions, captions, device="cpu", max_sequence_length=512)
    g = torch.Generator().manual_seed(0)
    scale = pipe.vae_scale_factor
    tr.train()
    wall, cpu = [], []
    for step in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        idx = [(BATCH * step + k) % len(files) for k in range(BATCH)]
        x0, hid, pool = latents[idx], hidden[idx], pooled[idx]
        n, c, h, w = x0.shape
        noise = torch.randn(x0.shape, generator=g)
        u = torch.sigmoid(torch.randn(n, generator=g)).clamp(1e-5, 1 - 1e-5)
        sigmas = SHIFT * u / (1 + (SHIFT - 1) * u)
        s = sigmas.view(-1, 1, 1, 1)
        noisy = (1 - s) * x0 + s * noise
        out = tr(hidden_states=FluxPipeline._pack_latents(noisy, n, c, h, w), timestep=sigmas,
                 guidance=torch.full((n,), GUIDANCE), pooled_projections=pool, encoder_hidden_states=hid,
                 txt_ids=torch.zeros(hid.shape[1], 3),
                 img_ids=FluxPipeline._prepare_latent_image_ids(n, h // 2, w // 2, "cpu", torch.float32),
                 return_dict=False)[0]
        pred = FluxPipeline._unpack_latents(out, h * scale, w * scale, scale)
        loss = F.mse_loss(pred.float(), (noise - x0).float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss.detach())  # the trainer reads the loss every step: so does the reference
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def config(model_dir: pathlib.Path, data: pathlib.Path, work: pathlib.Path, tag: str, steps: int, **kw):
    from app.training.config import TrainConfig

    values = dict(data=str(data), base=str(model_dir), out=str(work / tag / "out.safetensors"), resolution=RES,
                  rank=RANK, alpha=float(RANK), batch_size=BATCH, max_steps=steps, learning_rate=LR,
                  lr_scheduler="constant", cache_dir=str(work / "cache"), device="cpu", seed=0,
                  timestep_sampling="sigmoid", shift=SHIFT, guidance=GUIDANCE, targets="attention")
    values.update(kw)
    return TrainConfig().replace(**values)


def ours(cfg, live: bool = False) -> tuple[Any, list[float], dict[str, Any]]:
    """Our Trainer: (result, CPU seconds of each step between two progress reports, info: encoder
    calls, the cache's own encode counts and `precache_s`, prepare()'s caching stage: from its first
    "caching ..." report to prepare's return, the encoders' parking included).
    `live`: after prepare() the run's cache is bypassed, so the VAE and both text encoders run for
    every item of every step."""
    from app.training.loop import Trainer

    marks: list[float] = []
    caching: list[float] = []

    def progress(p) -> None:
        if p.phase == "train":
            marks.append(time.process_time())
        elif p.phase.startswith("caching") and not caching:
            caching.append(time.perf_counter())

    t = Trainer(cfg, progress=progress)
    t.prepare()
    info: dict[str, Any] = {"vae": 0, "text": 0,
                            "precache_s": time.perf_counter() - caching[0] if caching else float("nan")}
    if live:
        cache = t.cache

        def latent(item):
            info["vae"] += 1
            return cache.encode_image(item)

        def text(caption):
            info["text"] += 1
            return {k: v[0].float().cpu().contiguous() for k, v in cache.encode_text([caption]).items()}

        cache.latent, cache.text = latent, text
    result = t.run()
    info["cache_vae"], info["cache_text"] = t.cache.encoded_images, t.cache.encoded_texts
    t.close()
    return result, [b - a for a, b in itertools.pairwise(marks)], info


def quiet() -> None:
    """No progress bars or load chatter on stderr: stdout carries only the JSON lines anyway."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> None:
    import torch

    torch.set_num_threads(1)
    quiet()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        model_dir = build_model(work)
        data = work / "data"
        make_images(data, IMAGES, RES)
        # warm the disk cache once, so every timed run of ours starts as a repeated run does
        ours(config(model_dir, data, work, "warm", 2))
        runs: dict[str, list[list[float]]] = {"plain": [], "plain_cpu": [], "ours": [], "ours_cpu": [], "live": []}
        live_calls: dict[str, int] = {}

        def run_plain() -> None:
            w, c = plain_loop(model_dir, data, STEPS + WARMUP)
            runs["plain"].append(w[WARMUP:])
            runs["plain_cpu"].append(c[WARMUP:])

        def run_ours(r: int) -> None:
            res, cpu, _ = ours(config(model_dir, data, work, f"ours{r}", STEPS + WARMUP))
            runs["ours"].append(res.step_times[WARMUP:])
            runs["ours_cpu"].append(cpu[WARMUP - 1:])  # cpu[i] is step i+2 (the first report has no predecessor)

        def run_live(r: int) -> None:
            res, _, calls = ours(config(model_dir, data, work, f"live{r}", LIVE_STEPS + WARMUP), live=True)
            runs["live"].append(res.step_times[WARMUP:])
            live_calls.update(calls)

        for r in range(ROUNDS):  # ABC, CBA, ...: drift in the machine's load hits every side alike
            sides = [run_plain, lambda r=r: run_ours(r), lambda r=r: run_live(r)]
            for side in sides if r % 2 == 0 else sides[::-1]:
                side()

        def ratios(a: str, b: str) -> dict[str, float]:
            """Median of the per-round ratios (a round's runs share the machine's load), and the
            ratio of the pooled medians and of the best rounds."""
            per = [med(x) / med(y) for x, y in zip(runs[a], runs[b], strict=True)]
            pooled = med([t for r in runs[a] for t in r]) / med([t for r in runs[b] for t in r])
            best = min(med(x) for x in runs[a]) / min(med(y) for y in runs[b])
            return {"median_round": round(med(per), 3), "pooled": round(pooled, 3), "best": round(best, 3),
                    "rounds": [round(x, 3) for x in per]}

        def step_s(name: str) -> float:
            return round(med([t for r in runs[name] for t in r]), 4)

        wall, cpu = ratios("ours", "plain"), ratios("ours_cpu", "plain_cpu")
        emit(flux_step_time_ratio=wall["median_round"], aim="<= 1.05", pooled_ratio=wall["pooled"],
             best_ratio=wall["best"], round_ratios=wall["rounds"], ours_step_s=step_s("ours"),
             plain_step_s=step_s("plain"), steps_each=STEPS * ROUNDS, resolution=RES, batch=BATCH, rank=RANK,
             latents=[16, RES // 8, RES // 8])
        emit(flux_step_cpu_ratio=cpu["median_round"], aim="<= 1.05", pooled_ratio=cpu["pooled"],
             best_ratio=cpu["best"], ours_step_cpu_s=step_s("ours_cpu"), plain_step_cpu_s=step_s("plain_cpu"))
        cached = ratios("ours", "live")
        emit(flux_cached_step_ratio=cached["median_round"], aim="< 0.8", pooled_ratio=cached["pooled"],
             cached_step_s=step_s("ours"), live_encoders_step_s=step_s("live"), live_steps_each=LIVE_STEPS * ROUNDS,
             live_encoder_calls_last_run={"vae": live_calls["vae"], "text": live_calls["text"]},
             live_cache_encodes=live_calls["cache_vae"] + live_calls["cache_text"],
             how="the Trainer's step with its cache bypassed on the instance: VAE + CLIP + T5 per item per step")

        fresh = work / "fresh"  # its own cache folder: the first run encodes everything, the second reads it
        cold, _, cold_info = ours(config(model_dir, data, work, "cold", 3 * IMAGES // BATCH, cache_dir=str(fresh)))
        _, _, warm_info = ours(config(model_dir, data, work, "warm2", 2, cache_dir=str(fresh)))
        e = cold.epoch_times
        emit(flux_precache_warm_vs_cold=round(warm_info["precache_s"] / cold_info["precache_s"], 3),
             cold_precache_s=round(cold_info["precache_s"], 3), warm_precache_s=round(warm_info["precache_s"], 3),
             cold_encoded=[cold_info["cache_vae"], cold_info["cache_text"]],
             warm_encoded=[warm_info["cache_vae"], warm_info["cache_text"]], images=IMAGES,
             flux_epoch2_vs_epoch1=round(e[1] / e[0], 3), epoch_s=[round(x, 3) for x in e],
             steps_per_epoch=IMAGES // BATCH)
    emit(total_s=round(time.perf_counter() - started, 1))


if __name__ == "__main__":
    main()
