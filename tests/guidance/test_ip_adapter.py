"""IP-Adapter stacks on the tiny SD 1.5 model with a tiny adapter and CLIP image encoder built here."""

from __future__ import annotations

import numpy as np
import pytest

from tests.diffusion.conftest import direct_ctx, make_graph

BASE = {"prompt": "a house", "width": 64, "height": 64, "steps": 3, "seed": 2, "scheduler": "euler"}


@pytest.fixture(scope="module")
def tiny_ip_adapter(tmp_path_factory, tiny_sd_dir):
    """(adapter file, encoder folder): an ImageProjection + to_k_ip/to_v_ip for every cross-attention
    processor of the tiny U-Net, as h94/IP-Adapter's files hold them, and a tiny CLIP vision tower."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    root = tmp_path_factory.mktemp("ip")
    torch.manual_seed(9)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32,
        patch_size=8, projection_dim=32))
    encoder.save_pretrained(str(root / "image_encoder"), safe_serialization=True)
    unet = UNet2DConditionModel.from_pretrained(str(tiny_sd_dir), subfolder="unet")
    cross, blocks = unet.config.cross_attention_dim, unet.config.block_out_channels
    tensors = {"image_proj.proj.weight": torch.randn(cross * 4, 32) * 0.3,
               "image_proj.proj.bias": torch.zeros(cross * 4),
               "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross)}
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):  # self-attention: no image keys, and no index
            continue
        if name.startswith("mid_block"):
            hidden = blocks[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(blocks))[int(name[len("up_blocks.")])]
        else:
            hidden = blocks[int(name[len("down_blocks.")])]
        tensors[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross) * 0.3
        tensors[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross) * 0.3
        key_id += 2  # h94's numbering: odd indices, one per cross-attention processor
    path = root / "ip-adapter_tiny.safetensors"
    save_file(tensors, str(path))
    return path


@pytest.fixture(scope="module")
def tiny_flux_ip_adapter(tmp_path_factory, tiny_flux_dev_dir, tiny_ip_adapter):
    """An IP-Adapter for the tiny Flux in XLabs' layout (ip_adapter_proj_model.*, double_blocks.N.
    processor.ip_adapter_double_stream_{k,v}_proj.*), with the SD adapter's tiny encoder beside it."""
    import shutil

    import torch
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("flux-ip")
    shutil.copytree(tiny_ip_adapter.parent / "image_encoder", root / "image_encoder")
    t = FluxTransformer2DModel.from_pretrained(str(tiny_flux_dev_dir), subfolder="transformer")
    cross, inner = t.config.joint_attention_dim, t.inner_dim
    torch.manual_seed(10)
    tensors = {"ip_adapter_proj_model.proj.weight": torch.randn(cross * 4, 32) * 0.5,
               "ip_adapter_proj_model.proj.bias": torch.zeros(cross * 4),
               "ip_adapter_proj_model.norm.weight": torch.ones(cross),
               "ip_adapter_proj_model.norm.bias": torch.zeros(cross)}
    for i in range(t.config.num_layers):
        for kv in ("k", "v"):
            name = f"double_blocks.{i}.processor.ip_adapter_double_stream_{kv}_proj"
            tensors[f"{name}.weight"] = torch.randn(inner, cross) * 0.5
            tensors[f"{name}.bias"] = torch.zeros(inner)
    path = root / "flux-ip-adapter_tiny.safetensors"
    save_file(tensors, str(path))
    return path


def reference(kind: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32) / 64
    img = np.stack([xx, yy, 1 - xx], -1) if kind == 0 else np.stack([1 - yy, xx * 0, yy], -1)
    return img[None].astype(np.float32)


def render(engine, model_dir, adapters, **params):
    from nodes.diffusion import generate
    from nodes.guidance.ip_adapter import ip_adapter

    model = engine.run(make_graph({"load": ("load_model", {"checkpoint": str(model_dir)})}, [])).output("load")
    ctx = direct_ctx(engine)
    for path, image, weight, *kw in adapters:
        model = ip_adapter(model, image, str(path), weight=weight, ctx=ctx, **(kw[0] if kw else {}))
    return generate.txt2img(model, ctx=ctx, **{**BASE, **params})


def test_an_ip_adapter_steers_by_its_reference_and_goes_away_without_it(engine, tiny_sd_dir, tiny_ip_adapter):
    plain = render(engine, tiny_sd_dir, [])
    with_ref = render(engine, tiny_sd_dir, [(tiny_ip_adapter, reference(0), 1.0)])
    other_ref = render(engine, tiny_sd_dir, [(tiny_ip_adapter, reference(1), 1.0)])
    assert np.abs(with_ref - plain).mean() > 1e-4
    assert np.abs(other_ref - with_ref).mean() > 1e-5  # the reference image matters
    np.testing.assert_allclose(render(engine, tiny_sd_dir, []), plain, atol=1e-6)  # unloaded again
    np.testing.assert_allclose(render(engine, tiny_sd_dir, [(tiny_ip_adapter, reference(0), 0.0)]), plain, atol=1e-6)


def test_a_weight_change_does_not_reload_the_base(engine, tiny_sd_dir, tiny_ip_adapter):
    models = engine.services.get("models")
    a = render(engine, tiny_sd_dir, [(tiny_ip_adapter, reference(0), 0.5)])
    loads = models.loads
    b = render(engine, tiny_sd_dir, [(tiny_ip_adapter, reference(0), 1.0)])
    assert models.loads == loads and np.abs(a - b).mean() > 1e-5


def test_missing_encoder_bad_window_and_unsupported_family_are_one_line(engine, tiny_sd_dir, tiny_qwen_dir,
                                                                         tiny_ip_adapter, tmp_path):
    import torch
    from safetensors.torch import save_file

    from nodes.guidance.ip_adapter import ip_adapter

    lone = tmp_path / "alone.safetensors"
    save_file({"image_proj.proj.weight": torch.zeros(4, 4)}, str(lone))
    sd = engine.run(make_graph({"load": ("load_model", {"checkpoint": str(tiny_sd_dir)})}, [])).output("load")
    with pytest.raises(FileNotFoundError, match="needs its CLIP image encoder"):
        ip_adapter(sd, reference(), str(lone), ctx=direct_ctx(engine))
    with pytest.raises(ValueError, match=r"^IP-Adapter: start 0.6 must be below end 0.4"):
        ip_adapter(sd, reference(), str(tiny_ip_adapter), start=0.6, end=0.4, ctx=direct_ctx(engine))
    with pytest.raises(ValueError, match=r"^IP-Adapter: the mask covers nothing"):
        ip_adapter(sd, reference(), str(tiny_ip_adapter), mask=np.zeros((1, 8, 8), np.float32),
                   ctx=direct_ctx(engine))
    qwen = engine.run(make_graph({"load": ("load_model", {"checkpoint": str(tiny_qwen_dir)})}, [])).output("load")
    with pytest.raises(ValueError, match=r"Qwen-Image is not supported yet"):
        ip_adapter(qwen, reference(), str(lone), ctx=direct_ctx(engine))


def test_the_step_window_limits_the_adapter(engine, tiny_sd_dir, tiny_ip_adapter):
    plain = render(engine, tiny_sd_dir, [], steps=4)
    full = render(engine, tiny_sd_dir, [(tiny_ip_adapter, reference(0), 1.0)], steps=4)
    early = render(engine, tiny_sd_dir, [(tiny_ip_adapter, reference(0), 1.0, {"end": 0.5})], steps=4)
    late = render(engine, tiny_sd_dir, [(tiny_ip_adapter, reference(0), 1.0, {"start": 0.5})], steps=4)
    for a, b in ((early, full), (late, full), (early, late), (early, plain), (late, plain)):
        assert np.abs(a - b).mean() > 1e-5
    again = render(engine, tiny_sd_dir, [(tiny_ip_adapter, reference(0), 1.0, {"end": 0.5})], steps=4)
    np.testing.assert_array_equal(again, early)  # the window is reset per run
    np.testing.assert_array_equal(render(engine, tiny_sd_dir, [(tiny_ip_adapter, reference(0), 1.0)], steps=4), full)


def _masks_pull_their_half(render_with, ratio: float = 1.3) -> None:
    """A left-masked adapter matches the unmasked one on the left more than a right-masked one does
    (the tiny U-Net's attention spreads changes widely, hence the modest ratio there)."""
    left = np.zeros((1, 64, 64), np.float32)
    left[:, :, :32] = 1.0
    whole, lft, rgt = render_with(None), render_with(left), render_with(1 - left)

    def off(a, half):
        return float(np.abs(a - whole)[:, :, half].mean())

    first, second = slice(0, 32), slice(32, 64)
    assert ratio * off(lft, first) < off(rgt, first), (off(lft, first), off(rgt, first))
    assert ratio * off(rgt, second) < off(lft, second), (off(rgt, second), off(lft, second))
    np.testing.assert_allclose(render_with(np.ones((1, 64, 64), np.float32)), whole, atol=1e-5)


def test_a_mask_confines_the_adapter_on_sd(engine, tiny_sd_dir, tiny_ip_adapter):
    _masks_pull_their_half(lambda m: render(engine, tiny_sd_dir, [(tiny_ip_adapter, reference(0), 1.0,
                                                                   {} if m is None else {"mask": m})]), 1.1)


def test_a_flux_ip_adapter_in_xlabs_layout_steers_masks_and_goes_away(engine, tiny_flux_dev_dir,
                                                                      tiny_flux_ip_adapter):
    plain = render(engine, tiny_flux_dev_dir, [])
    on = render(engine, tiny_flux_dev_dir, [(tiny_flux_ip_adapter, reference(0), 1.0)])
    other = render(engine, tiny_flux_dev_dir, [(tiny_flux_ip_adapter, reference(1), 1.0)])
    assert np.abs(on - plain).mean() > 1e-4 and np.abs(other - on).mean() > 1e-5
    _masks_pull_their_half(lambda m: render(engine, tiny_flux_dev_dir, [(tiny_flux_ip_adapter, reference(0), 1.0,
                                                                         {} if m is None else {"mask": m})]))
    windowed = render(engine, tiny_flux_dev_dir, [(tiny_flux_ip_adapter, reference(0), 1.0, {"start": 0.34})])
    assert np.abs(windowed - on).mean() > 1e-5
    np.testing.assert_allclose(render(engine, tiny_flux_dev_dir, []), plain, atol=1e-6)  # unloaded again


def test_an_sd_adapter_on_flux_is_one_line(engine, tiny_flux_dev_dir, tiny_ip_adapter):
    with pytest.raises(ValueError, match=r"^ip-adapter_tiny.safetensors (does not fit|is not an IP-Adapter)"):
        render(engine, tiny_flux_dev_dir, [(tiny_ip_adapter, reference(0), 1.0)])
