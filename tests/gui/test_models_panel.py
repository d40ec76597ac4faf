"""The Models panel: the library of a real models folder, its filters, dragging a model onto the canvas,
and the download dialog (with `download()` replaced by one that writes a real file: the download
itself is tested against fake servers in tests/library)."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QImage
from safetensors.torch import save_file

from tests.gui.canvas_support import drop

LORA_KEY = "lora_unet_down_blocks_0_attentions_0_proj_in"


def write_checkpoint(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4),
               "first_stage_model.decoder.conv_in.weight": torch.zeros(2, 2)}, str(path))
    return path


def write_lora(path, trigger="inkwash", tags=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"ss_tag_frequency": json.dumps({"10_ink": tags or {"ink": 12, "brush strokes": 5}}),
            "modelspec.trigger_phrase": trigger}
    save_file({f"{LORA_KEY}.lora_down.weight": torch.zeros(2, 8), f"{LORA_KEY}.lora_up.weight": torch.zeros(8, 2),
               f"{LORA_KEY}.alpha": torch.tensor(2.0)}, str(path), metadata=meta)
    return path


@pytest.fixture
def models_dir(tmp_path, gui_settings):
    root = tmp_path / "models"
    write_checkpoint(root / "checkpoints" / "tiny_base.safetensors")
    lora = write_lora(root / "loras" / "ink_style.safetensors")
    preview = QImage(16, 16, QImage.Format.Format_RGB32)
    preview.fill(Qt.GlobalColor.red)
    assert preview.save(str(lora.with_name("ink_style.preview.png")))
    gui_settings.models_dir = root
    return root


def open_models(win, qtbot):
    panel = win.models
    with qtbot.waitSignal(panel.scanned, timeout=10000):
        win.docks["Models"].show()
        win.docks["Models"].raise_()
    return panel


def names(models):
    return sorted(m.path.name for m in models)


def test_lists_filters_and_describes_the_models_folder(make_window, qtbot, models_dir):
    win = make_window()
    panel = open_models(win, qtbot)
    assert names(panel.visible_models()) == ["ink_style.safetensors", "tiny_base.safetensors"]
    lora_row = panel.item_of(models_dir / "loras" / "ink_style.safetensors")
    assert lora_row.text(1) == "lora" and lora_row.text(4) == "inkwash"
    assert not lora_row.icon(0).isNull()  # the preview thumbnail
    assert panel.item_of(models_dir / "checkpoints" / "tiny_base.safetensors").text(1) == "checkpoint"

    qtbot.keyClicks(panel.search, "brush")  # a tag of the LoRA's training set
    assert names(panel.visible_models()) == ["ink_style.safetensors"]
    assert lora_row.isHidden() is False
    panel.search.clear()
    assert len(panel.visible_models()) == 2
    panel.kind.setCurrentIndex(panel.kind.findData("checkpoint"))
    assert names(panel.visible_models()) == ["tiny_base.safetensors"]
    panel.kind.setCurrentIndex(0)

    rect = panel.list.visualItemRect(lora_row)
    qtbot.mouseClick(panel.list.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(rect.left() + 12, rect.center().y()))
    assert panel.current_model().path.name == "ink_style.safetensors"
    from app.library.scan import sha256

    digest = sha256(models_dir / "loras" / "ink_style.safetensors")
    qtbot.waitUntil(lambda: digest in panel.detail.text() and "Used in" in panel.detail.text(), timeout=5000)
    assert "brush strokes (5)" in panel.detail.text() and "inkwash" in panel.detail.text()

    # a new file appears after Refresh
    write_lora(models_dir / "loras" / "second.safetensors", trigger="zzz")
    with qtbot.waitSignal(panel.scanned, timeout=10000):
        qtbot.mouseClick(panel.refresh_button, Qt.MouseButton.LeftButton)
    assert "second.safetensors" in names(panel.visible_models())


@pytest.mark.parametrize(("file", "type_id", "param"), [
    ("loras/ink_style.safetensors", "imagebash.diffusion.lora", "file"),
    ("checkpoints/tiny_base.safetensors", "imagebash.diffusion.load_model", "checkpoint"),
])
def test_dragging_a_model_onto_the_canvas_adds_its_loader(make_window, qtbot, models_dir, file, type_id, param):
    win = make_window()
    panel = open_models(win, qtbot)
    view = win.current_view()
    doc = view.document
    before = set(doc.graph.nodes)
    row = panel.item_of(models_dir / file)
    mime = panel.list.mimeData([row])  # what the list's drag carries (QTest cannot drive a QDrag)
    at = view.mapToScene(view.viewport().rect().center())
    assert drop(view, mime, QPointF(at))
    added = set(doc.graph.nodes) - before
    assert len(added) == 1
    node = doc.graph.nodes[added.pop()]
    assert node.type == type_id
    assert node.params[param] == file.split("/", 1)[1]  # the name a workflow keeps portable
    assert abs(node.position[0] - at.x()) < 25 and abs(node.position[1] - at.y()) < 25
    assert view.selected_node_ids() == [node.id]
    win.act_undo.trigger()
    assert set(doc.graph.nodes) == before


def test_download_dialog_shows_progress_cancels_and_lists_the_new_file(make_window, qtbot, models_dir, monkeypatch):
    from app.library import download as D

    release = threading.Event()
    calls = []

    def fake_download(source, kind=None, *, dest_root=None, expected_sha256=None, token=None, progress=None,
                      cancel=None):
        calls.append((source, kind))
        if source == "slow/never":
            while not cancel.wait(0.01):
                progress(D.DownloadProgress(10, 100, 1e6, 90.0, "never.safetensors"))
            raise D.DownloadError("cancelled; run it again to resume")
        target = models_dir / "loras" / "fresh_lora.safetensors"
        progress(D.DownloadProgress(50_000_000, 100_000_000, 12_500_000, 4.0, target.name))
        release.wait(10)
        write_lora(target, trigger="freshword")
        progress(D.DownloadProgress(100_000_000, 100_000_000, 12_500_000, 0.0, target.name))
        return target

    monkeypatch.setattr(D, "download", fake_download)
    win = make_window()
    panel = open_models(win, qtbot)
    qtbot.mouseClick(panel.download_button, Qt.MouseButton.LeftButton)
    dlg = panel.dialog
    assert dlg is not None and dlg.isVisible()
    # the starters: one button each, with licence and size, gated ones marked
    sd15 = dlg.starter_buttons["sd15"]
    assert "CreativeML OpenRAIL-M" in sd15.text() and "4.3 GB" in sd15.text() and "gated" not in sd15.text()
    assert "gated" in dlg.starter_buttons["sd35-medium"].text()

    qtbot.keyClicks(dlg.source, "someone/fresh-lora/fresh_lora.safetensors")
    qtbot.mouseClick(dlg.go, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dlg.progress.value() == 50, timeout=5000)
    assert "12.5 MB/s" in dlg.rate.text() and "ETA 4s" in dlg.rate.text()
    assert dlg.cancel.isEnabled() and not dlg.go.isEnabled()
    with qtbot.waitSignal(panel.scanned, timeout=10000):
        release.set()
    assert "fresh_lora.safetensors" in names(panel.visible_models())
    assert dlg.progress.value() == 100 and "fresh_lora.safetensors" in dlg.done_label.text()
    assert calls[0] == ("someone/fresh-lora/fresh_lora.safetensors", None)

    # Cancel stops a download; the error is one line in the dialog
    dlg.source.clear()
    qtbot.keyClicks(dlg.source, "slow/never")
    qtbot.keyClick(dlg.source, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: dlg.progress.value() == 10, timeout=5000)
    qtbot.mouseClick(dlg.cancel, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dlg.error.isVisible(), timeout=5000)
    assert dlg.error.text() == "cancelled; run it again to resume"
    assert not dlg.busy and dlg.go.isEnabled()

    # a starter is one click
    qtbot.mouseClick(sd15, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(calls) == 3, timeout=5000)
    assert calls[2] == ("hf:stable-diffusion-v1-5/stable-diffusion-v1-5/v1-5-pruned-emaonly.safetensors",
                        "checkpoint")
    qtbot.waitUntil(lambda: not dlg.busy, timeout=10000)


def test_an_existing_comfyui_folder_set_in_settings_is_listed(make_window, qtbot, models_dir, tmp_path, gui_settings):
    from app import paths
    from app.ui.dialogs.settings import SettingsDialog

    comfy = tmp_path / "ComfyUI"
    write_lora(comfy / "models" / "loras" / "comfy_only.safetensors", trigger="comfyword")
    win = make_window()
    panel = open_models(win, qtbot)
    assert "comfy_only.safetensors" not in names(panel.visible_models())
    dlg = SettingsDialog(gui_settings, win)
    qtbot.keyClicks(dlg.extra_models, str(comfy))  # the install's folder: its models/ is found
    with qtbot.waitSignal(panel.scanned, timeout=10000):
        dlg.accept()
        win.apply_settings()
    assert paths.extra_model_roots() == [comfy / "models"]
    assert "comfy_only.safetensors" in names(panel.visible_models())
    assert SettingsDialog(gui_settings, win).extra_models.text() == str(comfy)
