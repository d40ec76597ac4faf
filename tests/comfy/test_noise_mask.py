"""Latent noise masks: ComfyUI's VAEEncodeForInpaint and SetLatentNoiseMask map onto Encode for Inpaint and
Set Latent Noise Mask, and Sample denoises only inside the mask (the rest stays the input latent)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image as PILImage

from app.comfy.export import to_api
from app.comfy.mapping import to_graph
from app.comfy.model import ComfyLink, ComfyNode, ComfyWorkflow
from nodes.registry import default_registry

L = ComfyLink
D = "imagebash.diffusion."


def _source(tmp_path):
    rng = np.random.default_rng(1)
    rgb = (rng.random((8, 8, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)  # smooth blocks
    alpha = np.full((64, 64), 255, np.uint8)
    alpha[24:40, 24:40] = 0  # ComfyUI's mask is 1 - alpha: repaint the centre
    (tmp_path / "input").mkdir(exist_ok=True)
    PILImage.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "input" / "src.png")
    return rgb.astype(int)


def _inpaint_graph(sampler: str = "euler") -> dict[str, ComfyNode]:
    return {
        "1": ComfyNode("1", "CheckpointLoaderSimple", {"ckpt_name": "sd15.safetensors"}),
        "2": ComfyNode("2", "CLIPTextEncode", {"text": "a red flower", "clip": L("1", 1)}),
        "3": ComfyNode("3", "CLIPTextEncode", {"text": "", "clip": L("1", 1)}),
        "4": ComfyNode("4", "LoadImage", {"image": "src.png"}),
        "5": ComfyNode("5", "VAEEncodeForInpaint", {"pixels": L("4", 0), "vae": L("1", 2), "mask": L("4", 1),
                                                    "grow_mask_by": 6}),
        "6": ComfyNode("6", "KSampler", {"model": L("1", 0), "seed": 5, "steps": 3, "cfg": 5.0,
                                         "sampler_name": sampler, "scheduler": "normal", "positive": L("2", 0),
                                         "negative": L("3", 0), "latent_image": L("5", 0), "denoise": 1.0}),
        "7": ComfyNode("7", "VAEDecode", {"samples": L("6", 0), "vae": L("1", 2)}),
        "8": ComfyNode("8", "SaveImage", {"images": L("7", 0), "filename_prefix": "inpaint"}),
        # a plain VAE round trip of the input
        "9": ComfyNode("9", "VAEEncode", {"pixels": L("4", 0), "vae": L("1", 2)}),
        "10": ComfyNode("10", "VAEDecode", {"samples": L("9", 0), "vae": L("1", 2)}),
        "11": ComfyNode("11", "SaveImage", {"images": L("10", 0), "filename_prefix": "roundtrip"}),
    }


def test_inpaint_graph_maps_and_exports():
    g, report = to_graph(ComfyWorkflow(nodes=_inpaint_graph()), default_registry())
    assert report.placeholder_count == 0
    assert g.nodes["n5"].type == D + "encode_for_inpaint" and g.nodes["n5"].params["grow_mask_by"] == 6
    links = {(x.src, x.src_port, x.dst, x.dst_port) for x in g.links}
    assert ("n5", "latent", "n6", "latent") in links and ("n4_mask", "mask", "n5", "mask") in links
    api, _ = to_api(g, default_registry())
    enc = api["5"]
    assert enc["class_type"] == "VAEEncodeForInpaint" and enc["inputs"]["grow_mask_by"] == 6
    assert api[enc["inputs"]["mask"][0]]["class_type"] == "LoadImage"  # the 1 - alpha mask, no InvertMask
    g2, _ = to_graph(ComfyWorkflow(nodes={k: ComfyNode(k, v["class_type"], {
        n: (L(*x) if isinstance(x, list) else x) for n, x in v["inputs"].items()}) for k, v in api.items()}),
        default_registry())
    assert g2.nodes["n5"].type == D + "encode_for_inpaint"


def test_set_latent_noise_mask_maps_and_exports():
    wf = _inpaint_graph()
    wf["5"] = ComfyNode("5", "SetLatentNoiseMask", {"samples": L("9", 0), "mask": L("4", 1)})
    g, report = to_graph(ComfyWorkflow(nodes=wf), default_registry())
    assert report.placeholder_count == 0 and g.nodes["n5"].type == D + "set_noise_mask"
    api, _ = to_api(g, default_registry())
    assert api["5"]["class_type"] == "SetLatentNoiseMask" and api["5"]["inputs"]["samples"] == ["9", 0]


def _run_with(g, tmp_path, checkpoint, targets):
    from app.engine import Engine, EngineSettings

    for n in g.nodes.values():
        if n.type == D + "load_model":
            n.params["checkpoint"] = str(checkpoint)
    engine = Engine(default_registry(), EngineSettings(device="cpu"))
    try:
        result = engine.run(g, targets=targets, output_dir=tmp_path / "out")
    finally:
        engine.shutdown()
    assert result.ok, result.errors
    return result


def test_imported_inpaint_graph_keeps_the_outside(tmp_path, tiny_sd_dir):
    rgb = _source(tmp_path)
    g, report = to_graph(ComfyWorkflow(nodes=_inpaint_graph()), default_registry(), base_dir=tmp_path)
    assert report.placeholder_count == 0
    result = _run_with(g, tmp_path, tiny_sd_dir, ["n5", "n6", "n7", "n10"])
    enc, out = result.output("n5", "latent"), result.output("n6", "latent")
    mask = enc.noise_mask  # the 16 px hole grown by 6 (rounded), at pixel size
    assert mask.shape == (1, 1, 64, 64) and int(mask.sum()) == 21 * 21
    assert out.noise_mask is mask  # the sampled latent keeps its mask, as ComfyUI's latent dict does
    cells = torch.nn.functional.interpolate(mask, size=(8, 8), mode="bilinear")[0, 0] > 0
    z0, z1 = enc.samples[0], out.samples[0]
    assert torch.equal(z1[:, ~cells], z0[:, ~cells])  # outside the mask: the input latent, exactly
    assert (z1[:, cells] - z0[:, cells]).abs().mean() > 0.1  # inside: denoised
    pixels, rt = (np.asarray(result.output(k, "image"))[0] * 255 for k in ("n7", "n10"))
    assert pixels.shape == rt.shape == rgb.shape
    outside = np.ones((64, 64), bool)
    outside[16:48, 16:48] = False
    diff = np.abs(pixels - rt).mean(-1)
    # the tiny random VAE's decoder attends globally, so the outside moves a little with the inside
    assert diff[24:40, 24:40].mean() > 2 * diff[outside].mean()


def test_noise_mask_blend_follows_comfyui():
    """After a step the kept region is the input latent at the next sigma; at sigma 0 the input itself."""
    import diffusers

    from nodes.diffusion.comfy_noise import prepare_mask, renoised

    sch = diffusers.EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    sch.set_timesteps(3)
    clean, noise = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    x = clean + noise * sch.sigmas[0]
    sch.step(torch.zeros_like(x), sch.timesteps[0], x)
    torch.testing.assert_close(renoised(sch, clean, noise, sch.timesteps[0]), clean + noise * sch.sigmas[1])
    for t in sch.timesteps[1:]:
        sch.step(torch.zeros_like(x), t, x)
    assert torch.equal(renoised(sch, clean, noise, sch.timesteps[-1]), clean)
    m = prepare_mask(torch.ones(1, 1, 64, 64), (2, 4, 8, 8))
    assert m.shape == (2, 4, 8, 8) and float(m.min()) == 1.0
