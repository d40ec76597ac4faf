"""ControlNet stacks on SD 1.5 and Flux.1 with tiny random-weight nets built from the tiny models."""

from __future__ import annotations

import numpy as np
import pytest

from tests.diffusion.conftest import direct_ctx, make_graph

BASE = {"prompt": "a house", "width": 64, "height": 64, "steps": 3, "seed": 2, "scheduler": "euler"}


@pytest.fixture(scope="module")
def tiny_flux_controlnet(tmp_path_factory, tiny_flux_dev_dir):
    import torch
    from diffusers import FluxControlNetModel, FluxTransformer2DModel

    transformer = FluxTransformer2DModel.from_pretrained(str(tiny_flux_dev_dir), subfolder="transformer")
    torch.manual_seed(6)
    cfg = {k: transformer.config[k] for k in ("patch_size", "in_channels", "attention_head_dim", "num_attention_heads",
                                              "joint_attention_dim", "pooled_projection_dim", "guidance_embeds",
                                              "axes_dims_rope")}
    net = FluxControlNetModel(num_layers=1, num_single_layers=1, **cfg)
    with torch.no_grad():
        for p in net.parameters():
            if float(p.abs().sum()) == 0.0:
                p.normal_(0, 0.05)
    folder = tmp_path_factory.mktemp("cn") / "tiny-flux-controlnet"
    net.save_pretrained(str(folder), safe_serialization=True)
    return folder


def edges(shift: int = 0) -> np.ndarray:
    img = np.zeros((1, 64, 64, 3), np.float32)
    img[:, 16 + shift:20 + shift, :, :] = 1.0
    img[:, :, 40:44, :] = 1.0
    return img


def render(engine, model_dir, nets, **params):
    """txt2img with the nets of `nets` [(net folder, control image, node params)]."""
    from nodes.guidance.controlnet import controlnet

    g = make_graph({"load": ("load_model", {"checkpoint": str(model_dir)})}, [])
    model = engine.run(g).output("load")
    ctx = direct_ctx(engine)
    for net, image, kw in nets:
        model = controlnet(model, image, str(net), ctx=ctx, **kw)
    from nodes.diffusion import generate

    return generate.txt2img(model, ctx=ctx, **{k: v for k, v in {**BASE, **params}.items()})


@pytest.mark.parametrize("model_fixture, net_fixture", [("tiny_sd_dir", "tiny_sd_controlnet"),
                                                        ("tiny_flux_dev_dir", "tiny_flux_controlnet")])
def test_a_controlnet_steers_and_strength_zero_is_exactly_without_it(engine, request, model_fixture, net_fixture):
    model_dir, net = request.getfixturevalue(model_fixture), request.getfixturevalue(net_fixture)
    plain = render(engine, model_dir, [])
    off = render(engine, model_dir, [(net, edges(), {"strength": 0.0})])
    np.testing.assert_array_equal(off, plain)
    on = render(engine, model_dir, [(net, edges(), {"strength": 1.0})])
    other = render(engine, model_dir, [(net, edges(shift=20), {"strength": 1.0})])
    assert np.abs(on - plain).mean() > 1e-4
    assert np.abs(other - on).mean() > 1e-5  # the control image matters


def test_the_step_window_and_two_nets(engine, tiny_sd_dir, tiny_sd_controlnet):
    full = render(engine, tiny_sd_dir, [(tiny_sd_controlnet, edges(), {})])
    late = render(engine, tiny_sd_dir, [(tiny_sd_controlnet, edges(), {"start": 0.5})])
    plain = render(engine, tiny_sd_dir, [])
    assert np.abs(late - full).mean() > 1e-5 and np.abs(late - plain).mean() > 1e-6
    two = render(engine, tiny_sd_dir, [(tiny_sd_controlnet, edges(), {}), (tiny_sd_controlnet, edges(20), {})])
    assert np.abs(two - full).mean() > 1e-5
    assert np.abs(two - render(engine, tiny_sd_dir, [(tiny_sd_controlnet, edges(20), {})])).mean() > 1e-5


def test_changing_a_strength_does_not_reload(engine, tiny_sd_dir, tiny_sd_controlnet):
    models = engine.services.get("models")
    render(engine, tiny_sd_dir, [(tiny_sd_controlnet, edges(), {"strength": 0.5})])
    loads = models.loads
    render(engine, tiny_sd_dir, [(tiny_sd_controlnet, edges(), {"strength": 0.8})])
    assert models.loads == loads and len(models._controls) >= 1


def test_a_controlnet_of_another_family_and_a_bad_window_are_one_line(engine, tiny_flux_dev_dir, tiny_sd_controlnet):
    from nodes.guidance.controlnet import controlnet

    model = engine.run(make_graph({"load": ("load_model", {"checkpoint": str(tiny_flux_dev_dir)})}, [])).output("load")
    with pytest.raises(ValueError, match=r"does not fit this Flux\.1 model: it is a ControlNetModel, not a Flux"):
        controlnet(model, edges(), str(tiny_sd_controlnet), ctx=direct_ctx(engine))
    with pytest.raises(ValueError, match=r"start 0\.8 must be below end 0\.2"):
        controlnet(model, edges(), str(tiny_sd_controlnet), start=0.8, end=0.2, ctx=direct_ctx(engine))


def test_the_node_runs_in_a_graph_and_resizes_the_control_image(engine, tiny_sd_dir, tiny_sd_controlnet):
    g = make_graph({"load": ("load_model", {"checkpoint": str(tiny_sd_dir)}),
                    "edges": ("imagebash.image.solid_color", {"width": 32, "height": 48, "color": "#ffffff"}),
                    "cn": ("imagebash.guidance.controlnet", {"controlnet": str(tiny_sd_controlnet)}),
                    "gen": ("txt2img", BASE)},
                   ["load.model>cn.model", "edges.image>cn.image", "cn.model>gen.model"])
    logs = []
    from app.engine.events import NodeLog

    engine.events.subscribe(lambda e: logs.append(e.message) if isinstance(e, NodeLog) else None)
    result = engine.run(g)
    assert result.ok, result.errors
    assert result.output("gen").shape == (1, 64, 64, 3)
    assert any("control image 32x48 resized to 64x64" in m for m in logs), logs


@pytest.mark.parametrize("model_fixture, net_fixture", [("tiny_sd_dir", "tiny_sd_controlnet"),
                                                        ("tiny_flux_dev_dir", "tiny_flux_controlnet")])
def test_image_to_image_and_inpaint_take_the_stack(engine, request, model_fixture, net_fixture):
    from nodes.diffusion import generate
    from nodes.guidance.controlnet import controlnet

    model_dir, net = request.getfixturevalue(model_fixture), request.getfixturevalue(net_fixture)
    base = engine.run(make_graph({"load": ("load_model", {"checkpoint": str(model_dir)})}, [])).output("load")
    ctx = direct_ctx(engine)
    steered = controlnet(base, edges(), str(net), ctx=ctx)
    src = np.full((1, 64, 64, 3), 0.5, np.float32)
    mask = np.zeros((1, 64, 64), np.float32)
    mask[:, 8:40, 8:40] = 1
    for fn, kw in ((generate.img2img, {"strength": 0.7}), (generate.inpaint, {"mask": mask})):
        plain = fn(base, src, prompt="a house", steps=3, seed=1, scheduler="euler", ctx=ctx, **kw)
        with_net = fn(steered, src, prompt="a house", steps=3, seed=1, scheduler="euler", ctx=ctx, **kw)
        assert with_net.shape == plain.shape and np.abs(with_net - plain).mean() > 1e-5, fn.__name__


@pytest.fixture(scope="module")
def tiny_t2i_adapter(tmp_path_factory, tiny_sd_dir):
    import torch
    from diffusers import T2IAdapter, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(tiny_sd_dir), subfolder="unet")
    torch.manual_seed(8)
    adapter = T2IAdapter(in_channels=3, channels=list(unet.config.block_out_channels), num_res_blocks=1,
                         downscale_factor=8, adapter_type="full_adapter")
    folder = tmp_path_factory.mktemp("t2i") / "tiny-t2i-canny"
    adapter.save_pretrained(str(folder), safe_serialization=True)
    return folder


def test_a_t2i_adapter_loads_through_the_controlnet_node_and_steers(engine, tiny_sd_dir, tiny_t2i_adapter,
                                                                     tiny_sd_controlnet):
    from nodes.diffusion import generate
    from nodes.guidance.controlnet import controlnet

    plain = render(engine, tiny_sd_dir, [])
    np.testing.assert_array_equal(render(engine, tiny_sd_dir, [(tiny_t2i_adapter, edges(), {"strength": 0.0})]),
                                  plain)
    on = render(engine, tiny_sd_dir, [(tiny_t2i_adapter, edges(), {})])
    other = render(engine, tiny_sd_dir, [(tiny_t2i_adapter, edges(20), {})])
    assert np.abs(on - plain).mean() > 1e-4 and np.abs(other - on).mean() > 1e-5
    base = engine.run(make_graph({"load": ("load_model", {"checkpoint": str(tiny_sd_dir)})}, [])).output("load")
    ctx = direct_ctx(engine)
    steered = controlnet(base, edges(), str(tiny_t2i_adapter), ctx=ctx)
    with pytest.raises(ValueError, match="T2I-Adapters steer Text to Image only"):
        generate.img2img(steered, np.full((1, 64, 64, 3), 0.5, np.float32), "a house", steps=2, ctx=ctx)
    mixed = controlnet(steered, edges(), str(tiny_sd_controlnet), ctx=ctx)
    with pytest.raises(ValueError, match="ControlNets or T2I-Adapters, not both"):
        generate.txt2img(mixed, "a house", width=64, height=64, steps=2, ctx=ctx)
    late = controlnet(base, edges(), str(tiny_t2i_adapter), start=0.5, ctx=ctx)
    with pytest.raises(ValueError, match="steer from the first step to the last"):
        generate.txt2img(late, "a house", width=64, height=64, steps=2, ctx=ctx)


def left_half(width: int = 64) -> np.ndarray:
    m = np.zeros((1, 64, width), np.float32)
    m[:, :, : width // 2] = 1.0
    return m


@pytest.mark.parametrize("model_fixture, net_fixture", [("tiny_sd_dir", "tiny_sd_controlnet"),
                                                        ("tiny_flux_dev_dir", "tiny_flux_controlnet")])
def test_a_mask_confines_the_net_to_its_area(engine, request, model_fixture, net_fixture):
    """Inside its mask a masked net gives what the whole net gives, far more than a net masked to
    the other half does (the tiny models' attention spreads any change over the whole image, so the
    comparison is between masks, not inside against outside)."""
    model_dir, net = request.getfixturevalue(model_fixture), request.getfixturevalue(net_fixture)
    whole = render(engine, model_dir, [(net, edges(), {})])
    left = render(engine, model_dir, [(net, edges(), {"mask": left_half(32)})])  # any size: scaled
    right = render(engine, model_dir, [(net, edges(), {"mask": 1 - left_half(32)})])

    def off(a, half):
        return float(np.abs(a - whole)[:, :, half].mean())

    first, second = slice(0, 32), slice(32, 64)
    assert 1.3 * off(left, first) < off(right, first), (off(left, first), off(right, first))
    assert 1.3 * off(right, second) < off(left, second), (off(right, second), off(left, second))
    ones = render(engine, model_dir, [(net, edges(), {"mask": np.ones((1, 64, 64), np.float32)})])
    np.testing.assert_allclose(ones, whole, atol=1e-6)  # a full mask is the unmasked net
    if model_fixture == "tiny_sd_dir":  # (Flux's ControlNet pipeline differs from its plain one even at zero)
        faint = render(engine, model_dir, [(net, edges(), {"mask": np.full((1, 64, 64), 1e-7, np.float32)})])
        np.testing.assert_allclose(faint, render(engine, model_dir, []), atol=1e-4)  # ~no mask: ~no net


def test_a_mask_that_covers_nothing_is_one_line(engine, tiny_sd_dir, tiny_sd_controlnet):
    with pytest.raises(ValueError, match=r"^ControlNet: the mask covers nothing \(all black\)$"):
        render(engine, tiny_sd_dir, [(tiny_sd_controlnet, edges(), {"mask": np.zeros((1, 64, 64), np.float32)})])


@pytest.fixture(scope="module")
def tiny_sdxl_union(tmp_path_factory, tiny_sdxl_dir):
    """A tiny SDXL Union ControlNet (diffusers' ControlNetUnionModel, as xinsir's promax) from the
    tiny SDXL U-Net."""
    import torch
    from diffusers import ControlNetUnionModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(tiny_sdxl_dir), subfolder="unet")
    torch.manual_seed(7)
    first = ControlNetUnionModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    width = unet.config.block_out_channels[0]  # the control-type transformer's width follows conv_in's
    net = ControlNetUnionModel.from_config(first.config, num_trans_channel=width, num_proj_channel=width,
                                           num_trans_head=2)
    net.load_state_dict({k: v for k, v in first.state_dict().items() if net.state_dict()[k].shape == v.shape},
                        strict=False)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if float(p.abs().sum()) == 0.0:
                p.normal_(0, 0.3)
            elif name.startswith(("controlnet_cond_embedding", "task_embedding")):
                p.mul_(4.0)
    folder = tmp_path_factory.mktemp("cn") / "tiny-sdxl-union"
    net.save_pretrained(str(folder), safe_serialization=True)
    return folder


def test_an_sdxl_union_controlnet_steers_by_its_mode(engine, tiny_sdxl_dir, tiny_sdxl_union, tiny_sd_controlnet):
    plain = render(engine, tiny_sdxl_dir, [])
    canny = render(engine, tiny_sdxl_dir, [(tiny_sdxl_union, edges(), {"mode": 3})])
    depth = render(engine, tiny_sdxl_dir, [(tiny_sdxl_union, edges(), {"mode": 1})])
    assert np.abs(canny - plain).mean() > 1e-4 and np.abs(depth - canny).mean() > 1e-5  # the mode matters
    two = render(engine, tiny_sdxl_dir, [(tiny_sdxl_union, edges(), {"mode": 3}),
                                         (tiny_sdxl_union, edges(8), {"mode": 1, "strength": 0.5})])
    assert np.abs(two - canny).mean() > 1e-5
    np.testing.assert_array_equal(render(engine, tiny_sdxl_dir, [(tiny_sdxl_union, edges(), {"mode": 3,
                                                                                            "strength": 0.0})]), plain)
    with pytest.raises(ValueError, match=r"^a Union ControlNet needs its control type"):
        render(engine, tiny_sdxl_dir, [(tiny_sdxl_union, edges(), {})])
