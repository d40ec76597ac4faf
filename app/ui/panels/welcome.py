"""The welcome strip above the tabs: one click opens an example workflow from `workflows/`."""

from __future__ import annotations

import json
import pathlib

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QSizePolicy, QToolButton, QWidget

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
        row.setContentsMargins(10, 4, 4, 4)
        row.addWidget(QLabel("<b>Welcome to imagebash.</b> Open an example:"))
        self.buttons: list[QToolButton] = []
        for p in example_workflows():
            b = QToolButton()
            b.setText(example_title(p))
            b.setToolTip(str(p))
            b.setObjectName(f"example_{p.stem}")
            b.setAutoRaise(True)
            b.setCursor(Qt.CursorShape.PointingHandCursor)
            b.clicked.connect(lambda _=False, path=p: self.exampleClicked.emit(str(path)))
            row.addWidget(b)
            self.buttons.append(b)
        row.addStretch(1)
        close = QToolButton()
        close.setText("✕")
        close.setToolTip("Hide the welcome strip (Help ▸ Examples still lists them)")
        close.setAutoRaise(True)
        close.clicked.connect(self._close)
        row.addWidget(close)
        # never let the strip decide the window's minimum width (small screens clip it instead)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)

    def _close(self) -> None:
        self.hide()
        self.closed.emit()
