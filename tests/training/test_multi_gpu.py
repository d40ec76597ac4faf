"""`imagebash train-lora --gpus 2` on the CPU (accelerate's launcher, gloo): two data-parallel
processes reach the adapter of one process with the doubled batch, and resume like one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from app.training.loop import Trainer
from tests.training.conftest import small_config, write_image

REPO = Path(__file__).resolve().parents[2]
#: The runs batch differently (1 item per forward pass vs 2) and sum the gradients in another order,
#: so gradients differ in the last bits. Adam scales each element's update to about lr * g / (|g| + eps),
#: so an element whose gradient is itself float noise (|g| < 1e-9: hundreds of them in the tiny
#: UNet's self-attention keys) moves by noise of up to ~lr / 10 a step: measured 1e-3 for 1 element of
#: 28288 after 4 steps at lr 1e-2, 20 elements above 1e-5. So: the losses agree to float precision
#: (the same items, noise, timesteps and dropout in every step), 99.5 % of the elements within 1e-5,
#: and every element within lr / 5. A sharding bug (another item's noise, a lost item, a wrong
#: weight) changes the losses and moves most elements by about the learning rate.
LR = 1e-2
CLOSE, SHARE_CLOSE, BOUND = 1e-5, 0.995, LR / 5
SETTINGS = dict(learning_rate=LR, lr_scheduler="constant", caption_dropout=0.3, noise_offset=0.1,
                min_snr_gamma=5.0)


def _cli(folder, base, tmp_path, out, *more, timeout=120):
    """`imagebash train-lora ... --gpus 2 --batch-size 1` in a subprocess; (rc, stdout, stderr)."""
    cmd = [sys.executable, "-m", "app", "train-lora", str(folder), "--base", str(base), "--out", str(out),
           "--resolution", "64", "--rank", "4", "--alpha", "4", "--batch-size", "1", "--gpus", "2",
           "--device", "cpu", "--seed", "3", "--cache-dir", str(tmp_path / "cache"), "--lr", str(LR),
           "--scheduler", "constant", "--caption-dropout", "0.3", "--noise-offset", "0.1",
           "--min-snr-gamma", "5", "--trigger", "zzstyle", *more]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out_text, err_text = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:  # never leave a launcher behind
            proc.terminate()
            proc.communicate(timeout=60)
    return proc.returncode, out_text, err_text


def _assert_same_adapter(a_path: Path, b_path: Path) -> float:
    """The adapters agree as explained at CLOSE; returns the largest difference."""
    a, b = load_file(str(a_path)), load_file(str(b_path))
    assert a.keys() == b.keys() and a
    diff = torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in a])
    worst = float(diff.max())
    share = float((diff <= CLOSE).float().mean())
    assert share >= SHARE_CLOSE and worst <= BOUND, (share, worst)
    return worst


def _losses(out: Path) -> list[float]:
    state = json.loads((out.parent / "style_checkpoints" / "step_000004" / "state.json").read_text())
    return state["losses"]


def test_two_processes_reach_the_adapter_of_one_with_the_doubled_batch(tmp_path, style_folder, tiny_sd_dir):
    out = tmp_path / "two" / "style.safetensors"
    rc, stdout, stderr = _cli(style_folder, tiny_sd_dir, tmp_path, out, "--steps", "4")
    assert rc == 0, stderr
    assert stdout.split() == [str(out), str(out.with_name("style.peft.safetensors"))]
    assert "data-parallel: 2 processes on the CPU" in stderr
    assert stderr.count("step 4/4") == 1, stderr  # progress from rank 0 only
    ckpts = sorted(p.name for p in (out.parent / "style_checkpoints").iterdir())
    assert ckpts == ["step_000004"]

    one = Trainer(small_config(tmp_path / "one", style_folder, tiny_sd_dir, batch_size=2, max_steps=4,
                               **SETTINGS)).run()
    worst = _assert_same_adapter(one.checkpoint / "adapter.safetensors",
                                 out.parent / "style_checkpoints" / "step_000004" / "adapter.safetensors")
    _assert_same_adapter(one.lora, out)
    assert _losses(out) == pytest.approx(one.losses, rel=1e-6, abs=1e-7)
    print(f"max |two processes - one process| = {worst:.3g}")


@pytest.fixture
def odd_folder(tmp_path) -> Path:
    """Three images, no repeats: with a global batch of 2 every epoch ends on a batch of one, where
    rank 1 has nothing of its own."""
    root = tmp_path / "odd"
    for i in range(3):
        write_image(root / f"img{i}.png", i, caption=f"stripes, pattern {i}")
    return root


def test_two_processes_resume_and_share_uneven_batches(tmp_path, odd_folder, tiny_sd_dir):
    out = tmp_path / "two" / "style.safetensors"
    rc, _, stderr = _cli(odd_folder, tiny_sd_dir, tmp_path, out, "--steps", "2")
    assert rc == 0, stderr
    rc, _, stderr = _cli(odd_folder, tiny_sd_dir, tmp_path, out, "--steps", "4", "--resume")
    assert rc == 0, stderr
    assert "resumed from" in stderr and "step 2/4" in stderr

    one = Trainer(small_config(tmp_path / "one", odd_folder, tiny_sd_dir, batch_size=2, max_steps=4,
                               **SETTINGS)).run()
    _assert_same_adapter(one.checkpoint / "adapter.safetensors",
                         out.parent / "style_checkpoints" / "step_000004" / "adapter.safetensors")
    assert _losses(out) == pytest.approx(one.losses, rel=1e-6, abs=1e-7)
