"""The sampler choices users know from A1111/ComfyUI, mapped onto diffusers schedulers."""

from __future__ import annotations

import enum
from typing import Any


class Scheduler(str, enum.Enum):
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


def make_scheduler(choice: Scheduler | str, base_config: dict) -> Any:
    """A fresh scheduler of the chosen kind built on the model's own (betas, prediction type)."""
    import diffusers

    choice = Scheduler(choice)
    if choice is Scheduler.DEFAULT:
        cls = getattr(diffusers, base_config["_class_name"])
        return cls.from_config(base_config)
    name, extra = _TABLE[choice]
    return getattr(diffusers, name).from_config(base_config, **extra)
