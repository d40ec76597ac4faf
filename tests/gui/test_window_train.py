"""The Train LoRA dialog on a tiny random-weight SD model: captions, progress, loss, samples, stop/resume,
all through an engine client (the dialog trains as a run of the Train LoRA node)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def _dataset(folder):
    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(3):
        arr = (rng.random((72, 64, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"img{i}.png")
    (folder / "img0.txt").write_text("a red square")
    return folder


def _engine(offloads):
    """An in-process engine client whose model manager records when training moves models off."""
    from app.engine import EngineSettings
    from app.engine.client import LocalEngine
    from app.engine.models import ModelManager

    class Manager(ModelManager):
        def offload_all(self) -> None:
            offloads.append(self)
            super().offload_all()

    client = LocalEngine(settings=EngineSettings(device="cpu"))
    client.engine.services.set("models", Manager(client.settings))
    return client


def test_train_dialog_edits_captions_trains_and_shows_loss_and_samples(qtbot, tmp_path, tiny_sd_dir, gui_settings):
    from app.engine import events as ev
    from app.ui.dialogs.train_lora import TrainLoraDialog

    data = _dataset(tmp_path / "data")
    offloads, seen = [], []
    client = _engine(offloads)
    client.subscribe(seen.append, throttle=False)
    dlg = TrainLoraDialog(gui_settings, engine=client)
    qtbot.addWidget(dlg)
    dlg.show()
    dlg.data.setText(str(data))
    dlg.browser.set_folder(data)
    assert dlg.browser.list.count() == 3
    assert "1 with a caption" in dlg.browser.summary.text()
    assert not dlg.browser.list.item(0).icon().isNull()
    dlg.browser.list.setCurrentRow(1)
    dlg.browser.caption.setPlainText("a blue circle, flat")
    dlg.browser.save_caption()
    assert (data / "img1.txt").read_text().strip() == "a blue circle, flat"
    assert "2 with a caption" in dlg.browser.summary.text()

    dlg.base.setCurrentText(str(tiny_sd_dir))
    dlg.out.setText(str(tmp_path / "style.safetensors"))
    dlg.trigger.setText("zzstyle")
    dlg.resolution.setValue(64)
    dlg.rank.setValue(4)
    dlg.alpha.setValue(4)
    dlg.max_steps.setValue(2)
    dlg.sample_every.setValue(1)
    dlg.sample_steps.setValue(1)
    assert not dlg.resume_button.isEnabled()
    worker = dlg.start()
    assert worker is not None and not dlg.start_button.isEnabled()
    qtbot.waitUntil(lambda: dlg.status_kind != "running", timeout=180000)
    assert dlg.status_kind == "done", dlg.status.text() + dlg.log_view.toPlainText()[-2000:]
    assert (tmp_path / "style.safetensors").is_file()
    assert dlg.loss_plot.steps == [1, 2] and all(np.isfinite(dlg.loss_plot.losses))
    assert dlg.progress.value() == 1000
    assert dlg.samples.count() == 2  # one sample prompt at steps 1 and 2
    assert not dlg.samples.item(0).icon().isNull()
    # the loss plot paints a curve (not just the empty-state text)
    img = dlg.loss_plot.grab().toImage()
    colours = {img.pixel(x, y) for x in range(0, img.width(), 3) for y in range(0, img.height(), 3)}
    assert len(colours) > 10
    # it trained as an engine run of the Train LoRA node, which moved the loaded models off first
    started = [e for e in seen if isinstance(e, ev.NodeStarted)]
    assert [e.title for e in started] == ["Train LoRA"] and len(offloads) == 1
    assert [e.file.kind for e in seen if isinstance(e, ev.NodeFile)].count("sample") == 2
    client.shutdown()


def test_train_dialog_stop_and_resume(qtbot, tmp_path, tiny_sd_dir, gui_settings):
    from app.ui.dialogs.train_lora import TrainLoraDialog

    data = _dataset(tmp_path / "data")
    client = _engine([])
    dlg = TrainLoraDialog(gui_settings, engine=client)
    qtbot.addWidget(dlg)
    dlg.data.setText(str(data))
    dlg.base.setCurrentText(str(tiny_sd_dir))
    dlg.out.setText(str(tmp_path / "long.safetensors"))
    dlg.resolution.setValue(64)
    dlg.rank.setValue(4)
    dlg.max_steps.setValue(400)
    dlg.start()
    qtbot.waitUntil(lambda: len(dlg.loss_plot.steps) >= 1, timeout=120000)
    dlg.stop()
    qtbot.waitUntil(lambda: dlg.status_kind != "running", timeout=60000)
    assert dlg.status_kind == "stopped", dlg.status.text()
    stopped_at = dlg.result.steps
    assert 1 <= stopped_at < 400
    assert dlg.resume_button.isEnabled()
    dlg.max_steps.setValue(stopped_at + 1)
    dlg.start(resume=True)
    qtbot.waitUntil(lambda: dlg.status_kind != "running", timeout=120000)
    assert dlg.status_kind == "done", dlg.status.text() + dlg.log_view.toPlainText()[-2000:]
    assert dlg.loss_plot.steps == [stopped_at + 1]
    assert (tmp_path / "long.safetensors").is_file()
    client.shutdown()


def test_train_dialog_trains_flux_with_a_flux_preset_and_its_flow_settings(qtbot, tmp_path, tiny_flux_dev_dir,
                                                                             gui_settings):
    """Choosing the Flux preset fills the flow-matching fields (fp8 base, sigmoid timesteps, shift 3);
    editing them reaches the run; the file is written with sd-scripts' Flux keys."""
    from safetensors import safe_open

    from app.ui.dialogs.train_lora import TrainLoraDialog

    data = _dataset(tmp_path / "data")
    client = _engine([])
    dlg = TrainLoraDialog(gui_settings, engine=client)
    qtbot.addWidget(dlg)
    dlg.preset.setCurrentText("style-flux-24gb")
    assert (dlg.base_precision.currentText(), dlg.timestep_sampling.currentText(), dlg.shift.value()) == \
        ("fp8", "sigmoid", 3.0)
    dlg.data.setText(str(data))
    dlg.base.setCurrentText(str(tiny_flux_dev_dir))
    out = tmp_path / "flux-style.safetensors"
    dlg.out.setText(str(out))
    dlg.resolution.setValue(64)
    dlg.rank.setValue(4)
    dlg.alpha.setValue(4)
    dlg.max_steps.setValue(2)
    dlg.sample_every.setValue(0)
    dlg.blocks.setText("double:0")
    cfg = dlg.config()
    assert (cfg.base_precision, cfg.blocks, cfg.family, cfg.min_image_size) == ("fp8", "double:0", "flux", 64)
    assert dlg.start() is not None
    qtbot.waitUntil(lambda: dlg.status_kind != "running", timeout=180000)
    assert dlg.status_kind == "done", dlg.status.text() + dlg.log_view.toPlainText()[-2000:]
    with safe_open(str(out), "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("lora_unet_double_blocks_0_") for k in keys)
    client.shutdown()
