"""Stop and resume: a stop saves a checkpoint first, and resuming reaches the weights of a run
that never stopped; a checkpoint from other settings is refused with the setting named."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from safetensors.torch import load_file

from app.training import checkpoint
from app.training.checkpoint import CheckpointError
from app.training.loop import Trainer, TrainingStopped
from tests.training.conftest import small_config

EXTRA = dict(max_steps=6, grad_accum=2, caption_dropout=0.3, noise_offset=0.1, min_snr_gamma=5.0,
             lr_scheduler="cosine", warmup_steps=2, learning_rate=5e-3, network="dora")


def test_stop_then_resume_reaches_the_uninterrupted_weights(tmp_path, style_folder, tiny_sd_dir):
    whole = Trainer(small_config(tmp_path / "a", style_folder, tiny_sd_dir, **EXTRA)).run()

    stop = threading.Event()

    def progress(p):
        if p.phase == "train" and p.step == 3:
            stop.set()

    cfg = small_config(tmp_path / "b", style_folder, tiny_sd_dir, **EXTRA)
    with pytest.raises(TrainingStopped, match="stopped at step 3/6") as info:
        Trainer(cfg, progress=progress, stop=stop).run()
    saved = info.value.result.checkpoint
    assert saved.name == "step_000003"
    for name in ("adapter.safetensors", "optimizer.pt", "scheduler.pt", "rng.safetensors", "state.json",
                 "lora.safetensors"):
        assert (saved / name).is_file(), name
    assert json.loads((saved / "state.json").read_text())["step"] == 3
    torch.load(saved / "optimizer.pt", weights_only=True)  # plain tensors and numbers: safe to load

    resumed = Trainer(cfg).run(resume=True)
    assert resumed.steps == 6
    a = load_file(str(whole.checkpoint / "adapter.safetensors"))
    b = load_file(str(resumed.checkpoint / "adapter.safetensors"))
    assert a.keys() == b.keys() and any("lora_magnitude_vector" in k for k in a)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=1e-5)
    assert resumed.losses == pytest.approx(whole.losses, abs=1e-6)
    ka, kb = load_file(str(whole.lora)), load_file(str(resumed.lora))
    assert all(torch.allclose(ka[k], kb[k], atol=1e-6) for k in ka)


def test_resume_refuses_other_settings_and_missing_checkpoints(tmp_path, style_folder, tiny_sd_dir):
    cfg = small_config(tmp_path, style_folder, tiny_sd_dir, max_steps=2)
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        Trainer(cfg).run(resume=True)
    Trainer(cfg).run()
    with pytest.raises(CheckpointError, match=r"trained with rank=4, this run has rank=8"):
        Trainer(cfg.replace(rank=8, max_steps=4)).run(resume=True)


def test_checkpoints_every_n_steps_keep_the_newest_three(tmp_path, style_folder, tiny_sd_dir):
    cfg = small_config(tmp_path, style_folder, tiny_sd_dir, max_steps=10, save_every=2)
    result = Trainer(cfg).run()
    names = sorted(d.name for d in result.checkpoint.parent.iterdir() if d.name.startswith("step_"))
    assert names == ["step_000006", "step_000008", "step_000010"]
    assert checkpoint.latest(result.checkpoint.parent).step == 10
    assert not list(result.checkpoint.parent.glob(".tmp_*"))
