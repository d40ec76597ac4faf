"""Regional prompts on the tiny SD 1.5 and SDXL models: a region's prompt changes its region more
than the rest (measured on difference maps), and the main prompt still rules outside."""

from __future__ import annotations

import numpy as np
import pytest

from tests.diffusion.conftest import direct_ctx, make_graph

BASE = {"prompt": "a red house", "width": 64, "height": 64, "steps": 3, "seed": 4, "scheduler": "euler"}


def render(engine, model_dir, regions=(), **params):
    from nodes.diffusion import generate
    from nodes.guidance.regions import regional_prompt

    model = engine.run(make_graph({"load": ("load_model", {"checkpoint": str(model_dir)})}, [])).output("load")
    ctx = direct_ctx(engine)
    for mask, prompt, strength in regions:
        model = regional_prompt(model, mask, prompt, strength, ctx=ctx)
    return generate.txt2img(model, ctx=ctx, **{**BASE, **params})


def left_half() -> np.ndarray:
    m = np.zeros((1, 64, 64), np.float32)
    m[:, :, :32] = 1.0
    return m


@pytest.mark.parametrize("folder", ["tiny_sd_dir", "tiny_sdxl_dir"])
def test_a_region_prompt_changes_its_region_more_than_the_rest(engine, request, folder):
    model_dir = request.getfixturevalue(folder)
    plain = render(engine, model_dir)
    regional = render(engine, model_dir, [(left_half(), "a blue lake under snow", 2.0)])
    diff = np.abs(regional - plain).mean(axis=(0, 3))
    inside, outside = diff[:, :24].mean(), diff[:, 40:].mean()  # away from the seam
    assert inside > 1e-4 and inside > 1.5 * outside, (inside, outside)
    np.testing.assert_allclose(render(engine, model_dir), plain, atol=1e-6)  # the U-Net is itself again


def test_regions_work_without_guidance_and_with_two_regions(engine, tiny_sd_dir):
    right = 1.0 - left_half()
    one = render(engine, tiny_sd_dir, [(left_half(), "snow", 1.0)], guidance=1.0)
    two = render(engine, tiny_sd_dir, [(left_half(), "snow", 1.0), (right, "fire", 1.0)], guidance=1.0)
    assert np.abs(two - one)[:, :, 40:].mean() > np.abs(two - one)[:, :, :24].mean()


def test_bad_regions_are_one_line(engine, tiny_sd_dir, tiny_flux_dev_dir):
    from nodes.guidance.regions import regional_prompt

    sd = engine.run(make_graph({"load": ("load_model", {"checkpoint": str(tiny_sd_dir)})}, [])).output("load")
    with pytest.raises(ValueError, match="the mask covers nothing"):
        regional_prompt(sd, np.zeros((1, 8, 8), np.float32), "snow", ctx=direct_ctx(engine))
    with pytest.raises(ValueError, match="write the prompt for the region"):
        regional_prompt(sd, left_half(), "  ", ctx=direct_ctx(engine))
    flux = engine.run(make_graph({"load": ("load_model", {"checkpoint": str(tiny_flux_dev_dir)})}, [])).output("load")
    with pytest.raises(ValueError, match=r"Flux\.1 is not supported yet"):
        regional_prompt(flux, left_half(), "snow", ctx=direct_ctx(engine))
