"""CanvasView: the node editor widget for one WorkflowDocument.

Mouse gestures live in app/ui/canvas/gestures.py (one class each); this class routes events to
them, handles keys, drops and the clipboard, and offers the run-state API the window drives.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from PySide6.QtCore import QMimeData, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QFont, QGuiApplication, QPainter
from PySide6.QtWidgets import (
    QGraphicsProxyWidget,
    QGraphicsSimpleTextItem,
    QGraphicsTextItem,
    QGraphicsView,
    QInputDialog,
    QMenu,
    QWidget,
)

from app.graph import GraphError, Link, io
from app.graph.validate import fitting_ports
from app.ui.canvas.drops import drop_files
from app.ui.canvas.frames import GroupItem, NoteItem
from app.ui.canvas.gestures import GESTURES, Gesture
from app.ui.canvas.link_item import LinkItem, RerouteDot
from app.ui.canvas.menus import build_context_menu
from app.ui.canvas.minimap import Minimap
from app.ui.canvas.node_item import TEXT_LOD, NodeItem
from app.ui.canvas.scene import FAR_SCALE, CanvasScene
from app.ui.canvas.search import NodeSearchPopup
from app.ui.canvas.shortcuts import canvas_actions
from app.ui.document import WorkflowDocument, is_workflow_json
from app.ui.panels.images import to_qimage
from nodes.registry import NodeSpec

NODE_MIME = "application/x-imagebash-node"
WORKFLOW_MIME = "application/x-imagebash-workflow"
#: A model from the Models panel: JSON {"kind", "path"}; dropped, it becomes its loader node.
MODEL_MIME = "application/x-imagebash-model"
#: The node (and its file parameter) that loads a model of each library kind.
MODEL_LOADERS: dict[str, tuple[str, str]] = {
    "checkpoint": ("imagebash.diffusion.load_model", "checkpoint"),
    "diffusion_model": ("imagebash.diffusion.load_model", "checkpoint"),
    "lora": ("imagebash.diffusion.lora", "file"),
    "controlnet": ("imagebash.guidance.controlnet", "controlnet"),
    "ipadapter": ("imagebash.guidance.ip_adapter", "ip_adapter"),
}
MIN_SCALE, MAX_SCALE = 0.05, 3.0
#: Node items draw their titles, port names and values from this zoom up; below it they are blocks.
TEXT_SCALE = TEXT_LOD
#: Framing done for the user (on open, first start, a resize, jumping to a node) never zooms out
#: past this: the text stays readable (a 9 pt title is ~10 px here) and the user pans to see more.
#: Only their own zoom goes below it: the wheel, or Frame All / Frame Selection asked for by key.
FRAME_MIN_SCALE = 0.8


class CanvasView(QGraphicsView):
    """See the module docstring. `document` is the model; `canvas` the scene showing it."""

    selectionChanged = Signal(list)
    nodeActivated = Signal(str)
    workflowDropped = Signal(str)
    runNodeRequested = Signal(str)
    statusMessage = Signal(str)

    def __init__(self, document: WorkflowDocument, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.document = document
        self.canvas = CanvasScene(document, self)  # kept referenced: a view does not own its scene
        self.setScene(self.canvas)
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.TextAntialiasing)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.SmartViewportUpdate)
        self.setOptimizationFlags(QGraphicsView.OptimizationFlag.DontSavePainterState
                                  | QGraphicsView.OptimizationFlag.DontAdjustForAntialiasing)
        self.setCacheMode(QGraphicsView.CacheModeFlag.CacheBackground)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setAcceptDrops(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.space_held = False
        self._auto_frame = True  # keep the workflow framed through layout resizes until the user moves
        self._gesture: Gesture | None = None
        self._last_scene_pos = QPointF()
        self.search_popup: NodeSearchPopup | None = None
        self.refusal = QGraphicsSimpleTextItem()
        font = QFont()
        font.setBold(True)
        self.refusal.setFont(font)
        self.refusal.setFlag(self.refusal.GraphicsItemFlag.ItemIgnoresTransformations)
        self.refusal.setZValue(2000)
        self.refusal.hide()
        self.canvas.addItem(self.refusal)
        self._refusal_timer = QTimer(self, singleShot=True, interval=2500)
        self._refusal_timer.timeout.connect(self.hide_refusal)
        self._zoom_timer = QTimer(self, singleShot=True, interval=250)
        self._zoom_timer.timeout.connect(lambda: self.canvas.set_zooming(False))
        self.minimap = Minimap(self)
        self.canvas.selectionChanged.connect(self._emit_selection)
        self.canvas.nodeActivated.connect(self.nodeActivated)
        self.canvas.message.connect(self.statusMessage)
        self.destroyed.connect(self.canvas.close)
        #: The canvas commands with their shortcuts (`app.ui.canvas.shortcuts`); the window's menus list them.
        self.actions = canvas_actions(self)
        super().centerOn(0, 0)

    # public API for the window -----------------------------------------------------------------
    def selected_node_ids(self) -> list[str]:
        return [it.node_id for it in self.canvas.selectedItems() if isinstance(it, NodeItem)]

    def select_nodes(self, ids: list[str]) -> None:
        self.canvas.clearSelection()
        for nid in ids:
            if nid in self.canvas.nodes:
                self.canvas.nodes[nid].setSelected(True)

    def set_node_state(self, node_id: str, state: str, progress: float | None = None,
                       message: str | None = None) -> None:
        item = self.canvas.nodes.get(node_id)
        if item is not None:
            item.set_state(state, progress, message)

    def set_node_thumbnail(self, node_id: str, image: Any) -> None:
        """Show an output on the node: encoded image bytes (an engine thumbnail, PNG), a float
        (H, W, C) or (N, H, W, C) frame in [0, 1], or None to clear."""
        item = self.canvas.nodes.get(node_id)
        if item is not None:
            item.set_thumbnail(None if image is None else to_qimage(image, max_side=256))

    def clear_states(self) -> None:
        for item in self.canvas.nodes.values():
            item.set_state("idle")

    def content_rect(self) -> QRectF:
        rect = QRectF()
        for table in (self.canvas.nodes, self.canvas.groups, self.canvas.notes):
            for item in table.values():
                rect = rect.united(item.sceneBoundingRect())
        return rect

    def frame_rect(self, rect: QRectF, readable: bool = False) -> None:
        """Fit `rect` in the view (never above 1.25x); `readable` also keeps the zoom at or above
        FRAME_MIN_SCALE, centring on the rect instead of fitting it all."""
        if rect.isNull() or not rect.isValid():
            self.resetTransform()
            super().centerOn(0, 0)
            return
        self.fitInView(rect.adjusted(-60, -60, 60, 60), Qt.AspectRatioMode.KeepAspectRatio)
        s = self.transform().m11()
        clamped = min(1.25, max(FRAME_MIN_SCALE if readable else MIN_SCALE, s))
        if clamped != s:
            self.scale(clamped / s, clamped / s)
            super().centerOn(rect.center())
        self.minimap.update()

    def text_visible(self) -> bool:
        """Whether the nodes draw their text at the current zoom (see TEXT_SCALE)."""
        return self.transform().m11() >= TEXT_SCALE

    def frame_all(self, readable: bool = False) -> None:
        """Frame every node; `readable` (framing the app does on its own) keeps text drawn."""
        self.frame_rect(self.content_rect(), readable)

    def frame_selected(self, readable: bool = False) -> None:
        rect = QRectF()
        for it in self.canvas.selectedItems():
            rect = rect.united(it.sceneBoundingRect())
        self.frame_rect(rect if rect.isValid() else self.content_rect(), readable)

    def centerOn(self, *args) -> None:
        """Centre the view (the minimap, a test or the window chose a place: stop auto-framing)."""
        self._auto_frame = False
        super().centerOn(*args)

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        """Zoom keeping the scene point under `anchor` (viewport coordinates) in place."""
        s = self.transform().m11()
        factor = max(MIN_SCALE / s, min(MAX_SCALE / s, factor))
        anchor = anchor if anchor is not None else QPointF(self.viewport().rect().center())
        before = self.mapToScene(anchor.toPoint())
        self._auto_frame = False
        self.canvas.set_zooming(True)
        self._zoom_timer.start()
        self.scale(factor, factor)
        after = self.mapToScene(anchor.toPoint())
        d = after - before
        self.translate(d.x(), d.y())
        self.minimap.update()

    def pan_by(self, dx: float, dy: float) -> None:
        self._auto_frame = False
        self.canvas.set_zooming(False)  # a pan is a new gesture: blit cached nodes again
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - round(dx))
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() - round(dy))
        self.minimap.update()

    def node_item_at(self, scene_pos: QPointF) -> NodeItem | None:
        for it in self.canvas.items(scene_pos):
            if isinstance(it, NodeItem):
                return it
        return None

    # refusing a link ---------------------------------------------------------------------------
    def show_refusal(self, text: str, scene_pos: QPointF) -> None:
        self.refusal.setText(text)
        self.refusal.setBrush(self.canvas.palette["refuse"])
        self.refusal.setPos(scene_pos + QPointF(14 / self.transform().m11(), 10 / self.transform().m11()))
        self.refusal.show()

    def hide_refusal(self) -> None:
        self.refusal.hide()

    def refuse(self, text: str, scene_pos: QPointF) -> None:
        """Say why an edit was refused, next to the cursor for a moment and in the status bar."""
        self.show_refusal(text, scene_pos)
        self._refusal_timer.start()
        self.statusMessage.emit(text)

    # search popup ------------------------------------------------------------------------------
    def open_search(self, scene_pos: QPointF, connect_from: tuple[str, str, bool] | None = None) -> NodeSearchPopup:
        """Node search at `scene_pos`; with `connect_from` (node, port, is_output) it lists only nodes
        that can connect to that port and links the new node to it."""
        doc = self.document
        accept = None
        if connect_from is not None:
            node_id, port, output = connect_from
            ps = doc.output_port(node_id, port) if output else doc.input_port(node_id, port)
            kind = ps.kind if ps is not None else "Any"

            def accept(spec: NodeSpec) -> bool:
                return bool(fitting_ports(spec, kind, outputs=not output))

        popup = NodeSearchPopup(doc.registry, accept, self)

        def picked(type_id: str) -> None:
            pos = (scene_pos.x(), scene_pos.y())
            if connect_from is None:
                nid = doc.add_node(type_id, pos)
            elif connect_from[2]:
                nid = doc.add_node_connected(type_id, pos, src=connect_from[:2])
            else:
                nid = doc.add_node_connected(type_id, (pos[0] - 220, pos[1]), dst=connect_from[:2])
            self.select_nodes([nid])

        popup.picked.connect(picked)
        self.search_popup = popup
        popup.show_at(self.viewport().mapToGlobal(self.mapFromScene(scene_pos)))
        return popup

    # mouse -------------------------------------------------------------------------------------
    def mousePressEvent(self, event) -> None:
        self._auto_frame = False
        self._last_scene_pos = self.mapToScene(event.position().toPoint())
        if self.canvas.editor is not None or self._editing_text():
            super().mousePressEvent(event)
            return
        for cls in GESTURES:
            gesture = cls.start(self, event)
            if gesture is not None:
                self._gesture = gesture
                event.accept()
                return
        self.canvas.user_moving = True
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:
        self._last_scene_pos = self.mapToScene(event.position().toPoint())
        if self._gesture is not None:
            self._gesture.move(event)
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:
        if self._gesture is not None:
            gesture, self._gesture = self._gesture, None
            gesture.release(event)
            return
        super().mouseReleaseEvent(event)
        self.canvas.user_moving = False
        self.canvas.commit_moves()

    def mouseDoubleClickEvent(self, event) -> None:
        pos = self.mapToScene(event.position().toPoint())
        if self.canvas.itemAt(pos, self.transform()) is None:
            self.open_search(pos)
            return
        super().mouseDoubleClickEvent(event)

    def wheelEvent(self, event) -> None:
        delta = event.angleDelta().y() or event.angleDelta().x()
        if delta:
            self.zoom_by(1.0015 ** delta, event.position())
        event.accept()

    # keys --------------------------------------------------------------------------------------
    def _editing_text(self) -> bool:
        focus = self.canvas.focusItem()
        return isinstance(focus, (QGraphicsProxyWidget, QGraphicsTextItem))

    def event(self, event) -> bool:
        if event.type() == event.Type.ShortcutOverride and self._editing_text():
            event.accept()  # typing in an editor: Esc, Del, Ctrl+Z... belong to it, not the window's actions
            return True
        if event.type() == event.Type.KeyPress and event.key() == Qt.Key.Key_Tab and not self._editing_text():
            self.open_search(self.cursor_scene_pos())
            return True
        return super().event(event)

    def cursor_scene_pos(self) -> QPointF:
        local = self.viewport().mapFromGlobal(self.cursor().pos())
        if self.viewport().rect().contains(local):
            return self.mapToScene(local)
        return self.mapToScene(self.viewport().rect().center())

    def keyPressEvent(self, event) -> None:
        """Keys that are not commands: Esc closes an editor or clears the selection, Space pans
        (editing commands are QActions: `self.actions`)."""
        if self._editing_text():
            if event.key() == Qt.Key.Key_Escape:
                self.canvas.close_editor(cancel=True)
                self.setFocus()
                return
            super().keyPressEvent(event)
            return
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self.space_held = True
        elif event.key() == Qt.Key.Key_Escape:
            self.canvas.clearSelection()
        else:
            super().keyPressEvent(event)

    def keyReleaseEvent(self, event) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self.space_held = False
        super().keyReleaseEvent(event)

    # edits on the selection --------------------------------------------------------------------
    def _selection(self) -> tuple[list[str], list[str], list[str], list[Link], list[RerouteDot]]:
        items = self.canvas.selectedItems()
        return ([i.node_id for i in items if isinstance(i, NodeItem)],
                [i.group_id for i in items if isinstance(i, GroupItem)],
                [i.note_id for i in items if isinstance(i, NoteItem)],
                [i.link for i in items if isinstance(i, LinkItem)],
                [i for i in items if isinstance(i, RerouteDot)])

    def delete_selection(self) -> None:
        nodes, groups, notes, links, dots = self._selection()
        doc = self.document
        doc.undo_stack.beginMacro("Delete")
        try:
            for link in {d.link_item.link for d in dots}:
                if link in self.canvas.links:
                    keep = [(d.pos().x(), d.pos().y()) for d in self.canvas.links[link].dots if d not in dots]
                    doc.set_reroutes(link, keep)
            doc.disconnect_many([ln for ln in links if ln.src not in nodes and ln.dst not in nodes])
            doc.remove_nodes(nodes, groups, notes)
        finally:
            doc.undo_stack.endMacro()

    def copy_selection(self) -> str | None:
        nodes, groups, notes, _, _ = self._selection()
        if not (nodes or groups or notes):
            return None
        text = self.document.copy_json(nodes, groups, notes)
        mime = QMimeData()
        mime.setText(text)
        mime.setData(WORKFLOW_MIME, text.encode("utf-8"))
        QGuiApplication.clipboard().setMimeData(mime)
        return text

    def paste(self, at: QPointF | None = None, text: str | None = None) -> list[str]:
        """Paste workflow JSON (default: the clipboard) with its top-left at `at`."""
        if text is None:
            mime = QGuiApplication.clipboard().mimeData()
            raw = bytes(mime.data(WORKFLOW_MIME)).decode("utf-8") if mime and mime.hasFormat(WORKFLOW_MIME) else ""
            text = raw or QGuiApplication.clipboard().text()
        if not text or not is_workflow_json(text):
            self.statusMessage.emit("the clipboard holds no imagebash nodes")
            return []
        sub = io.loads(text)
        xs = [n.position for n in sub.nodes.values()] + [(g.rect[0], g.rect[1]) for g in sub.groups.values()]
        xs += [n.position for n in sub.notes.values()]
        origin = (min(p[0] for p in xs), min(p[1] for p in xs)) if xs else (0.0, 0.0)
        at = at if at is not None else self.cursor_scene_pos()
        ids = self.document.paste(text, (round(at.x() - origin[0]), round(at.y() - origin[1])))
        self.select_nodes(ids)
        return ids

    def duplicate_selection(self) -> list[str]:
        nodes, groups, notes, _, _ = self._selection()
        if not (nodes or groups or notes):
            return []
        ids = self.document.paste(self.document.copy_json(nodes, groups, notes), (40.0, 40.0))
        self.select_nodes(ids)
        return ids

    def group_selection(self, title: str = "Group") -> str | None:
        rect = QRectF()
        for it in self.canvas.selectedItems():
            if isinstance(it, (NodeItem, NoteItem)):
                rect = rect.united(it.sceneBoundingRect())
        if not rect.isValid():
            return None
        rect = rect.adjusted(-20, -48, 20, 20)
        return self.document.add_group(title, (rect.x(), rect.y(), rect.width(), rect.height()))

    def toggle_collapse(self) -> None:
        ids = self.selected_node_ids()
        if not ids:
            return
        collapse = not all(self.document.graph.nodes[i].collapsed for i in ids)
        self.document.undo_stack.beginMacro("Collapse" if collapse else "Expand")
        try:
            for nid in ids:
                self.document.set_collapsed(nid, collapse)
        finally:
            self.document.undo_stack.endMacro()

    def rename_node(self, node_id: str) -> None:
        item = self.canvas.nodes[node_id]
        title, ok = QInputDialog.getText(self, "Rename node", "Title (empty for the default):", text=item.title())
        if ok:
            spec = item.spec
            self.document.set_title(node_id, None if spec is not None and title == spec.title else title.strip())

    def _emit_selection(self) -> None:
        try:
            self.selectionChanged.emit(self.selected_node_ids())
        except RuntimeError:  # the scene is going away with the view
            pass

    # context menu ------------------------------------------------------------------------------
    def contextMenuEvent(self, event) -> None:
        self.context_menu(self.mapToScene(event.pos())).exec(event.globalPos())

    def context_menu(self, pos: QPointF) -> QMenu:
        """The right-click menu for what is at scene point `pos` (a node, a group or the canvas)."""
        return build_context_menu(self, pos)

    # drag and drop -----------------------------------------------------------------------------
    def _accepts(self, mime: QMimeData) -> bool:
        return mime.hasFormat(NODE_MIME) or mime.hasFormat(MODEL_MIME) or any(u.isLocalFile() for u in mime.urls())

    def dragEnterEvent(self, event) -> None:
        if self._accepts(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:
        if self._accepts(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event) -> None:
        mime = event.mimeData()
        pos = self.mapToScene(event.position().toPoint())
        if mime.hasFormat(NODE_MIME):
            type_id = bytes(mime.data(NODE_MIME)).decode("utf-8")
            try:
                self.select_nodes([self.document.add_node(type_id, (pos.x(), pos.y()))])
            except GraphError as exc:
                self.statusMessage.emit(str(exc))
            event.acceptProposedAction()
            return
        if mime.hasFormat(MODEL_MIME):
            try:
                model = json.loads(bytes(mime.data(MODEL_MIME)).decode("utf-8"))
            except ValueError:
                model = {}
            self.drop_model(str(model.get("kind", "")), str(model.get("path", "")), pos)
            event.acceptProposedAction()
            return
        files = [pathlib.Path(u.toLocalFile()) for u in mime.urls() if u.isLocalFile()]
        if files:
            self.drop_files(files, pos)
            event.acceptProposedAction()
            return
        event.ignore()

    def drop_model(self, kind: str, path: str, pos: QPointF) -> str | None:
        """A model from the library becomes its loader node, with the file set (one undo step)."""
        from app.library.missing import param_value

        loader = MODEL_LOADERS.get(kind)
        if loader is None or not path:
            self.statusMessage.emit(f"{pathlib.Path(path).name or 'this model'}: no node loads a {kind or 'model'} "
                                    "on its own (pick it in a loader's dropdown)")
            return None
        type_id, port = loader
        try:
            nid = self.document.add_node(type_id, (pos.x(), pos.y()), {port: param_value(path, port_kind(kind))})
        except GraphError as exc:
            self.statusMessage.emit(str(exc))
            return None
        self.select_nodes([nid])
        return nid

    def drop_files(self, files: list[pathlib.Path], pos: QPointF) -> list[str]:
        """A PNG carrying a workflow opens it; other images and videos become Load nodes."""
        ids = drop_files(self.document, files, (pos.x(), pos.y()), self.workflowDropped.emit,
                         self.statusMessage.emit)
        self.select_nodes(ids)
        return ids

    # layout ------------------------------------------------------------------------------------
    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._auto_frame and self.canvas.nodes:
            self.frame_all(readable=True)
        m = 10
        self.minimap.move(self.width() - self.minimap.width() - m, self.height() - self.minimap.height() - m)

    def paintEvent(self, event) -> None:
        self.canvas.set_far(self.transform().m11() < FAR_SCALE)
        super().paintEvent(event)

    def scrollContentsBy(self, dx: int, dy: int) -> None:
        super().scrollContentsBy(dx, dy)
        self.minimap.update()


def port_kind(kind: str) -> str:
    """The model kind a loader's port lists (a denoiser-only file sits in Load Model's checkpoint list)."""
    return "checkpoint" if kind == "diffusion_model" else kind
