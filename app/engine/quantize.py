"""NF4 storage of a denoiser (CUDA only, through bitsandbytes): for sampling in the "nf4" memory
mode and for QLoRA-style training on a frozen base.

Every Linear layer of the denoiser becomes a bitsandbytes `Linear4bit` (NF4 blocks, computing in
bf16); peft then injects its LoRA/DoRA layers around them as it does for any Linear. Norms and
embeddings stay as they are. bitsandbytes quantizes a weight when it moves to the GPU, so layers
are converted one at a time and the full-precision copy of each is freed before the next.
"""

from __future__ import annotations

from typing import Any


def quantize_nf4(model: Any, device: str) -> int:
    """Replace the Linear layers of `model` by NF4 ones on `device`; returns how many were replaced."""
    import bitsandbytes as bnb
    import torch

    count = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is not torch.nn.Linear:
                continue
            q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                  compute_dtype=torch.bfloat16, quant_type="nf4", device="meta")
            q.weight = bnb.nn.Params4bit(child.weight.data.to("cpu", torch.float16), requires_grad=False,
                                         quant_type="nf4")
            if child.bias is not None:
                q.bias = torch.nn.Parameter(child.bias.data.to(torch.bfloat16), requires_grad=False)
            setattr(module, name, q.to(device))
            count += 1
    return count
