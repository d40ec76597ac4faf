"""A node drawn by hand: title, typed ports, parameter rows, thumbnail and run state.

No widget lives inside a node (proxy widgets get slow by the hundred): parameter values are
painted as text and the scene opens one real editor on demand. When zoomed out the item drops
detail (level of detail from the painter's transform), so 500 nodes still pan smoothly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QImage, QPainter, QPainterPath, QPen, QStaticText
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget

from app.graph import NodeMode
from app.ui.theme import port_color
from nodes.registry import REQUIRED, PortSpec
from nodes.schedule import Schedule, is_schedule_json

if TYPE_CHECKING:
    from app.ui.canvas.scene import CanvasScene

WIDTH = 220.0
COLLAPSED_WIDTH = 150.0
TITLE_H = 26.0
ROW_H = 22.0
PORT_R = 5.0
PAD = 10.0
THUMB_MAX_H = 120.0
PROGRESS_H = 3.0

_AV = Qt.AlignmentFlag.AlignVCenter
_AR = Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight
_ER = Qt.TextElideMode.ElideRight

STATES = ("idle", "queued", "running", "cached", "done", "failed", "skipped", "muted")


#: The level of detail from which a node draws its title, port names and values (below: a block).
TEXT_LOD = 0.5


@dataclass
class Row:
    """One painted line of a node: an input and/or an output port, or a parameter with its value."""

    y: float
    left: PortSpec | None = None
    right: PortSpec | None = None
    param: bool = False


class _Fonts:
    title: QFont | None = None
    body: QFont | None = None

    @classmethod
    def get(cls) -> tuple[QFont, QFont]:
        if cls.title is None:
            cls.title = QFont()
            cls.title.setPointSizeF(9.5)
            cls.title.setBold(True)
            cls.body = QFont()
            cls.body.setPointSizeF(8.5)
        return cls.title, cls.body  # type: ignore[return-value]


def format_value(port: PortSpec, value: Any) -> str:
    """How a parameter value reads on the node face."""
    if value is None:
        return "—" if port.default is REQUIRED or port.default is None else format_value(port, port.default)
    if isinstance(value, Schedule):
        value = value.to_json()
    if is_schedule_json(value):  # keyframed: a diamond and the keyframes as written
        return "◆ " + " ".join(str(value.get("schedule", "")).split())
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value).replace("\n", " ")
    if port.kind == "Path":
        text = text.replace("\\", "/").rsplit("/", 1)[-1] or text
    return text


def _range_fraction(port: PortSpec, value: Any) -> float | None:
    """Where a bounded number sits in its range (0..1), or None for anything else."""
    r = port.range
    if r is None or r.min is None or r.max is None or r.max <= r.min:
        return None
    if value is None:
        value = None if port.default is REQUIRED else port.default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return max(0.0, min(1.0, (float(value) - r.min) / (r.max - r.min)))


class NodeItem(QGraphicsItem):
    """The view of one NodeInstance; reads the model, never writes it (edits go to the document)."""

    def __init__(self, canvas: CanvasScene, node_id: str) -> None:
        super().__init__()
        self.canvas = canvas
        self.node_id = node_id
        self.state = "idle"
        self.progress: float | None = None
        self.message: str | None = None
        self.thumbnail: QImage | None = None
        self.rows: list[Row] = []
        self.in_ports: dict[str, QPointF] = {}
        self.out_ports: dict[str, QPointF] = {}
        self._size = (WIDTH, TITLE_H)
        self._thumb_rect = QRectF()
        self.setFlags(QGraphicsItem.GraphicsItemFlag.ItemIsMovable | QGraphicsItem.GraphicsItemFlag.ItemIsSelectable
                      | QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges)
        self.setAcceptHoverEvents(True)
        self.setZValue(1)
        self.relayout()

    # model access ------------------------------------------------------------------------------
    @property
    def node(self):
        return self.canvas.doc.graph.nodes[self.node_id]

    @property
    def spec(self):
        return self.canvas.doc.registry.get(self.node.type)

    def title(self) -> str:
        spec = self.spec
        return self.node.title or (spec.title if spec else f"{self.node.type} (unknown)")

    # layout ------------------------------------------------------------------------------------
    def relayout(self) -> None:
        """Recompute rows and port positions from the declaration and parameters."""
        self.prepareGeometryChange()
        node, spec = self.node, self.spec
        graph = self.canvas.doc.graph
        linked = {ln.dst_port for ln in graph.links_into(self.node_id)}
        if spec is not None:
            inputs = spec.inputs_for(node.params)
            outputs = list(spec.outputs)
        else:  # unknown type: keep it, its parameters and links as they are, and say so
            self.setToolTip(f"Unknown node type '{node.type}': the node pack that provides it is not "
                            "installed. It is kept and saved unchanged, but cannot run.")
            inputs = [PortSpec(ln.dst_port, "Any") for ln in graph.links_into(self.node_id)]
            outputs = [PortSpec(p, "Any") for p in dict.fromkeys(ln.src_port for ln in graph.links_from(self.node_id))]
        wires = [p for p in inputs if not p.is_param]
        params = [p for p in inputs if p.is_param]
        self.rows, self.in_ports, self.out_ports = [], {}, {}
        if node.collapsed:
            w, mid = COLLAPSED_WIDTH, TITLE_H / 2
            self.in_ports = {p.name: QPointF(0, mid) for p in inputs}
            self.out_ports = {p.name: QPointF(w, mid) for p in outputs}
            self._size, self._thumb_rect = (w, TITLE_H), QRectF()
            self._prepare_paint()
            return
        y = TITLE_H + PROGRESS_H + 2
        for i in range(max(len(wires), len(outputs))):
            row = Row(y + ROW_H / 2, wires[i] if i < len(wires) else None, outputs[i] if i < len(outputs) else None)
            self.rows.append(row)
            y += ROW_H
        for p in params:
            self.rows.append(Row(y + ROW_H / 2, p, None, param=p.name not in linked))
            y += ROW_H
        for row in self.rows:
            if row.left is not None:
                self.in_ports[row.left.name] = QPointF(0, row.y)
            if row.right is not None:
                self.out_ports[row.right.name] = QPointF(WIDTH, row.y)
        self._thumb_rect = QRectF()
        if self.thumbnail is not None and not self.thumbnail.isNull():
            tw = WIDTH - 2 * PAD
            th = min(THUMB_MAX_H, tw * self.thumbnail.height() / max(1, self.thumbnail.width()))
            tw = th * self.thumbnail.width() / max(1, self.thumbnail.height())
            self._thumb_rect = QRectF((WIDTH - tw) / 2, y + 4, tw, th)
            y += th + 8
        self._size = (WIDTH, y + 6)
        self._prepare_paint()

    def size(self) -> tuple[float, float]:
        return self._size

    def boundingRect(self) -> QRectF:
        return self._bounds

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        w, h = self._size
        path.addRect(QRectF(-PORT_R - 2, 0, w + 2 * PORT_R + 4, h))
        return path

    # hit testing -------------------------------------------------------------------------------
    def port_scene_pos(self, name: str, output: bool) -> QPointF:
        table = self.out_ports if output else self.in_ports
        local = table.get(name)
        if local is None:  # a port that no longer exists (dynamic inputs): anchor at the title
            local = QPointF(self._size[0] if output else 0, TITLE_H / 2)
        return self.mapToScene(local)

    def port_at(self, scene_pos: QPointF, radius: float = 10.0) -> tuple[str, bool] | None:
        """(port name, is_output) of the port circle under `scene_pos`, if any."""
        p = self.mapFromScene(scene_pos)
        for output, table in ((True, self.out_ports), (False, self.in_ports)):
            for name, c in table.items():
                if (p - c).manhattanLength() <= radius * 1.4:
                    return name, output
        return None

    def param_at(self, scene_pos: QPointF) -> tuple[PortSpec, QRectF] | None:
        """The editable parameter row under `scene_pos` and its rect (item coordinates)."""
        if self.node.collapsed:
            return None
        p = self.mapFromScene(scene_pos)
        for row in self.rows:
            if row.param and row.left is not None and abs(p.y() - row.y) <= ROW_H / 2 and PAD <= p.x() <= WIDTH - PAD:
                return row.left, QRectF(PAD, row.y - ROW_H / 2, WIDTH - 2 * PAD, ROW_H)
        return None

    def on_thumbnail(self, scene_pos: QPointF) -> bool:
        return not self._thumb_rect.isNull() and self._thumb_rect.contains(self.mapFromScene(scene_pos))

    # state -------------------------------------------------------------------------------------
    def set_state(self, state: str, progress: float | None = None, message: str | None = None) -> None:
        if state not in STATES:
            raise ValueError(f"unknown node state {state!r}; one of {', '.join(STATES)}")
        self.state, self.progress, self.message = state, progress, message
        if state == "failed" and message:
            self.setToolTip(f"{self.title()} failed:\n{message}")
        elif self.spec is not None:
            self.setToolTip("")
        self.update()

    def set_thumbnail(self, image: QImage | None) -> None:
        self.thumbnail = image
        self.relayout()
        self.canvas.update_links_of(self.node_id)
        self.update()

    # painting ----------------------------------------------------------------------------------
    def _state_color(self, pal: dict[str, QColor]) -> QColor | None:
        if self.state == "idle" and self.spec is None:
            return pal["failed"]
        return pal.get(self.state) if self.state not in ("idle", "done") else None

    def _prepare_paint(self) -> None:
        """Bounds, port dots and row labels, computed once per layout instead of in every frame."""
        w, h = self._size
        self._bounds = QRectF(-PORT_R - 2, -2, w + 2 * PORT_R + 4, h + 4)
        spec = self.spec
        kinds: dict[tuple[str, bool], str] = {}
        if spec is not None:
            kinds.update({(p.name, False): p.kind for p in spec.inputs_for(self.node.params)})
            kinds.update({(p.name, True): p.kind for p in spec.outputs})
        self._ports = [(c, QBrush(port_color(kinds.get((name, output), "Any"))))
                       for output, table in ((False, self.in_ports), (True, self.out_ports))
                       for name, c in table.items()]
        _, font = _Fonts.get()
        fm = QFontMetricsF(font)
        half = (WIDTH - 2 * PAD) / 2
        params = self.node.params
        self._boxes, self._labels, self._fills = [], [], []

        def label(r: QRectF, text: str, right: bool, dim: bool) -> None:
            st = QStaticText(text)
            st.setTextFormat(Qt.TextFormat.PlainText)
            x = r.right() - fm.horizontalAdvance(text) if right else r.left()
            self._labels.append((QPointF(x, r.center().y() - fm.height() / 2), st, dim))

        for row in self.rows:
            r = QRectF(PAD + 4, row.y - ROW_H / 2, WIDTH - 2 * PAD - 8, ROW_H)
            if row.param and row.left is not None:
                box = QRectF(PAD, row.y - ROW_H / 2 + 2, WIDTH - 2 * PAD, ROW_H - 4)
                self._boxes.append(box)
                frac = _range_fraction(row.left, params.get(row.left.name))
                if frac is not None:  # a bounded number reads like a slider
                    self._fills.append(QRectF(box.left(), box.top(), box.width() * frac, box.height()))
                label(r, fm.elidedText(row.left.name, _ER, half), False, True)
                value = format_value(row.left, params.get(row.left.name))
                label(r, fm.elidedText(value, Qt.TextElideMode.ElideMiddle, r.width() - half - 4), True, False)
                continue
            if row.left is not None:
                label(r, fm.elidedText(row.left.name + ("" if row.left.required else " ?"), _ER, half), False, False)
            if row.right is not None:
                label(r, fm.elidedText(row.right.name, _ER, half), True, False)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        pal = self.canvas.palette
        lod = option.levelOfDetailFromTransform(painter.worldTransform())
        w, h = self._size
        mode = self.node.mode
        body = QRectF(0, 0, w, h)
        state_col = self._state_color(pal)
        painter.setOpacity(0.45 if mode is NodeMode.MUTED else 1.0)
        if lod < 0.4:  # far away: a block in the title colour is all the eye can use
            painter.fillRect(body, state_col or (pal["selection"] if self.isSelected() else pal["node_title"]))
            return
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, lod >= 0.7)
        border = pal["selection"] if self.isSelected() else (state_col or pal["node_border"])
        painter.setPen(QPen(border, 2.0 if (self.isSelected() or state_col is not None) else 1.0))
        painter.setBrush(pal["node_bg"])
        painter.drawRoundedRect(body, 5, 5)
        painter.setPen(Qt.PenStyle.NoPen)
        title_col = pal["bypassed"] if mode is NodeMode.BYPASSED else (
            pal["failed"] if self.state == "failed" else pal["node_title"])
        painter.setBrush(title_col)
        painter.drawRoundedRect(QRectF(1, 1, w - 2, TITLE_H - 1), 4, 4)
        if self.state == "running":
            frac = 1.0 if self.progress is None else max(0.0, min(1.0, self.progress))
            painter.fillRect(QRectF(1, TITLE_H, (w - 2) * frac, PROGRESS_H), pal["running"])
        detail = lod >= TEXT_LOD
        if detail:
            self._paint_title(painter, pal, state_col, mode)
        painter.setPen(QPen(pal["node_border"], 1.0))
        for c, brush in self._ports:
            painter.setBrush(brush)
            painter.drawEllipse(c, PORT_R, PORT_R)
        if detail and not self.node.collapsed and not self.canvas.zooming:  # rows come back when zooming stops
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(pal["bg_alt"])
            for box in self._boxes:
                painter.drawRoundedRect(box, 3, 3)
            fill = QColor(pal["accent"])
            fill.setAlpha(70)
            painter.setBrush(fill)
            for box in self._fills:
                painter.drawRoundedRect(box, 3, 3)
            painter.setFont(_Fonts.get()[1])
            dim, text = pal["node_text_dim"], pal["node_text"]
            for pos, static, is_dim in self._labels:
                painter.setPen(dim if is_dim else text)
                painter.drawStaticText(pos, static)
        if self.thumbnail is not None and not self._thumb_rect.isNull():
            painter.drawImage(self._thumb_rect, self.thumbnail)
        if mode is NodeMode.BYPASSED:
            painter.setPen(Qt.PenStyle.NoPen)
            tint = QColor(pal["bypassed"])
            tint.setAlpha(50)
            painter.setBrush(tint)
            painter.drawRoundedRect(body, 5, 5)
        painter.setOpacity(1.0)

    def _paint_title(self, painter: QPainter, pal: dict[str, QColor], state_col: QColor | None,
                     mode: NodeMode) -> None:
        title_font = _Fonts.get()[0]
        w = self._size[0]
        painter.setFont(title_font)
        painter.setPen(pal["node_text"])
        fm = QFontMetricsF(title_font)
        badge = {"cached": "cached", "failed": "failed", "queued": "queued", "skipped": "skipped"}.get(self.state)
        if self.state == "running":
            badge = self.message or (f"{self.progress:.0%}" if self.progress is not None else "running")
            badge = fm.elidedText(badge, _ER, w * 0.45)
        if mode is not NodeMode.NORMAL:
            badge = mode.value
        text_w = w - 2 * PAD - (fm.horizontalAdvance(badge) + 8 if badge else 0)
        painter.drawText(QRectF(PAD, 0, text_w, TITLE_H), _AV, fm.elidedText(self.title(), _ER, text_w))
        if badge:
            painter.setPen(pal["node_text"] if self.state == "failed" else (
                pal["node_text_dim"] if state_col is None or mode is not NodeMode.NORMAL else state_col))
            painter.drawText(QRectF(0, 0, w - PAD, TITLE_H), _AR, badge)

    # interaction -------------------------------------------------------------------------------
    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: Any) -> Any:
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionChange and self.canvas.snap_enabled:
            return self.canvas.snap(value)
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged:
            self.canvas.update_links_of(self.node_id)
        return super().itemChange(change, value)

    def hoverMoveEvent(self, event) -> None:
        if (self.state == "failed" and self.message) or self.spec is None:
            return super().hoverMoveEvent(event)
        hit = self.port_at(event.scenePos())
        tip = ""
        if hit is not None:
            spec = self.spec
            port = None
            if spec is not None:
                port = spec.output_port(hit[0]) if hit[1] else spec.input(hit[0], self.node.params)
            if port is not None:
                tip = f"{port.name}: {port.kind.rsplit('.', 1)[-1]}" + (f"\n{port.help}" if port.help else "")
        elif self.spec is not None and event.pos().y() < TITLE_H:
            tip = f"{self.spec.title} ({self.spec.id})\n{self.spec.description}"
        self.setToolTip(tip)
        super().hoverMoveEvent(event)

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.LeftButton and not event.modifiers():
            hit = self.param_at(event.scenePos())
            if hit is not None:
                self.canvas.open_editor(self, hit[0], hit[1])
                event.accept()
                return
        super().mousePressEvent(event)

    def mouseDoubleClickEvent(self, event) -> None:
        if self.on_thumbnail(event.scenePos()):
            self.canvas.node_activated(self.node_id)
        elif self.mapFromScene(event.scenePos()).y() < TITLE_H:
            self.canvas.doc.set_collapsed(self.node_id, not self.node.collapsed)
        event.accept()
