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
def step_window(scheduler: Any, add_noise: bool = True, final_step: int | None = None) -> Iterator[None]:
    """For one pipeline call on `scheduler`: with `add_noise` off, img2img's noising of the input
    latent is skipped (the latent is taken as already noisy at the first step, as ComfyUI's
    add_noise disable); with `final_step` k, the k-th step of the call returns the scheduler's
    fully denoised estimate (ComfyUI's last sigma forced to 0 when sampling stops early)."""
    patched: list[str] = []
    if not add_noise:
        for name in ("add_noise", "scale_noise"):  # DDPM-family and flow-matching noising
            if hasattr(scheduler, name):
                scheduler.__dict__[name] = _first
                patched.append(name)
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

        scheduler.__dict__["step"] = stepped
        patched.append("step")
    try:
        yield
    finally:
        for name in patched:
            scheduler.__dict__.pop(name, None)
