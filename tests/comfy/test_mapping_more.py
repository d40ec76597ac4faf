"""Imported ComfyUI graphs that need the newer latent nodes (step windows, CLIP skip, Latent Upscale,
Latent Composite, split loaders, Flux/SD3 sampling nodes) map onto them, and the common graphs RUN on
the tiny models and write images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from app.comfy.mapping import to_graph
from app.comfy.model import ComfyLink, ComfyNode, ComfyWorkflow
from app.graph.validate import validate
from nodes.registry import default_registry

L = ComfyLink
D = "imagebash.diffusion."


def _base(ckpt: str = "sd15.safetensors", sampler: str = "KSampler", **sample) -> dict[str, ComfyNode]:
    inputs = {"model": L("1", 0), "seed": 7, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
              "positive": L("2", 0), "negative": L("3", 0), "latent_image": L("4", 0), "denoise": 1.0, **sample}
    if sampler == "KSamplerAdvanced":
        inputs["noise_seed"] = inputs.pop("seed")
        del inputs["denoise"]
    return {
        "1": ComfyNode("1", "CheckpointLoaderSimple", {"ckpt_name": ckpt}),
        "2": ComfyNode("2", "CLIPTextEncode", {"text": "a lighthouse", "clip": L("1", 1)}),
        "3": ComfyNode("3", "CLIPTextEncode", {"text": "blurry", "clip": L("1", 1)}),
        "4": ComfyNode("4", "EmptyLatentImage", {"width": 64, "height": 64, "batch_size": 1}),
        "5": ComfyNode("5", sampler, inputs),
        "6": ComfyNode("6", "VAEDecode", {"samples": L("5", 0), "vae": L("1", 2)}),
        "7": ComfyNode("7", "SaveImage", {"images": L("6", 0), "filename_prefix": "out"}),
    }


def _run(g, tmp_path, checkpoint):
    from app.engine import Engine, EngineSettings

    assert validate(g, default_registry()) == []
    for n in g.nodes.values():
        if n.type == D + "load_model":
            n.params["checkpoint"] = str(checkpoint)
    engine = Engine(default_registry(), EngineSettings(device="cpu"))
    try:
        result = engine.run(g, output_dir=tmp_path / "out")
    finally:
        engine.shutdown()
    assert result.ok, result.errors
    pngs = sorted((tmp_path / "out").rglob("*.png"))
    assert pngs
    images = {}
    for p in pngs:
        with PILImage.open(p) as im:
            images[p.name.split("_")[0]] = np.asarray(im.convert("RGB")).astype(int)
    return images


def test_a1111_clip_skip_2_sets_clip_skip_on_every_sampler():
    from app.comfy.formats import read
    from tests.comfy import fixtures

    g, report = to_graph(read(fixtures.a1111_png(), name="a.png"), default_registry())
    samplers = [n for n in g.nodes.values() if n.type == D + "sample"]
    assert len(samplers) == 2 and all(n.params["clip_skip"] == 1 for n in samplers)
    (skip,) = [r for r in report.nodes.values() if r.class_type == "CLIPSetLastLayer"]
    assert skip.status == "folded" and sorted(skip.into) == sorted(n.id for n in samplers)
    up = [n for n in g.nodes.values() if n.type == D + "latent_upscale"]
    assert up and up[0].params == {"factor": 2.0, "method": "nearest-exact"}


def test_clip_skip_runs_and_changes_pixels(tmp_path, tiny_sd_dir):
    wf = _base()
    wf["8"] = ComfyNode("8", "CLIPSetLastLayer", {"clip": L("1", 1), "stop_at_clip_layer": -2})
    wf["9"] = ComfyNode("9", "CLIPTextEncode", {"text": "a lighthouse", "clip": L("8", 0)})
    wf["10"] = ComfyNode("10", "KSampler", {**wf["5"].inputs, "positive": L("9", 0)})
    wf["11"] = ComfyNode("11", "VAEDecode", {"samples": L("10", 0), "vae": L("1", 2)})
    wf["12"] = ComfyNode("12", "SaveImage", {"images": L("11", 0), "filename_prefix": "skip"})
    g, _ = to_graph(ComfyWorkflow(nodes=wf), default_registry())
    assert g.nodes["n10"].params["clip_skip"] == 1 and "clip_skip" not in g.nodes["n5"].params
    images = _run(g, tmp_path, tiny_sd_dir)
    assert np.abs(images["skip"] - images["out"]).mean() > 0.5


def test_img2img_and_lora_run(tmp_path, tiny_sd_dir, tiny_lora_kohya):
    (tmp_path / "input").mkdir()
    PILImage.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(
        tmp_path / "input" / "src.png")
    wf = _base(denoise=0.6)
    wf["8"] = ComfyNode("8", "LoadImage", {"image": "src.png"})
    wf["9"] = ComfyNode("9", "VAEEncode", {"pixels": L("8", 0), "vae": L("1", 2)})
    wf["10"] = ComfyNode("10", "LoraLoader", {"model": L("1", 0), "clip": L("1", 1), "lora_name": str(tiny_lora_kohya),
                                              "strength_model": 1.0, "strength_clip": 1.0})
    wf["5"].inputs.update(latent_image=L("9", 0), model=L("10", 0))
    del wf["4"]
    g, report = to_graph(ComfyWorkflow(nodes=wf), default_registry(), base_dir=tmp_path)
    assert report.placeholder_count == 0
    assert _run(g, tmp_path, tiny_sd_dir)["out"].std() > 0


def test_hires_fix_through_latent_upscale_runs(tmp_path, tiny_sd_dir):
    wf = _base()
    wf["8"] = ComfyNode("8", "LatentUpscaleBy", {"samples": L("5", 0), "upscale_method": "bilinear", "scale_by": 1.5})
    wf["9"] = ComfyNode("9", "KSampler", {**wf["5"].inputs, "latent_image": L("8", 0), "denoise": 0.5})
    wf["6"].inputs["samples"] = L("9", 0)
    g, report = to_graph(ComfyWorkflow(nodes=wf), default_registry())
    assert g.nodes["n8"].type == D + "latent_upscale" and report.placeholder_count == 0
    assert ("n8", "latent", "n9", "latent") in {(x.src, x.src_port, x.dst, x.dst_port) for x in g.links}
    out = _run(g, tmp_path, tiny_sd_dir)["out"]
    assert out.shape == (96, 96, 3) and out.std() > 0


def test_area_composition_runs(tmp_path, tiny_sd_dir):
    wf = _base()
    wf["8"] = ComfyNode("8", "CLIPTextEncode", {"text": "a red sky", "clip": L("1", 1)})
    wf["9"] = ComfyNode("9", "ConditioningSetArea", {"conditioning": L("8", 0), "width": 64, "height": 32, "x": 0,
                                                     "y": 0, "strength": 1.0})
    wf["10"] = ComfyNode("10", "CLIPTextEncode", {"text": "green sea", "clip": L("1", 1)})
    wf["11"] = ComfyNode("11", "ConditioningSetArea", {"conditioning": L("10", 0), "width": 64, "height": 32,
                                                       "x": 0, "y": 32, "strength": 1.0})
    wf["12"] = ComfyNode("12", "ConditioningCombine", {"conditioning_1": L("9", 0), "conditioning_2": L("11", 0)})
    wf["13"] = ComfyNode("13", "ConditioningCombine", {"conditioning_1": L("2", 0), "conditioning_2": L("12", 0)})
    wf["5"].inputs["positive"] = L("13", 0)
    g, report = to_graph(ComfyWorkflow(nodes=wf), default_registry())
    regions = [n for n in g.nodes.values() if n.type == "imagebash.guidance.regional_prompt"]
    assert len(regions) == 2 and report.placeholder_count == 0
    assert _run(g, tmp_path, tiny_sd_dir)["out"].std() > 0


def test_sdxl_base_then_refiner_with_leftover_noise_equals_one_run(tmp_path, tiny_sdxl_dir):
    wf = _base("sdxl_base.safetensors", "KSamplerAdvanced", steps=4, add_noise="enable", start_at_step=0,
               end_at_step=2, return_with_leftover_noise="enable")
    wf["20"] = ComfyNode("20", "CheckpointLoaderSimple", {"ckpt_name": "sdxl_refiner.safetensors"})
    wf["21"] = ComfyNode("21", "CLIPTextEncode", {"text": "a lighthouse", "clip": L("20", 1)})
    wf["22"] = ComfyNode("22", "CLIPTextEncode", {"text": "blurry", "clip": L("20", 1)})
    wf["23"] = ComfyNode("23", "KSamplerAdvanced", {
        **wf["5"].inputs, "model": L("20", 0), "positive": L("21", 0), "negative": L("22", 0),
        "latent_image": L("5", 0), "add_noise": "disable", "noise_seed": 0, "start_at_step": 2, "end_at_step": 10000,
        "return_with_leftover_noise": "disable"})
    wf["6"].inputs.update(samples=L("23", 0), vae=L("20", 2))
    wf["30"] = ComfyNode("30", "KSampler", {**{k: v for k, v in wf["5"].inputs.items() if k not in (
        "noise_seed", "add_noise", "start_at_step", "end_at_step", "return_with_leftover_noise")}, "seed": 7,
        "denoise": 1.0})
    wf["31"] = ComfyNode("31", "VAEDecode", {"samples": L("30", 0), "vae": L("1", 2)})
    wf["32"] = ComfyNode("32", "SaveImage", {"images": L("31", 0), "filename_prefix": "single"})
    g, report = to_graph(ComfyWorkflow(nodes=wf), default_registry())
    base, refiner = g.nodes["n5"].params, g.nodes["n23"].params
    assert (base["end_step"], base["leftover_noise"], base["steps"]) == (2, True, 4) and "start_step" not in base
    assert (refiner["start_step"], refiner["add_noise"]) == (2, False) and "end_step" not in refiner
    assert report.placeholder_count == 0
    images = _run(g, tmp_path, tiny_sdxl_dir)
    assert images["out"].std() > 0
    assert np.abs(images["out"] - images["single"]).max() <= 2  # one schedule across two samplers


@pytest.mark.parametrize(("cls", "extra"), [("LatentUpscale", {"width": 96, "height": 64, "crop": "center"}),
                                            ("LatentUpscaleBy", {"scale_by": 1.25})])
def test_latent_upscale_params(cls, extra):
    wf = _base()
    wf["8"] = ComfyNode("8", cls, {"samples": L("5", 0), "upscale_method": "bislerp", **extra})
    wf["6"].inputs["samples"] = L("8", 0)
    g, report = to_graph(ComfyWorkflow(nodes=wf), default_registry())
    p = g.nodes["n8"].params
    assert p["method"] == "bicubic" and any("bislerp" in t for t in report.nodes["8"].notes)
    assert p == ({"width": 96, "height": 64, "method": "bicubic", "crop": True} if cls == "LatentUpscale"
                 else {"factor": 1.25, "method": "bicubic"})


def test_latent_composite_runs(tmp_path, tiny_sd_dir):
    wf = _base()
    wf["8"] = ComfyNode("8", "EmptyLatentImage", {"width": 64, "height": 64, "batch_size": 1})
    wf["9"] = ComfyNode("9", "KSampler", {**wf["5"].inputs, "latent_image": L("8", 0), "seed": 99})
    wf["10"] = ComfyNode("10", "LatentComposite", {"samples_to": L("5", 0), "samples_from": L("9", 0), "x": 32,
                                                   "y": 0, "feather": 8})
    wf["6"].inputs["samples"] = L("10", 0)
    g, _ = to_graph(ComfyWorkflow(nodes=wf), default_registry())
    assert g.nodes["n10"].type == D + "latent_composite"
    assert g.nodes["n10"].params == {"x": 32, "y": 0, "feather": 8}
    assert _run(g, tmp_path, tiny_sd_dir)["out"].std() > 0


def test_flux_split_loaders_guidance_shift_and_zero_out():
    wf = {
        "1": ComfyNode("1", "UNETLoader", {"unet_name": "flux1-dev.safetensors", "weight_dtype": "fp8_e4m3fn"}),
        "2": ComfyNode("2", "DualCLIPLoader", {"clip_name1": "t5xxl_fp16.safetensors",
                                               "clip_name2": "clip_l.safetensors", "type": "flux"}),
        "3": ComfyNode("3", "VAELoader", {"vae_name": "ae.safetensors"}),
        "4": ComfyNode("4", "CLIPTextEncode", {"text": "a fox", "clip": L("2", 0)}),
        "5": ComfyNode("5", "FluxGuidance", {"conditioning": L("4", 0), "guidance": 3.5}),
        "6": ComfyNode("6", "ConditioningZeroOut", {"conditioning": L("4", 0)}),
        "7": ComfyNode("7", "EmptySD3LatentImage", {"width": 1024, "height": 1024, "batch_size": 1}),
        "8": ComfyNode("8", "ModelSamplingFlux", {"model": L("1", 0), "max_shift": 1.15, "base_shift": 0.5,
                                                  "width": 1024, "height": 1024}),
        "9": ComfyNode("9", "KSampler", {"model": L("8", 0), "seed": 1, "steps": 20, "cfg": 1.0,
                                         "sampler_name": "euler", "scheduler": "simple", "positive": L("5", 0),
                                         "negative": L("6", 0), "latent_image": L("7", 0), "denoise": 1.0}),
        "10": ComfyNode("10", "VAEDecode", {"samples": L("9", 0), "vae": L("3", 0)}),
        "11": ComfyNode("11", "SaveImage", {"images": L("10", 0)}),
    }
    g, report = to_graph(ComfyWorkflow(nodes=wf), default_registry())
    load = g.nodes["n1"].params
    assert load == {"checkpoint": "flux1-dev.safetensors", "memory": "fp8", "text_encoder": "t5xxl_fp16.safetensors",
                    "text_encoder_2": "clip_l.safetensors", "vae": "ae.safetensors"}
    s = g.nodes["n9"].params
    assert s["guidance"] == 3.5 and s["prompt"] == "a fox" and s["negative_prompt"] == ""
    assert s["shift"] == pytest.approx(np.exp(1.15), rel=1e-4)  # 1024x1024: mu = max_shift
    assert g.nodes["n7"].type == D + "empty_latent"
    assert report.placeholder_count == 0 and validate(g, default_registry()) == []
    assert "n1" in report.nodes["2"].into and report.nodes["8"].status == "folded"


def test_sd3_shift_and_conditioning_average_note():
    wf = _base()
    wf["8"] = ComfyNode("8", "ModelSamplingSD3", {"model": L("1", 0), "shift": 3.0})
    wf["9"] = ComfyNode("9", "CLIPTextEncode", {"text": "watercolor", "clip": L("1", 1)})
    wf["10"] = ComfyNode("10", "ConditioningAverage", {"conditioning_to": L("2", 0), "conditioning_from": L("9", 0),
                                                       "conditioning_to_strength": 0.5})
    wf["5"].inputs.update(model=L("8", 0), positive=L("10", 0))
    g, report = to_graph(ComfyWorkflow(nodes=wf), default_registry())
    assert g.nodes["n5"].params["shift"] == 3.0
    assert g.nodes["n5"].params["prompt"] == "a lighthouse, watercolor"
    assert any("average" in t for t in report.nodes["10"].notes)
