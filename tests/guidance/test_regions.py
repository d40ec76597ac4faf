"""Regional prompts on the tiny SD 1.5, SDXL, Flux.1, SD 3.5 and Qwen-Image models: a region's
prompt changes its region more than the rest (measured on difference maps), the main prompt still
rules outside, the denoiser is itself again afterwards, and a rectangle can stand for the mask."""

from __future__ import annotations

import numpy as np
import pytest

from tests.diffusion.conftest import direct_ctx, make_graph

BASE = {"prompt": "a red house", "width": 64, "height": 64, "steps": 3, "seed": 4, "scheduler": "euler"}
#: the transformer families: flow matching, two steps; 128 px, as the tiny VAEs' attention spreads a
#: 64-px (8x8 latent) image's changes over all of it
DIT = {"steps": 2, "scheduler": "auto", "width": 128, "height": 128}


def load(engine, model_dir):
    return engine.run(make_graph({"load": ("load_model", {"checkpoint": str(model_dir)})}, [])).output("load")


def render(engine, model_dir, regions=(), **params):
    """Text to Image with `regions`: (mask or None, prompt, strength[, (x, y, w, h)]) each."""
    from nodes.diffusion import generate
    from nodes.guidance.regions import regional_prompt

    model = load(engine, model_dir)
    ctx = direct_ctx(engine)
    for mask, prompt, strength, *rect in regions:
        x, y, w, h = rect[0] if rect else (0, 0, 0, 0)
        model = regional_prompt(model, mask, prompt, strength, x, y, w, h, ctx=ctx)
    return generate.txt2img(model, ctx=ctx, **{**BASE, **params})


def left_half() -> np.ndarray:
    m = np.zeros((1, 64, 64), np.float32)
    m[:, :, :32] = 1.0
    return m


def inside_outside(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean change in the left and the right 3/8 (away from the seam of a left-half region)."""
    diff = np.abs(a - b).mean(axis=(0, 3))
    q = diff.shape[1] * 3 // 8
    return float(diff[:, :q].mean()), float(diff[:, -q:].mean())


@pytest.mark.parametrize("folder, params", [
    ("tiny_sd_dir", {}), ("tiny_sdxl_dir", {}),
    ("tiny_flux_dev_dir", DIT), ("tiny_sd3_dir", DIT), ("tiny_qwen_dir", DIT),
])
def test_a_region_prompt_changes_its_region_more_than_the_rest(engine, request, folder, params):
    model_dir = request.getfixturevalue(folder)
    plain = render(engine, model_dir, **params)
    regional = render(engine, model_dir, [(left_half(), "a blue lake under snow", 2.0)], **params)
    inside, outside = inside_outside(regional, plain)
    assert inside > 1e-4 and inside > 1.5 * outside, (inside, outside)
    np.testing.assert_allclose(render(engine, model_dir, **params), plain, atol=1e-6)  # the denoiser is itself again
    model = load(engine, model_dir)
    entry = engine.services.get("models").entry(model)
    from app.engine.families import get_family

    den = getattr(entry.pipe, get_family(model.family).denoiser)
    assert "forward" not in den.__dict__ and "encode_prompt" not in entry.pipe.__dict__


@pytest.mark.parametrize("folder", ["tiny_flux_kontext_dir", "tiny_qwen_edit_dir"])
def test_a_region_steers_an_edit(engine, request, folder):
    """Kontext and Qwen-Image-Edit add the source image's tokens after the image's (weight 0 there);
    Qwen-Image-Edit encodes a region's prompt with the source image, as its own."""
    from nodes.diffusion import generate
    from nodes.guidance.regions import regional_prompt

    model = load(engine, request.getfixturevalue(folder))
    ctx = direct_ctx(engine)
    yy, xx = np.mgrid[0:128, 0:128].astype(np.float32)
    src = np.stack([xx / 128, yy / 128, 0.5 + 0.5 * np.sin(xx / 5.0)], axis=-1)[None].astype(np.float32)
    plain = generate.edit(model, src, "make it night", steps=2, seed=1, ctx=ctx)
    regional = generate.edit(regional_prompt(model, left_half(), "snow", 2.0, ctx=ctx), src, "make it night",
                             steps=2, seed=1, ctx=ctx)
    inside, outside = inside_outside(regional, plain)
    assert inside > 1e-5 and inside > 1.5 * outside, (inside, outside)


def test_a_region_with_a_controlnet(engine, tiny_sd_dir, tiny_sd_controlnet):
    """The ControlNet's residuals ([negative, prompt] rows under CFG) are cut to the region's rows."""
    from nodes.diffusion import generate
    from nodes.guidance.controlnet import controlnet
    from nodes.guidance.regions import regional_prompt

    ctx = direct_ctx(engine)
    edges = np.zeros((1, 64, 64, 3), np.float32)
    edges[:, 16:20] = 1.0
    model = controlnet(load(engine, tiny_sd_dir), edges, str(tiny_sd_controlnet), ctx=ctx)
    plain = generate.txt2img(model, ctx=ctx, **BASE)
    regional = generate.txt2img(regional_prompt(model, left_half(), "a blue lake under snow", 2.0, ctx=ctx),
                                ctx=ctx, **BASE)
    inside, outside = inside_outside(regional, plain)
    assert inside > 1e-4 and inside > 1.5 * outside, (inside, outside)


def test_regions_work_without_guidance_and_with_two_regions(engine, tiny_sd_dir):
    right = 1.0 - left_half()
    one = render(engine, tiny_sd_dir, [(left_half(), "snow", 1.0)], guidance=1.0)
    two = render(engine, tiny_sd_dir, [(left_half(), "snow", 1.0), (right, "fire", 1.0)], guidance=1.0)
    assert np.abs(two - one)[:, :, 40:].mean() > np.abs(two - one)[:, :, :24].mean()


def test_a_rectangle_is_the_region_without_a_mask(engine, tiny_sd_dir):
    plain = render(engine, tiny_sd_dir)
    boxed = render(engine, tiny_sd_dir, [(None, "a blue lake under snow", 2.0, (0, 0, 32, 64))])
    inside, outside = inside_outside(boxed, plain)
    assert inside > 1e-4 and inside > 1.5 * outside, (inside, outside)
    # a mask and a rectangle: the mask counts inside the rectangle only (here: the left half again)
    both = render(engine, tiny_sd_dir, [(np.ones((1, 16, 16), np.float32), "a blue lake under snow", 2.0,
                                         (0, 0, 32, 64))])
    np.testing.assert_allclose(both, boxed, atol=1e-5)


def test_flux_true_cfg_blends_the_prompts_call_only(engine, tiny_flux_dev_dir):
    """Text to Image gives Flux no negative prompt (distilled guidance), so the pipeline is called
    directly: with true CFG each step has the prompt's call, one per region and the negative's."""
    import inspect

    import torch

    from nodes.guidance.regions import regional_prompt, regions_active

    model = regional_prompt(load(engine, tiny_flux_dev_dir), left_half(), "snow", 2.0, ctx=direct_ctx(engine))
    pipe = engine.services.get("models").entry(model).pipe
    calls: list[torch.Tensor] = []
    forward = type(pipe.transformer).forward

    def counting(self, *args, **kwargs):
        calls.append(inspect.signature(forward).bind(self, *args, **kwargs).arguments["encoder_hidden_states"])
        return forward(self, *args, **kwargs)

    def run(regions):
        calls.clear()
        args = {"prompt": "a red house", "negative_prompt": "blur", "true_cfg_scale": 3.0, "width": 64,
                "height": 64, "num_inference_steps": 2, "guidance_scale": 3.5, "output_type": "latent",
                "generator": torch.Generator().manual_seed(1)}
        with regions_active(pipe, regions, (64, 64), "cpu"):
            return pipe(**args).images

    type(pipe.transformer).forward = counting
    try:
        plain = run([])
        assert len(calls) == 4  # prompt + negative, two steps
        regional = run(list(model.regions))
    finally:
        type(pipe.transformer).forward = forward
    assert len(calls) == 6  # prompt, its region, negative: two steps
    prompt, region, negative = calls[:3]
    assert negative is calls[5] and prompt is calls[3] and region is not prompt
    tokens = (regional - plain).abs().mean(dim=(0, 2)).reshape(4, 4)  # 2x2 patches of the 8x8 latent
    assert tokens[:, :2].mean() > 1.5 * tokens[:, 2:].mean()


def test_bad_regions_are_one_line(engine, tiny_sd_dir):
    from nodes.guidance.regions import regional_prompt

    sd = load(engine, tiny_sd_dir)
    ctx = direct_ctx(engine)
    with pytest.raises(ValueError, match=r"^Regional Prompt: the mask covers nothing \(all black\)$"):
        regional_prompt(sd, np.zeros((1, 8, 8), np.float32), "snow", ctx=ctx)
    with pytest.raises(ValueError, match=r"^Regional Prompt: write the prompt for the region$"):
        regional_prompt(sd, left_half(), "  ", ctx=ctx)
    with pytest.raises(ValueError, match=r"^Regional Prompt: connect a mask or set a rectangle"):
        regional_prompt(sd, None, "snow", ctx=ctx)
    with pytest.raises(ValueError, match=r"^Regional Prompt: the rectangle needs a width and a height \(32x0"):
        regional_prompt(sd, None, "snow", width=32, ctx=ctx)
    with pytest.raises(ValueError, match=r"^Regional Prompt: the rectangle \(x 64, y 0, 16x16\) lies outside "
                                         r"the 64x64 image$"):
        render(engine, tiny_sd_dir, [(None, "snow", 1.0, (64, 0, 16, 16))], steps=1)
    with pytest.raises(ValueError, match=r"^Regional Prompt: the mask is black inside the rectangle"):
        render(engine, tiny_sd_dir, [(left_half(), "snow", 1.0, (40, 0, 24, 64))], steps=1)
    # in a graph: the node needs no mask link with a rectangle; the sampling node reports the bad one
    g = make_graph({"load": ("load_model", {"checkpoint": str(tiny_sd_dir)}),
                    "region": ("imagebash.guidance.regional_prompt", {"prompt": "snow", "x": 0, "y": 80,
                                                                      "width": 32, "height": 32}),
                    "gen": ("txt2img", {**BASE, "steps": 1})}, ["load.model>region.model", "region.model>gen.model"])
    result = engine.run(g)
    assert "Regional Prompt: the rectangle (x 0, y 80, 32x32) lies outside the 64x64 image" in result.errors["gen"]
    assert "\n" not in result.errors["gen"]
    g.nodes["region"].params.update(y=0)
    assert engine.run(g).ok
    model = load(engine, tiny_sd_dir)
    den = engine.services.get("models").entry(model).pipe.unet
    assert "forward" not in den.__dict__  # a failed sampling leaves the U-Net as it was
