"""The welcome strip above the tabs: one click opens an example workflow from `workflows/`."""

from __future__ import annotations

import json
import pathlib

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QScrollArea, QSizePolicy, QToolButton, QWidget

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


class WelcomeStrip(QFrame):
    """Links to the examples and a close button (`closed` lets the window remember it)."""

    exampleClicked = Signal(str)
    closed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("welcomeStrip")
        row = QHBoxLayout(self)
        row.setContentsMargins(10, 2, 4, 2)
        row.addWidget(QLabel("<b>Welcome to imagebash.</b> Open an example:"))
        links = QWidget()
        links_row = QHBoxLayout(links)
        links_row.setContentsMargins(0, 0, 0, 0)
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
            links_row.addWidget(b)
            self.buttons.append(b)
        links_row.addStretch(1)
        # the links scroll sideways on a narrow window instead of widening it
        scroll = QScrollArea()
        scroll.setWidget(links)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        scroll.setSizeAdjustPolicy(QScrollArea.SizeAdjustPolicy.AdjustToContents)
        scroll.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        row.addWidget(scroll, 1)
        close = QToolButton()
        close.setText("✕")
        close.setToolTip("Hide the welcome strip (Help ▸ Examples still lists them)")
        close.setAutoRaise(True)
        close.clicked.connect(self._close)
        row.addWidget(close)

    def _close(self) -> None:
        self.hide()
        self.closed.emit()
