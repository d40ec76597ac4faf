"""The node search popup (Tab / double-click on the canvas, or a link dropped on empty space)."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtWidgets import QFrame, QLineEdit, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from nodes.registry import NodeSpec, Registry


def matches(spec: NodeSpec, query: str) -> bool:
    """Every word of the query appears in the node's title, id or category."""
    hay = f"{spec.title} {spec.id} {spec.category}".lower()
    return all(word in hay for word in query.lower().split())


class NodeSearchPopup(QFrame):
    """A search field over a list of node types; Enter or a click picks one."""

    picked = Signal(str)

    def __init__(self, registry: Registry, accept: Callable[[NodeSpec], bool] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Popup)
        self.setObjectName("NodeSearchPopup")
        self.specs = [s for s in registry.all() if accept is None or accept(s)]
        self.edit = QLineEdit(self)
        self.edit.setPlaceholderText("Search nodes…")
        self.list = QListWidget(self)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.edit)
        lay.addWidget(self.list)
        self.resize(320, 360)
        self.edit.textChanged.connect(self.refilter)
        self.edit.returnPressed.connect(self.pick_current)
        self.list.itemActivated.connect(lambda _it: self.pick_current())
        self.list.itemClicked.connect(lambda _it: self.pick_current())
        self.refilter("")

    def refilter(self, query: str) -> None:
        """List the matching nodes, those whose title starts with the query first."""
        self.list.clear()
        q = query.strip().lower()
        found = [s for s in self.specs if matches(s, query)]
        found.sort(key=lambda s: (not s.title.lower().startswith(q), q not in s.title.lower()))
        for spec in found:
            item = QListWidgetItem(f"{spec.title}    ·  {spec.category}")
            item.setData(Qt.ItemDataRole.UserRole, spec.id)
            item.setToolTip(spec.description)
            self.list.addItem(item)
        self.list.setCurrentRow(0)

    def type_ids(self) -> list[str]:
        return [self.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.list.count())]

    def pick_current(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self.picked.emit(item.data(Qt.ItemDataRole.UserRole))
            self.close()

    def keyPressEvent(self, event) -> None:
        if event.key() in (Qt.Key.Key_Down, Qt.Key.Key_Up):
            row = self.list.currentRow() + (1 if event.key() == Qt.Key.Key_Down else -1)
            self.list.setCurrentRow(max(0, min(self.list.count() - 1, row)))
            return
        super().keyPressEvent(event)

    def show_at(self, global_pos: QPoint) -> None:
        self.move(global_pos)
        self.show()
        self.edit.setFocus()
