"""Shared helpers for the canvas tests: a node registry of small test nodes and real input events.

Events go to `view.viewport()` at positions mapped from scene coordinates, as a user's mouse
would; drops are QDragEnter/QDragMove/QDrop events carrying QMimeData (QTest cannot drive a QDrag).
"""

from __future__ import annotations

import enum
import pathlib
from typing import Annotated

import numpy as np
from PySide6.QtCore import QEvent, QMimeData, QPoint, QPointF, Qt
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent, QMouseEvent
from PySide6.QtWidgets import QApplication

from nodes.registry import Registry, default_registry, node
from nodes.types import Image, Mask, Multiline, Range

REG = Registry(load_packs=False)  # no built-in packs


class BlendMode(str, enum.Enum):
    NORMAL = "normal"
    MULTIPLY = "multiply"
    SCREEN = "screen"


@node("test.canvas.solid", category="test/source", title="Solid", registry=REG)
def solid(width: Annotated[int, Range(1, 4096)] = 64, height: Annotated[int, Range(1, 4096)] = 64,
          value: Annotated[float, Range(0, 1, 0.01)] = 0.5) -> Image:
    """A flat grey image."""
    return np.full((1, height, width, 3), value, np.float32)


@node("test.canvas.blend", category="test/blend", title="Blend", registry=REG)
def blend(base: Image, layer: Image, mode: BlendMode = BlendMode.NORMAL,
          opacity: Annotated[float, Range(0, 1, 0.01)] = 1.0, mask: Mask | None = None) -> Image:
    """Blend layer over base."""
    return base


@node("test.canvas.to_mask", category="test/mask", title="To Mask", registry=REG)
def to_mask(image: Image, invert: bool = False) -> Mask:
    """Luminance as a mask."""
    return image.mean(-1)


@node("test.canvas.prompt", category="test/text", title="Prompt", registry=REG)
def prompt(text: Annotated[str, Multiline()] = "a cat", steps: int = 20) -> str:
    """A prompt."""
    return text


for _type_id in ("imagebash.image.load", "imagebash.video.load"):
    if default_registry().get(_type_id) is not None:
        REG.register(default_registry().get(_type_id))

LEFT, MID = Qt.MouseButton.LeftButton, Qt.MouseButton.MiddleButton
NO_MOD, CTRL = Qt.KeyboardModifier.NoModifier, Qt.KeyboardModifier.ControlModifier


def make_view(qtbot, doc=None, size=(1200, 800)):
    from app.ui.canvas.view import CanvasView
    from app.ui.document import WorkflowDocument

    doc = doc or WorkflowDocument(registry=REG)
    view = CanvasView(doc)
    qtbot.addWidget(view)
    view.resize(*size)
    view.show()
    qtbot.waitExposed(view)
    view.windowHandle().requestActivate()  # the canvas commands are QAction shortcuts: they need an active window
    qtbot.waitUntil(view.isActiveWindow, timeout=3000)
    view.resetTransform()
    view.centerOn(300, 150)
    return view


def vp_pos(view, scene_pt) -> QPointF:
    return QPointF(view.mapFromScene(QPointF(*scene_pt) if isinstance(scene_pt, tuple) else scene_pt))


def mouse(view, kind: QEvent.Type, scene_pt, button=LEFT, buttons=None, mods=NO_MOD, viewport=False) -> None:
    """One mouse event at a scene point (or at a viewport point with viewport=True)."""
    vp = view.viewport()
    pos = QPointF(scene_pt) if viewport else vp_pos(view, scene_pt)
    if buttons is None:
        buttons = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseButtonRelease else button
    ev = QMouseEvent(kind, pos, QPointF(vp.mapToGlobal(pos.toPoint())), button, buttons, mods)
    QApplication.sendEvent(vp, ev)


def drag(view, a, b, button=LEFT, mods=NO_MOD, steps=6, viewport=False) -> None:
    """Press at scene point a, move in steps to b, release there (viewport points with viewport=True)."""
    a, b = QPointF(*a) if isinstance(a, tuple) else a, QPointF(*b) if isinstance(b, tuple) else b
    mouse(view, QEvent.Type.MouseButtonPress, a, button, mods=mods, viewport=viewport)
    for i in range(1, steps + 1):
        mouse(view, QEvent.Type.MouseMove, a + (b - a) * (i / steps), Qt.MouseButton.NoButton, button, mods,
              viewport=viewport)
    mouse(view, QEvent.Type.MouseButtonRelease, b, button, mods=mods, viewport=viewport)


def click(view, p, button=LEFT, mods=NO_MOD) -> None:
    mouse(view, QEvent.Type.MouseButtonPress, p, button, mods=mods)
    mouse(view, QEvent.Type.MouseButtonRelease, p, button, mods=mods)


def double_click(view, p) -> None:
    click(view, p)
    mouse(view, QEvent.Type.MouseButtonDblClick, p)
    mouse(view, QEvent.Type.MouseButtonRelease, p)


def drop(view, mime: QMimeData, scene_pt) -> bool:
    """Drag-enter, drag-move and drop `mime` at a scene point; returns whether the drop was accepted."""
    vp = view.viewport()
    pos = vp_pos(view, scene_pt)
    actions = Qt.DropAction.CopyAction
    enter = QDragEnterEvent(pos.toPoint(), actions, mime, LEFT, NO_MOD)
    QApplication.sendEvent(vp, enter)
    if not enter.isAccepted():
        return False
    QApplication.sendEvent(vp, QDragMoveEvent(pos.toPoint(), actions, mime, LEFT, NO_MOD))
    ev = QDropEvent(pos, actions, mime, LEFT, NO_MOD)
    QApplication.sendEvent(vp, ev)
    return ev.isAccepted()


def file_mime(*paths: pathlib.Path) -> QMimeData:
    from PySide6.QtCore import QUrl

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    return mime


def port_pos(view, node_id: str, port: str, output: bool) -> QPointF:
    return view.canvas.port_pos(node_id, port, output)


def pixel(image, view, scene_pt):
    """The colour of the grabbed viewport image at a scene point."""
    p: QPoint = view.mapFromScene(QPointF(*scene_pt) if isinstance(scene_pt, tuple) else scene_pt)
    return image.toImage().pixelColor(p)


def close_to(c1, c2, tol=40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(c1.getRgb()[:3], c2.getRgb()[:3], strict=True))
