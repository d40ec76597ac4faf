"""Training reads its base model with the model manager's reader: an SD 2.x single file trains
with the prediction type its metadata declares (or with a logged warning stating the v-prediction
assumption), and both read every file the same way. Uses a real tiny SD 2.x checkpoint loaded
through the offline-config path (see tests/tiny_sd2.py); nothing of the reader is faked."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from app.training.base import BaseModelError, load_base
from app.training.loop import Trainer
from tests.training.conftest import small_config


@pytest.fixture(scope="session")
def tiny_sd2_files(tmp_path_factory):
    from tests.tiny_sd2 import save_sd2_checkpoint

    return save_sd2_checkpoint(tmp_path_factory.mktemp("tiny-sd2"))


@pytest.fixture
def sd2(tiny_sd2_files, monkeypatch):
    """The tiny SD 2.x files, with the shipped-config lookup reading the tiny resources tree."""
    import app.paths

    monkeypatch.setattr(app.paths, "RESOURCES", tiny_sd2_files["resources"])
    return tiny_sd2_files


def _one_loss(trainer, monkeypatch):
    """(target, noise, velocity) of one real loss evaluation of the trainer."""
    import torch.nn.functional as F

    seen = {}
    add_noise, mse = trainer.objective.noise_scheduler.add_noise, F.mse_loss

    def spy_add_noise(latents, noise, t):
        seen.update(latents=latents, noise=noise, t=t)
        return add_noise(latents, noise, t)

    def spy_mse(pred, target, **kw):
        seen["target"] = target
        return mse(pred, target, **kw)

    monkeypatch.setattr(trainer.objective.noise_scheduler, "add_noise", spy_add_noise)
    monkeypatch.setattr(F, "mse_loss", spy_mse)
    loss = trainer._loss([0], torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    velocity = trainer.objective.noise_scheduler.get_velocity(seen["latents"], seen["noise"], seen["t"])
    return seen["target"].float(), seen["noise"].float(), velocity.float()


def test_sd2_epsilon_single_file_trains_on_epsilon(tmp_path, style_folder, sd2, monkeypatch):
    logs = []
    trainer = Trainer(small_config(tmp_path, style_folder, sd2["eps"], max_steps=1), log=logs.append)
    trainer.prepare()
    try:
        assert trainer.base.family == "sd2"
        assert trainer.objective.noise_scheduler.config.prediction_type == "epsilon"
        assert trainer.prediction_type == "epsilon"
        target, noise, velocity = _one_loss(trainer, monkeypatch)
        assert torch.equal(target, noise) and not torch.allclose(target, velocity)
        assert not [line for line in logs if line.startswith("warning:")]
    finally:
        trainer.close()


def test_sd2_single_file_without_metadata_logs_the_v_prediction_assumption(tmp_path, style_folder, sd2,
                                                                           monkeypatch):
    logs = []
    trainer = Trainer(small_config(tmp_path, style_folder, sd2["plain"], max_steps=1), log=logs.append)
    trainer.prepare()
    try:
        assert trainer.prediction_type == "v_prediction"
        warnings = [line for line in logs if line.startswith("warning:")]
        assert len(warnings) == 1
        assert "sd2.safetensors: SD 2.x checkpoint assumed to be a 768 v-prediction model" in warnings[0]
        target, noise, velocity = _one_loss(trainer, monkeypatch)
        assert torch.allclose(target, velocity) and not torch.allclose(target, noise)
    finally:
        trainer.close()


@pytest.mark.parametrize("which, prediction", [("eps", "epsilon"), ("v", "v_prediction"),
                                               ("plain", "v_prediction")])
def test_model_manager_and_trainer_read_a_file_the_same_way(sd2, which, prediction):
    from app.engine import EngineSettings
    from app.engine.models import ModelManager

    entry = ModelManager(EngineSettings(device="cpu")).load(str(sd2[which]))
    base = load_base(sd2[which])
    assert entry.family == base.family == "sd2"
    assert entry.pipe.scheduler.config.prediction_type == base.pipe.scheduler.config.prediction_type == prediction
    assert entry.state.get("warnings", []) == base.warnings
    assert bool(base.warnings) == (which == "plain")


def test_an_inpainting_base_is_refused_with_one_line(tmp_path, tiny_sd_dir):
    folder = tmp_path / "tiny-inpainting"
    shutil.copytree(tiny_sd_dir, folder)
    cfg_path = folder / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["in_channels"] = 9
    cfg_path.write_text(json.dumps(cfg))
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    w = state["conv_in.weight"]
    state["conv_in.weight"] = torch.cat([w, torch.zeros(w.shape[0], 5, *w.shape[2:])], dim=1)
    save_file(state, str(weights))
    with pytest.raises(BaseModelError) as err:
        load_base(folder)
    message = str(err.value)
    assert message.startswith("tiny-inpainting is an inpainting model (9-channel U-Net)") and "\n" not in message
