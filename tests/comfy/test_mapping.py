"""ComfyUI workflows map onto imagebash graphs by meaning: what a user sees (nodes, params, links) and
that the imported graph validates and runs, with unknown nodes kept as placeholders that fail alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image as PILImage

from app.comfy.mapping import map_scheduler, to_graph
from app.comfy.model import MODE_BYPASS, MODE_MUTED, ComfyGroup, ComfyLink, ComfyNode, ComfyNote, ComfyWorkflow
from app.graph.model import NodeMode
from app.graph.validate import validate
from nodes.registry import default_registry

L = ComfyLink


def txt2img(extra: bool = True) -> ComfyWorkflow:
    """SD 1.5 txt2img as ComfyUI's default graph, plus a LoRA and a custom node on the image."""
    n = {
        "4": ComfyNode("4", "CheckpointLoaderSimple", {"ckpt_name": "v1-5-pruned-emaonly.safetensors"},
                       pos=(26, 474), title="Load Checkpoint"),
        "10": ComfyNode("10", "LoraLoader", {"model": L("4", 0), "clip": L("4", 1), "lora_name": "style.safetensors",
                                             "strength_model": 0.8, "strength_clip": 1.0}, pos=(300, 300)),
        "6": ComfyNode("6", "CLIPTextEncode", {"text": "a red fox in the snow", "clip": L("10", 1)}),
        "7": ComfyNode("7", "CLIPTextEncode", {"text": "blurry", "clip": L("10", 1)}),
        "5": ComfyNode("5", "EmptyLatentImage", {"width": 512, "height": 512, "batch_size": 1}),
        "3": ComfyNode("3", "KSampler", {"model": L("10", 0), "seed": 42, "steps": 20, "cfg": 7.5,
                                         "sampler_name": "dpmpp_2m", "scheduler": "karras", "positive": L("6", 0),
                                         "negative": L("7", 0), "latent_image": L("5", 0), "denoise": 1.0},
                       pos=(863, 186), title="My sampler"),
        "8": ComfyNode("8", "VAEDecode", {"samples": L("3", 0), "vae": L("4", 2)}),
        "9": ComfyNode("9", "SaveImage", {"images": L("8", 0), "filename_prefix": "fox"}),
    }
    if extra:
        n["11"] = ComfyNode("11", "FaceRestoreX", {"image": L("8", 0), "fidelity": 0.5}, pack="comfyui-facefix",
                            outputs=[("IMAGE", "IMAGE")])
        n["12"] = ComfyNode("12", "SaveImage", {"images": L("11", 0), "filename_prefix": "restored"})
    return ComfyWorkflow(nodes=n, source="api")


def links(g) -> set[tuple[str, str, str, str]]:
    return {(ln.src, ln.src_port, ln.dst, ln.dst_port) for ln in g.links}


def test_txt2img_folds_into_imagebash_nodes():
    g, report = to_graph(txt2img(), default_registry())
    types = {nid: n.type for nid, n in g.nodes.items()}
    assert types == {"n4": "imagebash.diffusion.load_model", "n10": "imagebash.diffusion.lora",
                     "n5": "imagebash.diffusion.empty_latent", "n3": "imagebash.diffusion.sample",
                     "n8": "imagebash.diffusion.decode", "n9": "imagebash.image.save",
                     "n11": "imagebash.comfy.unmapped", "n12": "imagebash.image.save"}
    s = g.nodes["n3"].params
    assert s == {"steps": 20, "guidance": 7.5, "scheduler": "dpmpp_2m_karras", "denoise": 1.0, "seed": 42,
                 "prompt": "a red fox in the snow", "negative_prompt": "blurry",
                 "sampler": "dpmpp_2m", "schedule": "karras", "noise": "comfyui"}  # ComfyUI's sampling, exactly
    assert g.nodes["n3"].title == "My sampler" and g.nodes["n3"].position == (863, 186)
    assert g.nodes["n10"].params == {"file": "style.safetensors", "weight": 0.8}
    assert g.nodes["n9"].params == {"filename_prefix": "fox"}
    assert links(g) == {("n4", "model", "n10", "model"), ("n10", "model", "n3", "model"),
                        ("n5", "latent", "n3", "latent"), ("n4", "model", "n5", "model"),
                        ("n3", "latent", "n8", "latent"), ("n4", "model", "n8", "model"),
                        ("n8", "image", "n9", "image"), ("n8", "image", "n11", "image"),
                        ("n11", "image_1", "n12", "image")}
    ph = g.nodes["n11"].params
    assert ph["class_type"] == "FaceRestoreX" and ph["pack"] == "comfyui-facefix"
    assert json.loads(ph["inputs"]) == {"image": {"link": ["8", 0]}, "fidelity": 0.5}
    assert json.loads(ph["outputs"]) == [["IMAGE", "IMAGE"]]
    assert validate(g, default_registry()) == []
    assert report.summary() == "10 nodes: 9 mapped, 1 placeholder (FaceRestoreX from comfyui-facefix)"
    assert report.nodes["6"].status == "folded" and report.nodes["6"].into == ["n3"]
    assert any("strength_clip 1.0 differs" in t for t in report.nodes["10"].notes)


def test_txt2img_runs_and_the_unknown_branch_fails_alone(tmp_path, tiny_sd_dir, tiny_lora_kohya):
    from app.engine import Engine, EngineSettings

    g, _ = to_graph(txt2img(), default_registry())
    g.nodes["n4"].params["checkpoint"] = str(tiny_sd_dir)
    g.nodes["n10"].params["file"] = str(tiny_lora_kohya)
    g.nodes["n5"].params.update(width=64, height=64)
    g.nodes["n3"].params["steps"] = 2
    result = Engine(default_registry(), EngineSettings(device="cpu")).run(g, output_dir=tmp_path)
    assert result.status["n9"] == "done"
    (png,) = tmp_path.rglob("fox*.png")
    with PILImage.open(png) as im:
        assert im.size == (64, 64) and np.asarray(im).std() > 0
    assert result.errors["n11"] == "no imagebash equivalent for ComfyUI node FaceRestoreX " \
                                   "(from custom node pack comfyui-facefix)"
    assert result.status["n12"] != "done" and set(result.errors) <= {"n11", "n12"}


def test_img2img_load_encode_sample(tmp_path):
    (tmp_path / "input").mkdir()
    PILImage.new("RGBA", (8, 8)).save(tmp_path / "input" / "cat.png")
    wf = ComfyWorkflow(nodes={
        "1": ComfyNode("1", "CheckpointLoaderSimple", {"ckpt_name": "sd15.safetensors"}),
        "2": ComfyNode("2", "LoadImage", {"image": "cat.png", "upload": "image"}),
        "3": ComfyNode("3", "VAEEncode", {"pixels": L("2", 0), "vae": L("1", 2)}),
        "4": ComfyNode("4", "CLIPTextEncode", {"text": "oil painting", "clip": L("1", 1)}),
        "5": ComfyNode("5", "CLIPTextEncode", {"text": "", "clip": L("1", 1)}),
        "6": ComfyNode("6", "KSampler", {"model": L("1", 0), "seed": 1, "steps": 30, "cfg": 6, "sampler_name": "euler",
                                         "scheduler": "normal", "positive": L("4", 0), "negative": L("5", 0),
                                         "latent_image": L("3", 0), "denoise": 0.6}),
        "7": ComfyNode("7", "VAEDecode", {"samples": L("6", 0), "vae": L("1", 2)}),
        "8": ComfyNode("8", "SaveImage", {"images": L("7", 0), "filename_prefix": "ComfyUI"}),
        "9": ComfyNode("9", "SaveImage", {"images": L("10", 0)}),
        "10": ComfyNode("10", "ImageInvert", {"image": L("2", 0)}),
    })
    g, report = to_graph(wf, default_registry(), base_dir=tmp_path)
    assert g.nodes["n2"].type == "imagebash.image.load"
    assert g.nodes["n2"].params["path"] == str((tmp_path / "input" / "cat.png").resolve())
    assert g.nodes["n3"].type == "imagebash.diffusion.encode"
    assert g.nodes["n6"].params["denoise"] == 0.6 and g.nodes["n6"].params["scheduler"] == "euler"
    assert ("n3", "latent", "n6", "latent") in links(g) and ("n2", "image", "n3", "image") in links(g)
    assert g.nodes["n10"].type == "imagebash.image.invert"
    assert "n2_mask" not in g.nodes  # the mask output is unused: no conversion node
    assert validate(g, default_registry()) == [] and report.placeholder_count == 0


def test_hires_fix_latent_upscale_and_vae_loader():
    wf = txt2img(extra=False)
    wf.nodes["20"] = ComfyNode("20", "LatentUpscaleBy", {"samples": L("3", 0), "upscale_method": "nearest-exact",
                                                         "scale_by": 1.5})
    wf.nodes["21"] = ComfyNode("21", "KSampler", {"model": L("10", 0), "seed": 42, "steps": 12, "cfg": 7.5,
                                                  "sampler_name": "euler_ancestral", "scheduler": "normal",
                                                  "positive": L("6", 0), "negative": L("7", 0),
                                                  "latent_image": L("20", 0), "denoise": 0.5})
    wf.nodes["22"] = ComfyNode("22", "VAELoader", {"vae_name": "vae-ft-mse.safetensors"})
    wf.nodes["8"].inputs.update(samples=L("21", 0), vae=L("22", 0))
    g, report = to_graph(wf, default_registry())
    assert g.nodes["n20"].type == "imagebash.diffusion.latent_upscale"
    assert g.nodes["n20"].params == {"factor": 1.5, "method": "nearest-exact"}
    assert {("n3", "latent", "n20", "latent"), ("n20", "latent", "n21", "latent"),
            ("n21", "latent", "n8", "latent")} <= links(g)
    assert g.nodes["n21"].params["prompt"] == "a red fox in the snow" and g.nodes["n21"].params["denoise"] == 0.5
    assert g.nodes["n21"].params["scheduler"] == "euler_a"
    assert g.nodes["n4"].params["vae"] == "vae-ft-mse.safetensors"
    assert report.nodes["22"].status == "folded" and report.nodes["22"].into == ["n4"]
    assert validate(g, default_registry()) == []


def test_controlnet_regions_canny_blend_scale():
    wf = txt2img(extra=False)
    wf.nodes.update({
        "30": ComfyNode("30", "LoadImage", {"image": "pose.png"}),
        "31": ComfyNode("31", "Canny", {"image": L("30", 0), "low_threshold": 0.2, "high_threshold": 0.6}),
        "32": ComfyNode("32", "ControlNetLoader", {"control_net_name": "canny.safetensors"}),
        "33": ComfyNode("33", "ControlNetApplyAdvanced", {"positive": L("35", 0), "negative": L("7", 0),
                                                          "control_net": L("32", 0), "image": L("31", 0),
                                                          "strength": 0.7, "start_percent": 0.1, "end_percent": 0.9}),
        "34": ComfyNode("34", "CLIPTextEncode", {"text": "a hat", "clip": L("4", 1)}),
        "36": ComfyNode("36", "ConditioningSetMask", {"conditioning": L("34", 0), "mask": L("30", 1),
                                                      "strength": 1.2, "set_cond_area": "default"}),
        "35": ComfyNode("35", "ConditioningCombine", {"conditioning_1": L("6", 0), "conditioning_2": L("36", 0)}),
        "37": ComfyNode("37", "ImageScale", {"image": L("8", 0), "upscale_method": "bicubic", "width": 768,
                                             "height": 768, "crop": "center"}),
        "38": ComfyNode("38", "ImageBlend", {"image1": L("37", 0), "image2": L("37", 0), "blend_factor": 0.3,
                                             "blend_mode": "soft_light"}),
    })
    wf.nodes["3"].inputs.update(positive=L("33", 0), negative=L("33", 1), sampler_name="lms")
    wf.nodes["9"].inputs["images"] = L("38", 0)
    g, report = to_graph(wf, default_registry())
    assert g.nodes["n31"].params == {"low_threshold": 51, "high_threshold": 153}
    assert g.nodes["n33"].type == "imagebash.guidance.controlnet"
    assert g.nodes["n33"].params == {"controlnet": "canny.safetensors", "strength": 0.7, "start": 0.1, "end": 0.9}
    assert g.nodes["n36"].type == "imagebash.guidance.regional_prompt"
    assert g.nodes["n36"].params == {"prompt": "a hat", "strength": 1.2}
    assert g.nodes["n30_mask"].type == "imagebash.image.mask_invert"  # ComfyUI's mask is 1 - alpha
    assert {("n10", "model", "n36", "model"), ("n30_mask", "mask", "n36", "mask"), ("n36", "model", "n33", "model"),
            ("n31", "image", "n33", "image"), ("n33", "model", "n3", "model")} <= links(g)
    assert g.nodes["n3"].params["prompt"] == "a red fox in the snow"
    assert g.nodes["n3"].params["scheduler"] == "dpmpp_2m_karras"
    assert (g.nodes["n3"].params["sampler"], g.nodes["n3"].params["schedule"]) == ("lms", "karras")  # exact
    assert g.nodes["n37"].params == {"width": 768, "height": 768, "mode": "fill", "interpolation": "bicubic"}
    assert g.nodes["n38"].params == {"opacity": 0.3, "mode": "soft light"}
    assert report.placeholder_count == 0 and validate(g, default_registry()) == []


def test_modes_titles_groups_notes_and_colours_survive():
    wf = txt2img()
    wf.nodes["10"].mode = MODE_BYPASS
    wf.nodes["12"].mode = MODE_MUTED
    wf.nodes["3"].color, wf.nodes["3"].size = "#223", (315.0, 262.0)
    wf.groups.append(ComfyGroup("Sampling", (800, 100, 400, 400), "#3f789e"))
    wf.notes.append(ComfyNote("remember to upscale", pos=(10, 10), size=(200, 80)))
    wf.nodes["40"] = ComfyNode("40", "MarkdownNote", {"text": "# hi"}, pos=(5, 5))
    g, _ = to_graph(wf, default_registry())
    assert g.nodes["n10"].mode is NodeMode.BYPASSED and g.nodes["n12"].mode is NodeMode.MUTED
    assert g.nodes["n4"].title == "Load Checkpoint"
    (group,) = g.groups.values()
    assert (group.title, group.rect, group.color) == ("Sampling", (800, 100, 400, 400), "#3f789e")
    assert {n.text for n in g.notes.values()} == {"remember to upscale", "# hi"}
    assert g.meta["comfy"]["canvas"]["n3"] == {"color": "#223", "size": [315.0, 262.0]}


def test_unknown_nodes_keep_links_both_ways():
    wf = txt2img(extra=False)
    wf.nodes["50"] = ComfyNode("50", "IPAdapterMagic", {"model": L("10", 0), "positive": L("6", 0),
                                                        "weight": 0.5}, pack="ipadapter-plus")
    wf.nodes["3"].inputs.update(model=L("50", 0), positive=L("50", 1))
    g, report = to_graph(wf, default_registry())
    ph = g.nodes["n50"]
    assert json.loads(ph.params["outputs"]) == [["model", "MODEL"], ["positive", "CONDITIONING"]]
    ins = json.loads(ph.params["inputs"])
    assert ins["positive"]["folded"]["prompt"] == "a red fox in the snow" and ins["weight"] == 0.5
    assert {("n10", "model", "n50", "model"), ("n50", "model_1", "n3", "model"),
            ("n50", "text_1", "n3", "prompt")} <= links(g)
    assert validate(g, default_registry()) == []
    assert report.summary() == "9 nodes: 8 mapped, 1 placeholder (IPAdapterMagic from ipadapter-plus)"


@pytest.mark.parametrize(("sampler", "scheduler", "ours", "exact"), [
    ("euler", "normal", "euler", True), ("euler_ancestral", "normal", "euler_a", True),
    ("dpmpp_2m", "normal", "dpmpp_2m", True), ("dpmpp_2m", "karras", "dpmpp_2m_karras", True),
    ("ddim", "normal", "ddim", True), ("uni_pc", "normal", "unipc", True),
    ("dpmpp_sde", "karras", "dpmpp_2m_karras", False), ("dpm_2_ancestral", "normal", "euler_a", False),
    ("lcm", "sgm_uniform", "euler", False)])
def test_scheduler_table(sampler, scheduler, ours, exact):
    got, note = map_scheduler(sampler, scheduler)
    assert got == ours and (note is None) == exact


def test_ui_file_from_the_reader_maps_with_modes_and_notes():
    from app.comfy.formats import read_json
    from tests.comfy import fixtures

    g, report = to_graph(read_json(fixtures.sd15_ui()), default_registry())
    samplers = [n for n in g.nodes.values() if n.type == "imagebash.diffusion.sample"]
    assert samplers and all(n.params["prompt"] == fixtures.POSITIVE for n in samplers)
    assert {n.params["seed"] for n in samplers} == {42}
    assert any(n.mode is NodeMode.BYPASSED for n in samplers)
    assert any(n.mode is NodeMode.MUTED for n in g.nodes.values())
    assert g.groups and g.notes and report.placeholder_count == 0
    assert validate(g, default_registry()) == []
