"""Linking on the canvas by dragging between ports, with real mouse events on the viewport."""

from __future__ import annotations

from PySide6.QtCore import QPointF, Qt
from PySide6.QtTest import QTest

from app.graph import Link
from tests.gui.canvas_support import CTRL, MID, close_to, double_click, drag, make_view, pixel, port_pos


def two_nodes(qtbot):
    view = make_view(qtbot)
    doc = view.document
    a = doc.add_node("test.canvas.solid", (0, 0))
    b = doc.add_node("test.canvas.blend", (400, 0))
    doc.undo_stack.clear()
    return view, doc, a, b


def test_drag_between_ports_connects_and_undo_redo(qtbot):
    view, doc, a, b = two_nodes(qtbot)
    drag(view, port_pos(view, a, "image", True), port_pos(view, b, "layer", False))
    assert doc.graph.links == [Link(a, "image", b, "layer")]
    assert Link(a, "image", b, "layer") in view.canvas.links
    doc.undo_stack.undo()
    assert doc.graph.links == [] and not view.canvas.links
    doc.undo_stack.redo()
    assert doc.graph.links == [Link(a, "image", b, "layer")]


def test_drag_from_input_to_output_connects_too(qtbot):
    view, doc, a, b = two_nodes(qtbot)
    drag(view, port_pos(view, b, "base", False), port_pos(view, a, "image", True))
    assert doc.graph.links == [Link(a, "image", b, "base")]


def test_mismatched_link_is_refused_with_a_visible_reason(qtbot):
    view, doc, a, b = two_nodes(qtbot)
    messages = []
    view.statusMessage.connect(messages.append)
    target = port_pos(view, b, "mask", False)
    drag(view, port_pos(view, a, "image", True), target)
    assert doc.graph.links == []
    assert doc.undo_stack.count() == 0
    assert view.refusal.isVisible()
    assert "Image, which cannot feed Mask" in view.refusal.text()
    assert messages and "Image, which cannot feed Mask" in messages[-1]
    # the reason is drawn next to the cursor, in the refusal colour
    img = view.grab()
    text_rect = view.mapFromScene(view.refusal.sceneBoundingRect()).boundingRect()
    refuse = view.canvas.palette["refuse"]
    hits = sum(close_to(img.toImage().pixelColor(x, y), refuse, 60)
               for x in range(text_rect.left(), text_rect.left() + 200, 2)
               for y in range(text_rect.top(), text_rect.top() + 16, 2))
    assert hits > 5


def test_drop_on_node_body_picks_the_first_fitting_input(qtbot):
    view, doc, a, b = two_nodes(qtbot)
    body = view.canvas.nodes[b].sceneBoundingRect().center()
    drag(view, port_pos(view, a, "image", True), body)
    assert doc.graph.links == [Link(a, "image", b, "base")]


def test_cycle_is_refused(qtbot):
    view, doc, _a, b = two_nodes(qtbot)
    c = doc.add_node("test.canvas.blend", (800, 0))
    doc.connect(b, "image", c, "base")
    drag(view, port_pos(view, c, "image", True), port_pos(view, b, "layer", False))
    assert Link(c, "image", b, "layer") not in doc.graph.links
    assert "loop" in view.refusal.text()


def test_drag_to_empty_space_offers_compatible_nodes_and_connects_the_pick(qtbot):
    view, doc, a, b = two_nodes(qtbot)
    drag(view, port_pos(view, a, "image", True), QPointF(300, 400))
    popup = view.search_popup
    assert popup is not None and popup.isVisible()
    offered = popup.type_ids()
    assert "test.canvas.blend" in offered and "test.canvas.to_mask" in offered
    assert "test.canvas.solid" not in offered and "test.canvas.prompt" not in offered
    QTest.keyClicks(popup.edit, "mask")
    QTest.keyClick(popup.edit, Qt.Key.Key_Return)
    new = [n for n in doc.graph.nodes if n not in (a, b)]
    assert len(new) == 1 and doc.graph.nodes[new[0]].type == "test.canvas.to_mask"
    assert doc.graph.links == [Link(a, "image", new[0], "image")]
    doc.undo_stack.undo()  # one step takes back node and link
    assert set(doc.graph.nodes) == {a, b} and doc.graph.links == []


def test_dragging_a_linked_input_away_disconnects(qtbot):
    view, doc, a, b = two_nodes(qtbot)
    doc.connect(a, "image", b, "base")
    drag(view, port_pos(view, b, "base", False), QPointF(300, 500))
    assert doc.graph.links == []
    doc.undo_stack.undo()
    assert doc.graph.links == [Link(a, "image", b, "base")]


def test_dragging_a_linked_input_to_another_input_moves_the_link(qtbot):
    view, doc, a, b = two_nodes(qtbot)
    doc.connect(a, "image", b, "base")
    drag(view, port_pos(view, b, "base", False), port_pos(view, b, "layer", False))
    assert doc.graph.links == [Link(a, "image", b, "layer")]
    doc.undo_stack.undo()
    assert doc.graph.links == [Link(a, "image", b, "base")]


def test_ctrl_drag_across_links_cuts_them(qtbot):
    view, doc, a, b = two_nodes(qtbot)
    doc.connect(a, "image", b, "base")
    doc.connect(a, "image", b, "layer")
    c = doc.add_node("test.canvas.blend", (400, 400))
    doc.connect(a, "image", c, "base")
    p_base, p_layer = port_pos(view, b, "base", False), port_pos(view, b, "layer", False)
    x = p_base.x() - 60
    drag(view, QPointF(x, p_base.y() - 40), QPointF(x, p_layer.y() + 40), mods=CTRL)
    assert doc.graph.links == [Link(a, "image", c, "base")]  # the link the stroke missed stays
    doc.undo_stack.undo()  # one step restores both
    assert len(doc.graph.links) == 3


def test_reroute_dot_added_by_double_click_moves_with_undo(qtbot):
    view, doc, a, b = two_nodes(qtbot)
    link = doc.connect(a, "image", b, "layer")
    path = view.canvas.links[link].path()
    mid = path.pointAtPercent(0.5)
    double_click(view, mid)
    assert len(doc.reroutes(f"{b}:layer")) == 1
    dot = view.canvas.links[link].dots[0]
    drag(view, dot.pos(), dot.pos() + QPointF(0, 200))
    (_x, y), = doc.reroutes(f"{b}:layer")
    assert abs(y - (mid.y() + 200)) < 15
    assert view.canvas.links[link].path().boundingRect().bottom() >= y - 1
    doc.undo_stack.undo()
    assert abs(doc.reroutes(f"{b}:layer")[0][1] - mid.y()) < 15
    doc.undo_stack.undo()
    assert doc.reroutes(f"{b}:layer") == []
    assert "reroutes" not in doc.graph.meta


def test_pan_with_middle_drag_and_wheel_zoom_keeps_the_point_under_the_cursor(qtbot):
    view, _doc, _a, _b = two_nodes(qtbot)
    before = view.mapToScene(view.viewport().rect().center())
    drag(view, QPointF(400, 300), QPointF(500, 350), button=MID, viewport=True)
    after = view.mapToScene(view.viewport().rect().center())
    assert abs((before.x() - after.x()) - 100) <= 3 and abs((before.y() - after.y()) - 50) <= 3
    anchor = QPointF(200, 150)
    vp = view.mapFromScene(anchor)
    view.zoom_by(1.8, QPointF(vp))
    assert abs(view.transform().m11() - 1.8) < 1e-6
    back = view.mapToScene(vp)
    assert abs(back.x() - anchor.x()) < 2 and abs(back.y() - anchor.y()) < 2


def test_port_colour_is_drawn(qtbot):
    view, _doc, a, b = two_nodes(qtbot)
    from app.ui.theme import port_color

    img = view.grab()
    assert close_to(pixel(img, view, port_pos(view, a, "image", True)), port_color("Image"), 30)
    assert close_to(pixel(img, view, port_pos(view, b, "mask", False)), port_color("Mask"), 30)


def test_space_drag_pans(qtbot):
    view, _doc, _a, _b = two_nodes(qtbot)
    view.setFocus()
    before = view.mapToScene(view.viewport().rect().center())
    QTest.keyPress(view, Qt.Key.Key_Space)
    drag(view, QPointF(600, 400), QPointF(500, 300), viewport=True)
    QTest.keyRelease(view, Qt.Key.Key_Space)
    after = view.mapToScene(view.viewport().rect().center())
    assert abs((after.x() - before.x()) - 100) <= 3 and abs((after.y() - before.y()) - 100) <= 3
    assert not view.selected_node_ids()  # a pan, not a rubber band


def test_drag_from_an_empty_input_offers_nodes_with_a_fitting_output(qtbot):
    view, doc, a, b = two_nodes(qtbot)
    drag(view, port_pos(view, b, "mask", False), QPointF(100, 500))
    popup = view.search_popup
    offered = popup.type_ids()
    assert "test.canvas.to_mask" in offered  # nodes with a Mask output
    assert not {"test.canvas.solid", "test.canvas.blend", "test.canvas.prompt"} & set(offered)
    QTest.keyClicks(popup.edit, "to mask")
    QTest.keyClick(popup.edit, Qt.Key.Key_Return)
    (new,) = set(doc.graph.nodes) - {a, b}
    assert doc.graph.links == [Link(new, "mask", b, "mask")]


def test_linking_into_a_taken_input_replaces_its_link_and_undo_restores_it(qtbot):
    view, doc, a, b = two_nodes(qtbot)
    other = doc.add_node("test.canvas.solid", (0, 300))
    doc.connect(a, "image", b, "base")
    drag(view, port_pos(view, other, "image", True), port_pos(view, b, "base", False))
    assert doc.graph.links == [Link(other, "image", b, "base")]
    doc.undo_stack.undo()
    assert doc.graph.links == [Link(a, "image", b, "base")]
