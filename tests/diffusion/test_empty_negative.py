"""An empty negative prompt is the encoding of "" (ComfyUI's CLIPTextEncode of ""), not zeros,
also on SDXL, where diffusers zeroes it when no negative prompt is given."""

from __future__ import annotations

import numpy as np

from tests.diffusion.conftest import direct_ctx, make_graph


def test_an_empty_sdxl_negative_is_the_encoding_of_the_empty_prompt(engine, tiny_sdxl_dir):
    from nodes.diffusion import generate

    model = engine.run(make_graph({"load": ("load_model", {"checkpoint": str(tiny_sdxl_dir)})}, [])).output("load")
    pipe = engine.services.get("models").entry(model).pipe
    seen = []
    hook = pipe.unet.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append(kwargs["encoder_hidden_states"].detach().clone()), with_kwargs=True)
    try:
        generate.txt2img(model, prompt="a house", negative_prompt="", width=64, height=64, steps=1, seed=1,
                         guidance=5.0, ctx=direct_ctx(engine))
    finally:
        hook.remove()
    uncond, cond = seen[0].chunk(2)
    assert float(uncond.abs().max()) > 0.01  # the encoding of "", not zeros
    expected = pipe.encode_prompt("", device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)[0]
    expected = expected.detach()
    np.testing.assert_allclose(uncond.numpy(), expected.numpy(), atol=1e-5)
    assert not np.allclose(uncond.numpy(), cond.numpy())
