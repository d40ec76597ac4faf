"""Links drawn as curves from an output to an input, through optional reroute dots."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from PySide6.QtCore import QLineF, QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPainterPathStroker, QPen
from PySide6.QtWidgets import QGraphicsEllipseItem, QGraphicsItem, QGraphicsPathItem

from app.graph import Link
from app.ui.document import link_key
from app.ui.theme import port_color

if TYPE_CHECKING:
    from app.ui.canvas.scene import CanvasScene

DOT_R = 5.0


def curve(a: QPointF, b: QPointF, path: QPainterPath | None = None) -> QPainterPath:
    """A horizontal-tangent cubic from a to b (appended to `path` when given)."""
    if path is None:
        path = QPainterPath(a)
    dx = max(40.0, abs(b.x() - a.x()) * 0.5)
    path.cubicTo(QPointF(a.x() + dx, a.y()), QPointF(b.x() - dx, b.y()), b)
    return path


def crosses(path: QPainterPath, line: QLineF) -> bool:
    """Whether a (flattened) path crosses a line segment."""
    for poly in path.toSubpathPolygons():
        for i in range(len(poly) - 1):
            kind, _ = QLineF(poly[i], poly[i + 1]).intersects(line)
            if kind == QLineF.IntersectionType.BoundedIntersection:
                return True
    return False


class LinkItem(QGraphicsPathItem):
    """The view of one Link; its path follows the two port positions and the reroute dots."""

    def __init__(self, canvas: CanvasScene, link: Link) -> None:
        super().__init__()
        self.canvas, self.link = canvas, link
        self.dots: list[RerouteDot] = []
        self._bounds = QRectF()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable)
        self.setZValue(0)
        out = canvas.doc.output_port(link.src, link.src_port)
        self.color = port_color(out.kind if out else "Any")
        self._pen = QPen(self.color, 2.2)
        self._pen_sel = QPen(canvas.palette["selection"], 3.0)
        self.sync_dots()

    def key(self) -> str:
        return link_key(self.link)

    def sync_dots(self) -> None:
        """Rebuild reroute dot items from the document."""
        for d in self.dots:
            self.canvas.removeItem(d)
        self.dots = [RerouteDot(self, i, QPointF(*p)) for i, p in enumerate(self.canvas.doc.reroutes(self.key()))]
        for d in self.dots:
            self.canvas.addItem(d)
        self.update_path()

    def points(self) -> list[QPointF]:
        a = self.canvas.port_pos(self.link.src, self.link.src_port, True)
        b = self.canvas.port_pos(self.link.dst, self.link.dst_port, False)
        return [a, *(d.pos() for d in self.dots), b]

    def update_path(self) -> None:
        pts = self.points()
        path = QPainterPath(pts[0])
        for a, b in itertools.pairwise(pts):
            curve(a, b, path)
        self.setPath(path)

    def segment_index(self, scene_pos: QPointF) -> int:
        """Index of the segment (between two consecutive points) nearest to `scene_pos`."""
        pts = self.points()
        best, best_d = 0, float("inf")
        for i, (a, b) in enumerate(itertools.pairwise(pts)):
            for poly in curve(a, b).toSubpathPolygons():
                for p in poly:
                    d = (p - scene_pos).manhattanLength()
                    if d < best_d:
                        best, best_d = i, d
        return best

    def shape(self) -> QPainterPath:
        stroker = QPainterPathStroker()
        stroker.setWidth(10)
        return stroker.createStroke(self.path())

    def setPath(self, path: QPainterPath) -> None:
        self.prepareGeometryChange()
        self._bounds = path.controlPointRect().adjusted(-4, -4, 4, 4)
        super().setPath(path)

    def boundingRect(self) -> QRectF:
        return self._bounds

    def paint(self, painter, option, widget=None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing,
                              option.levelOfDetailFromTransform(painter.worldTransform()) >= 0.5)
        painter.setPen(self._pen_sel if self.isSelected() else self._pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(self.path())

    def mouseDoubleClickEvent(self, event) -> None:
        """Double-click a link to add a reroute dot there."""
        pts = [(p.x(), p.y()) for p in (d.pos() for d in self.dots)]
        pts.insert(self.segment_index(event.scenePos()), (event.scenePos().x(), event.scenePos().y()))
        self.canvas.doc.set_reroutes(self.link, pts)
        event.accept()


class RerouteDot(QGraphicsEllipseItem):
    """A draggable bend point of a link; double-click removes it."""

    def __init__(self, link_item: LinkItem, index: int, pos: QPointF) -> None:
        super().__init__(-DOT_R, -DOT_R, 2 * DOT_R, 2 * DOT_R)
        self.link_item, self.index = link_item, index
        self.setPos(pos)
        self.setBrush(link_item.color)
        self.setPen(QPen(QColor(link_item.canvas.palette["node_border"]), 1))
        self.setZValue(2)
        self.setFlags(QGraphicsItem.GraphicsItemFlag.ItemIsMovable | QGraphicsItem.GraphicsItemFlag.ItemIsSelectable
                      | QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges)
        self.setToolTip("Reroute: drag to move, double-click to remove")

    def itemChange(self, change, value):
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionChange and self.link_item.canvas.snap_enabled:
            return self.link_item.canvas.snap(value)
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged:
            self.link_item.update_path()
        return super().itemChange(change, value)

    def mouseDoubleClickEvent(self, event) -> None:
        pts = [(d.pos().x(), d.pos().y()) for d in self.link_item.dots if d is not self]
        self.link_item.canvas.doc.set_reroutes(self.link_item.link, pts)
        event.accept()
