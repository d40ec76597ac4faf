"""The scene: builds items from the Graph and keeps them in step with the Graph's events.

Items read the model; every edit goes through the document (undo commands), whose Graph events
come back here. The scene also hosts the one on-demand parameter editor and the grid.
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import QLineF, QPointF, QRectF, QTimer, Signal
from PySide6.QtGui import QPainter, QPen, QPixmapCache
from PySide6.QtWidgets import QComboBox, QGraphicsItem, QGraphicsProxyWidget, QGraphicsScene, QInputDialog, QWidget

from app.graph import GraphEvent, Link
from app.ui import theme
from app.ui.canvas.frames import GroupItem, NoteItem
from app.ui.canvas.link_item import LinkItem
from app.ui.canvas.node_item import ROW_H, NodeItem
from app.ui.document import WorkflowDocument, link_key
from app.ui.widgets.param_editors import PromptEdit, make_editor
from nodes.registry import PortSpec

GRID = 10.0
SCENE_EXTENT = 100_000.0
#: Below this zoom nodes are drawn as blocks and links too paint from cached pixmaps: with hundreds
#: in view, calling into Python per item and frame is what costs, not the drawing.
FAR_SCALE = 0.4


class CanvasScene(QGraphicsScene):
    """Items for one document; see the module docstring."""

    nodeActivated = Signal(str)
    message = Signal(str)

    def __init__(self, doc: WorkflowDocument, parent: Any = None) -> None:
        super().__init__(parent)
        self.doc = doc
        self.palette = theme.canvas_palette()
        self.snap_enabled = True
        self.user_moving = False
        self.far = False
        self.zooming = False
        QPixmapCache.setCacheLimit(max(QPixmapCache.cacheLimit(), 128 * 1024))  # KiB, for the item caches
        self.nodes: dict[str, NodeItem] = {}
        self.links: dict[Link, LinkItem] = {}
        self.groups: dict[str, GroupItem] = {}
        self.notes: dict[str, NoteItem] = {}
        self._by_node: dict[str, set[Link]] = {}
        self.editor: tuple[QGraphicsProxyWidget, str, str] | None = None
        self._editor_done: dict[str, bool] = {}
        self.setSceneRect(-SCENE_EXTENT / 2, -SCENE_EXTENT / 2, SCENE_EXTENT, SCENE_EXTENT)
        self.setItemIndexMethod(QGraphicsScene.ItemIndexMethod.BspTreeIndex)
        for gid in doc.graph.groups:
            self._add_group(gid)
        for nid in doc.graph.nodes:
            self._add_node(nid)
        for ln in doc.graph.links:
            self._add_link(ln)
        for nid in doc.graph.notes:
            self._add_note(nid)
        self._unsubscribe = doc.graph.subscribe(self._on_event)
        doc.reroutesChanged.connect(self._on_reroutes)
        theme.notifier.changed.connect(self._on_theme)

    def close(self) -> None:
        """Stop following the document (the view calls this when it goes away)."""
        self._unsubscribe()
        try:
            self.doc.reroutesChanged.disconnect(self._on_reroutes)
            theme.notifier.changed.disconnect(self._on_theme)
        except (RuntimeError, TypeError):
            pass

    # building ----------------------------------------------------------------------------------
    def _add_node(self, nid: str) -> None:
        item = NodeItem(self, nid)
        item.setPos(*self.doc.graph.nodes[nid].position)
        self.nodes[nid] = item
        self.addItem(item)
        self._cache(item)

    def _add_link(self, ln: Link) -> None:
        item = LinkItem(self, ln)
        self.links[ln] = item
        self._by_node.setdefault(ln.src, set()).add(ln)
        self._by_node.setdefault(ln.dst, set()).add(ln)
        self.addItem(item)
        self._cache(item)

    def _cache(self, item: QGraphicsItem) -> None:
        """Nodes always, links when far, paint from device-resolution pixmaps: panning blits them.
        While zooming every frame would re-render those pixmaps, so painting direct is cheaper."""
        cached = not self.zooming and (self.far or isinstance(item, NodeItem))
        item.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache if cached
                          else QGraphicsItem.CacheMode.NoCache)

    def set_far(self, far: bool) -> None:
        """Switch between full detail and the cached far-away look (see FAR_SCALE)."""
        if far != self.far:
            self.far = far
            self._recache()

    def set_zooming(self, zooming: bool) -> None:
        """While the view zooms, nodes paint direct and without their rows (a draft of each frame)."""
        if zooming != self.zooming:
            self.zooming = zooming
            self._recache()
            if not zooming:
                self.update()

    def _recache(self) -> None:
        for item in (*self.nodes.values(), *self.links.values()):
            self._cache(item)

    def _add_group(self, gid: str) -> None:
        self.groups[gid] = GroupItem(self, gid)
        self.addItem(self.groups[gid])

    def _add_note(self, nid: str) -> None:
        self.notes[nid] = NoteItem(self, nid)
        self.addItem(self.notes[nid])

    # model events ------------------------------------------------------------------------------
    def _on_event(self, ev: GraphEvent) -> None:
        handler = getattr(self, f"_ev_{ev.kind}", None)
        if handler is None:
            return
        try:
            handler(**ev.data)
        except RuntimeError:  # the Qt side is gone (view closed) while the document lives on
            self._unsubscribe()

    def _ev_node_added(self, node, **_: Any) -> None:
        self._add_node(node.id)

    def _ev_node_removed(self, node, **_: Any) -> None:
        if self.editor and self.editor[1] == node.id:
            self.close_editor()
        item = self.nodes.pop(node.id, None)
        if item is not None:
            self.removeItem(item)
        self._by_node.pop(node.id, None)

    def _refresh_node(self, node_id: str, **_: Any) -> None:
        item = self.nodes.get(node_id)
        if item is not None:
            item.relayout()
            item.update()
            self.update_links_of(node_id)

    _ev_param_changed = _ev_mode_changed = _ev_node_changed = _refresh_node

    def _ev_node_moved(self, node_id: str, position, **_: Any) -> None:
        item = self.nodes.get(node_id)
        if item is not None and (item.pos().x(), item.pos().y()) != tuple(position):
            item.setPos(*position)

    def _ev_link_added(self, link: Link) -> None:
        self._add_link(link)
        self._refresh_node(link.dst)

    def _ev_link_removed(self, link: Link) -> None:
        item = self.links.pop(link, None)
        if item is not None:
            for d in item.dots:
                self.removeItem(d)
            self.removeItem(item)
        for end in (link.src, link.dst):
            self._by_node.get(end, set()).discard(link)
        self._refresh_node(link.dst)

    def _ev_group_added(self, group) -> None:
        self._add_group(group.id)

    def _ev_group_removed(self, group) -> None:
        self.removeItem(self.groups.pop(group.id))

    def _ev_group_changed(self, group, **_: Any) -> None:
        self.groups[group.id].sync()

    def _ev_note_added(self, note) -> None:
        self._add_note(note.id)

    def _ev_note_removed(self, note) -> None:
        self.removeItem(self.notes.pop(note.id))

    def _ev_note_changed(self, note, **_: Any) -> None:
        self.notes[note.id].sync()

    def _on_reroutes(self, key: str) -> None:
        for item in self.links.values():
            if item.key() == key:
                item.sync_dots()

    def _on_theme(self, name: str) -> None:
        self.palette = theme.canvas_palette(name)
        for note in self.notes.values():
            note.sync()
        for item in self.items():
            item.update()  # drops the item's cached pixmap too
        for view in self.views():
            view.resetCachedContent()
        self.invalidate()

    # geometry helpers for items ----------------------------------------------------------------
    def port_pos(self, node_id: str, port: str, output: bool) -> QPointF:
        return self.nodes[node_id].port_scene_pos(port, output)

    def update_links_of(self, node_id: str) -> None:
        for ln in self._by_node.get(node_id, ()):
            item = self.links.get(ln)
            if item is not None:
                item.update_path()

    def snap(self, pos: QPointF) -> QPointF:
        if not self.user_moving:
            return pos
        return QPointF(round(pos.x() / GRID) * GRID, round(pos.y() / GRID) * GRID)

    def group_members(self, group_id: str) -> list:
        """Node and note items whose top-left lies inside the group's frame now."""
        rect = QRectF(*self.groups[group_id].rect_now())
        items: list = [n for n in self.nodes.values() if rect.contains(n.pos())]
        return items + [n for n in self.notes.values() if rect.contains(n.pos())]

    def links_crossing(self, line: QLineF) -> list[Link]:
        from app.ui.canvas.link_item import crosses

        return [ln for ln, item in self.links.items() if crosses(item.path(), line)]

    def node_activated(self, node_id: str) -> None:
        self.nodeActivated.emit(node_id)

    def rename_group(self, group_id: str) -> None:
        title, ok = QInputDialog.getText(None, "Group title", "Title:", text=self.doc.graph.groups[group_id].title)
        if ok:
            self.doc.update_group(group_id, title=title)

    # committing a drag -------------------------------------------------------------------------
    def commit_moves(self) -> None:
        """After a drag: push one undo step with every item whose position differs from the model."""
        g = self.doc.graph
        nodes = {nid: (it.pos().x(), it.pos().y()) for nid, it in self.nodes.items()
                 if (it.pos().x(), it.pos().y()) != g.nodes[nid].position}
        groups = {gid: it.rect_now() for gid, it in self.groups.items() if it.rect_now() != tuple(g.groups[gid].rect)}
        notes = {nid: (it.pos().x(), it.pos().y()) for nid, it in self.notes.items()
                 if (it.pos().x(), it.pos().y()) != tuple(g.notes[nid].position)}
        reroutes = {}
        for ln, item in self.links.items():
            pts = [(d.pos().x(), d.pos().y()) for d in item.dots]
            if pts != self.doc.reroutes(link_key(ln)):
                reroutes[ln] = pts
        for gi in self.groups.values():
            gi.members = []
        if nodes or groups or notes or reroutes:
            self.doc.move_nodes(nodes, groups, notes, reroutes)

    # the on-demand parameter editor ------------------------------------------------------------
    def open_editor(self, item: NodeItem, port: PortSpec, rect: QRectF) -> QWidget | None:
        """Show one real editor over a parameter row; it commits to the document and goes away."""
        self.close_editor()
        node_id, value = item.node_id, item.node.params.get(port.name)
        if port.kind == "bool" and port.enum is None and port.choices is None:
            self._commit(node_id, port.name, not bool(value if value is not None else port.default))
            return None
        done = {"closed": False}

        def on_commit(v: Any) -> None:
            if done["closed"]:
                return
            self._commit(node_id, port.name, v)
            done["closed"] = True
            QTimer.singleShot(0, self.close_editor)

        type_id = item.node.type
        widget = make_editor(port, value, on_commit,
                             choices=lambda: self.doc.choices(type_id, port.name))
        proxy = self.addWidget(widget)
        proxy.setZValue(100)
        height = ROW_H * 5 if isinstance(widget, PromptEdit) else max(ROW_H, widget.sizeHint().height())
        proxy.setPos(item.mapToScene(rect.topLeft()))
        proxy.resize(rect.width(), height)
        self.editor = (proxy, node_id, port.name)
        self._editor_done = done
        widget.setFocus()
        if isinstance(widget, QComboBox) and not widget.isEditable():
            QTimer.singleShot(0, widget.showPopup)
        return widget

    def _commit(self, node_id: str, name: str, value: Any) -> None:
        if node_id not in self.doc.graph.nodes:
            return
        try:
            self.doc.set_param(node_id, name, value)
        except ValueError as exc:
            self.message.emit(str(exc))

    def close_editor(self, cancel: bool = False) -> None:
        """Remove the editor; a text edit still open commits unless `cancel` (Escape)."""
        if self.editor is None:
            return
        proxy, _, _ = self.editor
        self.editor = None
        if cancel:
            self._editor_done["closed"] = True
        widget = proxy.widget()
        if isinstance(widget, PromptEdit) and not cancel:
            widget.commit()
        self.removeItem(proxy)
        proxy.deleteLater()

    def editor_widget(self) -> QWidget | None:
        return self.editor[0].widget() if self.editor else None

    def mousePressEvent(self, event) -> None:
        if self.editor is not None and not self.editor[0].sceneBoundingRect().contains(event.scenePos()):
            self.close_editor()
        super().mousePressEvent(event)

    # background --------------------------------------------------------------------------------
    def drawBackground(self, painter, rect: QRectF) -> None:
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        painter.fillRect(rect, self.palette["canvas_bg"])
        scale = painter.worldTransform().m11()
        for step, key, min_scale in ((GRID * 2, "grid", 0.6), (GRID * 10, "grid_major", 0.15)):
            if scale < min_scale:
                continue
            pen = QPen(self.palette[key], 0)  # cosmetic hairline
            painter.setPen(pen)
            left, top = math.floor(rect.left() / step) * step, math.floor(rect.top() / step) * step
            lines = [QLineF(x, rect.top(), x, rect.bottom()) for x in _frange(left, rect.right(), step)]
            lines += [QLineF(rect.left(), y, rect.right(), y) for y in _frange(top, rect.bottom(), step)]
            painter.drawLines(lines)
        painter.restore()


def _frange(start: float, stop: float, step: float):
    x = start
    while x <= stop:
        yield x
        x += step
