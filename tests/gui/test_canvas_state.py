"""Run state, thumbnails, level of detail, themes: checked on the pixels the canvas draws."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from app.ui import theme
from app.ui.canvas.node_item import TITLE_H, WIDTH
from tests.gui.canvas_support import close_to, double_click, drag, make_view, pixel

TITLE_PT = (100, 4)  # inside the title bar, clear of its text


@pytest.fixture
def one_node(qtbot):
    view = make_view(qtbot)
    nid = view.document.add_node("test.canvas.blend", (0, 0))
    return view, view.document, nid


def test_failed_node_is_drawn_in_the_failure_colour_with_the_message_on_hover(one_node):
    view, _doc, nid = one_node
    before = pixel(view.grab(), view, TITLE_PT)
    view.set_node_state(nid, "failed", message="layer is 32x32 but base is 64x64")
    failed = view.canvas.palette["failed"]
    assert not close_to(before, failed, 30)
    assert close_to(pixel(view.grab(), view, TITLE_PT), failed, 20)
    assert "layer is 32x32" in view.canvas.nodes[nid].toolTip()
    view.clear_states()
    assert close_to(pixel(view.grab(), view, TITLE_PT), before, 5)
    assert view.canvas.nodes[nid].toolTip() == ""


def test_running_node_shows_a_progress_bar(one_node):
    view, _doc, nid = one_node
    view.set_node_state(nid, "running", progress=0.5)
    img = view.grab()
    running = view.canvas.palette["running"]
    y = TITLE_H + 1.5
    assert close_to(pixel(img, view, (WIDTH * 0.25, y)), running, 20)
    assert not close_to(pixel(img, view, (WIDTH * 0.75, y)), running, 20)
    with pytest.raises(ValueError, match="unknown node state"):
        view.set_node_state(nid, "exploded")


def test_thumbnail_is_drawn_and_double_click_activates_it(qtbot, one_node):
    view, _doc, nid = one_node
    red = np.zeros((1, 40, 80, 3), np.float32)
    red[..., 0] = 1.0
    view.set_node_thumbnail(nid, red)
    item = view.canvas.nodes[nid]
    centre = item.mapToScene(item._thumb_rect.center())
    c = pixel(view.grab(), view, centre)
    assert c.red() > 240 and c.green() < 15 and c.blue() < 15
    with qtbot.waitSignal(view.nodeActivated) as sig:
        double_click(view, centre)
    assert sig.args == [nid]
    view.set_node_thumbnail(nid, None)
    assert item._thumb_rect.isNull()


def test_a_thumbnail_is_small_and_shows_nan_as_black(one_node):
    import warnings

    view, _doc, nid = one_node
    big = np.full((1, 600, 900, 3), np.nan, np.float32)
    big[..., :450, 1] = 1.0  # the left half green, the right half not a number
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value encountered in cast"
        view.set_node_thumbnail(nid, big)
    item = view.canvas.nodes[nid]
    assert max(item.thumbnail.width(), item.thumbnail.height()) == 256
    right = item.thumbnail.pixelColor(200, 80)
    left = item.thumbnail.pixelColor(50, 80)
    assert (right.red(), right.green(), right.blue()) == (0, 0, 0)
    assert (left.red(), left.green(), left.blue()) == (0, 255, 0)


def test_zoomed_out_nodes_are_drawn_as_blocks(one_node):
    view, _doc, nid = one_node
    view.set_node_state(nid, "failed", message="x")
    view.resetTransform()
    view.scale(0.2, 0.2)
    view.centerOn(110, 60)
    # the whole body, not only the title, takes the state colour when drawn without detail
    assert close_to(pixel(view.grab(), view, (110, 60)), view.canvas.palette["failed"], 20)


def test_light_theme_recolours_the_canvas(one_node):
    view, _doc, _nid = one_node
    try:
        theme.apply_theme(QApplication.instance(), "light")
        assert close_to(pixel(view.grab(), view, (-195, 405)), theme.canvas_palette("light")["canvas_bg"], 12)
        theme.apply_theme(QApplication.instance(), "dark")
        assert close_to(pixel(view.grab(), view, (-195, 405)), theme.canvas_palette("dark")["canvas_bg"], 12)
    finally:
        theme.apply_theme(QApplication.instance(), "dark")
        QApplication.instance().setStyleSheet("")
    assert "@" not in theme.stylesheet("light")


def test_tab_opens_search_at_the_cursor_and_adds_the_pick_there(qtbot):
    view = make_view(qtbot)
    view.setFocus()
    QTest.keyClick(view, Qt.Key.Key_Tab)
    popup = view.search_popup
    assert popup is not None and popup.isVisible()
    QTest.keyClicks(popup.edit, "solid")
    assert popup.type_ids() == ["test.canvas.solid"]
    QTest.keyClick(popup.edit, Qt.Key.Key_Return)
    (nid,) = view.document.graph.nodes
    assert view.document.graph.nodes[nid].type == "test.canvas.solid"
    assert not popup.isVisible()


def test_double_click_on_empty_canvas_opens_search(qtbot):
    view = make_view(qtbot)
    double_click(view, QPointF(500, 500))
    assert view.search_popup is not None and view.search_popup.isVisible()
    assert len(view.search_popup.type_ids()) >= 4
    view.search_popup.close()


def test_rubber_band_selects_and_frame_keys_fit_the_view(qtbot):
    view = make_view(qtbot)
    doc = view.document
    a = doc.add_node("test.canvas.solid", (0, 0))
    b = doc.add_node("test.canvas.solid", (300, 0))
    far = doc.add_node("test.canvas.solid", (3000, 2000))
    drag(view, QPointF(-50, -50), QPointF(560, 200))
    assert sorted(view.selected_node_ids()) == sorted([a, b])
    view.setFocus()
    QTest.keyClick(view, Qt.Key.Key_Home)
    visible = view.mapToScene(view.viewport().rect()).boundingRect()
    for nid in (a, b, far):
        assert visible.contains(view.canvas.nodes[nid].sceneBoundingRect())
    QTest.keyClick(view, Qt.Key.Key_Period)
    visible = view.mapToScene(view.viewport().rect()).boundingRect()
    assert visible.contains(view.canvas.nodes[a].sceneBoundingRect())
    assert not visible.contains(view.canvas.nodes[far].sceneBoundingRect())


def test_minimap_click_moves_the_view(qtbot):
    view = make_view(qtbot)
    doc = view.document
    doc.add_node("test.canvas.solid", (0, 0))
    doc.add_node("test.canvas.solid", (4000, 3000))
    view.minimap.refresh()
    target = view.minimap.scene_pos(QPointF(view.minimap.width() - 5, view.minimap.height() - 5))
    assert target.x() > 3000 and target.y() > 2000
    QTest.mouseClick(view.minimap, Qt.MouseButton.LeftButton, pos=view.minimap.rect().bottomRight() - QPoint(5, 5))
    centre = view.mapToScene(view.viewport().rect().center())
    assert centre.x() > 2500 and centre.y() > 1500


def test_unknown_node_type_is_kept_and_marked(qtbot, tmp_path):
    from app.graph import Graph, Link, NodeInstance
    from app.ui.document import WorkflowDocument
    from tests.gui.canvas_support import REG

    g = Graph()
    g.add_node(NodeInstance("a", "test.canvas.solid", {"value": 0.3}))
    g.add_node(NodeInstance("x", "somepack.magic.sparkle", {"amount": 3}, position=(400, 0)))
    g.connect(Link("a", "image", "x", "image"))
    doc = WorkflowDocument(g, REG)
    view = make_view(qtbot, doc)
    item = view.canvas.nodes["x"]
    assert "Unknown node type 'somepack.magic.sparkle'" in item.toolTip()
    assert "image" in item.in_ports  # its link still ends on it
    img = view.grab()
    border = pixel(img, view, (400 + WIDTH / 2, item.size()[1] - 0.5))
    assert close_to(border, view.canvas.palette["failed"], 40)
    path = tmp_path / "kept.json"
    doc.save(path)
    again = WorkflowDocument.load(path)
    assert again.graph.nodes["x"].params == {"amount": 3} and again.graph.links == [Link("a", "image", "x", "image")]


def test_rows_are_drafted_out_while_zooming_and_come_back(qtbot, one_node):
    view, _doc, nid = one_node
    item = view.canvas.nodes[nid]
    row = next(r for r in item.rows if r.left is not None and r.left.name == "opacity")

    def text_pixels() -> int:
        img = view.grab().toImage()
        top_left = view.mapFromScene(QPointF(14, row.y - 6))
        text = view.canvas.palette["node_text_dim"]
        return sum(close_to(img.pixelColor(top_left.x() + dx, top_left.y() + dy), text, 30)
                   for dx in range(0, 60) for dy in range(0, 12))

    assert text_pixels() > 10
    view.zoom_by(1.0)
    assert view.canvas.zooming and text_pixels() == 0
    qtbot.waitUntil(lambda: not view.canvas.zooming, timeout=2000)
    assert text_pixels() > 10
