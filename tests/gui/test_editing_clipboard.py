"""Copy, cut, paste, duplicate and delete on the canvas, each one undo step."""

from __future__ import annotations

from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtTest import QTest

from app.graph import Link, io
from tests.gui.canvas_support import CTRL, make_view


def chain(qtbot):
    view = make_view(qtbot)
    doc = view.document
    a = doc.add_node("test.canvas.solid", (0, 0))
    b = doc.add_node("test.canvas.solid", (0, 250))
    c = doc.add_node("test.canvas.blend", (400, 0))
    doc.connect(a, "image", c, "base")
    doc.connect(b, "image", c, "layer")
    doc.set_param(c, "opacity", 0.4)
    doc.undo_stack.clear()
    return view, doc, a, b, c


def test_copy_paste_keeps_internal_links_with_fresh_ids(qtbot):
    view, doc, a, b, c = chain(qtbot)
    view.select_nodes([a, c])  # b is not copied: the b -> c link is not internal
    view.setFocus()
    QTest.keyClick(view, Qt.Key.Key_C, CTRL)
    copied = io.loads(QGuiApplication.clipboard().text())
    assert set(copied.nodes) == {a, c} and copied.links == [Link(a, "image", c, "base")]
    new = view.paste(QPointF(1000, 1000))
    assert len(new) == 2 and not set(new) & {a, b, c}
    by_type = {doc.graph.nodes[n].type: n for n in new}
    na, nc = by_type["test.canvas.solid"], by_type["test.canvas.blend"]
    assert Link(na, "image", nc, "base") in doc.graph.links
    assert doc.graph.link_into(nc, "layer") is None
    assert doc.graph.nodes[nc].params["opacity"] == 0.4
    assert doc.graph.nodes[na].position == (1000.0, 1000.0)
    assert sorted(view.selected_node_ids()) == sorted(new)
    assert len(doc.graph.links) == 3
    doc.undo_stack.undo()
    assert set(doc.graph.nodes) == {a, b, c} and len(doc.graph.links) == 2
    doc.undo_stack.redo()
    assert set(doc.graph.nodes) == {a, b, c, *new}


def test_paste_with_keyboard_at_cursor(qtbot):
    view, doc, a, b, c = chain(qtbot)
    view.select_nodes([a, b, c])
    view.copy_selection()
    view.setFocus()
    QTest.keyClick(view, Qt.Key.Key_V, CTRL)
    assert len(doc.graph.nodes) == 6 and len(doc.graph.links) == 4


def test_duplicate_and_cut(qtbot):
    view, doc, a, b, c = chain(qtbot)
    view.select_nodes([a, b, c])
    view.setFocus()
    QTest.keyClick(view, Qt.Key.Key_D, CTRL)
    assert len(doc.graph.nodes) == 6 and len(doc.graph.links) == 4
    dup = view.selected_node_ids()
    assert all(doc.graph.nodes[n].position[0] in (40.0, 440.0) for n in dup)
    QTest.keyClick(view, Qt.Key.Key_X, CTRL)
    assert set(doc.graph.nodes) == {a, b, c} and len(doc.graph.links) == 2
    assert len(io.loads(QGuiApplication.clipboard().text()).nodes) == 3
    doc.undo_stack.undo()
    assert len(doc.graph.nodes) == 6


def test_delete_key_removes_nodes_and_undo_restores_their_links(qtbot):
    view, doc, a, b, c = chain(qtbot)
    view.select_nodes([c])
    view.setFocus()
    QTest.keyClick(view, Qt.Key.Key_Delete)
    assert set(doc.graph.nodes) == {a, b} and doc.graph.links == []
    assert c not in view.canvas.nodes and not view.canvas.links
    doc.undo_stack.undo()
    assert set(doc.graph.nodes) == {a, b, c} and len(doc.graph.links) == 2
    assert len(view.canvas.links) == 2


def test_deleting_a_selected_link(qtbot):
    view, doc, _a, b, c = chain(qtbot)
    link = doc.graph.link_into(c, "base")
    view.canvas.links[link].setSelected(True)
    view.setFocus()
    QTest.keyClick(view, Qt.Key.Key_Delete)
    assert doc.graph.links == [Link(b, "image", c, "layer")]


def test_undo_redo_keys_and_the_menus_list_the_canvas_shortcuts(make_window):
    """Undo/redo are the window's; the canvas's commands are QActions the Edit and View menus show."""
    win = make_window(open_default=False)
    view = win.current_view()
    doc = view.document
    a = doc.add_node("imagebash.image.solid_color", (0, 0))
    doc.undo_stack.clear()
    doc.set_param(a, "width", 99)
    view.setFocus()
    QTest.keyClick(view, Qt.Key.Key_Z, CTRL)
    assert "width" not in doc.graph.nodes[a].params or doc.graph.nodes[a].params["width"] != 99
    QTest.keyClick(view, Qt.Key.Key_Z, CTRL | Qt.KeyboardModifier.ShiftModifier)
    assert doc.graph.nodes[a].params["width"] == 99

    edit = {a.text().replace("&", ""): a.shortcut().toString() for a in win.edit_menu.actions() if a.text()}
    assert edit["Copy"] == "Ctrl+C" and edit["Duplicate"] == "Ctrl+D" and edit["Mute / Unmute"] == "Ctrl+M"
    shown = {a.text().replace("&", ""): a.shortcut().toString() for a in win.view_menu.actions() if a.text()}
    assert shown["Frame All"] == "Home" and shown["Frame Selection"] == "."
    # the menu item does what the key does, on the current canvas
    view.select_nodes([a])
    next(act for act in win.edit_menu.actions() if act.text() == "&Duplicate").trigger()
    assert len(doc.graph.nodes) == 2
    # a second tab has its own canvas commands in the menus, and the first tab's keys stay its own
    win.new_document()
    assert win.current_view() is not view
    assert win.current_view().actions["copy"] in win.edit_menu.actions()
    assert view.actions["copy"] not in win.edit_menu.actions()


def test_clipboard_without_workflow_pastes_nothing(qtbot):
    view, doc, _a, _b, _c = chain(qtbot)
    QGuiApplication.clipboard().setText("just words")
    messages = []
    view.statusMessage.connect(messages.append)
    assert view.paste(QPointF(0, 0)) == []
    assert len(doc.graph.nodes) == 3 and messages
