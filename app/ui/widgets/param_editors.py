"""Editors for node parameters, chosen from the port declaration (used by the canvas and the inspector).

`make_editor(port, value, on_commit, choices=...)` returns a plain QWidget that calls
`on_commit(value)` once the user has finished a change (slider released, Enter pressed, focus
left, item picked), so one gesture makes one undo step. The suggestions of a `Choices` port come
from the caller (`choices`, which asks the engine client's catalogue), never from the port's own
provider: the models folder is the engine's, which may be on another machine.

A float, int, seed or prompt port can be keyframed: its editor has a keyframe toggle (a hollow
diamond) that turns the value into the schedule `0:(<value>)`. A scheduled value
(`{"schedule": ..., "interp": ...}`) gets a `ScheduleField`: the toggle (filled, to turn it back
into the value at frame 0), the schedule as one line of text, and a button for the curve editor
(embedded below the line where the caller asks for `curve_inline`, else a dialog).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.ui.theme import canvas_palette
from app.ui.widgets.schedule_editor import (
    ScheduleDialog,
    ScheduleEditor,
    curve_icon,
    format_number,
    join_keyframes,
    keyframe_icon,
)
from nodes.registry import REQUIRED, PortSpec
from nodes.schedule import SCHEDULABLE_KINDS, Schedule, ScheduleError, is_schedule_json

Commit = Callable[[Any], None]
_INT_LIMIT = 2**31 - 1


def can_schedule(port: PortSpec) -> bool:
    """Whether `port` takes a keyframe schedule (numbers, seeds and free text; not enums or choices)."""
    return port.kind in SCHEDULABLE_KINDS and port.enum is None and port.choices is None


def make_editor(port: PortSpec, value: Any, on_commit: Commit, parent: QWidget | None = None,
                choices: Callable[[], list[str]] | None = None, *, clip_length: int | None = None,
                curve_inline: bool = False, curve_open: bool = True,
                on_curve_toggled: Callable[[bool], None] | None = None) -> QWidget:
    """The editor widget for `port` showing `value`; see the module docstring."""
    if value is None and port.default is not REQUIRED:
        value = port.to_json(port.default)
    if isinstance(value, Schedule):
        value = value.to_json()
    if is_schedule_json(value):
        return ScheduleField(port, value, on_commit, parent, clip_length=clip_length, inline=curve_inline,
                             curve_open=curve_open, on_curve_toggled=on_curve_toggled)
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
        spin = _spin(port, value, on_commit, parent)
        line = spin.findChild(QLineEdit)
        if line is not None:
            _key_action(line, port, spin.value, on_commit)
        return spin
    if kind == "Path":
        return FilePicker(port, value, on_commit, parent)
    if port.multiline:
        prompt = PromptEdit(value, on_commit, parent)
        if can_schedule(port):
            prompt.add_key_button(lambda: on_commit(schedule_from_value(port, prompt.toPlainText())))
        return prompt
    edit = QLineEdit("" if value is None else str(value), parent)
    edit.editingFinished.connect(lambda: on_commit(edit.text()))
    if can_schedule(port):
        _key_action(edit, port, edit.text, on_commit)
    return edit


# keyframe toggling ------------------------------------------------------------------------------
KEY_TIP = "Keyframe this parameter: give it a schedule over a clip's frames"
UNKEY_TIP = "Remove the keyframes: keep the value at frame 0"


def schedule_from_value(port: PortSpec, value: Any) -> dict[str, Any]:
    """The schedule a plain value starts as: one keyframe at frame 0."""
    if port.kind == "str":
        return {"schedule": join_keyframes([(0, str(value or ""))]), "interp": "linear"}
    if value is None:
        value = 0
    return {"schedule": f"0:({format_number(float(value), port.kind)})", "interp": "linear"}


def value_from_schedule(port: PortSpec, value: dict[str, Any]) -> Any:
    """A schedule's value at frame 0 (in the port's range), for turning the keyframes off."""
    try:
        v = Schedule.from_json(value, port.kind).at(0)
    except ScheduleError:
        return port.to_json(port.default) if port.default is not REQUIRED else None
    if port.kind == "str":
        return str(v)
    r = port.range
    if r is not None:
        v = max(r.min, v) if r.min is not None else v
        v = min(r.max, v) if r.max is not None else v
    return float(v) if port.kind == "float" else round(v)


def _key_action(line: QLineEdit, port: PortSpec, current: Callable[[], Any], on_commit: Commit) -> None:
    """A keyframe diamond inside `line` (a text field or a spin box's) that schedules the port."""
    if not can_schedule(port):
        return
    action = line.addAction(keyframe_icon(False), QLineEdit.ActionPosition.TrailingPosition)
    action.setToolTip(KEY_TIP)
    action.setObjectName("keyframeAction")
    action.triggered.connect(lambda: on_commit(schedule_from_value(port, current())))


def _flat(button: QToolButton) -> QToolButton:
    """A small icon button: no padding, and a checked state that leaves its icon readable."""
    pal = canvas_palette()
    hover, border = pal["hover"].name(), pal["border"].name()
    button.setStyleSheet(f"QToolButton {{ padding: 1px 3px; border: 1px solid transparent; background: transparent; }}"
                         f"QToolButton:hover {{ background: {hover}; }}"
                         f"QToolButton:checked {{ background: {hover}; border-color: {border}; }}")
    return button


def _key_button(parent: QWidget, scheduled: bool) -> QToolButton:
    button = _flat(QToolButton(parent))
    button.setObjectName("keyframeButton")
    button.setCheckable(True)
    button.setChecked(scheduled)
    button.setAutoRaise(True)
    button.setIcon(keyframe_icon(scheduled))
    button.setToolTip(UNKEY_TIP if scheduled else KEY_TIP)
    button.setProperty("scheduled", scheduled)
    return button


class ScheduleField(QWidget):
    """A scheduled parameter: keyframe toggle, the schedule as one line, and the curve editor.

    The line commits on Enter or when focus leaves; a schedule that does not parse (or whose
    keyframes leave the port's range) shows the error in red and commits nothing.
    """

    curve_toggled = Signal(bool)

    def __init__(self, port: PortSpec, value: dict[str, Any], on_commit: Commit, parent: QWidget | None = None,
                 *, clip_length: int | None = None, inline: bool = False, curve_open: bool = True,
                 on_curve_toggled: Callable[[bool], None] | None = None) -> None:
        super().__init__(parent)
        self.port, self._commit, self.clip_length, self.inline = port, on_commit, clip_length, inline
        self.value = dict(value)
        self.value.setdefault("interp", "linear")
        self.key_button = _key_button(self, True)
        self.key_button.clicked.connect(self._unschedule)
        self.line = QLineEdit(str(value.get("schedule", "")), self)
        self.line.setObjectName("scheduleLine")
        self._tip = ("Keyframes as frame:(value), e.g. 0:(1.0), 48:(0.4); a value may be an "
                     "expression in t, e.g. 0.6+0.1*sin(2*pi*t/24)")
        self.line.setToolTip(self._tip)
        self.line.editingFinished.connect(self.commit_line)
        self.curve_button = _flat(QToolButton(self))
        self.curve_button.setObjectName("curveButton")
        self.curve_button.setIcon(curve_icon())
        self.curve_button.setAutoRaise(True)
        self.curve_button.setToolTip("Edit the keyframes" + (" (prompt table)" if port.kind == "str" else
                                                              " on a curve"))
        self.curve_button.setCheckable(inline)
        self.curve_button.clicked.connect(self._curve_clicked)
        self.error = QLabel(self)
        self.error.setObjectName("scheduleError")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #e0605a")
        self.error.hide()
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(2)
        row.addWidget(self.key_button)
        row.addWidget(self.line, 1)
        row.addWidget(self.curve_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addLayout(row)
        lay.addWidget(self.error)
        self.editor: ScheduleEditor | None = None
        self.dialog: ScheduleDialog | None = None
        self._on_curve_toggled = on_curve_toggled
        if inline:
            self.editor = ScheduleEditor(port, self.value, self._editor_commit, self, clip_length)
            lay.addWidget(self.editor)
            self.editor.setVisible(curve_open)
            self.curve_button.setChecked(curve_open)

    def text(self) -> str:
        return self.line.text()

    def set_clip_length(self, clip_length: int | None) -> None:
        """The length of the clip feeding the node (None: unknown); the curve and scrubber span it."""
        self.clip_length = clip_length
        if self.editor is not None:
            self.editor.set_clip_length(clip_length)

    def show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.setVisible(bool(message))
        self.line.setStyleSheet("border: 1px solid #e0605a" if message else "")
        self.line.setToolTip(message or self._tip)  # where the label has no room (the canvas' editor)

    def commit_line(self) -> None:
        text = self.line.text().strip()
        if text == str(self.value.get("schedule", "")).strip():
            self.show_error("")
            return
        new = {"schedule": text, "interp": self.value.get("interp", "linear")}
        try:
            self.port.coerce(new)
        except ValueError as exc:  # ScheduleError is one
            self.show_error(str(exc))
            return
        self.show_error("")
        self.value = new
        if self.editor is not None:
            self.editor.set_value(new)
        self._commit(new)

    def _editor_commit(self, value: dict[str, Any]) -> None:
        self.value = dict(value)
        self.line.setText(value["schedule"])
        self.show_error("")
        self._commit(value)

    def _unschedule(self) -> None:
        self.key_button.setChecked(True)  # the widget is rebuilt from the model's new value
        self._commit(value_from_schedule(self.port, self.value))

    def _curve_clicked(self) -> None:
        if self.editor is not None:
            shown = not self.editor.isVisible()
            self.editor.setVisible(shown)
            self.curve_button.setChecked(shown)
            self.curve_toggled.emit(shown)
            if self._on_curve_toggled is not None:
                self._on_curve_toggled(shown)
            return
        commit = self._commit  # the dialog may outlive this field (the canvas closes its editor)
        parent = QApplication.activeWindow()
        self.dialog = ScheduleDialog(self.port, self.value, commit, parent if parent is not self else None,
                                     self.clip_length)
        self.dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.dialog.open()


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
        self.key_button: QToolButton | None = None
        if can_schedule(port):
            self.key_button = _key_button(self, False)
            self.key_button.clicked.connect(lambda: self._commit(schedule_from_value(port, self.value())))
            lay.addWidget(self.key_button)

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
        self.key_button: QToolButton | None = None

    def add_key_button(self, on_click: Callable[[], None]) -> QToolButton:
        """A keyframe toggle in the top right corner (beside the text, not over it)."""
        self.key_button = _key_button(self, False)
        self.key_button.clicked.connect(on_click)
        self.setViewportMargins(0, 0, self.key_button.sizeHint().width(), 0)
        self._place_key_button()
        return self.key_button

    def _place_key_button(self) -> None:
        if self.key_button is not None:
            hint = self.key_button.sizeHint()
            cr = self.contentsRect()
            self.key_button.setGeometry(cr.right() - hint.width() + 1, cr.top(), hint.width(), hint.height())

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._place_key_button()

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
