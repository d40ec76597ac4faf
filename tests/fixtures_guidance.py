"""Guidance fixtures shared by the guidance tests and the example workflows: a tiny SD 1.5 ControlNet."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_sd_controlnet(tmp_path_factory, tiny_sd_dir):
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(tiny_sd_dir), subfolder="unet")
    torch.manual_seed(5)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    with torch.no_grad():  # zero convs start at zero: give them weight so the net (and its image) steers
        for name, p in net.named_parameters():
            if float(p.abs().sum()) == 0.0:
                p.normal_(0, 0.3)
            elif name.startswith("controlnet_cond_embedding"):
                p.mul_(4.0)
    folder = tmp_path_factory.mktemp("cn") / "tiny-sd-canny"
    net.save_pretrained(str(folder), safe_serialization=True)
    return folder
