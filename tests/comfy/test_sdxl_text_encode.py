"""CLIPTextEncodeSDXL and CLIPTextEncodeSDXLRefiner: text_l goes to CLIP-L (Sample's prompt), text_g to
OpenCLIP-G (prompt_2), the size conditioning to Sample's original / crop / target sizes, the refiner's
ascore to its aesthetic score; they export back, and an imported graph runs on the tiny SDXL."""

from __future__ import annotations

import functools

import numpy as np

from app.comfy.export import to_api
from app.comfy.mapping import to_graph
from app.comfy.model import ComfyLink, ComfyNode, ComfyWorkflow
from nodes.registry import default_registry

L = ComfyLink
D = "imagebash.diffusion."


def _graph(text_g: str, text_l: str, **size) -> dict[str, ComfyNode]:
    enc = {"width": 64, "height": 64, "crop_w": 0, "crop_h": 0, "target_width": 64, "target_height": 64, **size}
    return {
        "1": ComfyNode("1", "CheckpointLoaderSimple", {"ckpt_name": "sdxl.safetensors"}),
        "2": ComfyNode("2", "CLIPTextEncodeSDXL", {**enc, "text_g": text_g, "text_l": text_l, "clip": L("1", 1)}),
        "3": ComfyNode("3", "CLIPTextEncodeSDXL", {**enc, "text_g": "", "text_l": "", "clip": L("1", 1)}),
        "4": ComfyNode("4", "EmptyLatentImage", {"width": 64, "height": 64, "batch_size": 1}),
        "5": ComfyNode("5", "KSampler", {"model": L("1", 0), "seed": 3, "steps": 2, "cfg": 5.0,
                                         "sampler_name": "euler", "scheduler": "normal", "positive": L("2", 0),
                                         "negative": L("3", 0), "latent_image": L("4", 0), "denoise": 1.0}),
        "6": ComfyNode("6", "VAEDecode", {"samples": L("5", 0), "vae": L("1", 2)}),
        "7": ComfyNode("7", "SaveImage", {"images": L("6", 0), "filename_prefix": "sdxl"}),
    }


def test_sdxl_text_encode_maps_texts_and_sizes():
    g, report = to_graph(ComfyWorkflow(nodes=_graph("a red house", "a blue car", width=1024, height=768, crop_w=16,
                                                    crop_h=8, target_width=2048, target_height=1536)),
                         default_registry())
    assert report.placeholder_count == 0
    p = g.nodes["n5"].params
    assert (p["prompt"], p["prompt_2"]) == ("a blue car", "a red house")  # diffusers: prompt -> CLIP-L
    assert "negative_prompt_2" not in p  # the same (empty) text in both encoders
    assert (p["original_width"], p["original_height"], p["crop_left"], p["crop_top"], p["target_width"],
            p["target_height"]) == (1024, 768, 16, 8, 2048, 1536)
    assert report.nodes["2"].status == "folded" and report.nodes["2"].into == ["n5"]
    api, rep = to_api(g, default_registry())
    pos = api[api["5"]["inputs"]["positive"][0]]
    assert pos["class_type"] == "CLIPTextEncodeSDXL", rep.warnings
    assert {k: pos["inputs"][k] for k in ("text_g", "text_l", "width", "height", "crop_w", "crop_h",
                                          "target_width", "target_height")} == {
        "text_g": "a red house", "text_l": "a blue car", "width": 1024, "height": 768, "crop_w": 16, "crop_h": 8,
        "target_width": 2048, "target_height": 1536}
    g2, _ = to_graph(ComfyWorkflow(nodes={k: ComfyNode(k, v["class_type"], {
        n: (L(*x) if isinstance(x, list) else x) for n, x in v["inputs"].items()}) for k, v in api.items()}),
        default_registry())
    assert {k: g2.nodes["n5"].params.get(k) for k in p} == p


def test_refiner_text_encode_maps_the_aesthetic_scores():
    wf = _graph("", "")
    wf["2"] = ComfyNode("2", "CLIPTextEncodeSDXLRefiner", {"ascore": 6.5, "width": 1024, "height": 1024,
                                                           "text": "a lighthouse", "clip": L("1", 1)})
    wf["3"] = ComfyNode("3", "CLIPTextEncodeSDXLRefiner", {"ascore": 2.0, "width": 1024, "height": 1024,
                                                           "text": "blurry", "clip": L("1", 1)})
    g, report = to_graph(ComfyWorkflow(nodes=wf), default_registry())
    p = g.nodes["n5"].params
    assert report.placeholder_count == 0
    assert (p["prompt"], p["negative_prompt"], p["aesthetic_score"], p["negative_aesthetic_score"]) == \
        ("a lighthouse", "blurry", 6.5, 2.0)
    assert (p["original_width"], p["original_height"]) == (1024, 1024) and "prompt_2" not in p
    api, _ = to_api(g, default_registry())
    pos, neg = (api[api["5"]["inputs"][k][0]] for k in ("positive", "negative"))
    assert pos["class_type"] == neg["class_type"] == "CLIPTextEncodeSDXLRefiner"
    assert (pos["inputs"]["ascore"], neg["inputs"]["ascore"], pos["inputs"]["text"]) == (6.5, 2.0, "a lighthouse")


def _run(tmp_path, checkpoint, wf):
    from app.engine import Engine, EngineSettings

    g, report = to_graph(ComfyWorkflow(nodes=wf), default_registry())
    assert report.placeholder_count == 0
    for n in g.nodes.values():
        if n.type == D + "load_model":
            n.params["checkpoint"] = str(checkpoint)
    engine = Engine(default_registry(), EngineSettings(device="cpu"))
    try:
        result = engine.run(g, targets=["n6"], output_dir=tmp_path / "out")
    finally:
        engine.shutdown()
    assert result.ok, result.errors
    return np.asarray(result.output("n6", "image"))


def test_imported_sdxl_text_encode_runs_on_the_tiny_sdxl(tmp_path, tiny_sdxl_dir, monkeypatch):
    import diffusers

    seen = []
    real = diffusers.StableDiffusionXLPipeline.__call__

    @functools.wraps(real)  # keeps the signature the node reads to choose its arguments
    def spy(self, *args, **kwargs):
        seen.append({k: kwargs.get(k) for k in ("prompt", "prompt_2", "original_size", "crops_coords_top_left",
                                                 "target_size")})
        return real(self, *args, **kwargs)

    monkeypatch.setattr(diffusers.StableDiffusionXLPipeline, "__call__", spy)
    same = _run(tmp_path, tiny_sdxl_dir, _graph("a red house", "a red house"))
    split = _run(tmp_path, tiny_sdxl_dir, _graph("a red house", "a blue car"))
    sized = _run(tmp_path, tiny_sdxl_dir, _graph("a red house", "a red house", width=1024, height=512, crop_h=32))
    assert same.shape == split.shape == (1, 64, 64, 3)
    assert np.abs(split - same).mean() > 1e-3  # the second encoder's own text changes the image
    assert np.abs(sized - same).mean() > 1e-4  # and so does the size conditioning
    assert seen[0]["prompt_2"] is None and seen[1] == {"prompt": "a blue car", "prompt_2": "a red house",
                                                       "original_size": (64, 64), "crops_coords_top_left": None,
                                                       "target_size": (64, 64)}
    assert seen[2]["original_size"] == (512, 1024) and seen[2]["crops_coords_top_left"] == (32, 0)


def test_sdxl_text_encode_on_sd15_runs_with_its_one_encoder(tmp_path, tiny_sd_dir):
    """An SD 1.5 model has no second encoder or size conditioning: they are left out (one warning line)."""
    from nodes.diffusion.generate import _conditioning_taken

    out = _run(tmp_path, tiny_sd_dir, _graph("a red house", "a blue car", width=1024))
    assert out.shape == (1, 64, 64, 3)
    logs: list[str] = []

    class Ctx:
        def log(self, message: str, level: str = "info") -> None:
            logs.append(message)

    import diffusers

    _conditioning_taken(Ctx(), diffusers.StableDiffusionPipeline.__new__(diffusers.StableDiffusionPipeline), "SD 1.5",
                        {"prompt_2": "x", "original_size": (64, 64), "prompt": "y"})
    assert logs == ["prompt_2, original_size ignored: SD 1.5 (StableDiffusionPipeline) has no second text "
                    "encoder or size conditioning"]
