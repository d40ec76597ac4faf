"""The custom-sampling set folds into Sample like KSampler; ImageScaleToTotalPixels, ImagePadForOutpaint,
SaveAnimatedWEBP and SaveWEBM map onto image and video nodes, and export back."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from app.comfy.export import to_api
from app.comfy.mapping import to_graph
from app.comfy.model import ComfyLink, ComfyNode, ComfyWorkflow
from nodes.image.transform import pad_for_outpaint, scale_to_pixels
from nodes.registry import default_registry
from tests.comfy.test_mapping_more import _base

L = ComfyLink
D = "imagebash.diffusion."


def _custom(advanced: bool) -> dict[str, ComfyNode]:
    wf = _base()
    del wf["5"]
    wf["10"] = ComfyNode("10", "KSamplerSelect", {"sampler_name": "euler_ancestral"})
    wf["11"] = ComfyNode("11", "BasicScheduler", {"model": L("1", 0), "scheduler": "karras", "steps": 3,
                                                  "denoise": 1.0})
    if advanced:
        wf["12"] = ComfyNode("12", "RandomNoise", {"noise_seed": 7})
        wf["13"] = ComfyNode("13", "CFGGuider", {"model": L("1", 0), "positive": L("2", 0), "negative": L("3", 0),
                                                 "cfg": 5.0})
        wf["5"] = ComfyNode("5", "SamplerCustomAdvanced", {"noise": L("12", 0), "guider": L("13", 0),
                                                           "sampler": L("10", 0), "sigmas": L("11", 0),
                                                           "latent_image": L("4", 0)})
    else:
        wf["5"] = ComfyNode("5", "SamplerCustom", {"model": L("1", 0), "add_noise": True, "noise_seed": 7, "cfg": 5.0,
                                                   "positive": L("2", 0), "negative": L("3", 0),
                                                   "sampler": L("10", 0), "sigmas": L("11", 0),
                                                   "latent_image": L("4", 0)})
    return wf


@pytest.mark.parametrize("advanced", [False, True])
def test_sampler_custom_folds_into_sample(advanced):
    g, report = to_graph(ComfyWorkflow(nodes=_custom(advanced)), default_registry())
    assert report.placeholder_count == 0
    p = g.nodes["n5"].params
    assert g.nodes["n5"].type == D + "sample"
    assert (p["sampler"], p["schedule"], p["steps"], p["seed"], p["guidance"], p["denoise"], p["noise"]) == \
        ("euler_ancestral", "karras", 3, 7, 5.0, 1.0, "comfyui")
    assert p["prompt"] == "a lighthouse" and p["negative_prompt"] == "blurry"
    folded = {r.class_type: r for r in report.nodes.values() if r.status == "folded"}
    assert {"KSamplerSelect", "BasicScheduler"} <= set(folded) and folded["BasicScheduler"].into == ["n5"]
    api, _ = to_api(g, default_registry())
    ks = api["5"]
    assert ks["class_type"] == "KSampler" and ks["inputs"]["sampler_name"] == "euler_ancestral"
    assert ks["inputs"]["scheduler"] == "karras" and ks["inputs"]["seed"] == 7


def test_disable_noise_and_basic_guider():
    wf = _custom(True)
    wf["12"] = ComfyNode("12", "DisableNoise", {})
    wf["13"] = ComfyNode("13", "BasicGuider", {"model": L("1", 0), "conditioning": L("2", 0)})
    g, report = to_graph(ComfyWorkflow(nodes=wf), default_registry())
    p = g.nodes["n5"].params
    assert report.placeholder_count == 0 and p["add_noise"] is False and p["guidance"] == 1.0
    assert p["negative_prompt"] == ""


def test_scale_to_total_pixels_rounds_as_comfyui():
    img = np.zeros((1, 300, 500, 3), np.float32)
    out = scale_to_pixels(img, megapixels=0.25, interpolation="bilinear")
    s = (0.25 * 1024 * 1024 / (500 * 300)) ** 0.5
    assert out.shape == (1, round(300 * s), round(500 * s), 3)
    wf = {"1": ComfyNode("1", "LoadImage", {"image": "a.png"}),
          "2": ComfyNode("2", "ImageScaleToTotalPixels", {"image": L("1", 0), "upscale_method": "bilinear",
                                                          "megapixels": 0.25}),
          "3": ComfyNode("3", "SaveImage", {"images": L("2", 0), "filename_prefix": "x"})}
    g, report = to_graph(ComfyWorkflow(nodes=wf), default_registry())
    assert report.placeholder_count == 0 and g.nodes["n2"].params == {"megapixels": 0.25, "interpolation": "bilinear"}
    api, _ = to_api(g, default_registry())
    assert api["2"]["class_type"] == "ImageScaleToTotalPixels" and api["2"]["inputs"]["megapixels"] == 0.25


def test_pad_for_outpaint_grey_and_feathered_mask():
    img = np.ones((1, 20, 30, 3), np.float32)
    out = pad_for_outpaint(img, left=4, top=0, right=0, bottom=2, feathering=5)
    assert out.image.shape == (1, 22, 34, 3) and out.mask.shape == (1, 22, 34)
    assert np.all(out.image[0, :, :4] == 0.5) and np.all(out.image[0, 20:] == 0.5)
    assert np.all(out.mask[0, :, :4] == 1) and np.all(out.mask[0, 20:] == 1)
    m = out.mask[0, :20, 4:]
    assert m[10, 0] == 1.0 and m[10, 1] == pytest.approx(((5 - 1) / 5) ** 2) and m[10, 5] == 0.0
    assert m[19, 20] == pytest.approx(((5 - 1) / 5) ** 2) and m[0, 20] == 0.0  # top is not padded
    wf = {"1": ComfyNode("1", "LoadImage", {"image": "a.png"}),
          "2": ComfyNode("2", "ImagePadForOutpaint", {"image": L("1", 0), "left": 4, "top": 0, "right": 0,
                                                      "bottom": 2, "feathering": 5}),
          "3": ComfyNode("3", "SaveImage", {"images": L("2", 0), "filename_prefix": "x"}),
          "4": ComfyNode("4", "InvertMask", {"mask": L("2", 1)})}
    g, report = to_graph(ComfyWorkflow(nodes=wf), default_registry())
    assert report.placeholder_count == 0 and g.nodes["n2"].params["feathering"] == 5
    assert ("n2", "mask", "n4", "mask") in {(x.src, x.src_port, x.dst, x.dst_port) for x in g.links}
    api, _ = to_api(g, default_registry())
    assert api["2"]["class_type"] == "ImagePadForOutpaint" and api["4"]["inputs"]["mask"] == ["2", 1]


@pytest.mark.parametrize(("cls", "inputs", "want"), [
    ("SaveAnimatedWEBP", {"fps": 8.0, "lossless": True, "quality": 90, "method": "default"},
     {"codec": "webp", "fps": 8.0, "lossless": True, "quality": 90, "loop": 0}),
    ("SaveWEBM", {"codec": "av1", "fps": 12.0, "crf": 30.0}, {"codec": "av1", "fps": 12.0, "crf": 30}),
])
def test_animated_saves_map_onto_save_video(cls, inputs, want):
    wf = {"1": ComfyNode("1", "LoadImage", {"image": "a.png"}),
          "2": ComfyNode("2", cls, {"images": L("1", 0), "filename_prefix": "clip", **inputs})}
    g, report = to_graph(ComfyWorkflow(nodes=wf), default_registry())
    node = g.nodes["n2"]
    assert report.placeholder_count == 0 and node.type == "imagebash.video.save"
    assert node.params == {"filename_prefix": "clip", **want}
    assert ("n1", "image", "n2", "video") in {(x.src, x.src_port, x.dst, x.dst_port) for x in g.links}
    api, rep = to_api(g, default_registry())
    assert api["2"]["class_type"] == cls, rep.warnings
    assert {k: api["2"]["inputs"][k] for k in inputs} == {**inputs, **({"crf": 30.0} if cls == "SaveWEBM" else {})}


def test_an_imported_animated_webp_save_runs_and_writes_every_frame(tmp_path, tiny_sd_dir):
    from app.engine import Engine, EngineSettings

    wf = _base()
    wf["4"].inputs["batch_size"] = 3
    wf["7"] = ComfyNode("7", "SaveAnimatedWEBP", {"images": L("6", 0), "filename_prefix": "anim", "fps": 6.0,
                                                 "lossless": False, "quality": 80, "method": "default"})
    g, report = to_graph(ComfyWorkflow(nodes=wf), default_registry())
    assert report.placeholder_count == 0
    for n in g.nodes.values():
        if n.type.endswith("load_model"):
            n.params["checkpoint"] = str(tiny_sd_dir)
    engine = Engine(default_registry(), EngineSettings(device="cpu"))
    try:
        result = engine.run(g, output_dir=tmp_path / "out")
    finally:
        engine.shutdown()
    assert result.ok, result.errors
    (webp,) = (tmp_path / "out").rglob("anim*.webp")
    with PILImage.open(webp) as im:
        assert im.n_frames == 3 and im.info.get("loop") == 0 and im.size == (64, 64)
    from nodes.video import open_video

    assert open_video(webp).fps == pytest.approx(6.0, abs=0.1)


def test_model_sampling_aura_flow_sets_the_shift():
    wf = _base()
    wf["8"] = ComfyNode("8", "ModelSamplingAuraFlow", {"model": L("1", 0), "shift": 1.73})
    wf["5"].inputs.update(model=L("8", 0))
    g, report = to_graph(ComfyWorkflow(nodes=wf), default_registry())
    assert g.nodes["n5"].params["shift"] == pytest.approx(1.73) and report.placeholder_count == 0
