"""The welcome strip above the tabs: one click opens an example workflow from `workflows/`.

The links wrap onto a second row (a flow layout) rather than scrolling sideways: at any window
width every example is one click away, and nothing widens the window.
"""

from __future__ import annotations

import json
import pathlib

from PySide6.QtCore import QPoint, QRect, QSize, Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QLayout, QLayoutItem, QSizePolicy, QToolButton, QWidget

from app import paths


def example_workflows() -> list[pathlib.Path]:
    return sorted(paths.WORKFLOWS.glob("*.json")) if paths.WORKFLOWS.is_dir() else []


def example_title(p: pathlib.Path) -> str:
    """The workflow's meta title, else its file name in words."""
    try:
        meta = json.loads(p.read_text(encoding="utf-8")).get("meta", {})
        if isinstance(meta, dict) and isinstance(meta.get("title"), str):
            return meta["title"]
    except (OSError, ValueError, AttributeError):
        pass
    return p.stem.replace("_", " ").capitalize()


class FlowLayout(QLayout):
    """Lays its items out left to right, wrapping to a new row when the width runs out."""

    def __init__(self, parent: QWidget | None = None, spacing: int = 2) -> None:
        super().__init__(parent)
        self._items: list[QLayoutItem] = []
        self.setContentsMargins(0, 0, 0, 0)
        self.setSpacing(spacing)

    def addItem(self, item: QLayoutItem) -> None:
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def expandingDirections(self) -> Qt.Orientation:
        return Qt.Orientation(0)

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        return self._place(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect: QRect) -> None:
        super().setGeometry(rect)
        self._place(rect, move=True)

    def sizeHint(self) -> QSize:
        return self.minimumSize()

    def minimumSize(self) -> QSize:
        size = QSize()
        for item in self._items:
            size = size.expandedTo(item.minimumSize())
        m = self.contentsMargins()
        return size + QSize(m.left() + m.right(), m.top() + m.bottom())

    def _place(self, rect: QRect, move: bool) -> int:
        """Put the items in rows inside `rect`; returns the height they take."""
        m = self.contentsMargins()
        area = rect.adjusted(m.left(), m.top(), -m.right(), -m.bottom())
        x, y, row_h, gap = area.x(), area.y(), 0, self.spacing()
        for item in self._items:
            hint = item.sizeHint()
            if x + hint.width() > area.right() + 1 and row_h > 0:
                x, y, row_h = area.x(), y + row_h + gap, 0
            if move:
                item.setGeometry(QRect(QPoint(x, y), hint))
            x += hint.width() + gap
            row_h = max(row_h, hint.height())
        return y + row_h - rect.y() + m.bottom()


class WelcomeStrip(QFrame):
    """Links to the examples and a close button (`closed` lets the window remember it)."""

    exampleClicked = Signal(str)
    closed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("welcomeStrip")
        row = QHBoxLayout(self)
        row.setContentsMargins(10, 2, 4, 2)
        links = QWidget()
        links.setObjectName("welcomeLinks")
        flow = FlowLayout(links)
        flow.addWidget(QLabel("<b>Welcome to imagebash.</b> Examples:"))  # wraps with the links
        self.buttons: list[QToolButton] = []
        for p in example_workflows():
            b = QToolButton()
            title = example_title(p)
            b.setText(title if len(title) <= 28 else title[:26].rstrip(" ,") + "…")
            b.setToolTip(f"{title}\n{p}")
            b.setObjectName(f"example_{p.stem}")
            b.setAutoRaise(True)
            b.setCursor(Qt.CursorShape.PointingHandCursor)
            b.clicked.connect(lambda _=False, path=p: self.exampleClicked.emit(str(path)))
            flow.addWidget(b)
            self.buttons.append(b)
        policy = QSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        policy.setHeightForWidth(True)
        links.setSizePolicy(policy)
        self.links = links
        row.addWidget(links, 1)
        close = QToolButton()
        close.setText("✕")
        close.setToolTip("Hide the welcome strip (Help ▸ Examples still lists them)")
        close.setAutoRaise(True)
        close.clicked.connect(self._close)
        row.addWidget(close)

    def _close(self) -> None:
        self.hide()
        self.closed.emit()
