"""Groups (titled, coloured frames that carry their nodes along) and free text notes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsTextItem

if TYPE_CHECKING:
    from app.ui.canvas.scene import CanvasScene

GROUP_TITLE_H = 28.0
HANDLE = 14.0


class GroupItem(QGraphicsItem):
    """The view of a Group. Only its title bar and resize corner catch the mouse, so a drag inside
    the frame still starts a rubber band; dragging the title moves the frame and its members."""

    def __init__(self, canvas: CanvasScene, group_id: str) -> None:
        super().__init__()
        self.canvas, self.group_id = canvas, group_id
        self.members: list[QGraphicsItem] = []
        self._resizing: QPointF | None = None
        self._size = (0.0, 0.0)
        self.setFlags(QGraphicsItem.GraphicsItemFlag.ItemIsMovable | QGraphicsItem.GraphicsItemFlag.ItemIsSelectable
                      | QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges)
        self.setZValue(-10)
        self.sync()

    @property
    def group(self):
        return self.canvas.doc.graph.groups[self.group_id]

    def sync(self) -> None:
        x, y, w, h = self.group.rect
        self.prepareGeometryChange()
        self._size = (w, h)
        self.setPos(x, y)
        self.update()

    def rect_now(self) -> tuple[float, float, float, float]:
        return (self.pos().x(), self.pos().y(), *self._size)

    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, *self._size).adjusted(-2, -2, 2, 2)

    def shape(self) -> QPainterPath:
        w, h = self._size
        path = QPainterPath()
        path.addRect(QRectF(0, 0, w, GROUP_TITLE_H))
        path.addRect(QRectF(w - HANDLE, h - HANDLE, HANDLE, HANDLE))
        return path

    def paint(self, painter, option, widget=None) -> None:
        w, h = self._size
        col = QColor(self.group.color)
        fill = QColor(col)
        fill.setAlpha(55)
        painter.setPen(QPen(self.canvas.palette["selection"] if self.isSelected() else col, 1.5))
        painter.setBrush(fill)
        painter.drawRoundedRect(QRectF(0, 0, w, h), 6, 6)
        bar = QColor(col)
        bar.setAlpha(170)
        painter.fillRect(QRectF(1, 1, w - 2, GROUP_TITLE_H - 1), bar)
        if option.levelOfDetailFromTransform(painter.worldTransform()) >= 0.2:
            font = QFont()
            font.setPointSizeF(11)
            font.setBold(True)
            painter.setFont(font)
            painter.setPen(self.canvas.palette["node_text"])
            painter.drawText(QRectF(10, 0, w - 20, GROUP_TITLE_H), Qt.AlignmentFlag.AlignVCenter, self.group.title)
        painter.setPen(QPen(col, 1.5))
        painter.drawLine(QPointF(w - HANDLE + 3, h - 3), QPointF(w - 3, h - HANDLE + 3))

    def mousePressEvent(self, event) -> None:
        w, h = self._size
        p = event.pos()
        if p.x() >= w - HANDLE and p.y() >= h - HANDLE:
            self._resizing = p
            event.accept()
            return
        self.members = self.canvas.group_members(self.group_id)
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:
        if self._resizing is not None:
            self.prepareGeometryChange()
            self._size = (max(120.0, event.pos().x()), max(80.0, event.pos().y()))
            self.update()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:
        self._resizing = None
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event) -> None:
        self.canvas.rename_group(self.group_id)
        event.accept()

    def itemChange(self, change, value):
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionChange:
            value = self.canvas.snap(value) if self.canvas.snap_enabled else value
            delta = value - self.pos()
            for item in self.members:
                if not item.isSelected():  # selected items are moved by Qt already
                    item.setPos(item.pos() + delta)
            return value
        return super().itemChange(change, value)


class NoteText(QGraphicsTextItem):
    """The editable text of a note; commits to the document when editing ends."""

    def focusOutEvent(self, event) -> None:
        super().focusOutEvent(event)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.NoTextInteraction)
        note_item = self.parentItem()
        if isinstance(note_item, NoteItem) and self.toPlainText() != note_item.note.text:
            note_item.canvas.doc.update_note(note_item.note_id, text=self.toPlainText())


class NoteItem(QGraphicsItem):
    """The view of a Note: a sticky paper with text; double-click edits it."""

    def __init__(self, canvas: CanvasScene, note_id: str) -> None:
        super().__init__()
        self.canvas, self.note_id = canvas, note_id
        self.setFlags(QGraphicsItem.GraphicsItemFlag.ItemIsMovable | QGraphicsItem.GraphicsItemFlag.ItemIsSelectable
                      | QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges)
        self.setZValue(-5)
        self._size = (240.0, 120.0)
        self.text = NoteText(self)
        self.text.setPos(6, 6)
        self.sync()

    @property
    def note(self):
        return self.canvas.doc.graph.notes[self.note_id]

    def sync(self) -> None:
        note = self.note
        self.prepareGeometryChange()
        self._size = tuple(note.size)
        self.setPos(*note.position)
        self.text.setDefaultTextColor(self.canvas.palette["note_text"])
        self.text.setTextWidth(note.size[0] - 12)
        if self.text.toPlainText() != note.text:
            self.text.setPlainText(note.text)
        self.update()

    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, *self._size).adjusted(-2, -2, 2, 2)

    def paint(self, painter, option, widget=None) -> None:
        painter.setPen(QPen(self.canvas.palette["selection"], 1.5) if self.isSelected() else Qt.PenStyle.NoPen)
        painter.setBrush(self.canvas.palette["note_bg"])
        painter.drawRoundedRect(QRectF(0, 0, *self._size), 4, 4)

    def mouseDoubleClickEvent(self, event) -> None:
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextEditorInteraction)
        self.text.setFocus()
        event.accept()

    def itemChange(self, change, value):
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionChange and self.canvas.snap_enabled:
            return self.canvas.snap(value)
        return super().itemChange(change, value)
