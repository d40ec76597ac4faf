"""ComfyUI's per-step noise: with noise "comfyui", an ancestral sampler's steps draw from one generator seeded with
the seed on the latent's device, a randn of the whole batch per step (k-diffusion's default_noise_sampler), and
each step is k-diffusion's sample_euler_ancestral step."""

from __future__ import annotations

import torch

from tests.diffusion.conftest import make_graph, run_ok


def test_euler_ancestral_steps_use_comfyuis_noise_sequence(engine, tiny_sd_dir, monkeypatch):
    import diffusers

    real = diffusers.EulerAncestralDiscreteScheduler.step
    steps: list[dict] = []

    def spy(self, model_output, timestep, sample, generator=None, return_dict=True):  # step's own signature
        i = self.step_index if self.step_index is not None else 0
        sigma, sigma_to = float(self.sigmas[i]), float(self.sigmas[i + 1])
        gen = generator
        state = gen.get_state() if isinstance(gen, torch.Generator) else None
        out = real(self, model_output, timestep, sample, generator=generator, return_dict=return_dict)
        steps.append({"eps": model_output.detach().cpu().clone(), "x": sample.detach().cpu().clone(),
                      "sigma": sigma, "sigma_to": sigma_to, "gen": gen, "state": state,
                      "out": (out[0] if isinstance(out, tuple) else out.prev_sample).detach().cpu().clone()})
        return out

    monkeypatch.setattr(diffusers.EulerAncestralDiscreteScheduler, "step", spy)
    g = make_graph({"load": ("load_model", {"checkpoint": str(tiny_sd_dir)}),
                    "empty": ("empty_latent", {"width": 64, "height": 64, "batch_size": 2}),
                    "s": ("sample", {"prompt": "a cat", "steps": 4, "seed": 9, "guidance": 5.0,
                                     "sampler": "euler_ancestral", "schedule": "normal", "noise": "comfyui"})},
                   ["load.model>empty.model", "load.model>s.model", "empty.latent>s.latent"])
    run_ok(engine, g, targets=["s"])
    assert len(steps) == 4
    gen = steps[0]["gen"]
    assert isinstance(gen, torch.Generator) and all(s["gen"] is gen for s in steps)  # one generator for the run
    comfy = torch.Generator("cpu").manual_seed(9)  # default_noise_sampler: seeded once, on the latent's device
    assert torch.equal(steps[0]["state"], comfy.get_state())
    for s in steps:
        sigma, sigma_to = s["sigma"], s["sigma_to"]
        denoised = s["x"] - sigma * s["eps"]  # epsilon prediction
        sigma_up = min(sigma_to, (sigma_to ** 2 * (sigma ** 2 - sigma_to ** 2) / sigma ** 2) ** 0.5)
        sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
        x = s["x"] + (s["x"] - denoised) / sigma * (sigma_down - sigma)
        if sigma_to > 0:  # k-diffusion draws no noise for the last step
            x = x + torch.randn(s["x"].shape, generator=comfy) * sigma_up
        torch.testing.assert_close(s["out"], x, atol=1e-4, rtol=1e-4)
    assert steps[-1]["sigma_to"] == 0.0
