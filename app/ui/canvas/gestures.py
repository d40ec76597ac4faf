"""Canvas gestures, one small class each: pan, cut links, drag a link, rubber-band selection.

The view asks each class in turn whether a mouse press starts its gesture (`start` returns an
instance or None); the active gesture then gets the moves and the release. A gesture changes the
model only through the document, once, at the end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QLineF, QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPathItem, QGraphicsRectItem

from app.graph import Link
from app.graph.validate import fitting_ports
from app.ui.canvas.link_item import LinkItem, curve
from app.ui.theme import port_color
from nodes.registry import kind_name

if TYPE_CHECKING:
    from app.ui.canvas.view import CanvasView


class Gesture:
    """A mouse interaction from press to release."""

    def __init__(self, view: CanvasView) -> None:
        self.view = view

    @classmethod
    def start(cls, view: CanvasView, event) -> Gesture | None:
        raise NotImplementedError

    def move(self, event) -> None:
        pass

    def release(self, event) -> None:
        pass


class PanGesture(Gesture):
    """Middle-button drag, or left drag while Space is held, scrolls the canvas."""

    @classmethod
    def start(cls, view, event):
        left_space = event.button() == Qt.MouseButton.LeftButton and view.space_held
        if event.button() != Qt.MouseButton.MiddleButton and not left_space:
            return None
        g = cls(view)
        g.last = event.position()
        view.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
        return g

    def move(self, event) -> None:
        d = event.position() - self.last
        self.last = event.position()
        self.view.pan_by(d.x(), d.y())

    def release(self, event) -> None:
        self.view.viewport().unsetCursor()


class CutGesture(Gesture):
    """Ctrl + left drag across links cuts every link the stroke crosses (one undo step)."""

    @classmethod
    def start(cls, view, event):
        if event.button() != Qt.MouseButton.LeftButton or not event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            return None
        if any(not isinstance(it, LinkItem) for it in view.items(event.position().toPoint())):
            return None  # ctrl-click on a node toggles its selection instead
        g = cls(view)
        g.points = [view.mapToScene(event.position().toPoint())]
        g.item = QGraphicsPathItem()
        pen = QPen(view.canvas.palette["refuse"], 1.5, Qt.PenStyle.DashLine)
        pen.setCosmetic(True)
        g.item.setPen(pen)
        g.item.setZValue(1000)
        view.canvas.addItem(g.item)
        return g

    def move(self, event) -> None:
        self.points.append(self.view.mapToScene(event.position().toPoint()))
        path = QPainterPath(self.points[0])
        for p in self.points[1:]:
            path.lineTo(p)
        self.item.setPath(path)

    def release(self, event) -> None:
        self.move(event)
        self.view.canvas.removeItem(self.item)
        cut: list[Link] = []
        for a, b in zip(self.points, self.points[1:], strict=False):
            if a != b:
                cut += [ln for ln in self.view.canvas.links_crossing(QLineF(a, b)) if ln not in cut]
        if cut:
            self.view.document.disconnect_many(cut, "Cut links")


class LinkDragGesture(Gesture):
    """Drag from a port: drop on a fitting port to link, on a wrong one to see why not, on empty
    space to pick a new node that gets connected. Dragging from a linked input picks its link up."""

    @classmethod
    def start(cls, view, event):
        if event.button() != Qt.MouseButton.LeftButton or event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            return None
        pos = view.mapToScene(event.position().toPoint())
        node = view.node_item_at(pos)
        hit = node.port_at(pos) if node is not None else None
        if hit is None:
            return None
        g = cls(view)
        doc = view.document
        g.picked = None if hit[1] else doc.graph.link_into(node.node_id, hit[0])
        if g.picked is not None:
            g.fixed = (g.picked.src, g.picked.src_port, True)
            view.canvas.links[g.picked].setVisible(False)
        else:
            g.fixed = (node.node_id, hit[0], hit[1])
        port = doc.output_port(g.fixed[0], g.fixed[1]) if g.fixed[2] else doc.input_port(g.fixed[0], g.fixed[1])
        g.kind = port.kind if port is not None else "Any"
        g.item = QGraphicsPathItem()
        g.item.setZValue(1000)
        g.item.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable, False)
        view.canvas.addItem(g.item)
        g.target = None
        g.problem = None
        g.move(event)
        return g

    def _anchor(self) -> QPointF:
        return self.view.canvas.port_pos(*self.fixed)

    def _link_to(self, node_id: str, port: str) -> Link:
        src, sp, out = self.fixed
        return Link(src, sp, node_id, port) if out else Link(node_id, port, src, sp)

    def _find_target(self, pos: QPointF) -> tuple[tuple[str, str] | None, str | None]:
        """The (node, port) the link would attach to under `pos`, and why it cannot, if it cannot."""
        node = self.view.node_item_at(pos)
        if node is None:
            return None, None
        doc = self.view.document
        want_output = not self.fixed[2]
        hit = node.port_at(pos, radius=12.0)
        if hit is not None and hit[1] == want_output:
            ln = self._link_to(node.node_id, hit[0])
            return (node.node_id, hit[0]), doc.link_problem(ln.src, ln.src_port, ln.dst, ln.dst_port)
        spec = node.spec
        fits = [] if spec is None else fitting_ports(spec, self.kind, want_output, node.node.params)
        if not fits:
            what = "output that feeds" if want_output else "input that takes"
            return (node.node_id, ""), f"'{node.title()}' has no {what} {kind_name(self.kind)}"
        free = [p for p in fits if want_output or doc.graph.link_into(node.node_id, p.name) is None]
        ln = self._link_to(node.node_id, (free or fits)[0].name)
        return (node.node_id, (free or fits)[0].name), doc.link_problem(ln.src, ln.src_port, ln.dst, ln.dst_port)

    def move(self, event) -> None:
        pos = self.view.mapToScene(event.position().toPoint())
        self.target, self.problem = self._find_target(pos)
        end = pos
        if self.target is not None and self.target[1] and not self.problem:
            end = self.view.canvas.port_pos(self.target[0], self.target[1], not self.fixed[2])
        a, b = (self._anchor(), end) if self.fixed[2] else (end, self._anchor())
        self.item.setPath(curve(a, b))
        color = QColor(self.view.canvas.palette["refuse"]) if self.problem else port_color(self.kind)
        self.item.setPen(QPen(color, 2.2, Qt.PenStyle.DashLine if self.problem else Qt.PenStyle.SolidLine))
        if self.problem:
            self.view.show_refusal(self.problem, pos)
        else:
            self.view.hide_refusal()

    def release(self, event) -> None:
        self.move(event)
        canvas, doc = self.view.canvas, self.view.document
        canvas.removeItem(self.item)
        if self.picked is not None and self.picked in canvas.links:
            canvas.links[self.picked].setVisible(True)
        if self.problem:
            self.view.refuse(self.problem, self.view.mapToScene(event.position().toPoint()))
            return
        self.view.hide_refusal()
        if self.target is not None:
            new = self._link_to(*self.target)
            if new == self.picked:
                return
            doc.undo_stack.beginMacro("Connect")
            try:
                if self.picked is not None:
                    doc.disconnect(self.picked)
                doc.connect(new.src, new.src_port, new.dst, new.dst_port)
            finally:
                doc.undo_stack.endMacro()
        elif self.picked is not None:
            doc.disconnect(self.picked)
        else:
            pos = self.view.mapToScene(event.position().toPoint())
            self.view.open_search(pos, connect_from=self.fixed)


class RubberBandGesture(Gesture):
    """Left drag on empty canvas selects what the rectangle touches (Shift adds to the selection)."""

    @classmethod
    def start(cls, view, event):
        if event.button() != Qt.MouseButton.LeftButton:
            return None
        pos = view.mapToScene(event.position().toPoint())
        if view.canvas.itemAt(pos, view.transform()) is not None:
            return None
        g = cls(view)
        g.origin = pos
        g.additive = bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        g.before = set(view.canvas.selectedItems()) if g.additive else set()
        if not g.additive:
            view.canvas.clearSelection()
        g.item = QGraphicsRectItem()
        pal = view.canvas.palette
        fill = QColor(pal["accent"])
        fill.setAlpha(40)
        pen = QPen(pal["accent"], 1)
        pen.setCosmetic(True)
        g.item.setPen(pen)
        g.item.setBrush(fill)
        g.item.setZValue(1000)
        view.canvas.addItem(g.item)
        return g

    def move(self, event) -> None:
        rect = QRectF(self.origin, self.view.mapToScene(event.position().toPoint())).normalized()
        self.item.setRect(rect)
        hit = {it for it in self.view.canvas.items(rect, Qt.ItemSelectionMode.IntersectsItemShape)
               if it.flags() & QGraphicsItem.GraphicsItemFlag.ItemIsSelectable and not isinstance(it, LinkItem)}
        for it in self.view.canvas.selectedItems():
            if it not in hit and it not in self.before:
                it.setSelected(False)
        for it in hit:
            it.setSelected(True)

    def release(self, event) -> None:
        self.move(event)
        self.view.canvas.removeItem(self.item)


GESTURES: tuple[type[Gesture], ...] = (PanGesture, CutGesture, LinkDragGesture, RubberBandGesture)

__all__ = ["GESTURES", "CutGesture", "Gesture", "LinkDragGesture", "PanGesture", "RubberBandGesture"]
