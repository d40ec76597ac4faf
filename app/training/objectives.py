"""What a training step minimises: DDPM noise/v prediction (SD 1.x/2.x/XL) or flow matching
(Flux.1, SD 3.5, Qwen-Image).

The family's TrainingSpec names the objective and its reference settings; a run's config may
override timestep sampling, shift, weighting and Flux dev's distilled guidance. Everything random
comes from the trainer's checkpointed generator, so a resumed run draws what an uninterrupted one
would have.

Flow matching, as diffusers' and kohya's reference trainers do it: draw u in (0, 1) (uniform,
sigmoid of a normal, or logit-normal with a mean and std), shift it to sigma = s*u / (1 + (s-1)*u)
(the shift the family samples with, so training spends its steps where sampling does), mix
x_t = (1 - sigma) * x0 + sigma * noise and regress the model's prediction on noise - x0, weighted
per sample by `compute_loss_weighting_for_sd3` ("none" is 1).

Data-parallel runs (`app.training.distributed`): each process holds a shard of the global batch
(`shard` = (its positions in the global batch, the global batch size)). Every random draw is made
for the whole global batch, from the generator every process holds in the same state, and the
process keeps its rows: an item gets the noise and timestep it would get in one process, and the
generators stay in step. With `shard` None (one process) the draws are exactly as before.
"""

from __future__ import annotations

from typing import Any

from app.engine.families import get_family


def rows(make: Any, n: int, shard: Any = None) -> Any:
    """`make(n)` (a draw with n rows), or, for a shard, the shard's rows of the global batch's draw."""
    if shard is None:
        return make(n)
    positions, total = shard
    return make(total)[positions]


class DDPMObjective:
    """Noise (epsilon) or v prediction on a DDPM schedule, with noise offset and min-SNR weighting."""

    name = "ddpm"

    def __init__(self, trainer: Any) -> None:
        from diffusers import DDPMScheduler

        self.t = trainer
        self.noise_scheduler = DDPMScheduler.from_config(trainer.base.pipe.scheduler.config)
        self.prediction_type = self.noise_scheduler.config.prediction_type

    def describe(self) -> str:
        return f"DDPM objective, {self.prediction_type} prediction"

    def loss(self, latents: Any, emb: dict[str, Any], items: list[Any], g: Any, shard: Any = None) -> Any:
        import torch
        import torch.nn.functional as F
        from diffusers.training_utils import compute_snr

        cfg, base, dev = self.t.cfg, self.t.base, self.t.device
        bsz = latents.shape[0]
        shape = tuple(latents.shape[1:])
        noise = rows(lambda n: torch.randn((n, *shape), generator=g), bsz, shard).to(dev)
        if cfg.noise_offset:
            offset = rows(lambda n: torch.randn((n, shape[0], 1, 1), generator=g), bsz, shard)
            noise = noise + cfg.noise_offset * offset.to(dev)
        steps = self.noise_scheduler.config.num_train_timesteps
        t = rows(lambda n: torch.randint(0, steps, (n,), generator=g), bsz, shard).to(dev)
        noisy = self.noise_scheduler.add_noise(latents, noise, t)
        target = noise if self.prediction_type == "epsilon" else self.noise_scheduler.get_velocity(latents, noise, t)
        kwargs: dict[str, Any] = {}
        if get_family(base.family).training.size_conditioning:
            ids = [[*it.size[::-1], it.fit.top, it.fit.left, it.bucket[1], it.bucket[0]] for it in items]
            kwargs["added_cond_kwargs"] = {"text_embeds": emb["pooled"],
                                           "time_ids": torch.tensor(ids, dtype=torch.float32, device=dev)}
        with self.t.autocast():
            pred = base.denoiser(noisy, t, encoder_hidden_states=emb["hidden"], **kwargs).sample
        loss = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if cfg.min_snr_gamma:
            snr = compute_snr(self.noise_scheduler, t)
            w = torch.clamp(snr, max=cfg.min_snr_gamma)
            w = w / snr if self.prediction_type == "epsilon" else w / (snr + 1)
            loss = loss * w
        return loss.mean()


class FlowObjective:
    """Flow matching (rectified flow): predict noise - x0 at a shifted, sampled sigma."""

    name = "flow"
    prediction_type = "flow"

    def __init__(self, trainer: Any) -> None:
        cfg = trainer.cfg
        self.t = trainer
        self.family = get_family(trainer.base.family)
        spec = self.family.training
        self.sampling = spec.timestep_sampling if cfg.timestep_sampling == "auto" else cfg.timestep_sampling
        self.shift = float(cfg.shift or spec.shift)
        self.weighting = spec.weighting if cfg.weighting == "auto" else cfg.weighting
        den = trainer.base.denoiser
        guided = bool(den.config.get("guidance_embeds", False))
        self.guidance = float(cfg.guidance or spec.guidance or 1.0) if guided else None
        if cfg.guidance and not guided:
            trainer.log(f"warning: guidance={cfg.guidance:g} is ignored: this {self.family.title} model has no "
                        "guidance embedding (only Flux.1 dev-like models do)")

    def describe(self) -> str:
        text = f"flow matching, {self.sampling} timesteps (shift {self.shift:g}), weighting {self.weighting}"
        if self.guidance is not None:
            text += f", distilled guidance {self.guidance:g}"
        return text

    def sigmas(self, n: int, g: Any) -> Any:
        import torch

        cfg = self.t.cfg
        if self.sampling == "uniform":
            u = torch.rand(n, generator=g)
        elif self.sampling == "sigmoid":
            u = torch.sigmoid(torch.randn(n, generator=g))
        else:  # logit_normal
            u = torch.sigmoid(torch.randn(n, generator=g) * cfg.logit_std + cfg.logit_mean)
        u = u.clamp(1e-5, 1.0 - 1e-5)
        return self.shift * u / (1.0 + (self.shift - 1.0) * u)

    def loss(self, latents: Any, emb: dict[str, Any], items: list[Any], g: Any, shard: Any = None) -> Any:
        import torch
        from diffusers.training_utils import compute_loss_weighting_for_sd3

        dev = self.t.device
        bsz = latents.shape[0]
        shape = tuple(latents.shape[1:])
        noise = rows(lambda n: torch.randn((n, *shape), generator=g), bsz, shard).to(dev)
        sigmas = rows(lambda n: self.sigmas(n, g), bsz, shard).to(dev)
        s = sigmas.view(-1, 1, 1, 1)
        noisy = (1.0 - s) * latents + s * noise
        target = noise - latents
        with self.t.autocast():
            pred = self.family.flow_forward(self.t.base.pipe, noisy, sigmas, emb, self.guidance)
        weight = compute_loss_weighting_for_sd3(self.weighting, s).view(-1)
        err = (pred.float() - target.float()) ** 2
        return (weight * err.flatten(1).mean(dim=1)).mean()


def objective_for(trainer: Any) -> DDPMObjective | FlowObjective:
    """The objective the base model's family trains with."""
    kind = get_family(trainer.base.family).training.objective
    return FlowObjective(trainer) if kind == "flow" else DDPMObjective(trainer)
