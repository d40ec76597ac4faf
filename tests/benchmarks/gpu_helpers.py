"""Device helpers the GPU benchmark scripts share (all no-ops off CUDA)."""

from __future__ import annotations

import contextlib
import gc


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def free_device(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        host_empty = getattr(getattr(torch, "accelerator", None), "empty_host_cache", None)
        if host_empty is not None:  # pinned blocks of a group-offload run go back to the OS
            with contextlib.suppress(Exception):
                host_empty()


def allocated(device: str) -> int | None:
    import torch

    return int(torch.cuda.memory_allocated()) if device.startswith("cuda") else None
