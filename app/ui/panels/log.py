"""The log panel: one line per error or event; the details (a traceback) on demand below."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app import secrets

MAX_LINES = 5000
LEVEL_COLORS = {"error": "#e0605a", "warning": "#d9a441", "info": "", "debug": "#888888"}
DETAILS_ROLE = Qt.ItemDataRole.UserRole
NODE_ROLE = Qt.ItemDataRole.UserRole + 1


class LogPanel(QWidget):
    """Lines with time, level, node and message; select one to read its details."""

    nodeClicked = Signal(str)  # double-click a line that names a node: show it on the canvas

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Time", "Level", "Node", "Message"])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.setColumnWidth(0, 70)
        self.tree.setColumnWidth(1, 60)
        self.tree.setColumnWidth(2, 110)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setPlaceholderText("Select a line to see its details (a traceback for errors).")
        self.details.hide()
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.tree)
        split.addWidget(self.details)
        self.toggle = QPushButton("Details")
        self.toggle.setCheckable(True)
        self.toggle.toggled.connect(self.details.setVisible)
        clear = QPushButton("Clear")
        clear.clicked.connect(self.clear)
        bar = QHBoxLayout()
        bar.addStretch(1)
        bar.addWidget(self.toggle)
        bar.addWidget(clear)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addLayout(bar)
        lay.addWidget(split)
        self.tree.currentItemChanged.connect(self._show_details)
        self.tree.itemDoubleClicked.connect(self._double_clicked)

    def add(self, level: str, message: str, node_id: str | None = None, details: str = "") -> QTreeWidgetItem:
        """Append a line (tokens are blanked: a log never shows a secret)."""
        message = secrets.redact(message.strip().splitlines()[0] if message.strip() else message)
        item = QTreeWidgetItem([time.strftime("%H:%M:%S"), level, node_id or "", message])
        item.setData(0, DETAILS_ROLE, secrets.redact(details or message))
        item.setData(0, NODE_ROLE, node_id or "")
        item.setToolTip(3, message)
        color = LEVEL_COLORS.get(level, "")
        if color:
            for col in range(4):
                item.setForeground(col, QBrush(QColor(color)))
        self.tree.addTopLevelItem(item)
        while self.tree.topLevelItemCount() > MAX_LINES:
            self.tree.takeTopLevelItem(0)
        self.tree.scrollToItem(item)
        return item

    def lines(self) -> list[str]:
        return [self.tree.topLevelItem(i).text(3) for i in range(self.tree.topLevelItemCount())]

    def clear(self) -> None:
        self.tree.clear()
        self.details.clear()

    def show_details_of(self, item: QTreeWidgetItem) -> None:
        self.tree.setCurrentItem(item)
        self.toggle.setChecked(True)

    def _show_details(self, item: QTreeWidgetItem | None, _prev: QTreeWidgetItem | None = None) -> None:
        self.details.setPlainText(item.data(0, DETAILS_ROLE) if item is not None else "")

    def _double_clicked(self, item: QTreeWidgetItem, _col: int) -> None:
        self.toggle.setChecked(True)
        node = item.data(0, NODE_ROLE)
        if node:
            self.nodeClicked.emit(node)
