"""Inspector, preview, settings and export, driven through their widgets."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QAbstractSpinBox, QApplication, QCheckBox

from app.graph.model import Graph, NodeInstance
from app.ui.document import WorkflowDocument
from tests.gui.conftest import wait_job


def _spin(widget):
    spins = widget.findChildren(QAbstractSpinBox)
    return spins[0] if spins else widget


def test_inspector_edits_the_graph_and_undo_reverts(make_window, qtbot):
    win = make_window()
    view = win.current_view()
    doc = view.document
    view.select_nodes(["blend"])
    assert win.inspector.node_id == "blend"
    spec = doc.registry.get("imagebash.image.blend")
    doc_label = win.inspector.widget().findChild(type(win.inspector.error), "nodeDoc")
    assert spec.description.split("\n")[0][:30] in doc_label.text()
    assert set(win.inspector.editors) >= {"mode", "opacity"}
    spin = _spin(win.inspector.editors["opacity"])
    spin.setFocus()
    spin.selectAll()
    qtbot.keyClicks(spin, "0.65")
    qtbot.keyClick(spin, Qt.Key.Key_Return)
    assert doc.graph.nodes["blend"].params["opacity"] == pytest.approx(0.65)
    assert doc.undo_stack.count() == 1
    win.act_undo.trigger()
    assert doc.graph.nodes["blend"].params["opacity"] == pytest.approx(0.4)
    # the inspector follows the model after the undo
    assert _spin(win.inspector.editors["opacity"]).value() == pytest.approx(0.4)
    # a bool parameter through its checkbox
    view.select_nodes(["save"])
    box = win.inspector.editors["embed_workflow"]
    box = box if isinstance(box, QCheckBox) else box.findChild(QCheckBox)
    box.click()
    assert doc.graph.nodes["save"].params["embed_workflow"] is False


def test_preview_zoom_fit_and_before_after(make_window, qtbot):
    win = make_window()
    wait_job(qtbot, win, win.run_current())
    pv = win.preview
    assert pv.show_output("sky")
    qtbot.waitUntil(lambda: pv.view.image is not None)
    pv.view.fit_to_window()
    fit_zoom = pv.view.zoom
    center = QPointF(pv.view.width() / 2, pv.view.height() / 2)
    wheel = QWheelEvent(center, pv.view.mapToGlobal(center), QPoint(0, 0), QPoint(0, 240),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(pv.view, wheel)
    assert pv.view.zoom == pytest.approx(fit_zoom * 1.25 ** 2)
    assert pv.zoom_label.text() == f"{fit_zoom * 1.25 ** 2 * 100:.0f}%"
    pv.view.set_zoom(fit_zoom * 4, center)
    assert pv.view.zoom == pytest.approx(fit_zoom * 4)
    qtbot.mouseDClick(pv.view, Qt.MouseButton.LeftButton, pos=center.toPoint())
    assert pv.view.zoom == pytest.approx(fit_zoom)

    pv.show_compare("sky.image", "grade.image")
    # both fetches land: until the "after" frame arrives the view still holds the sky frame
    qtbot.waitUntil(lambda: pv.view.before is not None and pv.view.image != pv.view.before)
    r = pv.view.image_rect()
    y = int(r.center().y())
    x_left, x_right = int(r.left() + r.width() * 0.25), int(r.left() + r.width() * 0.75)

    def px(x):
        return pv.view.grab().toImage().pixelColor(x, y)

    left_before, right_before = px(x_left), px(x_right)
    # drag the split line to the right edge: the right side now shows "before" (sky) too
    start = QPoint(int(pv.view.split_x()), y)
    qtbot.mousePress(pv.view, Qt.MouseButton.LeftButton, pos=start)
    qtbot.mouseMove(pv.view, QPoint(int(r.right()) + 5, y))
    qtbot.mouseRelease(pv.view, Qt.MouseButton.LeftButton, pos=QPoint(int(r.right()) + 5, y))
    assert pv.view.split == pytest.approx(1.0)
    assert px(x_left) == left_before
    assert px(x_right) != right_before


def test_preview_scrubs_video_frames(make_window, qtbot, test_registry):
    win = make_window(registry=test_registry, open_default=False)
    g = Graph()
    g.add_node(NodeInstance("clip", "test.gui.frames", {"count": 6}))
    view = win.add_document(WorkflowDocument(g, test_registry))
    job = wait_job(qtbot, win, win.run_current())
    assert job.status == "done"
    pv = win.preview
    assert pv.show_output("clip")
    assert pv.frame.isVisibleTo(pv) and pv.frame.maximum() == 5

    def grey():
        img = pv.view.image
        return None if img is None else img.pixelColor(0, 0).red()

    qtbot.waitUntil(lambda: grey() == 0)
    pv.frame.setValue(3)
    qtbot.waitUntil(lambda: grey() == round(3 / 6 * 255))
    assert pv.frame_label.text() == "4/6"
    assert view is win.current_view()

    # exporting the clip as a PNG sequence writes (and the queue lists) one file per frame
    from app.ui.dialogs.export import ExportDialog

    dlg = ExportDialog(win, view.document, preselect="clip")
    dlg.format.setCurrentIndex([dlg.format.itemText(i) for i in range(dlg.format.count())].index("PNG image sequence"))
    dlg.prefix.setText("frames/f")
    job = wait_job(qtbot, win, dlg.start_export())
    assert job.status == "done", job.message or job.errors
    assert len(job.files) == 6 and len({p.name for p in job.files}) == 6
    assert win.queue.files_of(job.number) == [str(p) for p in job.files]


def test_settings_dialog_keeps_the_token_in_the_keyring_only(make_window, memory_keyring, gui_settings, tmp_path,
                                                              monkeypatch):
    from app import paths, secrets
    from app.ui.dialogs.settings import SettingsDialog
    from app.ui.settings import DEVICE, MEMORY_MODE, VAE_TILING

    win = make_window()
    dlg = SettingsDialog(gui_settings, win)
    token = "r8_testtokenABCDEFGH12345678"
    dlg.token.setText(token)
    dlg.combos[DEVICE.key].setCurrentText("cpu")
    dlg.combos[VAE_TILING.key].setCurrentText("on")
    dlg.cpu_offload.setChecked(True)
    dlg.combos[MEMORY_MODE.key].setCurrentText("fp8")
    dlg.compile_denoiser.setChecked(True)
    dlg.cache_budget.setValue(2.5)
    dlg.models_dir.setText(str(tmp_path / "my models"))
    dlg.accept()
    assert dlg.result() == dlg.DialogCode.Accepted
    win.apply_settings()
    assert secrets.get_token("replicate") == token
    assert memory_keyring.store[("imagebash", "replicate")] == token
    assert dlg.token.text() == ""
    es = gui_settings.engine_settings()
    assert (es.device, es.vae_tiling, es.cpu_offload) == ("cpu", "on", True)
    assert (es.memory_mode, es.compile_denoiser) == ("fp8", True)
    assert es.cache_budget_bytes == int(2.5 * (1 << 30))
    assert win.engine.settings.device == "cpu"
    # the models folder reaches the model lists of the diffusion nodes
    from nodes.diffusion.catalog import models_dirs

    monkeypatch.delenv("IMAGEBASH_MODELS", raising=False)
    assert models_dirs() == [tmp_path / "my models"]
    # no file under the config or data folders holds the token
    for root in (paths.config_dir(), paths.data_dir()):
        for f in root.rglob("*"):
            if f.is_file():
                assert token not in f.read_bytes().decode("utf-8", "replace"), f
    # a reopened dialog says a token is stored, without showing it
    again = SettingsDialog(gui_settings, win)
    assert again.token.text() == "" and "keyring" in again.token_state.text()
    again._forget_token()
    assert secrets.get_token("replicate") is None
    # the Hugging Face token for gated downloads goes the same way, and is what downloads use
    from app.library.sources import hf_token

    again.accounts["huggingface"].edit.setText("hf_testtokenABCDEFGH12345678")
    again.accept()
    assert memory_keyring.store[("imagebash", "huggingface")] == "hf_testtokenABCDEFGH12345678"
    assert hf_token() == "hf_testtokenABCDEFGH12345678"
    assert "keyring" in SettingsDialog(gui_settings, win).accounts["huggingface"].state.text()


def test_a_token_saved_in_settings_is_used_at_once(make_window, memory_keyring, gui_settings, request,
                                                   monkeypatch):
    from app.ui.dialogs.settings import SettingsDialog
    from nodes.replicate import schema
    from nodes.replicate.client import ReplicateNodeError
    from tests.replicate.fake_server import TOKEN, use_fake_replicate

    use_fake_replicate(request)
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    with pytest.raises(ReplicateNodeError, match="no Replicate API token"):
        schema.load_schema("fake/txt2img")  # the failure is remembered for a while
    dlg = SettingsDialog(gui_settings, make_window())
    dlg.token.setText(TOKEN)
    assert dlg.apply()
    # the model's inputs load now, not when the remembered failure runs out
    assert "prompt" in schema.load_schema("fake/txt2img")["properties"]


def test_settings_dialog_reports_a_missing_keyring(make_window, gui_settings):
    import keyring
    from keyring.backends import fail

    from app.ui.dialogs.settings import SettingsDialog

    old = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        dlg = SettingsDialog(gui_settings, make_window())
        dlg.token.setText("r8_abcdefghijklmnop")
        assert not dlg.apply()
        assert "keyring" in dlg.error.text() and dlg.error.isVisibleTo(dlg)
    finally:
        keyring.set_keyring(old)


def test_export_writes_a_jpeg_sequence_and_an_mp4(make_window, qtbot, tmp_path):
    import cv2

    from app.ui.dialogs.export import ExportDialog

    win = make_window()
    doc = win.current_document()
    dlg = ExportDialog(win, doc, preselect="grade")
    labels = [dlg.format.itemText(i) for i in range(dlg.format.count())]
    assert dlg.source.currentText().startswith("grade.image")
    dlg.format.setCurrentIndex(labels.index("JPEG image sequence"))
    dlg.folder.setText(str(tmp_path / "exp"))
    dlg.prefix.setText("stills/grade")
    job = dlg.start_export()
    wait_job(qtbot, win, job)
    assert job.status == "done", job.message or job.errors
    files = sorted((tmp_path / "exp" / "stills").glob("grade_*.jpg"))
    assert len(files) == 1 and dlg.files == files
    assert "export" not in doc.graph.nodes and "__export__" not in doc.graph.nodes  # the workflow is untouched
    assert not doc.is_dirty()

    dlg.format.setCurrentIndex(next(i for i, t in enumerate(labels) if "mp4v" in t))
    dlg.prefix.setText("clip")
    job = wait_job(qtbot, win, dlg.start_export())
    assert job.status == "done", job.message or job.errors
    mp4 = tmp_path / "exp" / "clip_00001.mp4"
    mp4 = mp4 if mp4.exists() else next((tmp_path / "exp").glob("clip*.mp4"))
    cap = cv2.VideoCapture(str(mp4))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape[:2] == (384, 512) and np.std(frame) > 5


def test_theme_toggle_restyles_the_app_and_is_remembered(make_window, qapp, gui_settings, restore_theme):
    from app.ui import theme

    win = make_window()
    win.apply_theme(gui_settings.theme)
    assert gui_settings.theme == "dark" and theme.TOKENS["dark"]["bg"] in qapp.styleSheet()
    win.toggle_theme()
    assert gui_settings.theme == "light" and theme.current_theme() == "light"
    assert theme.TOKENS["light"]["bg"] in qapp.styleSheet()
    from app.ui.settings import Settings

    assert Settings().theme == "light"  # stored: the next start opens in the light theme
