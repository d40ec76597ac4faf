"""Memory policy: tiled VAE decode quality, slicing/tiling decisions, the one retry after an OOM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.engine import NodeLog, memory
from nodes.diffusion import tiling
from nodes.types import Latent
from tests.diffusion.conftest import make_graph, run_ok


@pytest.fixture
def entry(engine, tiny_sd_dir):
    return engine.services.get("models").load(str(tiny_sd_dir))


def test_tiled_decode_matches_untiled_within_tolerance(entry):
    z = torch.randn(1, 4, 48, 48, generator=torch.Generator().manual_seed(0))
    full = tiling.decode(entry, z, "off")
    tiled = tiling.decode(entry, z, "on", tile=256, overlap=0.25)
    seamy = tiling.decode(entry, z, "on", tile=256, overlap=0.0)
    assert full.shape == tiled.shape == (1, 384, 384, 3)
    # stated tolerance: mean absolute difference under 2% of the range
    assert np.abs(full - tiled).mean() < 0.02
    # blending the overlap is what keeps the seams down
    assert np.abs(full - tiled).max() < np.abs(full - seamy).max()


def test_tiled_encode_matches_untiled(entry):
    rng = np.random.default_rng(1)
    img = np.clip(rng.normal(0.5, 0.1, (1, 384, 384, 3)), 0, 1).astype(np.float32)
    a = tiling.encode(entry, img, "off")
    b = tiling.encode(entry, img, "on", tile=256, overlap=0.25)
    assert a.shape == b.shape == (1, 4, 48, 48)
    assert (a - b).abs().mean() < 0.1 * a.abs().mean()
    with pytest.raises(ValueError, match="not a multiple of 8"):
        tiling.encode(entry, img[:, :100, :100], "off")


def test_policy_decisions():
    gib = 1 << 30
    assert memory.attention_slicing("auto", "cpu", need_bytes=100 * gib, free_bytes=1) is None
    assert memory.attention_slicing("auto", "cuda", need_bytes=10 * gib, free_bytes=4 * gib) == "auto"
    assert memory.attention_slicing("auto", "cuda", need_bytes=gib, free_bytes=24 * gib) is None
    assert memory.attention_slicing("max", "cpu", 0, 1) == "max"
    assert memory.attention_slicing("off", "cuda", 100 * gib, 1) is None
    assert memory.vae_tiling("auto", "cpu", 2048, 2048, need_bytes=0, free_bytes=64 * gib)
    assert not memory.vae_tiling("auto", "cpu", 512, 512, need_bytes=gib, free_bytes=64 * gib)
    assert memory.vae_tiling("auto", "cuda", 512, 512, need_bytes=3 * gib, free_bytes=4 * gib)
    assert not memory.vae_tiling("off", "cuda", 4096, 4096, need_bytes=99 * gib, free_bytes=1)
    # 256x256 SD at fp32 needs ~64 MiB of attention scores per head group: CPU never slices in auto
    assert memory.attention_bytes(256, 256, 1, 8, 4) == 2 * 8 * 1024 * 1024 * 4


def _decode_graph(model_dir, mode="off"):
    return make_graph({"load": ("load_model", {"checkpoint": str(model_dir)}),
                       "empty": ("empty_latent", {"width": 64, "height": 64}),
                       "dec": ("decode", {"tiling_mode": mode, "tile_size": 64})},
                      ["load.model>empty.model", "load.model>dec.model", "empty.latent>dec.latent"])


def test_oom_during_decode_retries_once_with_tiling(engine, entry, tiny_sd_dir, monkeypatch):
    vae = entry.pipe.vae
    real = vae.decoder.forward
    calls = []

    def flaky(*args, **kwargs):
        calls.append(vae.use_tiling)
        if not vae.use_tiling:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(vae.decoder, "forward", flaky)
    logs = []
    engine.events.subscribe(lambda e: logs.append(e.message) if isinstance(e, NodeLog) else None)
    result = run_ok(engine, _decode_graph(tiny_sd_dir))
    assert result.output("dec").shape == (1, 64, 64, 3)
    assert calls[0] is False and all(calls[1:])
    assert any("out of memory during VAE decode" in m and "retrying once" in m for m in logs)

    def always(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(vae.decoder, "forward", always)
    engine.cache.clear()
    failed = engine.run(_decode_graph(tiny_sd_dir))
    assert "out of memory during VAE decode on cpu even with tiling and slicing" in failed.errors["dec"]


def test_oom_during_sampling_retries_with_slicing(engine, entry, tiny_sd_dir, monkeypatch):
    """The retry gives the pixels a normal run gives for the seed (fresh generators per attempt)."""
    from tests.diffusion.conftest import txt2img_graph

    normal = run_ok(engine, txt2img_graph(tiny_sd_dir, seed=5, steps=3)).output("gen")
    engine.cache.clear()
    unet = entry.pipe.unet
    real = unet.forward
    calls = {"n": 0}

    def fail_on_second_step(*args, **kwargs):  # the failed attempt has drawn noise already
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)")
        return real(*args, **kwargs)

    monkeypatch.setattr(unet, "forward", fail_on_second_step)
    logs = []
    engine.events.subscribe(lambda e: logs.append(e.message) if isinstance(e, NodeLog) else None)
    retried = run_ok(engine, txt2img_graph(tiny_sd_dir, seed=5, steps=3)).output("gen")
    assert retried.shape == (1, 64, 64, 3)
    assert any("out of memory during sampling" in m for m in logs)
    np.testing.assert_allclose(retried, normal, atol=1e-5)


def test_oom_retry_in_inpaint_tiles_the_vae_inside_the_pipeline(engine, entry, tiny_sd_dir, monkeypatch):
    """Inpaint encodes the image inside the pipeline: the retry must run that encode tiled."""
    from nodes.diffusion import generate
    from tests.diffusion.test_generate import _Ctx

    vae = entry.pipe.vae
    real = vae.encoder.forward
    seen = []

    def flaky(*args, **kwargs):
        seen.append(vae.use_tiling)
        if not vae.use_tiling:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(vae.encoder, "forward", flaky)
    model = run_ok(engine, make_graph({"load": ("load_model", {"checkpoint": str(tiny_sd_dir)})}, [])).output("load")
    src = np.full((1, 64, 64, 3), 0.5, np.float32)
    mask = np.ones((1, 64, 64), np.float32)
    out = generate.inpaint(model, src, mask, "a window", steps=2, scheduler="euler", seed=3, ctx=_Ctx(engine))
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()
    assert seen[0] is False and True in seen
    assert not vae.use_tiling  # restored after the retry


def test_latent_blend_factors_and_mask():
    from nodes.diffusion.latent_nodes import BlendMode, latent_blend

    a = Latent(torch.zeros(1, 4, 8, 8), "sd1")
    b = Latent(torch.ones(1, 4, 8, 8), "sd1")
    assert torch.equal(latent_blend(a, b, 0.0).samples, a.samples)
    assert torch.equal(latent_blend(a, b, 1.0).samples, b.samples)
    assert torch.allclose(latent_blend(a, b, 0.25).samples, torch.full((1, 4, 8, 8), 0.25))
    mask = np.zeros((1, 64, 64), np.float32)
    mask[:, :, 32:] = 1
    half = latent_blend(a, b, 1.0, mask=mask).samples
    assert half[..., :4].abs().max() == 0 and torch.all(half[..., 4:] == 1)
    x = Latent(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), "sd1")
    y = Latent(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)), "sd1")
    mid = latent_blend(x, y, 0.5, BlendMode.SLERP).samples
    assert mid.norm() > latent_blend(x, y, 0.5).samples.norm()
    with pytest.raises(ValueError, match=r"cannot mix a Stable Diffusion 1\.x latent with a Stable Diffusion XL"):
        latent_blend(a, Latent(b.samples, "sdxl"))


def test_offload_all_moves_pipelines_to_cpu_and_keeps_them_loaded(tiny_sd_dir, monkeypatch):
    """On a GPU machine the entries end on the CPU (still loaded, no disk read on reuse); on CPU a no-op."""
    from app.engine import EngineSettings
    from app.engine import models as models_mod

    mm = models_mod.ModelManager(EngineSettings(device="cpu"))
    entry = mm.load(str(tiny_sd_dir))
    mm.offload_all()  # CPU: nothing moves, nothing is dropped
    assert mm.loaded() == [entry.key] and entry.device == "cpu"
    released = []
    monkeypatch.setattr(models_mod, "release_memory", released.append)
    mm.device = entry.device = "cuda"  # as if loaded on a GPU (the weights are on the CPU here)
    mm.offload_all()
    assert entry.device == "cpu" and mm.loaded() == [entry.key] and released == ["cuda"]
    assert all(p.device.type == "cpu" for p in entry.pipe.unet.parameters())
    assert mm.loads == 1
