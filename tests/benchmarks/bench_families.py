"""Flux.1 / SD 3.5 / Qwen-Image benchmarks on the tiny models, as ratios (one JSON object per line).

- {flux,sd3,qwen}_engine_overhead_ratio: txt2img through the engine (Load Model -> Text to Image,
  cache cleared between runs so the sampler really runs) / the same call on the raw diffusers
  pipeline loaded from the same folder (same size, steps, seed, guidance, VAE decode included,
  output_type "np"), 256x256 and 10 steps. The pixels are compared too (`max_abs_diff`: the two
  paths must do the same work).
- flux_lora_switch_ratio: a re-run after changing only the LoRA node's weight (base and adapter stay
  loaded) / a cold run with the LoRA (fresh engine and model manager: load base, load LoRA, sample),
  64x64 and 4 steps.
- fp8_weight_bytes_ratio, gguf_q8_weight_bytes_ratio: resident denoiser weight bytes
  (`memory_modes.resident_weight_bytes`) in fp8 layerwise casting (`apply_mode`, as the model manager
  calls it) and loaded from a Q8_0 GGUF file (`load_gguf_denoiser`) / the same denoiser in bf16, on a
  Flux transformer with the real per-block geometry (3072 wide, 24 heads of 128, joint dim 4096,
  pooled 768, in 64) but one double and one single block (545 M parameters, 1.1 GB in bf16); the
  same ratios for the tiny denoiser are printed with `tiny_` in front. For reference,
  `fp8_storage_ratio` of the full Flux.1 dev config (meta device, no weights) is printed as well.
- split_vs_folder_first_load_ratio: a fresh model manager's first load of the ComfyUI split layout
  (denoiser file + config folder + text encoder and VAE files) / of the diffusers folder.

Timing: both sides warmed once, then REPEAT back-to-back pairs alternating which goes first; the
headline is the median of the per-pair wall ratios (a pair shares the load other work puts on the
machine); the ratio of median times, of best times and of median process-CPU times come with it.
No assertion on wall-clock. Run from the repo root: `python tests/benchmarks/bench_families.py`.
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One intra-op thread (before torch is imported, so the engine's worker threads get it too): on a
# small shared machine, two OpenMP threads spin-wait whenever the other one is descheduled, and a
# run's time then swings tenfold (as bench_training.py does).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.benchmarks.pairs import Timed, cpu_engine, emit, engine_runner, interleaved, ratios  # noqa: E402

SIZE, STEPS, REPEAT, SEED = 256, 10, 15, 3
#: The LoRA switch samples less (as bench_diffusion.py does): with tiny weights a load is ~0.1 s, and
#: the ratio says what a weight change saves against loading, not how fast sampling is.
LORA_SIZE, LORA_STEPS = 64, 4
PROMPT = "a red house"

#: family -> (build_all key, engine guidance, the raw pipeline's guidance keywords). The raw
#: keywords are what the family's call_kwargs make of that guidance: Flux dev's distilled guidance
#: embedding, SD 3.5's CFG (the empty negative prompt the pipeline defaults to), Qwen-Image's true
#: CFG (which runs only with a negative prompt: the family passes " ").
FAMILIES: dict[str, tuple[str, float, dict[str, Any]]] = {
    "flux": ("flux_dev_dir", 3.5, {"guidance_scale": 3.5}),
    "sd3": ("sd3_dir", 5.0, {"guidance_scale": 5.0}),
    "qwen": ("qwen_dir", 4.0, {"true_cfg_scale": 4.0, "negative_prompt": " "}),
}

#: Flux.1's real block geometry with one double and one single block.
FLUX_REAL_BLOCKS = dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=128,
                        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                        guidance_embeds=True, axes_dims_rope=(16, 56, 56))




def _graph(folder: Path, guidance: float, loras: tuple = (), size: int = SIZE, steps: int = STEPS,
           seed: int = SEED, **load: Any):
    from tests.diffusion.conftest import make_graph

    nodes: dict[str, tuple[str, dict[str, Any]]] = {"load": ("load_model", {"checkpoint": str(folder), **load})}
    links, src = [], "load"
    for i, (path, weight) in enumerate(loras):
        nodes[f"lora{i}"] = ("lora", {"file": str(path), "weight": weight})
        links.append(f"{src}.model>lora{i}.model")
        src = f"lora{i}"
    nodes["gen"] = ("txt2img", {"prompt": PROMPT, "width": size, "height": size, "steps": steps, "seed": seed,
                                "guidance": guidance})
    links.append(f"{src}.model>gen.model")
    return make_graph(nodes, links)


# ------------------------------------------------------------------------------ engine overhead


def engine_overhead(family: str, models: dict[str, Path]) -> dict[str, Any]:
    import numpy as np
    import torch
    from diffusers import DiffusionPipeline

    key, guidance, raw_kwargs = FAMILIES[family]
    folder = models[key]
    engine = cpu_engine()
    dtype = engine.services.get("models").dtype
    raw = DiffusionPipeline.from_pretrained(str(folder), torch_dtype=dtype, local_files_only=True)
    raw.set_progress_bar_config(disable=True)
    graph = _graph(folder, guidance)
    images: dict[str, Any] = {}

    via_engine = engine_runner(engine, graph, images)

    def via_diffusers() -> Timed:
        with Timed() as t:
            out = raw(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                      generator=torch.Generator().manual_seed(SEED), output_type="np", **raw_kwargs).images
        images["diffusers"] = out
        return t

    r = ratios(interleaved(via_engine, via_diffusers, REPEAT))
    loads = engine.services.get("models").loads
    engine.shutdown()
    assert loads == 1, loads  # the model stayed loaded: every engine run sampled, none reloaded
    diff = float(np.abs(images["engine"] - images["diffusers"]).max())
    return {f"{family}_engine_overhead_ratio": r.pop("ratio"), "aim": "<= 1.05", **r, "max_abs_diff": diff,
            "size": SIZE, "steps": STEPS, "runs": REPEAT, "dtype": str(dtype).replace("torch.", ""),
            "threads": torch.get_num_threads(),
            "a": "engine", "b": "diffusers"}


# ---------------------------------------------------------------------------------- LoRA switch


def write_flux_lora(folder: Path, path: Path, rank: int = 4, seed: int = 5) -> Path:
    """A diffusers/ai-toolkit form LoRA (`transformer.<module>.lora_A/B.weight`, alpha folded in)
    on every Linear of the tiny dev transformer's blocks, random A/B."""
    import torch
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import save_file

    model = FluxTransformer2DModel.from_pretrained(str(folder / "transformer"), local_files_only=True)
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.startswith(("transformer_blocks.", "single_transformer_blocks.")):
            state[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, mod.in_features, generator=g) * 0.3
            state[f"transformer.{name}.lora_B.weight"] = torch.randn(mod.out_features, rank, generator=g) * 0.3
    save_file(state, str(path))
    return path


def lora_switch(models: dict[str, Path], lora: Path) -> dict[str, Any]:
    import numpy as np

    folder, guidance = models["flux_dev_dir"], FAMILIES["flux"][1]

    # every pair gets a weight neither engine has run (the warm-up one's 1.2 is above them all)
    weights = iter([1.2] + [0.3 + 0.05 * i for i in range(REPEAT)])
    pair: list[float] = []

    def weight() -> float:
        """The same new weight for both runs of a pair."""
        if not pair:
            pair.extend([next(weights)] * 2)
        return pair.pop()

    def cold() -> Timed:
        fresh = cpu_engine()  # its own model manager: base and LoRA are read from disk
        graph = _graph(folder, guidance, ((lora, weight()),), LORA_SIZE, LORA_STEPS)
        with Timed() as t:
            result = fresh.run(graph)
        assert result.ok, result.errors
        assert fresh.services.get("models").loads == 1
        fresh.shutdown()
        return t

    engine = cpu_engine()
    assert engine.run(_graph(folder, guidance, ((lora, 1.3),), LORA_SIZE, LORA_STEPS)).ok  # loads base and adapter
    images = []

    def switch() -> Timed:
        graph = _graph(folder, guidance, ((lora, weight()),), LORA_SIZE, LORA_STEPS)
        with Timed() as t:
            result = engine.run(graph)
        assert result.ok, result.errors
        assert result.status["load"] == "cached" and result.status["gen"] == "done"
        images.append(np.asarray(result.output("gen")))
        return t

    r = ratios(interleaved(switch, cold, REPEAT))
    models_mgr = engine.services.get("models")
    assert models_mgr.loads == 1
    entry = models_mgr.entries()[0]
    lora_loads = entry.state.get("lora_loads")
    engine.shutdown()
    assert float(np.abs(images[-1] - images[-2]).mean()) > 1e-5  # the weight really reached the model
    return {"flux_lora_switch_ratio": r.pop("ratio"), "aim": "< 0.5", **r, "lora_loads": lora_loads,
            "size": LORA_SIZE, "steps": LORA_STEPS, "runs": REPEAT, "a": "weight switch",
            "b": "cold (fresh engine and model manager)"}


# ---------------------------------------------------------------------------- weight bytes


class _Pipe:
    """What apply_mode touches of a pipeline: the denoiser attribute and `to`."""

    def __init__(self, transformer: Any) -> None:
        self.transformer = transformer

    def to(self, device: str) -> _Pipe:
        self.transformer.to(device)
        return self


def write_gguf_q8(path: Path, state: dict[str, Any]) -> Path:
    """A diffusers-key Q8_0 GGUF as real files are made (2-D weights with a last dim that is a
    multiple of 32 quantized, other 2-D weights F16, 1-D tensors F32), one tensor in fp32 at a time
    (tests/diffusion/test_memory_modes.write_gguf also keeps a dequantized copy: 2 GB here)."""
    import gguf
    import numpy as np

    q8 = gguf.GGMLQuantizationType.Q8_0
    writer = gguf.GGUFWriter(str(path), arch="flux")
    for key, value in state.items():
        a = value.float().numpy()
        if a.ndim >= 2 and a.shape[-1] % 32 == 0:
            writer.add_tensor(key, gguf.quants.quantize(a, q8), raw_dtype=q8)
        elif a.ndim >= 2:
            writer.add_tensor(key, a.astype(np.float16))
        else:
            writer.add_tensor(key, a.astype(np.float32))
        del a
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _split_bytes(module: Any) -> dict[str, int]:
    """Resident bytes by storage: fp8 / GGUF-quantized weights vs everything else."""
    import torch

    low = other = 0
    for p in module.parameters():
        n = p.numel() * p.element_size()
        if p.dtype in (torch.float8_e4m3fn, torch.uint8):  # GGUF blocks are stored as uint8
            low += n
        else:
            other += n
    return {"low_bytes": low, "other_bytes": other}


def weight_bytes(model: Any, workdir: Path, label: str) -> list[dict[str, Any]]:
    """fp8 and Q8_0 GGUF resident bytes / bf16 bytes of `model` (a FluxTransformer2DModel in bf16,
    changed in place: fp8 casting is applied to it after the GGUF file is written)."""
    import torch
    from diffusers import FluxTransformer2DModel

    from app.engine import memory_modes as mm

    prefix = "" if label == "real_blocks" else "tiny_"
    params = sum(p.numel() for p in model.parameters())
    bf16 = mm.resident_weight_bytes(model)
    cfg = workdir / f"{label}_config"
    model.save_config(cfg / "transformer")
    gguf_path = write_gguf_q8(workdir / f"{label}_Q8_0.gguf", model.state_dict())

    plan = mm.plan_memory(label, bf16, 0, "cpu", 10**13, 10**13, forced="fp8")
    text = mm.apply_mode(_Pipe(model), plan, "cpu", "transformer", torch.bfloat16)
    fp8 = mm.resident_weight_bytes(model)
    split = _split_bytes(model)
    predicted = mm.fp8_storage_ratio(model)
    model.to("meta")  # drop the weights before the GGUF model is read
    gc.collect()
    out = [{f"{prefix}fp8_weight_bytes_ratio": round(fp8 / bf16, 3), "aim": "<= 0.55", "denoiser": label,
            "params": params, "bf16_bytes": bf16, "fp8_bytes": fp8, "fp8_cast_bytes": split["low_bytes"],
            "kept_bf16_bytes": split["other_bytes"], "fp8_storage_ratio_predicted": round(predicted, 3),
            "mode_text": text,
            "note": ("memory_modes.FP8_SKIP keeps the timestep/pooled embedders and the last projection "
                     "in bf16 (everything else, the adaLN modulation included, is fp8, as ComfyUI's fp8 Flux "
                     "files): with few blocks those are a larger share than in the full model (0.501)")}]

    t0 = time.perf_counter()
    gmodel = mm.load_gguf_denoiser(gguf_path, FluxTransformer2DModel, cfg, "transformer", torch.bfloat16)
    load_s = time.perf_counter() - t0
    plan = mm.plan_memory(label, mm.gguf_info(gguf_path)["bytes"], 0, "cpu", 10**13, 10**13, gguf=True)
    text = mm.apply_mode(_Pipe(gmodel), plan, "cpu", "transformer", torch.bfloat16)
    q8 = mm.resident_weight_bytes(gmodel)
    split = _split_bytes(gmodel)
    info = mm.gguf_info(gguf_path)
    out.append({f"{prefix}gguf_q8_weight_bytes_ratio": round(q8 / bf16, 3), "aim": "<= 0.55", "denoiser": label,
                "bf16_bytes": bf16, "gguf_bytes": q8, "q8_block_bytes": split["low_bytes"],
                "other_bytes": split["other_bytes"], "file_bytes": gguf_path.stat().st_size,
                "file_types": info["types"], "load_s": round(load_s, 2), "mode_text": text,
                "note": "Q8_0 is 34 bytes a 32 weights (0.531 of bf16); unquantized tensors as loaded"})
    del gmodel
    gguf_path.unlink()
    gc.collect()
    return out


def real_blocks_flux() -> Any:
    """FluxTransformer2DModel with Flux.1's real per-block geometry and one block of each kind, in
    bf16, random normal weights (built on meta, allocated once in bf16: no fp32 copy)."""
    import torch
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        model = FluxTransformer2DModel(**FLUX_REAL_BLOCKS)
    model = model.to(torch.bfloat16).to_empty(device="cpu").eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02, generator=g)
    return model


def full_flux_fp8_prediction() -> dict[str, Any]:
    import torch
    from diffusers import FluxTransformer2DModel

    from app.engine import memory_modes as mm
    from app.engine.model_configs import shipped_config

    cfg = FluxTransformer2DModel.load_config(str(shipped_config("flux-dev")), subfolder="transformer")
    with torch.device("meta"):
        model = FluxTransformer2DModel.from_config(cfg)
    return {"full_flux_dev_fp8_storage_ratio": round(mm.fp8_storage_ratio(model), 3),
            "params": sum(p.numel() for p in model.parameters()),
            "note": "fp8_storage_ratio of the shipped flux-dev config on the meta device (no weights): what "
                    "layerwise casting would keep of the 19+38-block model"}


# ------------------------------------------------------------------------------ first load


def first_load(models: dict[str, Path]) -> dict[str, Any]:
    from app.engine import EngineSettings
    from app.engine.models import ModelManager, Parts

    split = Parts((models["comfy_t5"], models["comfy_clip_l"]), models["comfy_flux_dev_vae"])

    def folder() -> Timed:
        mgr = ModelManager(EngineSettings(device="cpu"))
        with Timed() as t:
            mgr.load(str(models["flux_dev_dir"]))
        return t

    def single() -> Timed:
        mgr = ModelManager(EngineSettings(device="cpu"))
        with Timed() as t:
            mgr.load(str(models["comfy_flux_dev_denoiser"]), models["comfy_flux_dev_config"], parts=split)
        return t

    r = ratios(interleaved(single, folder, REPEAT))
    return {"split_vs_folder_first_load_ratio": r.pop("ratio"), **r, "a": "split layout", "b": "diffusers folder",
            "model": "tiny Flux.1 dev", "note": "fresh ModelManager each load; tiny weights, so this is the "
                                                "per-load overhead of each layout, not disk speed"}


def main() -> None:
    import torch

    from tests.tiny_families import build_all

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("IMAGEBASH_CACHE_DIR", str(Path(tmp) / "cache"))
        models = build_all(Path(tmp) / "models")
        for family in FAMILIES:
            emit(**engine_overhead(family, models))
        lora = write_flux_lora(models["flux_dev_dir"], Path(tmp) / "tiny_flux_lora.safetensors")
        emit(**lora_switch(models, lora))
        emit(**first_load(models))

        from diffusers import FluxTransformer2DModel

        tiny = FluxTransformer2DModel.from_pretrained(str(models["flux_dev_dir"] / "transformer"),
                                                      torch_dtype=torch.bfloat16, local_files_only=True)
        for line in weight_bytes(tiny, Path(tmp), "tiny_flux_dev"):
            emit(**line)
        del tiny
        for line in weight_bytes(real_blocks_flux(), Path(tmp), "real_blocks"):
            emit(**line)
        emit(**full_flux_fp8_prediction())


if __name__ == "__main__":
    main()
