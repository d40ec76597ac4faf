"""The node palette: node types by category with a search field; drag one onto a canvas.

Drags carry the node type id as `application/x-imagebash-node`; double-click or Enter emits
`nodeRequested(type_id)` so the window can add it in the middle of the current canvas.
"""

from __future__ import annotations

from PySide6.QtCore import QMimeData, Qt, Signal
from PySide6.QtWidgets import QLineEdit, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from app.ui.canvas.search import matches
from nodes.registry import Registry

NODE_MIME = "application/x-imagebash-node"
TYPE_ROLE = Qt.ItemDataRole.UserRole


class _NodeTree(QTreeWidget):
    def mimeTypes(self) -> list[str]:
        return [NODE_MIME]

    def mimeData(self, items: list[QTreeWidgetItem]) -> QMimeData:
        mime = QMimeData()
        ids = [it.data(0, TYPE_ROLE) for it in items if it.data(0, TYPE_ROLE)]
        if ids:
            mime.setData(NODE_MIME, ids[0].encode("utf-8"))
            mime.setText(ids[0])
        return mime


class NodePalette(QWidget):
    """Categories and search over the registry's node types."""

    nodeRequested = Signal(str)

    def __init__(self, registry: Registry, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("NodePalette")
        self.registry = registry
        self.search = QLineEdit(self)
        self.search.setPlaceholderText("Search nodes…")
        self.search.setClearButtonEnabled(True)
        self.tree = _NodeTree(self)
        self.tree.setHeaderHidden(True)
        self.tree.setDragEnabled(True)
        self.tree.setDragDropMode(QTreeWidget.DragDropMode.DragOnly)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.search)
        lay.addWidget(self.tree)
        self.search.textChanged.connect(self.refilter)
        self.search.returnPressed.connect(self._request_first)
        self.tree.itemActivated.connect(self._activated)
        self.populate()

    def populate(self) -> None:
        """(Re)build the tree from the registry: one branch per category path ('image/blend')."""
        self.tree.clear()
        branches: dict[str, QTreeWidgetItem] = {}
        for spec in self.registry.all():
            parent = None
            path = ""
            for part in (spec.category or "misc").split("/"):
                path = f"{path}/{part}"
                if path not in branches:
                    branch = QTreeWidgetItem([part])
                    branch.setFlags(branch.flags() & ~Qt.ItemFlag.ItemIsDragEnabled)
                    (parent.addChild(branch) if parent is not None else self.tree.addTopLevelItem(branch))
                    branches[path] = branch
                parent = branches[path]
            leaf = QTreeWidgetItem([spec.title])
            leaf.setData(0, TYPE_ROLE, spec.id)
            leaf.setToolTip(0, f"{spec.title} ({spec.id})\n{spec.description}")
            parent.addChild(leaf)
        self.tree.expandAll()
        self.refilter(self.search.text())

    def leaves(self) -> list[QTreeWidgetItem]:
        out: list[QTreeWidgetItem] = []
        stack = [self.tree.topLevelItem(i) for i in range(self.tree.topLevelItemCount())]
        while stack:
            it = stack.pop()
            if it.data(0, TYPE_ROLE):
                out.append(it)
            stack.extend(it.child(i) for i in range(it.childCount()))
        return out

    def visible_type_ids(self) -> list[str]:
        return [it.data(0, TYPE_ROLE) for it in self.leaves() if not it.isHidden()]

    def refilter(self, query: str) -> None:
        for leaf in self.leaves():
            spec = self.registry.get(leaf.data(0, TYPE_ROLE))
            leaf.setHidden(spec is None or not matches(spec, query))

        def hide_empty(item: QTreeWidgetItem) -> bool:
            if item.data(0, TYPE_ROLE):
                return not item.isHidden()
            shown = [hide_empty(item.child(i)) for i in range(item.childCount())]
            item.setHidden(not any(shown))
            return any(shown)

        for i in range(self.tree.topLevelItemCount()):
            hide_empty(self.tree.topLevelItem(i))

    def _activated(self, item: QTreeWidgetItem) -> None:
        if item.data(0, TYPE_ROLE):
            self.nodeRequested.emit(item.data(0, TYPE_ROLE))

    def _request_first(self) -> None:
        ids = self.visible_type_ids()
        if ids:
            self.nodeRequested.emit(ids[0])

    def mime_for(self, type_id: str) -> QMimeData:
        """The drag payload for `type_id` (what dragging its row carries)."""
        leaf = next(it for it in self.leaves() if it.data(0, TYPE_ROLE) == type_id)
        return self.tree.mimeData([leaf])
