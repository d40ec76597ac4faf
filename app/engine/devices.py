"""Which device and dtype to run on, how much memory is free there, and what an OOM looks like.

torch is imported inside the functions: `import app.engine` must stay free of it.
"""

from __future__ import annotations

import os
from typing import Any


def pick_device(preference: str = "auto") -> str:
    """cuda, then mps, then cpu, unless the user asked for one (an unavailable choice is an error)."""
    import torch

    pref = (preference or "auto").lower()
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if pref == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if has_mps else "cpu"
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{preference}' was requested but CUDA is not available here")
    if pref == "mps" and not has_mps:
        raise RuntimeError("device 'mps' was requested but Metal (MPS) is not available here")
    return pref


def pick_dtype(device: str, precision: str = "auto") -> Any:
    """fp16 on CUDA/MPS (bf16 where asked), fp32 on CPU: half precision on CPU is slow and lossy."""
    import torch

    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision in table:
        return table[precision]
    return torch.float32 if device == "cpu" else torch.float16


def free_memory(device: str) -> int:
    """Bytes free on `device` right now (CPU: MemAvailable; unknown: a large number)."""
    import torch

    if device.startswith("cuda"):
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    if device == "mps":
        try:
            return int(torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory())
        except (AttributeError, RuntimeError):
            return _host_available()
    return _host_available()


def _host_available() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def is_oom(exc: BaseException) -> bool:
    """True for out-of-memory errors of any backend (CUDA, MPS, CPU allocator)."""
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "failed to allocate" in text)


def release_memory(device: str) -> None:
    """Return cached blocks to the driver after a failed attempt."""
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif device == "mps":
        try:
            torch.mps.empty_cache()
        except (AttributeError, RuntimeError):
            pass
