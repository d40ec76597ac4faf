"""Changing parameters with the editor the canvas opens over a node's parameter row."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QComboBox

from app.ui.widgets.param_editors import FilePicker, PromptEdit, SliderSpin, make_editor
from nodes.registry import PortSpec
from nodes.types import FileFilter, Range
from tests.gui.canvas_support import REG, click, make_view


def row_point(view, node_id, name):
    item = view.canvas.nodes[node_id]
    row = next(r for r in item.rows if r.left is not None and r.left.name == name)
    return item.mapToScene(item.size()[0] * 0.75, row.y)


@pytest.fixture
def blend_view(qtbot):
    view = make_view(qtbot)
    nid = view.document.add_node("test.canvas.blend", (0, 0))
    view.document.undo_stack.clear()
    return view, view.document, nid


def test_slider_spin_editor_changes_opacity_with_undo_redo(qtbot, blend_view):
    view, doc, nid = blend_view
    click(view, row_point(view, nid, "opacity"))
    editor = view.canvas.editor_widget()
    assert isinstance(editor, SliderSpin)
    editor.spin.selectAll()
    QTest.keyClicks(editor.spin, "0.25")
    QTest.keyClick(editor.spin, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: view.canvas.editor is None)
    assert doc.graph.nodes[nid].params["opacity"] == 0.25
    assert doc.undo_stack.count() == 1
    doc.undo_stack.undo()
    assert doc.graph.nodes[nid].params["opacity"] == 1.0
    doc.undo_stack.redo()
    assert doc.graph.nodes[nid].params["opacity"] == 0.25


def test_the_new_value_is_painted_on_the_node(qtbot, blend_view):
    _view, doc, nid = blend_view
    from app.ui.canvas.node_item import format_value

    doc.set_param(nid, "opacity", 0.33)
    port = doc.input_port(nid, "opacity")
    assert format_value(port, doc.graph.nodes[nid].params["opacity"]) == "0.33"


def test_enum_combo_editor(qtbot, blend_view):
    view, doc, nid = blend_view
    click(view, row_point(view, nid, "mode"))
    combo = view.canvas.editor_widget()
    assert isinstance(combo, QComboBox)
    assert [combo.itemText(i) for i in range(combo.count())] == ["normal", "multiply", "screen"]
    combo.setCurrentIndex(2)
    combo.activated.emit(2)
    qtbot.waitUntil(lambda: view.canvas.editor is None)
    assert doc.graph.nodes[nid].params["mode"] == "screen"
    doc.undo_stack.undo()
    assert doc.graph.nodes[nid].params["mode"] == "normal"


def test_bool_row_toggles_on_click(qtbot):
    view = make_view(qtbot)
    doc = view.document
    nid = doc.add_node("test.canvas.to_mask", (0, 0))
    click(view, row_point(view, nid, "invert"))
    assert doc.graph.nodes[nid].params["invert"] is True
    doc.undo_stack.undo()
    assert doc.graph.nodes[nid].params["invert"] is False


def test_prompt_editor_commits_when_focus_leaves(qtbot):
    view = make_view(qtbot)
    doc = view.document
    nid = doc.add_node("test.canvas.prompt", (0, 0))
    click(view, row_point(view, nid, "text"))
    editor = view.canvas.editor_widget()
    assert isinstance(editor, PromptEdit)
    editor.setPlainText("a dog\nin the rain")
    click(view, (900, 700))  # click on empty canvas: the editor closes and commits
    assert view.canvas.editor is None
    assert doc.graph.nodes[nid].params["text"] == "a dog\nin the rain"


def test_out_of_range_value_is_refused_with_the_node_named(qtbot, blend_view):
    _view, doc, nid = blend_view
    with pytest.raises(ValueError, match=f"node '{nid}'.*opacity.*out of range"):
        doc.set_param(nid, "opacity", 3.0)
    assert doc.graph.nodes[nid].params["opacity"] == 1.0


def test_linked_parameter_shows_no_editor(qtbot):
    view = make_view(qtbot)
    doc = view.document
    a = doc.add_node("test.canvas.prompt", (0, 0))
    b = doc.add_node("test.canvas.prompt", (400, 0))
    assert view.canvas.nodes[b].param_at(row_point(view, b, "text")) is not None
    doc.connect(a, "str", b, "text")  # a str output feeds the str parameter
    assert view.canvas.nodes[b].param_at(row_point(view, b, "text")) is None
    click(view, row_point(view, b, "text"))
    assert view.canvas.editor is None


def test_make_editor_kinds(qtbot):
    got = []
    ranged = make_editor(PortSpec("x", "float", 0.5, range=Range(0, 1, 0.1)), None, got.append)
    assert isinstance(ranged, SliderSpin) and ranged.value() == 0.5
    ranged.slider.setValue(3)
    ranged.slider.sliderReleased.emit()
    assert got[-1] == pytest.approx(0.3)
    picker = make_editor(PortSpec("path", "Path", file_filter=FileFilter(("*.png",))), "a/b.png", got.append)
    assert isinstance(picker, FilePicker) and picker.edit.text() == "a/b.png"
    line = make_editor(PortSpec("name", "str", "x"), None, got.append)
    qtbot.addWidget(line)
    line.setText("hello")
    line.editingFinished.emit()
    assert got[-1] == "hello"
    seed = make_editor(PortSpec("seed", "Seed", 0), 7, got.append)
    assert seed.value() == 7 and seed.minimum() == 0
    assert QApplication.instance() is not None and REG.get("test.canvas.blend") is not None


def test_escape_cancels_an_edit(qtbot, blend_view):
    view, doc, nid = blend_view
    view.setFocus()
    click(view, row_point(view, nid, "opacity"))
    editor = view.canvas.editor_widget()
    editor.spin.selectAll()
    QTest.keyClicks(editor.spin, "0.1")
    QTest.keyClick(view, Qt.Key.Key_Escape)
    assert view.canvas.editor is None
    qtbot.wait(10)
    assert doc.graph.nodes[nid].params["opacity"] == 1.0 and doc.undo_stack.count() == 0


def test_editor_keys_win_over_window_shortcuts(qtbot, blend_view):
    from PySide6.QtGui import QAction, QKeySequence
    from PySide6.QtWidgets import QMainWindow

    view, _doc, nid = blend_view
    win = QMainWindow()
    win.setCentralWidget(view)
    fired = []
    cancel = QAction("Cancel run", win)
    cancel.setShortcut(QKeySequence(Qt.Key.Key_Escape))
    cancel.triggered.connect(lambda: fired.append("esc"))
    win.addAction(cancel)
    try:
        win.show()
        win.activateWindow()
        qtbot.waitUntil(win.isActiveWindow)  # shortcuts only fire in the active window
        view.setFocus()
        click(view, row_point(view, nid, "opacity"))
        assert view.canvas.editor is not None
        QTest.keyClick(view, Qt.Key.Key_Escape)
        assert view.canvas.editor is None and fired == []
        QTest.keyClick(view, Qt.Key.Key_Escape)  # nothing being edited: the window's action runs
        assert fired == ["esc"]
    finally:
        win.takeCentralWidget()  # the view stays qtbot's to close
        win.close()
