"""Loading the base model for training: pickled diffusers folders are refused with one line."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from app.training.base import BaseModelError, load_base


def test_a_diffusers_folder_of_bin_pickles_is_refused_with_one_line(tmp_path, tiny_sd_dir):
    folder = tmp_path / "pickled-sd"
    shutil.copytree(tiny_sd_dir, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(weights)), weights.with_suffix(".bin"))  # what old hub repos ship
    weights.unlink()
    with pytest.raises(BaseModelError) as err:
        load_base(folder)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("pickled-sd/unet holds only pickle weights (diffusion_pytorch_model.bin)")
    assert "safe_serialization=True" in message  # the way out, not cut off
