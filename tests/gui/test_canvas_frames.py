"""Groups carry their nodes, notes, node moves with snapping, mute / bypass / collapse."""

from __future__ import annotations

from PySide6.QtCore import QPointF, Qt
from PySide6.QtTest import QTest

from app.graph import NodeMode
from app.ui.canvas.frames import GROUP_TITLE_H
from app.ui.canvas.node_item import TITLE_H
from tests.gui.canvas_support import CTRL, REG, close_to, double_click, drag, make_view, pixel


def test_dragging_a_node_moves_it_on_the_grid_in_one_undo_step(qtbot):
    view = make_view(qtbot)
    doc = view.document
    nid = doc.add_node("test.canvas.solid", (0, 0))
    doc.undo_stack.clear()
    drag(view, QPointF(60, 10), QPointF(60 + 123, 10 + 47))
    x, y = doc.graph.nodes[nid].position
    assert (x, y) == (120.0, 50.0)  # snapped to the 10 px grid
    assert doc.undo_stack.count() == 1
    doc.undo_stack.undo()
    assert doc.graph.nodes[nid].position == (0.0, 0.0)
    assert view.canvas.nodes[nid].pos() == QPointF(0, 0)


def test_group_title_drag_moves_its_nodes_and_undo_puts_them_back(qtbot):
    view = make_view(qtbot)
    doc = view.document
    inside = doc.add_node("test.canvas.solid", (40, 60))
    inside2 = doc.add_node("test.canvas.blend", (300, 60))
    outside = doc.add_node("test.canvas.solid", (900, 60))
    doc.connect(inside, "image", inside2, "base")
    gid = doc.add_group("Sources", (0, 0, 600, 400), "#aa5533")
    doc.undo_stack.clear()
    drag(view, QPointF(200, GROUP_TITLE_H / 2), QPointF(200 + 100, GROUP_TITLE_H / 2 + 200))
    assert doc.graph.groups[gid].rect == (100.0, 200.0, 600.0, 400.0)
    assert doc.graph.nodes[inside].position == (140.0, 260.0)
    assert doc.graph.nodes[inside2].position == (400.0, 260.0)
    assert doc.graph.nodes[outside].position == (900.0, 60.0)
    link_path = next(iter(view.canvas.links.values())).path()
    assert link_path.boundingRect().top() > 200  # links followed their nodes
    assert doc.undo_stack.count() == 1
    doc.undo_stack.undo()
    assert doc.graph.groups[gid].rect == (0.0, 0.0, 600.0, 400.0)
    assert doc.graph.nodes[inside].position == (40.0, 60.0)
    assert view.canvas.nodes[inside].pos() == QPointF(40, 60)


def test_group_is_drawn_in_its_colour_and_ctrl_g_groups_the_selection(qtbot):
    view = make_view(qtbot)
    doc = view.document
    a = doc.add_node("test.canvas.solid", (0, 0))
    view.select_nodes([a])
    view.setFocus()
    QTest.keyClick(view, Qt.Key.Key_G, CTRL)
    (gid,) = doc.graph.groups
    x, y, w, _h = doc.graph.groups[gid].rect
    assert x < 0 and y < 0 and x + w > 220
    doc.update_group(gid, color="#ff0000")
    img = view.grab()
    title_bar = pixel(img, view, (x + w - 20, y + 10))
    assert title_bar.red() > 150 and title_bar.red() > title_bar.green() + 80
    doc.undo_stack.undo()
    doc.undo_stack.undo()
    assert not doc.graph.groups and not view.canvas.groups


def test_notes_add_edit_and_undo(qtbot):
    view = make_view(qtbot)
    doc = view.document
    nid = doc.add_note("first", (0, 0))
    item = view.canvas.notes[nid]
    assert item.text.toPlainText() == "first"
    doc.update_note(nid, text="second")
    assert item.text.toPlainText() == "second"
    drag(view, QPointF(120, 100), QPointF(220, 100))
    assert doc.graph.notes[nid].position == (100.0, 0.0)
    doc.undo_stack.undo()
    doc.undo_stack.undo()
    assert doc.graph.notes[nid].text == "first" and item.text.toPlainText() == "first"


def test_mute_and_bypass_shortcuts_toggle_the_mode(qtbot):
    view = make_view(qtbot)
    doc = view.document
    nid = doc.add_node("test.canvas.blend", (0, 0))
    view.select_nodes([nid])
    view.setFocus()
    normal = view.grab()
    QTest.keyClick(view, Qt.Key.Key_M, CTRL)
    assert doc.graph.nodes[nid].mode is NodeMode.MUTED
    muted = view.grab()
    body = (110, 60)
    assert pixel(muted, view, body) != pixel(normal, view, body)  # drawn faded
    QTest.keyClick(view, Qt.Key.Key_M, CTRL)
    assert doc.graph.nodes[nid].mode is NodeMode.NORMAL
    QTest.keyClick(view, Qt.Key.Key_B, CTRL)
    assert doc.graph.nodes[nid].mode is NodeMode.BYPASSED
    title = (100, 4)  # title bar, clear of its text
    assert close_to(pixel(view.grab(), view, title), view.canvas.palette["bypassed"], 30)
    doc.undo_stack.undo()
    assert doc.graph.nodes[nid].mode is NodeMode.NORMAL


def test_double_click_title_collapses_and_ports_follow(qtbot):
    view = make_view(qtbot)
    doc = view.document
    a = doc.add_node("test.canvas.solid", (0, 0))
    b = doc.add_node("test.canvas.blend", (400, 0))
    link = doc.connect(a, "image", b, "layer")
    tall = view.canvas.nodes[b].size()[1]
    double_click(view, QPointF(460, TITLE_H / 2))
    assert doc.graph.nodes[b].collapsed
    assert view.canvas.nodes[b].size()[1] < tall
    end = view.canvas.links[link].path().currentPosition()
    assert abs(end.y() - TITLE_H / 2) < 1  # the link now ends on the collapsed title
    doc.undo_stack.undo()
    assert not doc.graph.nodes[b].collapsed


def test_group_resize_corner_is_one_undo_step(qtbot):
    view = make_view(qtbot)
    doc = view.document
    gid = doc.add_group("G", (0, 0, 400, 300))
    doc.undo_stack.clear()
    drag(view, QPointF(395, 295), QPointF(595, 395))
    x, y, w, h = doc.graph.groups[gid].rect
    assert (x, y) == (0.0, 0.0) and abs(w - 600) <= 10 and abs(h - 400) <= 10
    doc.undo_stack.undo()
    assert doc.graph.groups[gid].rect == (0.0, 0.0, 400.0, 300.0)


def test_a_closed_view_stops_following_its_document(qtbot):
    from app.ui.canvas.view import CanvasView
    from app.ui.document import WorkflowDocument

    doc = WorkflowDocument(registry=REG)
    a = doc.add_node("test.canvas.solid", (0, 0))
    view = CanvasView(doc)  # not handed to qtbot: this test deletes it
    view.show()
    assert doc.graph._listeners
    view.close()
    view.deleteLater()
    qtbot.waitUntil(lambda: not doc.graph._listeners, timeout=2000)
    doc.set_param(a, "value", 0.7)  # no view left to update: nothing breaks
    assert doc.graph.nodes[a].params["value"] == 0.7


def _action(menu, text):
    for act in menu.actions():
        if act.menu() is not None:
            found = _action(act.menu(), text)
            if found is not None:
                return found
        if act.text().split("\t")[0] == text:
            return act
    return None


def test_context_menus_colour_a_group_and_run_a_node(qtbot):
    view = make_view(qtbot)
    doc = view.document
    nid = doc.add_node("test.canvas.solid", (40, 60))
    gid = doc.add_group("G", (0, 0, 400, 300))
    _action(view.context_menu(QPointF(200, 10)), "Red").trigger()
    assert doc.graph.groups[gid].color == "#8a3a3a"
    doc.undo_stack.undo()
    assert doc.graph.groups[gid].color == "#3a5f8a"
    with qtbot.waitSignal(view.runNodeRequested) as sig:
        _action(view.context_menu(QPointF(100, 100)), "Run to here").trigger()
    assert sig.args == [nid]
    _action(view.context_menu(QPointF(100, 100)), "Bypass").trigger()
    assert doc.graph.nodes[nid].mode is NodeMode.BYPASSED
    _action(view.context_menu(QPointF(200, 10)), "Remove group (keep its nodes)").trigger()
    assert not doc.graph.groups and nid in doc.graph.nodes
    _action(view.context_menu(QPointF(900, 600)), "Add note").trigger()
    assert len(doc.graph.notes) == 1
