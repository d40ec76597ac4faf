"""Diffusion benchmarks on the tiny model, as ratios (one JSON object per line).

- engine_overhead_ratio: txt2img through the engine / the same call on a raw diffusers pipeline
  (same model, seed, steps, size, scheduler), best of several interleaved runs each (the best
  run is the one least disturbed by other work on the machine).
- lora_switch_ratio: re-run after changing one LoRA weight / a run that loads base and LoRA from
  scratch.
- tiled_decode_peak_mem_ratio: extra peak memory of a tiled 1024x1024 VAE decode / an untiled one,
  each measured in its own subprocess (peak RSS above the level before decoding).

Run from the repo root: `python tests/benchmarks/bench_diffusion.py`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SIZE, STEPS, REPEAT = 64, 4, 5


def _graph(model: Path, seed: int, loras: tuple = ()):
    from tests.diffusion.conftest import txt2img_graph

    return txt2img_graph(model, steps=STEPS, size=SIZE, seed=seed, loras=loras, guidance=7.0)


def engine_overhead(models: dict[str, Path]) -> float:
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from app.engine import Engine, EngineSettings
    from nodes.registry import default_registry

    engine = Engine(default_registry(), EngineSettings(device="cpu"))
    raw = StableDiffusionPipeline.from_pretrained(str(models["sd_dir"]), local_files_only=True)
    raw.scheduler = EulerDiscreteScheduler.from_config(raw.scheduler.config)
    raw.set_progress_bar_config(disable=True)

    def via_engine() -> float:
        engine.cache.clear()
        t0 = time.perf_counter()
        result = engine.run(_graph(models["sd_dir"], 3))
        assert result.ok, result.errors
        return time.perf_counter() - t0

    def via_diffusers() -> float:
        t0 = time.perf_counter()
        raw("a red house", width=SIZE, height=SIZE, num_inference_steps=STEPS, guidance_scale=7.0,
            generator=torch.Generator().manual_seed(3), output_type="np")
        return time.perf_counter() - t0

    via_engine(), via_diffusers()  # warm both (imports, first allocation)
    eng, base = [], []
    for i in range(2 * REPEAT):
        first, second = (via_engine, via_diffusers) if i % 2 else (via_diffusers, via_engine)
        times = {first: first(), second: second()}
        eng.append(times[via_engine])
        base.append(times[via_diffusers])
    engine.shutdown()
    return min(eng) / min(base)


def lora_switch(models: dict[str, Path]) -> float:
    from app.engine import Engine, EngineSettings
    from nodes.registry import default_registry

    lora = models["lora_kohya"]

    def scratch() -> float:
        engine = Engine(default_registry(), EngineSettings(device="cpu"))
        t0 = time.perf_counter()
        assert engine.run(_graph(models["sd_dir"], 5, ((lora, 0.8),))).ok
        dt = time.perf_counter() - t0
        engine.shutdown()
        return dt

    engine = Engine(default_registry(), EngineSettings(device="cpu"))
    assert engine.run(_graph(models["sd_dir"], 5, ((lora, 0.8),))).ok

    def switch(weight: float) -> float:
        t0 = time.perf_counter()
        result = engine.run(_graph(models["sd_dir"], 5, ((lora, weight),)))
        dt = time.perf_counter() - t0
        assert result.ok and result.status["load"] == "cached"
        assert result.status["gen"] == "done"  # really sampled: not an engine cache hit
        return dt

    scratch(), switch(0.7)  # warm imports and first calls
    cold, warm = [], []
    weights = [0.31 + 0.07 * i for i in range(REPEAT)]  # never run before (0.8 and 0.7 were)
    for weight in weights:  # interleaved, so load on the machine hits both alike
        cold.append(scratch())
        warm.append(switch(weight))
    assert engine.services.get("models").loads == 1
    engine.shutdown()
    return statistics.median(warm) / statistics.median(cold)


_DECODE = """
import ctypes, gc, os, sys, threading, time, torch
from diffusers import AutoencoderKL
sys.path.insert(0, {root!r})
from app.engine.models import Entry
from nodes.diffusion import tiling

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

vae = AutoencoderKL.from_pretrained({vae!r})
class P: pass
p = P(); p.vae = vae
entry = Entry("k", "", "sd1", p, "cpu", 0)
z = torch.randn(1, 4, 128, 128, generator=torch.Generator().manual_seed(0))
gc.collect(); ctypes.CDLL("libc.so.6").malloc_trim(0)
base = peak = rss()
done = threading.Event()
def poll():
    global peak
    while not done.is_set():
        peak = max(peak, rss()); time.sleep(0.002)
t = threading.Thread(target=poll); t.start()
img = tiling.decode(entry, z, {mode!r}, tile=256, overlap=0.25)
done.set(); t.join()
assert img.shape == (1, 1024, 1024, 3)
print(max(peak, rss()) - base)
"""


def tiled_decode_memory(models: dict[str, Path]) -> float:
    def peak(mode: str) -> int:
        code = _DECODE.format(root=str(ROOT), vae=str(models["sd_dir"] / "vae"), mode=mode)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return int(out.stdout.strip().splitlines()[-1])

    return peak("on") / peak("off")


def main() -> None:
    from tests.tiny_models import build_all

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("IMAGEBASH_CACHE_DIR", str(Path(tmp) / "cache"))
        models = build_all(Path(tmp) / "models")
        print(json.dumps({"engine_overhead_ratio": round(engine_overhead(models), 3)}), flush=True)
        print(json.dumps({"lora_switch_ratio": round(lora_switch(models), 3)}), flush=True)
        print(json.dumps({"tiled_decode_peak_mem_ratio": round(tiled_decode_memory(models), 3)}), flush=True)


if __name__ == "__main__":
    main()
