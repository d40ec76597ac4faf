"""Training speed against a minimal plain peft + diffusers loop, and what the latent cache saves.

Run from the repository root: `python tests/benchmarks/bench_training.py`. Prints JSON lines:
  step_time_ratio     median seconds per optimizer step of our Trainer (cached latents and text
                      embeddings, bucketed batches, checkpointable RNG, min-SNR off) divided by a
                      plain loop written below: the same tiny SD model, LoRA rank/targets, batch
                      and resolution, latents and embeddings precomputed, AdamW, grad clipping
                      (aim <= 1.05)
  cached_prepare_ratio  the caching the trainer does before step 1 with a warm latent/text cache
                      divided by the same with a fresh one (which decodes, resizes and VAE-encodes
                      every image and encodes every caption; the images are JPEGs 8x the training
                      size, as photos usually are; aim < 0.7). Every epoch trains from the cache
                      since the trainer encodes everything before its first step, so the first and
                      later epochs cost the same; `cached_epoch_ratio` (first epoch plus caching,
                      warm / fresh) is printed beside it.
Steps are timed in process CPU seconds (one torch thread for both), so another busy process on a
small shared runner skews the ratio less; four rounds of each in ABBA order, medians of the steps
after a warm-up.
"""

from __future__ import annotations

import itertools
import json
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

RES, BATCH, RANK, STEPS, WARMUP, ROUNDS = 64, 2, 4, 25, 5, 4


def emit(**kv) -> None:
    print(json.dumps(kv), flush=True)


def make_images(folder: pathlib.Path, n: int, size: int, ext: str = ".png") -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        y, x = np.mgrid[0:size, 0:size].astype(np.float32)
        img = np.stack([np.sin(x / (3 + i)), np.cos(y / (4 + i)), np.sin((x + y) / 7.0)], -1) * 127 + 128
        Image.fromarray(img.astype(np.uint8)).save(folder / f"img{i}{ext}")
        (folder / f"img{i}.txt").write_text(f"stripes, pattern {i}")


def plain_loop(model_dir: pathlib.Path, data: pathlib.Path) -> list[float]:
    """The reference: what a person writes from the diffusers LoRA example, minus the extras."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from peft import LoraConfig
    from PIL import Image

    torch.manual_seed(0)
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    unet, vae, te, tok = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    for m in (unet, vae, te):
        m.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    files = sorted(data.glob("*.png"))
    with torch.no_grad():
        px = torch.stack([torch.from_numpy(__import__("numpy").asarray(Image.open(f).convert("RGB"), dtype="float32"))
                          .permute(2, 0, 1) / 127.5 - 1 for f in files])
        latents = vae.encode(px).latent_dist.mean * vae.config.scaling_factor
        ids = tok([f.with_suffix(".txt").read_text() for f in files], padding="max_length",
                  max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
        emb = te(ids)[0]
    unet.train()
    times = []
    for step in range(STEPS):
        t0 = time.process_time()
        idx = [(2 * step) % len(files), (2 * step + 1) % len(files)]
        lat, hid = latents[idx], emb[idx]
        noise = torch.randn_like(lat)
        t = torch.randint(0, sched.config.num_train_timesteps, (BATCH,))
        pred = unet(sched.add_noise(lat, noise, t), t, encoder_hidden_states=hid).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.process_time() - t0)
    return times


def ours(model_dir: pathlib.Path, data: pathlib.Path, work: pathlib.Path, steps: int, tag: str, cache: str = ""):
    """Our Trainer; returns (result, CPU seconds of each step: between two progress reports);
    `result.precache_s` is the wall time of the caching before step 1."""
    from app.training.config import TrainConfig
    from app.training.loop import Trainer

    class Timing(Trainer):
        def _precache(self) -> None:
            t0 = time.perf_counter()
            super()._precache()
            self.precache_s = time.perf_counter() - t0

    marks: list[float] = []

    def progress(p) -> None:
        if p.phase == "train":
            marks.append(time.process_time())

    cfg = TrainConfig().replace(
        data=str(data), base=str(model_dir), out=str(work / tag / "out.safetensors"), resolution=RES, rank=RANK,
        alpha=float(RANK), batch_size=BATCH, max_steps=steps, learning_rate=1e-4, lr_scheduler="constant",
        cache_dir=str(work / (cache or tag) / "cache"), device="cpu", min_snr_gamma=0.0, noise_offset=0.0, seed=0)
    trainer = Timing(cfg, progress=progress)
    result = trainer.run()
    result.precache_s = trainer.precache_s
    return result, [b - a for a, b in itertools.pairwise(marks)]


def main() -> None:
    import torch

    from tests.tiny_models import save_sd_folder

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        model_dir = save_sd_folder(work / "tiny-sd")
        data = work / "data"
        make_images(data, 8, RES)
        plain: list[float] = []
        mine: list[float] = []
        for r in range(ROUNDS):  # alternate (ABBA...), so drift in the machine's load hits both sides alike
            runs = [lambda: plain.extend(plain_loop(model_dir, data)[WARMUP:]),
                    lambda r=r: mine.extend(ours(model_dir, data, work, STEPS + 1, f"steps{r}")[1][WARMUP:])]
            for run in runs if r % 2 == 0 else runs[::-1]:
                run()
        base, own = statistics.median(plain), statistics.median(mine)
        emit(step_time_ratio=round(own / base, 3), ours_step_s=round(own, 4), plain_step_s=round(base, 4))

        big = work / "big"
        make_images(big, 8, 8 * RES, ".jpg")  # photos are several times the training size: decoding counts
        cold, _ = ours(model_dir, big, work, 4, "cold")  # 8 images, batch 2: one epoch of 4 steps
        warm, _ = ours(model_dir, big, work, 4, "warm", cache="cold")  # the same cache, now filled
        fresh = cold.precache_s + cold.epoch_times[0]
        again = warm.precache_s + warm.epoch_times[0]
        emit(cached_prepare_ratio=round(warm.precache_s / cold.precache_s, 3), aim="< 0.7",
             fresh_precache_s=round(cold.precache_s, 3), cached_precache_s=round(warm.precache_s, 4))
        emit(cached_epoch_ratio=round(again / fresh, 3), fresh_epoch_s=round(fresh, 3), cached_epoch_s=round(again, 3))


if __name__ == "__main__":
    main()
