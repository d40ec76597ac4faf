"""`imagebash train-lora`: trains from the command line, one-line errors with exit 2, Ctrl-C saves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors import safe_open

from app.cli import main
from app.training.cli import build_config

REPO = Path(__file__).resolve().parents[2]


def _args(folder, base, out, tmp_path, *more):
    return ["train-lora", str(folder), "--base", str(base), "--out", str(out), "--resolution", "64", "--rank", "4",
            "--batch-size", "2", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", *more]


def test_train_lora_command_writes_both_files(tmp_path, style_folder, tiny_sd_dir, capsys):
    out = tmp_path / "lora" / "mine.safetensors"
    rc = main(_args(style_folder, tiny_sd_dir, out, tmp_path, "--steps", "3", "--trigger", "zzstyle", "-q",
                    "--lr", "1e-3", "--alpha", "2"))
    assert rc == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out), str(out.with_name("mine.peft.safetensors"))]
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["ss_steps"] == "3" and meta["ss_learning_rate"] == "0.001" and meta["ss_network_alpha"] == "2"


@pytest.mark.parametrize(("change", "message"), [
    ({"folder": "missing"}, "training folder not found"),
    ({"base": "missing.safetensors"}, "model file not found"),
    ({"base": "model.ckpt"}, "model.ckpt"),
    ({"more": ["--config", "bad.toml"]}, "bad.toml: unknown setting 'rnak'"),
    ({"more": ["--preset", "nope"]}, "unknown preset 'nope'"),
    ({"more": ["--rank", "0"]}, "rank must be at least 1"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, style_folder, tiny_sd_dir, capsys, change, message):
    (tmp_path / "bad.toml").write_text("rnak = 8\n")
    (tmp_path / "model.ckpt").write_bytes(b"pickle")
    folder = tmp_path / change["folder"] if "folder" in change else style_folder
    base = tmp_path / change["base"] if "base" in change else tiny_sd_dir
    more = [str(tmp_path / m) if m.endswith(".toml") else m for m in change.get("more", [])]
    rc = main(_args(folder, base, tmp_path / "o.safetensors", tmp_path, "--steps", "1", *more))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    errors = [line for line in err if "error" in line]
    assert len(errors) == 1 and err[-1].startswith("imagebash: error:") and message in err[-1], err


def test_precedence_preset_then_config_then_options(tmp_path):
    import argparse

    (tmp_path / "c.toml").write_text("rank = 32\nlearning_rate = 3e-4\n")
    ns = argparse.Namespace(folder=Path("d"), base="b", preset="style-sdxl", config=tmp_path / "c.toml", rank=8)
    cfg = build_config(ns)
    assert (cfg.resolution, cfg.rank, cfg.learning_rate) == (1024, 8, 3e-4)


def test_help_does_not_import_torch():
    code = "import sys, app.cli as c; c._parser(); print('torch' in sys.modules, 'diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tmp_path, style_folder, tiny_sd_dir):
    out = tmp_path / "run.safetensors"
    cmd = [sys.executable, "-m", "app", *_args(style_folder, tiny_sd_dir, out, tmp_path, "--steps", "400")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("step "):
            break
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(lines) + rest
    assert "checkpoint saved in" in rest and "--resume" in rest
    ck = sorted((tmp_path / "run_checkpoints").glob("step_*"))
    assert len(ck) == 1 and (ck[0] / "lora.safetensors").is_file()
    assert not out.exists()
    step = int(ck[0].name[5:])
    assert 0 < step < 400
    rc = main(_args(style_folder, tiny_sd_dir, out, tmp_path, "--steps", str(step + 2), "--resume", "-q"))
    assert rc == 0 and out.is_file()
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata()["ss_steps"] == str(step + 2)
