"""ControlNet benchmarks on the tiny SD 1.5 model and a tiny ControlNet, as ratios (one JSON object per line).

- controlnet_overhead_ratio: txt2img with one ControlNet through the engine (Load Model -> ControlNet,
  its control image a saved PNG through Load Image -> Text to Image; cache cleared between runs so
  the sampler really runs) / diffusers' StableDiffusionControlNetPipeline loaded from the same SD
  folder and the same ControlNet folder (same prompt, size, steps, CPU-generator seed, guidance,
  Euler scheduler, control image, conditioning scale; VAE decode included, output_type "np").
  The pixels are compared too (`max_abs_diff`: the two paths must do the same work).
- controlnet_strength_change_ratio: a re-run after changing only the ControlNet node's strength
  (base, net and the ControlNet pipeline stay loaded) / a cold run (fresh engine and model manager:
  load base, load net, sample), at a smaller size and fewer steps (as the LoRA switch benchmarks:
  with tiny weights a load is ~0.1 s, and the ratio says what a strength change saves against
  loading, not how fast sampling is).

The tiny net is built as tests/guidance/test_controlnet.py builds it: ControlNetModel.from_unet of
the tiny U-Net, the zero convolutions given weight so the net (and its image) steers.

Timing: OMP/torch threads pinned to 1; both sides warmed once, then REPEAT back-to-back pairs
alternating which goes first; the headline is the median of the per-pair wall ratios, with the
ratio of median times, of best times and of median process-CPU times beside it. No assertion on
wall-clock. Run from the repo root: `python tests/benchmarks/bench_guidance.py`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One intra-op thread before torch is imported (the engine's worker threads get it too): on a small
# shared machine two OpenMP threads spin-wait whenever the other is descheduled (bench_families.py).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.benchmarks.pairs import Timed, cpu_engine, emit, engine_runner, interleaved, ratios  # noqa: E402

SIZE, STEPS, REPEAT, SEED, GUIDANCE, SCALE = 128, 10, 11, 3, 7.0, 0.8
SWITCH_SIZE, SWITCH_STEPS = 64, 4
PROMPT = "a red house"




# ---------------------------------------------------------------------------------- artefacts


def build_controlnet(sd_dir: Path, folder: Path) -> Path:
    """The tiny SD ControlNet of tests/guidance/test_controlnet.py, saved as a diffusers folder."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(sd_dir), subfolder="unet")
    torch.manual_seed(5)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if float(p.abs().sum()) == 0.0:
                p.normal_(0, 0.3)
            elif name.startswith("controlnet_cond_embedding"):
                p.mul_(4.0)
    net.save_pretrained(str(folder), safe_serialization=True)
    return folder


def write_edges(path: Path, size: int) -> Path:
    """An edge-map-like control PNG: two white bars and a grey diagonal on black."""
    import numpy as np
    import PIL.Image

    a = np.zeros((size, size, 3), np.uint8)
    a[size // 4:size // 4 + size // 16, :] = 255
    a[:, size * 5 // 8:size * 5 // 8 + size // 16] = 255
    idx = np.arange(size)
    a[idx, idx] = 128
    PIL.Image.fromarray(a).save(path)
    return path


def _graph(sd_dir: Path, net: Path, png: Path, strength: float, size: int, steps: int):
    from tests.diffusion.conftest import make_graph

    return make_graph({"load": ("load_model", {"checkpoint": str(sd_dir)}),
                       "img": ("imagebash.image.load", {"path": str(png)}),
                       "cn": ("imagebash.guidance.controlnet", {"controlnet": str(net), "strength": strength}),
                       "gen": ("txt2img", {"prompt": PROMPT, "width": size, "height": size, "steps": steps,
                                           "seed": SEED, "guidance": GUIDANCE, "scheduler": "euler"})},
                      ["load.model>cn.model", "img.image>cn.image", "cn.model>gen.model"])


# ------------------------------------------------------------------------------ engine overhead


def controlnet_overhead(sd_dir: Path, net: Path, png: Path) -> dict[str, Any]:
    import numpy as np
    import PIL.Image
    import torch
    from diffusers import ControlNetModel, EulerDiscreteScheduler, StableDiffusionControlNetPipeline

    engine = cpu_engine()
    mgr = engine.services.get("models")
    dtype = mgr.dtype
    raw = StableDiffusionControlNetPipeline.from_pretrained(
        str(sd_dir), controlnet=ControlNetModel.from_pretrained(str(net), torch_dtype=dtype, local_files_only=True),
        torch_dtype=dtype, safety_checker=None, requires_safety_checker=False, local_files_only=True)
    raw.scheduler = EulerDiscreteScheduler.from_config(raw.scheduler.config)
    raw.set_progress_bar_config(disable=True)
    control = PIL.Image.open(png).convert("RGB")
    graph = _graph(sd_dir, net, png, SCALE, SIZE, STEPS)
    images: dict[str, Any] = {}

    via_engine = engine_runner(engine, graph, images)

    def via_diffusers() -> Timed:
        with Timed() as t:
            out = raw(PROMPT, image=control, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                      guidance_scale=GUIDANCE, controlnet_conditioning_scale=SCALE,
                      generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
        images["diffusers"] = out
        return t

    r = ratios(interleaved(via_engine, via_diffusers, REPEAT))
    loads, nets = mgr.loads, len(mgr._controls)
    engine.shutdown()
    assert loads == 1 and nets == 1, (loads, nets)  # every engine run sampled; nothing was reloaded
    diff = float(np.abs(images["engine"] - images["diffusers"]).max())
    return {"controlnet_overhead_ratio": r.pop("ratio"), "aim": "<= 1.05", **r, "max_abs_diff": diff,
            "size": SIZE, "steps": STEPS, "guidance": GUIDANCE, "conditioning_scale": SCALE, "runs": REPEAT,
            "dtype": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
            "a": "engine (Load Model -> ControlNet <- Load Image -> Text to Image)",
            "b": "diffusers StableDiffusionControlNetPipeline"}


# ------------------------------------------------------------------------------ strength change


def strength_change(sd_dir: Path, net: Path, png: Path) -> dict[str, Any]:
    import numpy as np

    # every pair gets a strength neither engine has run (the warm-ups' 1.5 and 1.45 are above them all)
    strengths = iter([1.45] + [0.3 + 0.05 * i for i in range(REPEAT)])
    pair: list[float] = []

    def strength() -> float:
        """The same new strength for both runs of a pair."""
        if not pair:
            pair.extend([next(strengths)] * 2)
        return pair.pop()

    def cold() -> Timed:
        fresh = cpu_engine()  # its own model manager: base and net are read from disk
        graph = _graph(sd_dir, net, png, strength(), SWITCH_SIZE, SWITCH_STEPS)
        with Timed() as t:
            result = fresh.run(graph)
        assert result.ok, result.errors
        mgr = fresh.services.get("models")
        assert mgr.loads == 1 and len(mgr._controls) == 1
        fresh.shutdown()
        return t

    engine = cpu_engine()
    assert engine.run(_graph(sd_dir, net, png, 1.5, SWITCH_SIZE, SWITCH_STEPS)).ok  # loads base and net
    mgr = engine.services.get("models")
    net_entry = next(iter(mgr._controls.values()))
    images = []

    def switch() -> Timed:
        graph = _graph(sd_dir, net, png, strength(), SWITCH_SIZE, SWITCH_STEPS)
        with Timed() as t:
            result = engine.run(graph)
        assert result.ok, result.errors
        assert result.status["load"] == "cached" and result.status["img"] == "cached"
        assert result.status["cn"] == "done" and result.status["gen"] == "done"
        images.append(np.asarray(result.output("gen")))
        return t

    r = ratios(interleaved(switch, cold, REPEAT))
    assert mgr.loads == 1 and list(mgr._controls.values()) == [net_entry]  # neither base nor net reloaded
    pipelines = sum(1 for k in mgr.entries()[0].derived if isinstance(k, tuple) and k[0] == "control")
    engine.shutdown()
    moved = float(np.abs(images[-1] - images[-2]).mean())
    assert moved > 1e-6, moved  # the strength really reached the sampler
    return {"controlnet_strength_change_ratio": r.pop("ratio"), "aim": "< 0.5", **r,
            "control_pipelines_built": pipelines, "mean_abs_change_last_two": moved, "size": SWITCH_SIZE,
            "steps": SWITCH_STEPS, "runs": REPEAT, "a": "strength change (warm engine)",
            "b": "cold (fresh engine and model manager: load base, load net, sample)"}


def main() -> None:
    import torch

    from tests.tiny_models import save_sd_folder

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("IMAGEBASH_CACHE_DIR", str(Path(tmp) / "cache"))
        root = Path(tmp)
        sd_dir = save_sd_folder(root / "models" / "tiny-sd")
        net = build_controlnet(sd_dir, root / "models" / "controlnet" / "tiny-sd-canny")
        emit(**controlnet_overhead(sd_dir, net, write_edges(root / f"edges{SIZE}.png", SIZE)))
        emit(**strength_change(sd_dir, net, write_edges(root / f"edges{SWITCH_SIZE}.png", SWITCH_SIZE)))


if __name__ == "__main__":
    main()
