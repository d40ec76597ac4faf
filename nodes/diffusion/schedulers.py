"""The sampler choices users know from A1111/ComfyUI, mapped onto diffusers schedulers.

Flow-matching families (Flux.1, SD 3.5, Qwen-Image) sample with flow-matching Euler; there
"euler_a" is its stochastic form and `shift` replaces the model's (resolution-dependent) shift
with a fixed one. The DDPM-family choices do not apply to them and say so.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from typing import Any


class Scheduler(str, enum.Enum):
    AUTO = "auto"  # the model family's usual choice (euler_a for SD, flow-matching Euler for Flux)
    EULER = "euler"
    EULER_A = "euler_a"
    DPMPP_2M = "dpmpp_2m"
    DPMPP_2M_KARRAS = "dpmpp_2m_karras"
    DDIM = "ddim"
    UNIPC = "unipc"
    DEFAULT = "default"


_TABLE: dict[Scheduler, tuple[str, dict[str, Any]]] = {
    Scheduler.EULER: ("EulerDiscreteScheduler", {}),
    Scheduler.EULER_A: ("EulerAncestralDiscreteScheduler", {}),
    Scheduler.DPMPP_2M: ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    Scheduler.DPMPP_2M_KARRAS: ("DPMSolverMultistepScheduler",
                                {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    Scheduler.DDIM: ("DDIMScheduler", {}),
    Scheduler.UNIPC: ("UniPCMultistepScheduler", {}),
}


FLOW_CHOICES = (Scheduler.DEFAULT, Scheduler.EULER, Scheduler.EULER_A)


def make_scheduler(choice: Scheduler | str, base_config: dict, flow: bool = False, shift: float = 0.0,
                   family: str = "") -> Any:
    """A fresh scheduler of the chosen kind built on the model's own (betas, prediction type, shift)."""
    import diffusers

    choice = Scheduler(choice)
    if choice is Scheduler.AUTO:
        choice = Scheduler.DEFAULT if flow else Scheduler.EULER_A
    if flow:
        if choice not in FLOW_CHOICES:
            raise ValueError(f"{family or 'this model'} samples with flow matching: scheduler '{choice.value}' "
                             f"does not apply (use {', '.join(c.value for c in FLOW_CHOICES)})")
        extra: dict[str, Any] = {}
        if shift > 0:
            extra.update(shift=float(shift), use_dynamic_shifting=False)
        if choice is Scheduler.EULER_A:
            extra["stochastic_sampling"] = True
        cls = getattr(diffusers, base_config["_class_name"])
        if choice is not Scheduler.DEFAULT:
            cls = diffusers.FlowMatchEulerDiscreteScheduler
        return cls.from_config(base_config, **extra)
    if choice is Scheduler.DEFAULT:
        cls = getattr(diffusers, base_config["_class_name"])
        return cls.from_config(base_config)
    name, extra = _TABLE[choice]
    return getattr(diffusers, name).from_config(base_config, **extra)


def _first(sample: Any, *_args: Any, **_kwargs: Any) -> Any:
    return sample


@contextlib.contextmanager
def patched(obj: Any, **methods: Any) -> Iterator[None]:
    """For one call, `obj`'s methods named in `methods` are replaced on the instance (the class's
    return when the block ends): how a Sample changes a shared pipeline's scheduler for its run."""
    for name, fn in methods.items():
        obj.__dict__[name] = fn
    try:
        yield
    finally:
        for name in methods:
            obj.__dict__.pop(name, None)


@contextlib.contextmanager
def step_window(scheduler: Any, add_noise: bool = True, final_step: int | None = None) -> Iterator[None]:
    """For one pipeline call on `scheduler`: with `add_noise` off, img2img's noising of the input
    latent is skipped (the latent is taken as already noisy at the first step, as ComfyUI's
    add_noise disable); with `final_step` k, the k-th step of the call returns the scheduler's
    fully denoised estimate (ComfyUI's last sigma forced to 0 when sampling stops early)."""
    methods: dict[str, Any] = {}
    if not add_noise:
        methods.update({name: _first for name in ("add_noise", "scale_noise")  # DDPM-family and flow noising
                        if hasattr(scheduler, name)})
    if final_step is not None:
        step, calls = scheduler.step, [0]

        def stepped(*args: Any, return_dict: bool = True, **kwargs: Any) -> Any:
            calls[0] += 1
            out = step(*args, return_dict=True, **kwargs)
            if calls[0] == final_step * getattr(scheduler, "order", 1):
                x0 = getattr(out, "pred_original_sample", None)
                if x0 is None:
                    raise ValueError(f"{type(scheduler).__name__} gives no denoised estimate to stop early on: "
                                     "use euler, euler_a or ddim, or return the leftover noise")
                out.prev_sample = x0
            return out if return_dict else (out.prev_sample,)

        methods["step"] = stepped
    with patched(scheduler, **methods):
        yield


class Sampler(str, enum.Enum):
    """ComfyUI's sampler_name values that diffusers has a scheduler for."""

    AUTO = "auto"  # the class the `scheduler` choice gives
    EULER = "euler"
    EULER_ANCESTRAL = "euler_ancestral"
    HEUN = "heun"
    DPM_2 = "dpm_2"
    LMS = "lms"
    DPMPP_2M = "dpmpp_2m"
    DPMPP_2M_SDE = "dpmpp_2m_sde"
    DPMPP_SDE = "dpmpp_sde"
    DPMPP_3M_SDE = "dpmpp_3m_sde"  # diffusers has no 3M SDE: its 3rd-order SDE DPM-Solver++ multistep
    DDIM = "ddim"  # ComfyUI's ddim is Euler
    UNI_PC = "uni_pc"
    LCM = "lcm"


_SAMPLERS: dict[Sampler, tuple[str, dict[str, Any]]] = {
    Sampler.EULER: ("EulerDiscreteScheduler", {}),
    Sampler.DDIM: ("EulerDiscreteScheduler", {}),
    Sampler.EULER_ANCESTRAL: ("EulerAncestralDiscreteScheduler", {}),
    Sampler.HEUN: ("HeunDiscreteScheduler", {}),
    Sampler.DPM_2: ("KDPM2DiscreteScheduler", {}),
    Sampler.LMS: ("LMSDiscreteScheduler", {}),
    Sampler.DPMPP_2M: ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    Sampler.DPMPP_2M_SDE: ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    Sampler.DPMPP_3M_SDE: ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
    Sampler.DPMPP_SDE: ("DPMSolverSDEScheduler", {}),
    Sampler.UNI_PC: ("UniPCMultistepScheduler", {}),
    Sampler.LCM: ("LCMScheduler", {}),
}

#: Classes whose step tables interleave midpoints: their own flags give the formula, not custom sigmas.
_FLAG_ONLY = {"KDPM2DiscreteScheduler": 0, "DPMSolverSDEScheduler": 0, "LCMScheduler": 0}
_FLAGS = {"karras": "use_karras_sigmas", "exponential": "use_exponential_sigmas", "beta": "use_beta_sigmas"}


def sampler_scheduler(sampler: Sampler | str, base_config: dict, schedule: str = "default") -> Any:
    """A fresh diffusers scheduler for ComfyUI's `sampler` on the model's config; for a class that takes
    no custom sigmas, `schedule` karras/exponential/beta set its own flag (diffusers' formula)."""
    import diffusers

    name, extra = _SAMPLERS[Sampler(sampler)]
    extra = dict(extra)
    if name in _FLAG_ONLY and schedule in _FLAGS and name != "LCMScheduler":
        extra[_FLAGS[schedule]] = True
    return getattr(diffusers, name).from_config(base_config, **extra)


def takes_custom_sigmas(scheduler: Any) -> bool:
    return type(scheduler).__name__ not in _FLAG_ONLY


def _interleave(x: Any, tail: bool) -> Any:
    import torch

    if tail:  # sigmas: first, each inner twice, last
        return torch.cat([x[:1], x[1:-1].repeat_interleave(2), x[-1:]])
    return torch.cat([x[:1], x[1:].repeat_interleave(2)])


@contextlib.contextmanager
def custom_sigmas(scheduler: Any, sigmas: Any, train_sigmas: Any) -> Iterator[None]:
    """For one call, `set_timesteps` on `scheduler` lays out `sigmas` (descending, ending with 0) in place
    of its own spacing, with the matching fractional timesteps of the model's `train_sigmas`."""
    import torch

    from nodes.diffusion.comfy_noise import sigma_to_t

    sigmas = torch.as_tensor(sigmas, dtype=torch.float32)
    setter = scheduler.set_timesteps

    def set_timesteps(num_inference_steps: int | None = None, device: Any = None, **_kw: Any) -> None:
        setter(len(sigmas) - 1, device=device)
        ts = sigma_to_t(sigmas[:-1], train_sigmas)
        like = scheduler.timesteps
        if not like.dtype.is_floating_point:
            ts = ts.round()
        sig = sigmas
        if type(scheduler).__name__ == "HeunDiscreteScheduler":
            sig, ts = _interleave(sig, True), _interleave(ts, False)
        scheduler.sigmas = sig.to(scheduler.sigmas.device)
        scheduler.timesteps = ts.to(like.device, like.dtype)
        scheduler.num_inference_steps = len(sigmas) - 1

    with patched(scheduler, set_timesteps=set_timesteps):
        yield


@contextlib.contextmanager
def standing_in(target: Any, replacement: Any) -> Iterator[None]:
    """For one call, the pipeline's configured scheduler object `target` behaves as `replacement`
    (class and state swapped in place, restored after): a Sample's own sampler on a shared pipeline."""
    cls, state = target.__class__, target.__dict__
    target.__class__, target.__dict__ = replacement.__class__, replacement.__dict__
    try:
        yield
    finally:
        target.__class__, target.__dict__ = cls, state
