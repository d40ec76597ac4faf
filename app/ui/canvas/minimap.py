"""An overview of the whole workflow in a corner of the canvas; click or drag in it to go there.

It paints a cached rendering of the scene (refreshed shortly after the scene changes) with the
visible area on top, so panning the big view costs the minimap one rectangle, not 500 nodes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, QTimer
from PySide6.QtGui import QPainter, QPen, QPixmap
from PySide6.QtWidgets import QWidget

if TYPE_CHECKING:
    from app.ui.canvas.view import CanvasView


class Minimap(QWidget):
    def __init__(self, view: CanvasView) -> None:
        super().__init__(view)
        self.view = view
        self.setFixedSize(QSize(200, 130))
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip("Minimap: click or drag to move the view")
        self._pixmap: QPixmap | None = None
        self._source = QRectF()
        self._timer = QTimer(self, singleShot=True, interval=250)
        self._timer.timeout.connect(self.refresh)
        view.canvas.changed.connect(lambda _r: self._timer.start())

    def content_rect(self) -> QRectF:
        rect = self.view.content_rect()
        return rect if rect.isValid() else QRectF(-500, -300, 1000, 600)

    def refresh(self) -> None:
        """Re-render the scene into the cached pixmap."""
        self._source = self.content_rect().adjusted(-40, -40, 40, 40)
        pm = QPixmap(self.size())
        pm.fill(self.view.canvas.palette["minimap_bg"])
        painter = QPainter(pm)
        self.view.canvas.render(painter, QRectF(self._target()), self._source, Qt.AspectRatioMode.KeepAspectRatio)
        painter.end()
        self._pixmap = pm
        self.update()

    def _target(self) -> QRectF:
        return QRectF(0, 0, self.width(), self.height())

    def _scale(self) -> tuple[float, QPointF]:
        src, dst = self._source, self._target()
        if not src.isValid():
            return 1.0, QPointF()
        s = min(dst.width() / src.width(), dst.height() / src.height())
        off = QPointF((dst.width() - src.width() * s) / 2, (dst.height() - src.height() * s) / 2)
        return s, off

    def paintEvent(self, event) -> None:
        if self._pixmap is None:
            self.refresh()
        painter = QPainter(self)
        painter.drawPixmap(0, 0, self._pixmap)
        s, off = self._scale()
        vis = self.view.mapToScene(self.view.viewport().rect()).boundingRect()
        r = QRectF(off.x() + (vis.left() - self._source.left()) * s, off.y() + (vis.top() - self._source.top()) * s,
                   vis.width() * s, vis.height() * s)
        painter.setPen(QPen(self.view.canvas.palette["minimap_view"], 1.5))
        painter.drawRect(r.intersected(self._target().adjusted(0, 0, -1, -1)))
        painter.setPen(QPen(self.view.canvas.palette["border"], 1))
        painter.drawRect(self._target().adjusted(0, 0, -1, -1))

    def scene_pos(self, p: QPointF) -> QPointF:
        s, off = self._scale()
        return QPointF(self._source.left() + (p.x() - off.x()) / s, self._source.top() + (p.y() - off.y()) / s)

    def mousePressEvent(self, event) -> None:
        self.view.centerOn(self.scene_pos(event.position()))
        event.accept()

    def mouseMoveEvent(self, event) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton:
            self.view.centerOn(self.scene_pos(event.position()))
        event.accept()
