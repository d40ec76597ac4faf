"""ComfyUI's sigma schedules and initial noise, so an imported graph samples the schedule and noise it did there.

The schedules follow the published formulas ComfyUI implements (Karras et al. 2022 with rho 7, log-linear
"exponential", "simple", "sgm_uniform", "ddim_uniform", "normal" and "beta" with alpha = beta = 0.6) over the
model's own 1000 training sigmas; each ends with 0.
"""

from __future__ import annotations

import enum
import math
from typing import Any


class Schedule(str, enum.Enum):
    DEFAULT = "default"  # the diffusers scheduler's own spacing (imagebash's behaviour)
    NORMAL = "normal"
    KARRAS = "karras"
    EXPONENTIAL = "exponential"
    SGM_UNIFORM = "sgm_uniform"
    SIMPLE = "simple"
    DDIM_UNIFORM = "ddim_uniform"
    BETA = "beta"


class NoiseMode(str, enum.Enum):
    IMAGEBASH = "imagebash"  # one CPU generator per image: seed, seed+1, ...
    COMFYUI = "comfyui"  # one CPU randn of the whole batch from the seed (ComfyUI's prepare_noise)


def model_sigmas(alphas_cumprod: Any) -> Any:
    """The model's training sigmas, ascending (float32), from its alphas_cumprod."""
    import torch

    ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    return ((1 - ac) / ac).sqrt().float()


def _sigma_at(log_sigmas: Any, t: float) -> float:
    """Sigma at a fractional timestep, interpolating log sigma (ComfyUI's ModelSamplingDiscrete.sigma)."""
    t = min(max(float(t), 0.0), len(log_sigmas) - 1.0)
    lo, hi = math.floor(t), math.ceil(t)
    w = t - lo
    return math.exp((1 - w) * float(log_sigmas[lo]) + w * float(log_sigmas[hi]))


def _normal(sigmas: Any, steps: int, sgm: bool) -> list[float]:
    import torch

    log_sigmas = sigmas.log()
    start, end = len(sigmas) - 1, 0  # the timesteps of sigma_max and sigma_min
    zero = True
    if sgm:
        ts = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(_sigma_at(log_sigmas, end), 0, abs_tol=1e-5):
            steps, zero = steps + 1, False
        ts = torch.linspace(start, end, steps)
    return [_sigma_at(log_sigmas, float(t)) for t in ts] + ([0.0] if zero else [])


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) by Lentz's continued fraction."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    f, c, d = 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1.0 - c * d) < 1e-15:
            break
    return front * (f - 1.0)


def beta_ppf(q: float, a: float, b: float) -> float:
    """Quantile of the Beta(a, b) distribution (bisection on I_x(a, b))."""
    if q <= 0.0 or q >= 1.0:
        return 0.0 if q <= 0.0 else 1.0
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _betainc(a, b, mid) < q else (lo, mid)
    return (lo + hi) / 2


def comfy_sigmas(name: Schedule | str, steps: int, sigmas: Any, alpha: float = 0.6, beta: float = 0.6) -> Any:
    """ComfyUI's `name` schedule of `steps` steps (descending, ending with 0) over the model's ascending
    training `sigmas` (see `model_sigmas`)."""
    import torch

    name, steps = Schedule(name), int(steps)
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32)
    s_min, s_max = float(sigmas[0]), float(sigmas[-1])
    n = len(sigmas)
    if name is Schedule.KARRAS:
        ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
        lo, hi = s_min ** (1 / 7), s_max ** (1 / 7)
        out = [*((hi + ramp * (lo - hi)) ** 7).tolist(), 0.0]
    elif name is Schedule.EXPONENTIAL:
        out = [*torch.linspace(math.log(s_max), math.log(s_min), steps, dtype=torch.float64).exp().tolist(), 0.0]
    elif name in (Schedule.NORMAL, Schedule.SGM_UNIFORM):
        out = _normal(sigmas, steps, sgm=name is Schedule.SGM_UNIFORM)
    elif name is Schedule.SIMPLE:
        ss = n / steps
        out = [float(sigmas[-(1 + int(x * ss))]) for x in range(steps)] + [0.0]
    elif name is Schedule.DDIM_UNIFORM:
        x, first = 1, [0.0]
        if math.isclose(float(sigmas[1]), 0, abs_tol=1e-5):
            steps, first = steps + 1, []
        ss = max(n // steps, 1)
        picked = []
        while x < n:
            picked.append(float(sigmas[x]))
            x += ss
        out = (first + picked)[::-1]
    elif name is Schedule.BETA:
        out, last = [], -1
        for i in range(steps):
            t = round(beta_ppf(1 - i / steps, alpha, beta) * (n - 1))
            if t != last:
                out.append(float(sigmas[t]))
            last = t
        out.append(0.0)
    else:
        raise ValueError("the default schedule has no fixed sigmas: it is the diffusers scheduler's own")
    return torch.tensor(out, dtype=torch.float32)


def sigma_to_t(sigma: Any, sigmas: Any) -> Any:
    """Fractional timesteps of `sigma` on the model's ascending training sigmas (log-sigma interpolation)."""
    import torch

    log_s = torch.as_tensor(sigmas, dtype=torch.float64).log()
    x = torch.as_tensor(sigma, dtype=torch.float64).clamp_min(1e-10).log()
    idx = torch.searchsorted(log_s, x).clamp(1, len(log_s) - 1)
    lo, hi = log_s[idx - 1], log_s[idx]
    w = ((x - lo) / (hi - lo)).clamp(0, 1)
    return (idx - 1 + w).float()


def comfy_noise(seed: int, shape: tuple[int, ...]) -> Any:
    """ComfyUI's initial noise: one float32 CPU randn of the whole batch from `torch.manual_seed(seed)`."""
    import torch

    gen = torch.Generator("cpu").manual_seed(int(seed))  # the same stream as torch.manual_seed, without global state
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float32, device="cpu")


def prepare_mask(mask: Any, shape: tuple[int, ...]) -> Any:
    """A noise mask (N, 1, H, W) or (N, H, W) at any size as ComfyUI's `prepare_mask` makes it for latents of
    `shape` (N, C, h, w): bilinear to the latent size, repeated over the channels and the batch."""
    import torch

    m = torch.as_tensor(mask, dtype=torch.float32)
    m = m.reshape(-1, 1, m.shape[-2], m.shape[-1])
    m = torch.nn.functional.interpolate(m, size=tuple(shape[-2:]), mode="bilinear")
    m = m.expand(-1, shape[1], -1, -1)
    if m.shape[0] < shape[0]:
        m = m.repeat(math.ceil(shape[0] / m.shape[0]), 1, 1, 1)
    return m[:shape[0]].contiguous()


def renoised(scheduler: Any, clean: Any, noise: Any, t: Any, flow: bool = False) -> Any:
    """`clean` noised with `noise` to the level `scheduler` stands at after the step of timestep `t`
    (in the scheduler's own latent space: x0 + sigma n for the k-diffusion schedulers, the variance-
    preserving mix for DDIM / DPM-Solver / UniPC / LCM, the flow mix for flow matching); `clean` itself
    once the schedule has reached sigma 0."""
    import torch

    sigmas, idx = getattr(scheduler, "sigmas", None), getattr(scheduler, "step_index", None)
    if sigmas is not None and idx is not None:
        if idx >= len(sigmas):
            return clean
        s = sigmas[idx]
        if hasattr(scheduler, "sigmas_interpol") and not getattr(scheduler, "state_in_first_order", True):
            s = scheduler.sigmas_interpol[idx]  # KDPM2's midpoint
        elif hasattr(scheduler, "mid_point_sigma") and not getattr(scheduler, "state_in_first_order", True):
            s = scheduler.mid_point_sigma  # DPM-Solver SDE's midpoint
        s = float(s)
        if s <= 0:
            return clean
        if flow:
            return (1 - s) * clean + s * noise
        if float(getattr(scheduler, "init_noise_sigma", 1.0)) > 1.0:
            return clean + s * noise
        a = 1.0 / math.sqrt(1.0 + s * s)
        return a * clean + a * s * noise
    ac = scheduler.alphas_cumprod
    if idx is not None:  # LCM: the next timestep of its table
        if idx >= len(scheduler.timesteps):
            return clean
        prev = int(scheduler.timesteps[idx])
    else:  # DDIM: the previous timestep of a fixed stride
        stride = scheduler.config.num_train_timesteps // max(int(scheduler.num_inference_steps), 1)
        prev = int(torch.as_tensor(t).reshape(-1)[0]) - stride
    if prev < 0:
        return clean
    a = float(ac[prev])
    return math.sqrt(a) * clean + math.sqrt(1 - a) * noise
