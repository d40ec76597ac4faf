"""Sample's step window (KSamplerAdvanced), CLIP skip, Latent Upscale and Latent Composite on the tiny SD 1.5."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nodes.diffusion.latent_nodes import latent_composite, latent_upscale
from nodes.types import Latent
from tests.diffusion.conftest import make_graph, run_ok

BASE = {"prompt": "a cat", "steps": 4, "seed": 5, "scheduler": "euler", "guidance": 5.0}


def _samplers(tiny_sd_dir, samplers: dict[str, dict], chain: list[str] = ()) -> tuple:
    nodes = {"load": ("load_model", {"checkpoint": str(tiny_sd_dir)}),
             "empty": ("empty_latent", {"width": 64, "height": 64})}
    links = ["load.model>empty.model"]
    for nid, params in samplers.items():
        nodes[nid] = ("sample", {**BASE, **params})
        links.append(f"load.model>{nid}.model")
        if not any(c.endswith(f">{nid}.latent") for c in chain):
            links.append(f"empty.latent>{nid}.latent")
    return make_graph(nodes, links + list(chain)), list(samplers)


def test_split_run_with_leftover_noise_equals_one_run(engine, tiny_sd_dir):
    g, targets = _samplers(tiny_sd_dir, {
        "full": {},
        "first": {"end_step": 2, "leftover_noise": True},
        "second": {"start_step": 2, "add_noise": False},
        "first_clean": {"end_step": 2},
        "late": {"start_step": 2},
    }, chain=["first.latent>second.latent"])
    r = run_ok(engine, g, targets=targets)
    full, second = r.output("full").samples, r.output("second").samples
    torch.testing.assert_close(second, full, atol=1e-4, rtol=1e-4)
    first, clean = r.output("first").samples, r.output("first_clean").samples
    assert (first - full).abs().mean() > 1e-2  # still noisy at step 2
    assert (first - clean).abs().mean() > 1e-3  # without leftover noise the last step lands on the denoised estimate
    assert (r.output("late").samples - full).abs().mean() > 1e-3


def test_start_and_end_change_the_output(engine, tiny_sd_dir):
    g, targets = _samplers(tiny_sd_dir, {"full": {}, "end3": {"end_step": 3}, "start1": {"start_step": 1},
                                         "past": {"start_step": 4}})
    r = run_ok(engine, g, targets=targets)
    full = r.output("full").samples
    assert (r.output("end3").samples - full).abs().mean() > 1e-4
    assert (r.output("start1").samples - full).abs().mean() > 1e-4
    assert torch.equal(r.output("past").samples, torch.zeros_like(full))  # nothing to run: the input is kept


def test_clip_skip_changes_pixels(engine, tiny_sd_dir):
    from transformers import CLIPTextConfig

    assert CLIPTextConfig.from_pretrained(tiny_sd_dir / "text_encoder").num_hidden_layers >= 2
    g, targets = _samplers(tiny_sd_dir, {"plain": {}, "skip0": {"clip_skip": 0}, "skip1": {"clip_skip": 1}})
    r = run_ok(engine, g, targets=targets)
    assert torch.equal(r.output("plain").samples, r.output("skip0").samples)
    assert (r.output("skip1").samples - r.output("plain").samples).abs().mean() > 1e-4


def _lat(h: int = 8, w: int = 8, n: int = 1) -> Latent:
    return Latent(torch.arange(n * 4 * h * w, dtype=torch.float32).reshape(n, 4, h, w), "sd1", 8)


@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "bicubic", "area"])
def test_latent_upscale_sizes_and_methods(method):
    lat = _lat()
    assert latent_upscale(lat, factor=1.5, method=method).samples.shape == (1, 4, 12, 12)
    assert latent_upscale(lat, width=128, height=96, method=method).samples.shape == (1, 4, 12, 16)
    assert latent_upscale(lat, width=128, method=method).samples.shape == (1, 4, 16, 16)  # aspect kept
    ref = torch.nn.functional.interpolate(lat.samples, size=(16, 16), mode=method)
    torch.testing.assert_close(latent_upscale(lat, factor=2.0, method=method).samples, ref)


def test_latent_upscale_crop_keeps_the_centre():
    lat = _lat(8, 16)
    out = latent_upscale(lat, width=64, height=64, crop=True, method="nearest-exact").samples
    torch.testing.assert_close(out, lat.samples[..., 4:12])


def test_latent_composite_pastes_at_pixel_position_with_feather():
    dst, src = Latent(torch.zeros(1, 4, 8, 8), "sd1"), Latent(torch.ones(1, 4, 4, 4), "sd1")
    out = latent_composite(dst, src, x=32, y=16).samples
    assert out[0, 0, 2:6, 4:8].eq(1).all() and out.sum() == 4 * 16
    soft = latent_composite(dst, src, x=16, y=16, feather=16).samples[0, 0]
    assert soft[3, 3] == 1 and 0 < soft[2, 2] < 1 and soft[0, 0] == 0
    with pytest.raises(ValueError, match="outside"):
        latent_composite(dst, src, x=64, y=0)
    with pytest.raises(ValueError, match="cannot paste"):
        latent_composite(dst, Latent(torch.ones(1, 16, 4, 4), "flux"), x=0, y=0)
    assert np.isfinite(out.numpy()).all()
