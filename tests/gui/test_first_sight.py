"""What a user sees first: a readable canvas, the window as they left it, room for the canvas."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from PySide6.QtCore import QPoint, QPointF, QRect, QRectF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication, QScrollBar

from app import paths
from app.ui.canvas.node_item import TITLE_H
from app.ui.canvas.view import FRAME_MIN_SCALE, TEXT_SCALE
from tests.gui.conftest import node_item, qimage_rgb


def text_pixels(view, node_id: str) -> int:
    """How many pixels of the node's title bar, as the viewport shows it, are in the text colour."""
    item = node_item(view, node_id)
    r = item.sceneBoundingRect()
    title = view.mapFromScene(QRectF(r.x(), r.y(), r.width(), TITLE_H)).boundingRect()
    title = title.intersected(view.viewport().rect())
    if title.isEmpty():
        return 0
    img = qimage_rgb(view.viewport().grab().toImage())
    region = img[title.top(): title.bottom() + 1, title.left(): title.right() + 1].astype(int)
    c = view.canvas.palette["node_text"]
    dist = np.abs(region - np.array([c.red(), c.green(), c.blue()])).sum(-1)
    return int((dist < 90).sum())


def centre_node(view) -> str:
    """The node nearest the viewport's centre."""
    centre = view.mapToScene(view.viewport().rect().center())
    return min(view.canvas.nodes, key=lambda nid: (view.canvas.nodes[nid].sceneBoundingRect().center()
                                                   - centre).manhattanLength())


def test_framing_a_wide_workflow_keeps_node_text_readable(make_window, qtbot):
    win = make_window()
    win.resize(900, 700)
    view = win.open_example(paths.WORKFLOWS / "txt2img_two_loras.json")  # 1,400 px of nodes in a row
    if win.missing_dialog is not None:
        win.missing_dialog.close()  # its models are not here: not what this test looks at
    qtbot.waitUntil(lambda: view.transform().m11() >= FRAME_MIN_SCALE - 1e-6, timeout=3000)
    # opened: the graph is wider than the canvas, yet framed at a zoom with no tiny text
    assert view.transform().m11() >= FRAME_MIN_SCALE - 1e-6 > TEXT_SCALE
    assert view.text_visible()
    # centred on the graph: the middle of its nodes is the middle of the canvas
    content = view.content_rect().center()
    here = view.mapToScene(view.viewport().rect().center())
    assert abs(here.x() - content.x()) < 30 and abs(here.y() - content.y()) < 30
    qtbot.wait(30)
    assert text_pixels(view, centre_node(view)) > 40  # the title is drawn, in the text colour
    # the user may still zoom out past it themselves: then titles give way to blocks
    centre = QPointF(view.viewport().rect().center())
    for _ in range(3):
        wheel = QWheelEvent(centre, view.viewport().mapToGlobal(centre), QPoint(0, 0), QPoint(0, -240),
                            Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase,
                            False)
        QApplication.sendEvent(view.viewport(), wheel)
    assert view.transform().m11() < TEXT_SCALE and not view.text_visible()
    view.canvas.set_zooming(False)
    qtbot.wait(30)
    assert text_pixels(view, centre_node(view)) == 0
    # asking for Frame All by key is the user's own zoom too: everything fits, below the floor
    view.frame_all()
    visible = view.mapToScene(view.viewport().rect()).boundingRect()
    assert all(visible.contains(item.sceneBoundingRect()) for item in view.canvas.nodes.values())
    assert view.transform().m11() < FRAME_MIN_SCALE


def test_the_window_opens_as_it_was_left(make_window, qtbot, gui_settings):
    win = make_window()
    win.setGeometry(QRect(10, 20, 780, 740))
    win.docks["Log"].hide()
    default_w = win.docks["Nodes"].width()
    win.resizeDocks([win.docks["Nodes"]], [default_w + 50], Qt.Orientation.Horizontal)
    qtbot.waitUntil(lambda: win.docks["Nodes"].width() >= default_w + 30, timeout=3000)
    size, nodes_w = win.size(), win.docks["Nodes"].width()
    win.close()
    again = make_window()
    qtbot.waitUntil(lambda: again.size() == size, timeout=3000)
    assert again.docks["Log"].isHidden() and not again.docks["Nodes"].isHidden()
    qtbot.waitUntil(lambda: abs(again.docks["Nodes"].width() - nodes_w) <= 4, timeout=3000)


def test_first_start_fills_most_of_the_screen(make_window):
    win = make_window()
    screen = win.screen().availableGeometry()
    g = win.frameGeometry()
    assert g.width() >= 0.8 * screen.width() or win.width() == win.minimumSizeHint().width()
    assert g.height() >= 0.8 * screen.height() and g.height() <= screen.height()
    assert abs(g.center().y() - screen.center().y()) <= 10


def test_one_key_hides_and_shows_the_panels(make_window, qtbot):
    win = make_window()
    view = win.current_view()
    shown = {name for name, d in win.docks.items() if not d.isHidden()}
    width = view.width()
    assert win.act_panels in win.view_menu.actions()
    assert win.act_panels.shortcut().toString() == "F11"
    qtbot.keyClick(view, Qt.Key.Key_F11)
    assert all(d.isHidden() for d in win.docks.values())
    qtbot.waitUntil(lambda: view.width() > width + 200, timeout=3000)  # the canvas takes the room
    qtbot.keyClick(view, Qt.Key.Key_F11)
    assert {name for name, d in win.docks.items() if not d.isHidden()} == shown
    # hidden when the window closes: hidden again at the next start, and F11 still brings them back
    qtbot.keyClick(view, Qt.Key.Key_F11)
    win.close()
    again = make_window()
    assert again.panels_hidden and all(d.isHidden() for d in again.docks.values())
    again.act_panels.trigger()
    assert {name for name, d in again.docks.items() if not d.isHidden()} == shown


def test_welcome_strip_fits_a_1280_px_window(make_window, qtbot):
    win = make_window()
    win.resize(1280, 800)
    qtbot.waitUntil(lambda: win.width() == 1280, timeout=3000)
    strip = win.welcome
    qtbot.waitUntil(lambda: strip.width() <= win.centralWidget().width(), timeout=3000)
    qtbot.wait(20)
    assert strip.width() <= win.width()
    box = strip.rect()
    for b in strip.buttons:  # every example is on screen, inside the strip: nothing to scroll to
        assert b.isVisible()
        top_left = b.mapTo(strip, b.rect().topLeft())
        assert box.contains(QRect(top_left, b.size())), b.objectName()
    assert not [s for s in strip.findChildren(QScrollBar) if s.isVisible()]


SCRIPT = r"""
import json, sys
from PySide6.QtWidgets import QApplication, QScrollBar
app = QApplication([])
from tests.gui.test_first_sight import centre_node, text_pixels
from app.ui.window import MainWindow
win = MainWindow(ask_restore=lambda e: False)
win.ask_unsaved = lambda d: "discard"
win.show()
for _ in range(50):
    app.processEvents()
view = win.current_view()
screen = win.screen().availableGeometry()
node = centre_node(view)
print(json.dumps({"screen": [screen.width(), screen.height()], "window": [win.width(), win.height()],
                  "canvas": view.width(), "scale": view.transform().m11(),
                  "text": text_pixels(view, node), "node": node}))
win.close()
"""


def test_first_start_on_a_laptop_screen_shows_readable_nodes(tmp_path):
    """A fresh start (no settings) on a 1366x768 screen: the window, its canvas and the text on it."""
    config = tmp_path / "screen.json"
    config.write_text(json.dumps({"screens": [{"name": "laptop", "x": 0, "y": 0, "width": 1366, "height": 768,
                                               "logicalDpi": 96, "dpr": 1}]}))
    env = dict(os.environ, QT_QPA_PLATFORM=f"offscreen:configfile={config}", PYTHONPATH=str(paths.REPO_ROOT),
               IMAGEBASH_DATA_DIR=str(tmp_path / "data"), IMAGEBASH_CONFIG_DIR=str(tmp_path / "config"))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=paths.REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["screen"] == [1366, 768]
    assert seen["window"][0] >= 0.8 * 1366 and seen["window"][1] >= 0.8 * 768
    assert seen["window"][0] <= 1366 and seen["window"][1] <= 768
    assert seen["canvas"] >= 0.55 * seen["window"][0], seen  # most of the width: panels share the rest
    assert seen["scale"] >= FRAME_MIN_SCALE - 1e-6
    assert seen["text"] > 40, seen
