"""ComfyUI's schedules as sigma arrays, the Sample node's sampler/schedule pair and ComfyUI's batch noise."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch

from nodes.diffusion.comfy_noise import comfy_sigmas, model_sigmas
from tests.diffusion.conftest import make_graph, run_ok


def _sd15() -> np.ndarray:
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    ac = np.cumprod(1 - betas)
    return np.sqrt((1 - ac) / ac).astype(np.float32).astype(np.float64)


def _interp(s: np.ndarray, t: float) -> float:
    lo, hi = math.floor(t), math.ceil(t)
    return math.exp((1 - (t - lo)) * math.log(s[lo]) + (t - lo) * math.log(s[hi]))


def _expected(name: str, n: int, s: np.ndarray) -> list[float]:
    lo, hi = s[0], s[-1]
    if name == "karras":
        return [(hi ** (1 / 7) + i / (n - 1) * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7 for i in range(n)] + [0.0]
    if name == "exponential":
        return [math.exp(math.log(hi) + i / (n - 1) * (math.log(lo) - math.log(hi))) for i in range(n)] + [0.0]
    if name == "normal":  # n evenly spaced timesteps from 999 to 0
        return [_interp(s, 999 - i * 999 / (n - 1)) for i in range(n)] + [0.0]
    if name == "sgm_uniform":  # n + 1 evenly spaced timesteps, the last (0) dropped
        return [_interp(s, 999 - i * 999 / n) for i in range(n)] + [0.0]
    if name == "simple":
        return [s[999 - int(i * 1000 / n)] for i in range(n)] + [0.0]
    if name == "ddim_uniform":
        return [*[s[t] for t in range(1, 1000, 1000 // n)][::-1], 0.0]
    ts, out = [], []
    for i in range(n):  # beta: quantiles of Beta(0.6, 0.6), rounded to training timesteps, repeats dropped
        q = 1 - i / n
        x = 1.0 if q >= 1 else float(mpmath.findroot(
            lambda v, q=q: mpmath.betainc(0.6, 0.6, 0, v, regularized=True) - q, (1e-12, 1 - 1e-12),
            solver="bisect", tol=1e-20))
        ts.append(round(x * 999))
    for i, t in enumerate(ts):
        if i == 0 or t != ts[i - 1]:
            out.append(s[t])
    return [*out, 0.0]


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("name", ["normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta"])
def test_schedules_equal_the_published_formulas(name, steps):
    s = _sd15()
    ac = np.cumprod(1 - np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2)
    got = comfy_sigmas(name, steps, model_sigmas(ac))
    want = torch.tensor(_expected(name, steps, s), dtype=torch.float32)
    assert got.shape == want.shape and float(got[-1]) == 0.0
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    if name != "beta":
        assert len(got) == steps + 1


def test_karras_sigmas_reach_the_scheduler(engine, tiny_sd_dir, monkeypatch):
    seen = {}
    import diffusers

    real = diffusers.EulerDiscreteScheduler.step

    def spy(self, model_output, timestep, sample, *args, **kwargs):
        seen.setdefault("sigmas", self.sigmas.clone())
        return real(self, model_output, timestep, sample, *args, **kwargs)

    monkeypatch.setattr(diffusers.EulerDiscreteScheduler, "step", spy)
    g = make_graph({"load": ("load_model", {"checkpoint": str(tiny_sd_dir)}),
                    "empty": ("empty_latent", {"width": 64, "height": 64}),
                    "s": ("sample", {"prompt": "a cat", "steps": 6, "seed": 3, "guidance": 5.0,
                                     "sampler": "euler", "schedule": "karras"})},
                   ["load.model>empty.model", "load.model>s.model", "empty.latent>s.latent"])
    r = run_ok(engine, g, targets=["s"])
    assert torch.isfinite(r.output("s").samples).all()
    from diffusers import StableDiffusionPipeline

    sched = StableDiffusionPipeline.from_pretrained(str(tiny_sd_dir), local_files_only=True).scheduler
    want = comfy_sigmas("karras", 6, model_sigmas(sched.alphas_cumprod))
    torch.testing.assert_close(seen["sigmas"].cpu(), want, atol=1e-5, rtol=1e-5)


def test_comfyui_noise_is_one_batch_randn(engine, tiny_sd_dir, monkeypatch):
    from diffusers import StableDiffusionPipeline

    captured = []
    real = StableDiffusionPipeline.prepare_latents

    def spy(self, batch_size, channels, height, width, dtype, device, generator, latents=None):
        out = real(self, batch_size, channels, height, width, dtype, device, generator, latents)
        captured.append(out.detach().cpu() / self.scheduler.init_noise_sigma)
        return out

    monkeypatch.setattr(StableDiffusionPipeline, "prepare_latents", spy)
    nodes = {"load": ("load_model", {"checkpoint": str(tiny_sd_dir)}),
             "empty": ("empty_latent", {"width": 64, "height": 64, "batch_size": 2})}
    links = ["load.model>empty.model"]
    for nid, mode in (("c", "comfyui"), ("i", "imagebash")):
        nodes[nid] = ("sample", {"prompt": "a cat", "steps": 2, "seed": 11, "guidance": 5.0, "scheduler": "euler",
                                 "noise": mode})
        links += [f"load.model>{nid}.model", f"empty.latent>{nid}.latent"]
    run_ok(engine, make_graph(nodes, links), targets=["c", "i"])
    assert len(captured) == 2
    by_mode = {"c": None, "i": None}
    want = torch.randn((2, 4, 8, 8), generator=torch.manual_seed(11))
    for x in captured:
        by_mode["c" if torch.allclose(x, want, atol=1e-5) else "i"] = x
    assert by_mode["c"] is not None and by_mode["i"] is not None
    torch.testing.assert_close(by_mode["c"], want, atol=1e-5, rtol=0)
    torch.testing.assert_close(by_mode["i"][0], want[0], atol=1e-5, rtol=0)  # first image: same seed stream
    assert (by_mode["i"][1] - want[1]).abs().mean() > 0.1  # second: seed+1 against ComfyUI's continuation


def test_an_imported_flux_sampler_keeps_running_with_its_own_flow_matching_euler(engine, tiny_flux_dev_dir):
    """ComfyUI's sampler/schedule/noise settings (set on import) do not stop a Flux graph: they are
    set aside with a warning, so the result is the plain Sample's."""
    def graph(**extra):
        return make_graph({"load": ("load_model", {"checkpoint": str(tiny_flux_dev_dir)}),
                           "empty": ("empty_latent", {"width": 64, "height": 64}),
                           "s": ("sample", {"prompt": "a cat", "steps": 2, "seed": 3, **extra})},
                          ["load.model>empty.model", "load.model>s.model", "empty.latent>s.latent"])

    plain = run_ok(engine, graph(), targets=["s"]).output("s").samples
    imported = run_ok(engine, graph(sampler="euler", schedule="karras", noise="comfyui"), targets=["s"])
    torch.testing.assert_close(imported.output("s").samples, plain)
