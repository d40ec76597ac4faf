"""Editors for node parameters, chosen from the port declaration (used by the canvas and the inspector).

`make_editor(port, value, on_commit, choices=...)` returns a plain QWidget that calls
`on_commit(value)` once the user has finished a change (slider released, Enter pressed, focus
left, item picked), so one gesture makes one undo step. The suggestions of a `Choices` port come
from the caller (`choices`, which asks the engine client's catalogue), never from the port's own
provider: the models folder is the engine's, which may be on another machine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLineEdit,
    QPlainTextEdit,
    QSlider,
    QSpinBox,
    QToolButton,
    QWidget,
)

from nodes.registry import REQUIRED, PortSpec

Commit = Callable[[Any], None]
_INT_LIMIT = 2**31 - 1


def make_editor(port: PortSpec, value: Any, on_commit: Commit, parent: QWidget | None = None,
                choices: Callable[[], list[str]] | None = None) -> QWidget:
    """The editor widget for `port` showing `value`; see the module docstring."""
    if value is None and port.default is not REQUIRED:
        value = port.to_json(port.default)
    if port.enum is not None:
        return _combo([str(m.value) for m in port.enum], value, on_commit, parent, editable=False)
    if port.choices is not None:
        try:
            items = list(choices()) if choices is not None else []
        except Exception:  # noqa: BLE001 - a failing lookup still leaves free text entry
            items = []
        return _combo(items, value, on_commit, parent, editable=True)
    kind = port.kind
    if kind == "bool":
        box = QCheckBox(parent)
        box.setChecked(bool(value))
        box.toggled.connect(lambda v: on_commit(bool(v)))
        return box
    if kind in ("int", "Seed", "float"):
        r = port.range
        if r is not None and r.min is not None and r.max is not None:
            return SliderSpin(port, value, on_commit, parent)
        return _spin(port, value, on_commit, parent)
    if kind == "Path":
        return FilePicker(port, value, on_commit, parent)
    if port.multiline:
        return PromptEdit(value, on_commit, parent)
    edit = QLineEdit("" if value is None else str(value), parent)
    edit.editingFinished.connect(lambda: on_commit(edit.text()))
    return edit


def _combo(items: list[str], value: Any, on_commit: Commit, parent: QWidget | None, editable: bool) -> QComboBox:
    combo = QComboBox(parent)
    combo.setEditable(editable)
    combo.addItems(items)
    if value is not None:
        if str(value) not in items:
            combo.addItem(str(value))
        combo.setCurrentText(str(value))
    combo.activated.connect(lambda _i: on_commit(combo.currentText()))
    if editable:
        combo.lineEdit().editingFinished.connect(lambda: on_commit(combo.currentText()))
    return combo


def _decimals(step: float | None) -> int:
    if not step:
        return 3
    return max(0, min(6, -math.floor(math.log10(step)))) if step < 1 else 0


def _spin(port: PortSpec, value: Any, on_commit: Commit, parent: QWidget | None) -> QSpinBox | QDoubleSpinBox:
    r = port.range
    if port.kind == "float":
        spin: QSpinBox | QDoubleSpinBox = QDoubleSpinBox(parent)
        spin.setDecimals(_decimals(r.step if r else None))
        spin.setRange(r.min if r and r.min is not None else -1e9, r.max if r and r.max is not None else 1e9)
        spin.setSingleStep(r.step if r and r.step else 0.1)
        spin.setValue(float(value or 0.0))
        spin.editingFinished.connect(lambda: on_commit(float(spin.value())))
    else:
        spin = QSpinBox(parent)
        lo = int(r.min) if r and r.min is not None else (0 if port.kind == "Seed" else -_INT_LIMIT)
        spin.setRange(lo, int(r.max) if r and r.max is not None else _INT_LIMIT)
        spin.setSingleStep(int(r.step) if r and r.step else 1)
        spin.setValue(int(value or 0))
        spin.editingFinished.connect(lambda: on_commit(int(spin.value())))
    spin.setKeyboardTracking(False)
    return spin


class SliderSpin(QWidget):
    """A slider beside a spin box for a bounded number; commits on slider release or spin edit."""

    def __init__(self, port: PortSpec, value: Any, on_commit: Commit, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._commit = on_commit
        r = port.range
        assert r is not None and r.min is not None and r.max is not None
        self.is_float = port.kind == "float"
        self.lo, self.hi = float(r.min), float(r.max)
        self.step = float(r.step) if r.step else ((self.hi - self.lo) / 1000 if self.is_float else 1.0)
        self.spin = _spin(port, value, self._spin_done, self)
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.setRange(0, max(1, round((self.hi - self.lo) / self.step)))
        self.slider.setValue(self._to_slider(self.spin.value()))
        self.slider.valueChanged.connect(lambda i: self.spin.setValue(self._from_slider(i)))
        self.slider.sliderReleased.connect(lambda: self._commit(self.value()))
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.slider, 3)
        lay.addWidget(self.spin, 2)

    def _to_slider(self, v: float) -> int:
        return round((v - self.lo) / self.step)

    def _from_slider(self, i: int) -> float | int:
        v = min(self.hi, self.lo + i * self.step)
        return float(v) if self.is_float else round(v)

    def _spin_done(self, v: Any) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(self._to_slider(v))
        self.slider.blockSignals(False)
        self._commit(v)

    def value(self) -> float | int:
        return float(self.spin.value()) if self.is_float else int(self.spin.value())


class PromptEdit(QPlainTextEdit):
    """Multi-line text (prompts); commits when focus leaves or on Ctrl+Enter."""

    committed = Signal(str)

    def __init__(self, value: Any, on_commit: Commit, parent: QWidget | None = None) -> None:
        super().__init__("" if value is None else str(value), parent)
        self._last = self.toPlainText()
        self._on_commit = on_commit
        self.setTabChangesFocus(True)

    def commit(self) -> None:
        text = self.toPlainText()
        if text != self._last:
            self._last = text
            self._on_commit(text)

    def focusOutEvent(self, event) -> None:
        self.commit()
        super().focusOutEvent(event)

    def keyPressEvent(self, event) -> None:
        ctrl = event.modifiers() & Qt.KeyboardModifier.ControlModifier
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and ctrl:
            self.commit()
            return
        super().keyPressEvent(event)


class FilePicker(QWidget):
    """A path field with a browse button honouring the port's FileFilter (patterns, folder, save)."""

    def __init__(self, port: PortSpec, value: Any, on_commit: Commit, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.port, self._commit = port, on_commit
        self.edit = QLineEdit("" if value is None else str(value), self)
        self.edit.editingFinished.connect(lambda: self._commit(self.edit.text()) if self.edit.text() else None)
        button = QToolButton(self)
        button.setText("…")
        button.setToolTip("Browse")
        button.clicked.connect(self.browse)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.edit, 1)
        lay.addWidget(button)

    def browse(self) -> None:
        ff = self.port.file_filter
        start = self.edit.text()
        if ff is not None and ff.folder:
            path = QFileDialog.getExistingDirectory(self, self.port.name, start)
        else:
            patterns = " ".join(ff.patterns) if ff is not None and ff.patterns else "*"
            flt = f"{self.port.name} ({patterns});;All files (*)"
            pick = QFileDialog.getSaveFileName if ff is not None and ff.save else QFileDialog.getOpenFileName
            path, _ = pick(self, self.port.name, start, flt)
        if path:
            self.edit.setText(path)
            self._commit(path)
