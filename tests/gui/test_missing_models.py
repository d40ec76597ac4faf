"""Opening a workflow whose model files are absent: one dialog lists them, each can be fetched or relinked."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QLabel

from app import paths
from tests.gui.conftest import activate
from tests.gui.test_models_panel import write_checkpoint, write_lora

WORKFLOW = paths.WORKFLOWS / "txt2img_two_loras.json"


def dialog_of(win, qtbot):
    qtbot.waitUntil(lambda: win.missing_dialog is not None and win.missing_dialog.isVisible(), timeout=3000)
    return win.missing_dialog


def test_missing_models_are_listed_once_and_relinked_with_undo(make_window, qtbot, tmp_path, gui_settings,
                                                               monkeypatch):
    models = tmp_path / "models"
    gui_settings.models_dir = models
    mine = write_checkpoint(tmp_path / "elsewhere" / "my_sd15.safetensors")
    win = make_window()
    win.open_path(WORKFLOW)  # what File > Open, a drop and Open Recent call
    doc = win.current_document()
    dlg = dialog_of(win, qtbot)
    assert [(r.missing.node_id, r.missing.port, r.missing.name) for r in dlg.rows] == [
        ("model", "checkpoint", "v1-5-pruned-emaonly.safetensors"),
        ("style", "file", "watercolor_style.safetensors"),
        ("detail", "file", "ink_detail.safetensors")]
    texts = {w.text() for w in dlg.findChildren(QLabel)}
    assert {"SD 1.5 checkpoint", "Style LoRA", "Detail LoRA", "checkpoint", "file"} <= texts
    ckpt, style, _detail = dlg.rows
    # the checkpoint is a starter: one click to download it; the LoRAs have no known source
    assert ckpt.download.isVisibleTo(dlg) and "Stable Diffusion 1.5" in ckpt.status.text()
    assert not style.download.isVisibleTo(dlg) and style.choose.isVisibleTo(dlg)
    assert len([w for w in win.findChildren(type(dlg)) if w.isVisible()]) == 1  # ONE dialog

    asked = []

    def pick(parent, caption, start, filters):
        asked.append((caption, start))
        return str(mine), filters.split(";;")[0]

    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(pick))
    qtbot.mouseClick(ckpt.choose, Qt.MouseButton.LeftButton)
    assert asked and "v1-5-pruned-emaonly.safetensors" in asked[0][0]
    assert doc.graph.nodes["model"].params["checkpoint"] == str(mine.resolve())
    assert ckpt.done and not ckpt.choose.isEnabled() and "my_sd15" in ckpt.status.text()
    assert doc.is_dirty() and win.tabs.tabText(win.tabs.currentIndex()).endswith("*")
    # a LoRA picked where a checkpoint belongs is refused with one line, and nothing changes
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a: (str(mine), "")))
    qtbot.mouseClick(style.choose, Qt.MouseButton.LeftButton)
    assert "not a LoRA" in style.status.text() and not style.done
    assert doc.graph.nodes["style"].params["file"] == "watercolor_style.safetensors"

    activate(qtbot, win)
    qtbot.keyClick(win.current_view(), Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert doc.graph.nodes["model"].params["checkpoint"] == "v1-5-pruned-emaonly.safetensors"
    assert not doc.is_dirty()

    dlg.close()  # closing keeps the graph as it is
    assert doc.graph.nodes["style"].params["file"] == "watercolor_style.safetensors"


def test_a_starter_downloads_into_the_models_folder_and_relinks(make_window, qtbot, tmp_path, gui_settings,
                                                                monkeypatch):
    from app.library import download as D

    models = tmp_path / "models"
    gui_settings.models_dir = models
    got = []

    def fake_download(source, kind=None, *, dest_root=None, expected_sha256=None, token=None, progress=None,
                      cancel=None):
        got.append((source, kind))
        target = models / "checkpoints" / "v1-5-pruned-emaonly.safetensors"
        progress(D.DownloadProgress(1, 2, 1e6, 1.0, target.name))
        return write_checkpoint(target)

    monkeypatch.setattr(D, "download", fake_download)
    win = make_window()
    win.open_example(WORKFLOW)  # the welcome strip's links check too
    doc = win.current_document()
    dlg = dialog_of(win, qtbot)
    ckpt = dlg.rows[0]
    qtbot.mouseClick(ckpt.download, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: ckpt.done, timeout=5000)
    assert got == [("hf:stable-diffusion-v1-5/stable-diffusion-v1-5/v1-5-pruned-emaonly.safetensors", "checkpoint")]
    # in the models folder: the node keeps the portable name
    assert doc.graph.nodes["model"].params["checkpoint"] == "v1-5-pruned-emaonly.safetensors"
    assert [r.missing.name for r in dlg.rows if not r.done] == ["watercolor_style.safetensors",
                                                               "ink_detail.safetensors"]


def test_a_workflow_with_every_model_present_opens_without_a_dialog(make_window, qtbot, tmp_path, gui_settings):
    models = tmp_path / "models"
    gui_settings.models_dir = models
    write_checkpoint(models / "checkpoints" / "v1-5-pruned-emaonly.safetensors")
    write_lora(models / "loras" / "watercolor_style.safetensors")
    write_lora(models / "loras" / "ink_detail.safetensors")
    copy = tmp_path / "two_loras.json"
    copy.write_text(json.dumps(json.loads(WORKFLOW.read_text())))
    win = make_window(workflow=copy)
    qtbot.wait(20)
    assert win.missing_dialog is None
    assert set(win.current_document().graph.nodes) >= {"model", "style", "detail"}


def test_a_png_made_here_finds_its_missing_lora_on_civitai_by_the_hash_it_records(
        make_window, qtbot, tmp_path, gui_settings, monkeypatch, tiny_sd_dir, tiny_lora_kohya, tiny_lora_peft):
    """Our PNGs record each model's AutoV2 hash (sha256[:10]); a LoRA that is gone is looked up on
    (a fake, real-HTTP) Civitai by it, and the row then offers its download."""
    import hashlib
    import shutil

    from app.cli import apply_sets
    from app.engine import Engine, EngineSettings
    from app.graph.io import load
    from nodes.registry import default_registry
    from tests.library.fake_servers import FakeCivitai, serve

    gui_settings.models_dir = tmp_path / "models"
    style, detail = tmp_path / "watercolor_style.safetensors", tmp_path / "ink_detail.safetensors"
    shutil.copyfile(tiny_lora_kohya, style)
    shutil.copyfile(tiny_lora_peft, detail)
    graph = load(WORKFLOW)
    apply_sets(graph, default_registry(), [f"model.checkpoint={tiny_sd_dir}", f"style.file={style}",
                                           f"detail.file={detail}", "gen.width=64", "gen.height=64", "gen.steps=1",
                                           "gen.batch_size=1"])
    engine = Engine(default_registry(), EngineSettings(device="cpu"))
    try:
        assert engine.run(graph, output_dir=tmp_path / "out").ok
    finally:
        engine.shutdown()
    (png,) = (tmp_path / "out").rglob("*.png")
    data = style.read_bytes()
    style.unlink()  # the image's LoRA is gone from this machine
    with serve(FakeCivitai()) as civitai:
        monkeypatch.setenv("IMAGEBASH_CIVITAI_API", civitai.base)
        civitai.add_version(777, 55, "watercolor_style.safetensors", data)
        win = make_window()
        win.open_path(png)
        dlg = dialog_of(win, qtbot)
        (row,) = dlg.rows
        assert row.missing.name == str(style) and row.missing.short_hash == hashlib.sha256(data).hexdigest()[:10]
        assert row.lookup.isVisibleTo(dlg) and not row.download.isVisibleTo(dlg)
        qtbot.mouseClick(row.lookup, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: row.source == "civitai:777", timeout=5000)
        assert row.download.isVisibleTo(dlg) and not row.lookup.isVisibleTo(dlg)
        assert any("by-hash/" + hashlib.sha256(data).hexdigest()[:10] in r.path for r in civitai.requests)
