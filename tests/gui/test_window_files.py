"""The main window as a user meets it: default workflow, examples, tabs, save/reopen, close prompts."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt

from app.graph.io import graph_to_dict
from app.paths import WORKFLOWS


def test_opens_with_the_default_workflow_and_example_links(make_window, qtbot):
    win = make_window()
    doc = win.current_document()
    assert {"sky", "blend", "grade", "save"} <= set(doc.graph.nodes)
    assert win.tabs.tabText(0) == "blend_and_grade"  # an unsaved copy: saving never overwrites the example
    assert doc.path is None and not doc.is_dirty()
    assert win.welcome.isVisible()
    names = {b.objectName() for b in win.example_buttons}
    assert {f"example_{p.stem}" for p in WORKFLOWS.glob("*.json")} == names
    button = next(b for b in win.example_buttons if b.objectName() == "example_contact_sheet")
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert win.tabs.count() == 2
    expected = json.loads((WORKFLOWS / "contact_sheet.json").read_text())
    assert set(win.current_document().graph.nodes) == {n["id"] for n in expected["nodes"]}


def test_save_reopen_and_compare(make_window, tmp_path):
    win = make_window()
    doc = win.current_document()
    doc.set_param("blend", "opacity", 0.75)
    assert doc.is_dirty() and win.tabs.tabText(0).endswith("*")
    target = tmp_path / "mine.json"
    win.ask_save_path = lambda d: target
    assert win.save_current()
    assert target.is_file() and not doc.is_dirty()
    assert win.tabs.tabText(0) == "mine.json"
    assert str(target.resolve()) in win.settings.recent_files()
    win.recent_menu.aboutToShow.emit()  # what opening the menu does
    recent = [a for a in win.recent_menu.actions() if a.text() == str(target.resolve())]
    assert len(recent) == 1

    other = make_window(workflow=target)
    reopened = other.current_document()
    assert graph_to_dict(reopened.graph) == graph_to_dict(doc.graph)
    assert reopened.graph.nodes["blend"].params["opacity"] == 0.75
    # opening the same file again switches to its tab instead of opening a second copy
    count = other.tabs.count()
    other.open_path(target)
    assert other.tabs.count() == count
    other.tabs.setCurrentIndex(0)
    other.recent_menu.aboutToShow.emit()
    next(a for a in other.recent_menu.actions() if a.text() == str(target.resolve())).trigger()
    assert other.current_document() is reopened  # File > Open Recent finds the open tab


def test_new_tab_and_undo_redo_follow_the_current_tab(make_window, qtbot):
    win = make_window()
    first = win.current_document()
    first.set_param("blend", "opacity", 0.1)
    qtbot.keyClick(win, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert win.tabs.count() == 2 and len(win.current_document().graph) == 0
    win.tabs.setCurrentIndex(0)
    win.act_undo.trigger()
    assert first.graph.nodes["blend"].params["opacity"] == 0.4
    win.act_redo.trigger()
    assert first.graph.nodes["blend"].params["opacity"] == 0.1


def test_unsaved_changes_are_asked_about_on_close(make_window, tmp_path):
    win = make_window()
    doc = win.current_document()
    doc.set_param("grade", "contrast", 1.5)
    asked = []
    win.ask_unsaved = lambda d: asked.append(d) or "cancel"
    assert not win.close()
    assert win.isVisible() and asked == [doc]
    assert not win.close_tab()
    assert win.tabs.count() == 1

    target = tmp_path / "kept.json"
    win.ask_unsaved = lambda d: "save"
    win.ask_save_path = lambda d: target
    assert win.close_tab()
    saved = {n["id"]: n for n in json.loads(target.read_text())["nodes"]}
    assert saved["grade"]["params"]["contrast"] == 1.5

    win.new_document().document.add_node("imagebash.image.gradient", (0, 0))
    win.ask_unsaved = lambda d: "discard"
    assert win.close()
    assert not win.isVisible()


def test_a_broken_file_is_reported_and_nothing_is_lost(make_window, tmp_path):
    win = make_window()
    bad = tmp_path / "broken.json"
    bad.write_text('{"format": "imagebash/1", "nodes": [{"id": "a"}]}')
    assert win.open_path(bad) is None
    assert win.tabs.count() == 1
    assert any("broken.json" in line for line in win.log.lines())


def test_a_too_deeply_nested_file_is_one_line_and_the_window_keeps_working(make_window, tmp_path):
    win = make_window()
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert win.open_path(deep) is None
    assert win.tabs.count() == 1
    line = next(ln for ln in win.log.lines() if "deep.json" in ln)
    assert "nested too deeply" in line and "\n" not in line and "Recursion" not in line
    before = len(win.current_document().graph.nodes)
    assert win.current_view().paste(text=deep.read_text()) == []  # the clipboard holding it: nothing happens
    assert len(win.current_document().graph.nodes) == before


def test_an_older_file_is_upgraded_once_on_opening_and_says_so(make_window, tmp_path, test_registry):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"format": "imagebash/1", "nodes": [
        {"id": "n", "type": "test.gui.old_noise", "params": {"width": 8}}]}))
    win = make_window(registry=test_registry, open_default=False)
    view = win.open_path(old)
    doc = view.document
    assert doc.graph.nodes["n"].type == "test.gui.noise" and doc.graph.nodes["n"].version == 1
    assert doc.is_dirty()  # saving keeps the upgrade
    assert any("old.json: this file was upgraded" in ln and "test.gui.old_noise is now test.gui.noise" in ln
               for ln in win.log.lines())
    assert json.loads(old.read_text())["nodes"][0]["type"] == "test.gui.old_noise"  # the file itself untouched


def test_a_comfyui_png_dropped_on_the_canvas_opens_as_a_mapped_workflow_that_save_never_overwrites(
        make_window, qtbot, tmp_path):
    from tests.comfy import fixtures
    from tests.gui.canvas_support import drop, file_mime

    png = fixtures.write(tmp_path / "ComfyUI_00001_.png", fixtures.comfy_png(fixtures.sd15_ui(), fixtures.sd15_api()))
    before = png.read_bytes()
    win = make_window()
    view = win.current_view()
    assert drop(view, file_mime(png), (0, 0))
    qtbot.waitUntil(lambda: win.current_view() is not view, timeout=3000)
    doc = win.current_document()
    types = {n.type for n in doc.graph.nodes.values()}
    assert {"imagebash.diffusion.load_model", "imagebash.diffusion.sample", "imagebash.image.save"} <= types
    assert "imported from ComfyUI" in win.statusBar().currentMessage()
    assert doc.path is None  # Save asks where: the ComfyUI picture is never overwritten
    assert png.read_bytes() == before


def test_file_export_as_comfyui_api_writes_what_comfyui_runs(make_window, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    from app.comfy.formats import read_json

    target = tmp_path / "api.json"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(target), "")))
    win = make_window()
    win.open_path(WORKFLOWS / "txt2img_two_loras.json")
    if win.missing_dialog is not None:
        win.missing_dialog.close()
    assert win.act_export_comfy in win.menuBar().actions()[0].menu().actions()  # in the File menu
    win.act_export_comfy.trigger()
    api = json.loads(target.read_text())
    classes = sorted(n["class_type"] for n in api.values())
    assert classes.count("LoraLoader") == 2 and "CheckpointLoaderSimple" in classes and "KSampler" in classes
    assert read_json(api).nodes  # our own ComfyUI reader takes it back
    assert "exported as" in win.statusBar().currentMessage()
