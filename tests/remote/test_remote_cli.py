"""The command line with a remote engine: `imagebash run --engine`, `imagebash jobs`, and training
on the server with the LoRA coming back (`imagebash train-lora ... --engine`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image as PILImage
from safetensors import safe_open

from app.cli import main
from app.paths import REPO_ROOT, WORKFLOWS


def _cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_run_on_the_engine_downloads_outputs_like_a_local_run(server, tmp_path):
    token = tmp_path / "token"
    token.write_text(server.token)
    wf = str(WORKFLOWS / "blend_and_grade.json")
    remote = _cli("run", wf, "--engine", server.url, "--token-file", str(token), "--output-dir", str(tmp_path / "r"))
    assert remote.returncode == 0, remote.stderr
    assert "on " + server.url in remote.stderr and server.token not in remote.stderr + remote.stdout
    local = _cli("run", wf, "--output-dir", str(tmp_path / "l"))
    assert local.returncode == 0
    there, here = next((tmp_path / "r").glob("*.png")), next((tmp_path / "l").glob("*.png"))
    with PILImage.open(there) as a, PILImage.open(here) as b:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    listed = _cli("jobs", "--json", env={"IMAGEBASH_ENGINE": server.url, "IMAGEBASH_TOKEN": server.token})
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["status"] == "done"


def test_bad_input_on_the_engine_exits_like_a_local_run(server, tmp_path, capsys):
    token = tmp_path / "token"
    token.write_text(server.token)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "imagebash/1", "nodes": [{"id": "x", "type": "nope.nope"}]}))
    args = ["--engine", server.url, "--token-file", str(token)]
    assert main(["run", str(bad), *args]) == 2
    err = capsys.readouterr().err
    assert "unknown node type 'nope.nope'" in err and "Traceback" not in err
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token")
    assert main(["run", str(bad), "--engine", server.url, "--token-file", str(wrong)]) == 2
    assert "refused the token (401)" in capsys.readouterr().err
    assert main(["jobs", "rerun", "no-such-job", *args]) == 2
    assert "no-such-job" in capsys.readouterr().err


def test_train_lora_on_the_engine_brings_the_lora_back(server, tmp_path, tiny_sd_dir):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        PILImage.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(data / f"img{i}.png")
        (data / f"img{i}.txt").write_text("a striped square")
    # the base is a diffusers folder, which is not uploaded: the server has it in its models folder
    server_models = tmp_path / "models" / "checkpoints"
    server_models.parent.mkdir(exist_ok=True)
    import shutil

    shutil.copytree(tiny_sd_dir, server_models / "tiny-sd")
    token = tmp_path / "token"
    token.write_text(server.token)
    out = tmp_path / "loras" / "striped.safetensors"
    r = _cli("train-lora", str(data), "--base", "tiny-sd", "--out", str(out), "--steps", "2", "--rank", "4",
             "--resolution", "64", "--sample-every", "0", "--save-every", "0", "--engine", server.url,
             "--token-file", str(token), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert out.is_file() and str(out) in r.stdout
    with safe_open(str(out), framework="pt") as f:
        assert any(k.startswith("lora_unet_") for k in f.keys())
        assert f.metadata()["ss_steps"] == "2"


def test_a_stopped_training_on_the_engine_resumes_from_its_checkpoint_there(server, remote, tmp_path, tiny_sd_dir):
    """Checkpoints stay on the server (in its loras folder, by the dataset's hash), so a later job
    with resume on continues from them; the LoRA comes back to the local path asked for."""
    import shutil

    from app.engine import events
    from app.training.config import TrainConfig
    from app.training.workflow import training_graph
    from tests.server.conftest import wait_for as wait_until

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        PILImage.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(data / f"img{i}.png")
    shutil.copytree(tiny_sd_dir, tmp_path / "models" / "checkpoints" / "tiny-sd")
    out = tmp_path / "mine" / "resumed.safetensors"
    cfg = TrainConfig(data=str(data), base="tiny-sd", out=str(out), resolution=64, rank=4, alpha=4.0,
                      max_steps=400, batch_size=1, save_every=0, sample_every=0)
    client = remote()
    steps: list[int] = []
    client.subscribe(lambda e: steps.append(int(e.metric("step"))) if isinstance(e, events.NodeProgress)
                     and e.metric("phase") == "train" else None, throttle=False)
    first = client.submit(training_graph(cfg), ["train"], tmp_path / "o1")
    assert wait_until(lambda: len(steps) >= 1, 120)
    first.cancel()
    assert wait_until(lambda: first.done, 60) and first.finished.cancelled
    stopped = max(steps)
    assert 1 <= stopped < 400 and not out.exists()
    steps.clear()
    again = client.submit(training_graph(cfg.replace(max_steps=stopped + 1), resume=True), ["train"], tmp_path / "o2")
    assert wait_until(lambda: again.done, 120)
    assert not again.finished.failed and not again.finished.error, again.finished
    assert steps == [stopped + 1]  # it went on from the server's checkpoint, not from step 1
    assert out.is_file() and next(f.path for f in again.files if f.kind == "lora") == str(out)
