"""The keyframe schedule editor: a value-over-frames curve (or a prompt table) and a frame scrubber.

`ScheduleEditor(port, value, on_commit)` edits a scheduled parameter, `value` being its workflow
form `{"schedule": "0:(1), 48:(0.4)", "interp": "linear"}`, and calls `on_commit` with the new
form once per gesture (a drag on release, a double-click, a key press, a row edit), so each is
one undo step of the app. The curve is sampled with `Schedule.at` at whole frames, so what it
draws is what the engine evaluates. `ScheduleDialog` wraps the editor for callers that cannot
embed it (the canvas' inline editor): it commits once, when OK is pressed. Given the length of
the clip feeding the node (`clip_length`, or later `set_clip_length`), the curve and the scrubber
span the clip's frames 0 .. length-1 and the readout says "frame 12 / 240".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPainterPath, QPen, QPixmap, QPolygonF
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.ui.theme import canvas_palette
from nodes.schedule import Interp, Schedule, ScheduleError, split_keyframes

Commit = Callable[[Any], None]
#: Frames shown after the last keyframe when the clip's length is not known.
TAIL_FRAMES = 24


# text form ------------------------------------------------------------------------------------
def format_number(v: float, kind: str = "float") -> str:
    """A keyframe value as written: `1`, `0.4`, `-2.5e-05`."""
    if kind in ("int", "Seed"):
        return str(round(v))
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.6g}"


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def keyframe_text(frame: int, value: str) -> str:
    """One keyframe in the canonical form `48:(value)` (quoted when the value's brackets do not pair)."""
    if _balanced(value):
        return f"{frame}:({value})"
    quote = '"' if '"' not in value else "'"
    return f"{frame}: {quote}{value}{quote}"


def join_keyframes(keys: list[tuple[int, str]]) -> str:
    """`[(0, '1'), (48, '0.4')]` -> `0:(1), 48:(0.4)` (sorted by frame)."""
    return ", ".join(keyframe_text(f, v) for f, v in sorted(keys))


def blend_text(value: Any) -> str:
    """A prompt schedule's value at a frame, as it reads: `a cat 60% / a dog 40%`."""
    blend = getattr(value, "blend", None)
    if not blend or len(blend) == 1:
        return str(value)
    return " / ".join(f"{p} {w:.0%}" for p, w in blend)


def keyframe_icon(filled: bool, size: int = 16) -> QIcon:
    """The keyframe diamond: hollow (a plain value) or filled in the accent colour (scheduled)."""
    pal = canvas_palette()
    pm = QPixmap(size, size)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    c, r = size / 2, size / 2 - 2
    poly = QPolygonF([QPointF(c, c - r), QPointF(c + r, c), QPointF(c, c + r), QPointF(c - r, c)])
    p.setPen(QPen(pal["accent"] if filled else pal["text_dim"], 1.5))
    p.setBrush(pal["accent"] if filled else Qt.BrushStyle.NoBrush)
    p.drawPolygon(poly)
    p.end()
    return QIcon(pm)


def curve_icon(size: int = 16) -> QIcon:
    pal = canvas_palette()
    pm = QPixmap(size, size)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setPen(QPen(pal["accent"], 1.6))
    path = QPainterPath(QPointF(1, size - 3))
    path.cubicTo(QPointF(size * 0.45, size - 3), QPointF(size * 0.55, 3), QPointF(size - 1, 3))
    p.drawPath(path)
    p.end()
    return QIcon(pm)


# the curve ------------------------------------------------------------------------------------
class CurveWidget(QWidget):
    """Keyframes of a numeric schedule as points on its value-over-frames curve.

    Drag a point (frames snap to whole numbers, values clamp to the port's range; an expression
    keyframe moves in frame only), double-click empty space to add a keyframe, Delete/Backspace
    removes the selected one (never the last), arrows nudge it (Shift: x10). `edited` is emitted
    once per gesture, with `keys` already changed.
    """

    edited = Signal()
    MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 34.0, 10.0, 10.0, 18.0
    HIT = 8.0

    def __init__(self, kind: str, keys: list[tuple[int, str]], interp: Interp,
                 lo: float | None = None, hi: float | None = None, step: float | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.kind, self.interp = kind, Interp(interp)
        self.keys = list(keys)
        self.lo, self.hi, self.step = lo, hi, step
        self.span = TAIL_FRAMES
        #: Frames of the clip the schedule drives (None: unknown): the curve spans exactly it.
        self.clip_frames: int | None = None
        self.playhead: int | None = None
        self.selected: int | None = None  # index into keys
        self._drag: dict[str, Any] | None = None
        self._view: tuple[float, float] | None = None  # value axis frozen during a drag
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumSize(200, 120)
        self.setMouseTracking(False)
        self._refresh()

    def sizeHint(self) -> QSize:
        return QSize(320, 150)

    # model ---------------------------------------------------------------------------------
    def schedule(self) -> Schedule | None:
        return self._sched

    def text(self) -> str:
        return join_keyframes(self.keys)

    def set_keys(self, keys: list[tuple[int, str]], interp: Interp | str | None = None) -> None:
        self.keys = sorted(keys)
        if interp is not None:
            self.interp = Interp(interp)
        if self.selected is not None and self.selected >= len(self.keys):
            self.selected = None
        self._refresh()

    def _refresh(self) -> None:
        self.keys.sort()
        try:
            self._sched: Schedule | None = Schedule.parse(self.text(), self.kind, self.interp)
        except ScheduleError:
            self._sched = None
        last = self.keys[-1][0] if self.keys else 0
        if self._drag is None:
            self.span = max(last, self.clip_frames - 1, 1) if self.clip_frames else max(last + TAIL_FRAMES, 1)
        self.update()

    def is_expression(self, index: int) -> bool:
        try:
            float(self.keys[index][1])
            return False
        except ValueError:
            return True

    def key_values(self) -> list[float]:
        """Each keyframe's value at its own frame (what its point shows)."""
        if self._sched is None:
            return [0.0] * len(self.keys)
        return [float(v) for _, v in self._sched.keyframes]

    def samples(self) -> list[tuple[int, float]]:
        """(frame, value) at whole frames over the span, as `Schedule.at` gives them."""
        if self._sched is None:
            return []
        n = max(1, int(self.span))
        width = max(1, int(self._plot().width()))
        stride = max(1, math.ceil(n / width))
        frames = list(range(0, n + 1, stride))
        if frames[-1] != n:
            frames.append(n)
        out = []
        for f in frames:
            try:
                out.append((f, float(self._sched.at(f))))
            except ScheduleError:
                continue
        return out

    # geometry ------------------------------------------------------------------------------
    def _plot(self) -> QRectF:
        return QRectF(self.MARGIN_L, self.MARGIN_T, max(1.0, self.width() - self.MARGIN_L - self.MARGIN_R),
                      max(1.0, self.height() - self.MARGIN_T - self.MARGIN_B))

    def value_range(self) -> tuple[float, float]:
        if self._view is not None:
            return self._view
        if self.lo is not None and self.hi is not None and self.hi > self.lo:
            return float(self.lo), float(self.hi)
        vals = [v for _, v in self.samples()] + self.key_values()
        lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
        if self.lo is not None:
            lo = max(lo, float(self.lo))
        if self.hi is not None:
            hi = min(hi, float(self.hi))
        if hi - lo < 1e-9:
            pad = max(abs(hi) * 0.5, 1.0)
        else:
            pad = (hi - lo) * 0.15
        lo2, hi2 = lo - pad, hi + pad
        if self.lo is not None:
            lo2 = max(lo2, float(self.lo))
        if self.hi is not None:
            hi2 = min(hi2, float(self.hi))
        return (lo2, hi2) if hi2 > lo2 else (lo - 1.0, hi + 1.0)

    def point_for(self, frame: float, value: float) -> QPointF:
        """Widget coordinates of (frame, value)."""
        r = self._plot()
        lo, hi = self.value_range()
        x = r.left() + frame / max(1, self.span) * r.width()
        y = r.bottom() - (value - lo) / (hi - lo) * r.height()
        return QPointF(x, y)

    def frame_value_at(self, pos: QPointF) -> tuple[int, float]:
        r = self._plot()
        lo, hi = self.value_range()
        frame = round((pos.x() - r.left()) / r.width() * max(1, self.span))
        value = lo + (r.bottom() - pos.y()) / r.height() * (hi - lo)
        return max(0, frame), value

    def key_at(self, pos: QPointF) -> int | None:
        best, best_d = None, self.HIT
        for i, ((f, _), v) in enumerate(zip(self.keys, self.key_values(), strict=True)):
            p = self.point_for(f, v)
            d = math.hypot(p.x() - pos.x(), p.y() - pos.y())
            if d <= best_d:
                best, best_d = i, d
        return best

    # editing -------------------------------------------------------------------------------
    def _clamp(self, v: float) -> float:
        if self.lo is not None:
            v = max(float(self.lo), v)
        if self.hi is not None:
            v = min(float(self.hi), v)
        return v

    def _round(self, v: float) -> float:
        if self.kind in ("int", "Seed"):
            return float(round(v))
        if self.step:
            decimals = max(0, min(6, -math.floor(math.log10(self.step)))) if self.step < 1 else 0
        else:
            lo, hi = self.value_range()
            decimals = max(0, min(6, 3 - math.floor(math.log10(max(hi - lo, 1e-9)))))
        return round(v, decimals)

    def _value_text(self, v: float) -> str:
        return format_number(self._clamp(self._round(v)), self.kind)

    def _move(self, index: int, frame: int | None, value: float | None) -> int:
        """Move keys[index] (frame kept off other keys); returns its new index."""
        f, text = self.keys[index]
        if frame is not None:
            frame = max(0, frame)
            if all(k[0] != frame for j, k in enumerate(self.keys) if j != index):
                f = frame
        if value is not None and not self.is_expression(index):
            text = self._value_text(value)
        self.keys[index] = (f, text)
        self.keys.sort()
        new = self.keys.index((f, text))
        self.selected = new
        self._refresh()
        return new

    def add_key(self, frame: int, value: float) -> bool:
        if any(f == frame for f, _ in self.keys):
            return False
        self.keys.append((frame, self._value_text(value)))
        self.keys.sort()
        self.selected = [f for f, _ in self.keys].index(frame)
        self._refresh()
        return True

    def remove_selected(self) -> bool:
        if self.selected is None or len(self.keys) <= 1:
            return False
        del self.keys[self.selected]
        self.selected = None
        self._refresh()
        return True

    # events --------------------------------------------------------------------------------
    def mousePressEvent(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return super().mousePressEvent(event)
        self.setFocus()
        hit = self.key_at(event.position())
        self.selected = hit
        if hit is not None:
            self._view = self.value_range()
            self._drag = {"index": hit, "before": list(self.keys), "origin": event.position()}
        self.update()
        event.accept()

    def mouseMoveEvent(self, event) -> None:
        if self._drag is None:
            return super().mouseMoveEvent(event)
        frame, value = self.frame_value_at(event.position())
        self._drag["index"] = self._move(self._drag["index"], frame, value)
        event.accept()

    def mouseReleaseEvent(self, event) -> None:
        if self._drag is None or event.button() != Qt.MouseButton.LeftButton:
            return super().mouseReleaseEvent(event)
        before = self._drag["before"]
        self._drag, self._view = None, None
        self._refresh()
        if self.keys != before:
            self.edited.emit()
        event.accept()

    def mouseDoubleClickEvent(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return
        if self.key_at(event.position()) is None and self._plot().contains(event.position()):
            frame, value = self.frame_value_at(event.position())
            if self.add_key(frame, value):
                self.edited.emit()
        event.accept()

    def keyPressEvent(self, event) -> None:
        key = event.key()
        if key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            if self.remove_selected():
                self.edited.emit()
            event.accept()
            return
        arrows = {Qt.Key.Key_Left: (-1, 0), Qt.Key.Key_Right: (1, 0), Qt.Key.Key_Up: (0, 1), Qt.Key.Key_Down: (0, -1)}
        if key in arrows and self.selected is not None and not (event.modifiers()
                                                                & Qt.KeyboardModifier.ControlModifier):
            df, dv = arrows[key]
            mult = 10 if event.modifiers() & Qt.KeyboardModifier.ShiftModifier else 1
            before = list(self.keys)
            f, _ = self.keys[self.selected]
            if df:
                self._move(self.selected, f + df * mult, None)
            elif not self.is_expression(self.selected):
                lo, hi = self.value_range()
                step = 1.0 if self.kind in ("int", "Seed") else (self.step or (hi - lo) / 100)
                v = self.key_values()[self.selected]
                self._move(self.selected, None, v + dv * mult * step)
            if self.keys != before:
                self.edited.emit()
            event.accept()
            return
        super().keyPressEvent(event)

    # painting ------------------------------------------------------------------------------
    def curve_color(self) -> QColor:
        return QColor(canvas_palette()["accent"])

    def paintEvent(self, event) -> None:
        pal = canvas_palette()
        p = QPainter(self)
        p.fillRect(self.rect(), pal["input_bg"])
        r = self._plot()
        p.setPen(QPen(pal["border"], 1))
        p.drawRect(r)
        lo, hi = self.value_range()
        p.setPen(pal["text_dim"])
        font = p.font()
        font.setPointSizeF(7.5)
        p.setFont(font)
        for v in (lo, hi):
            y = self.point_for(0, v).y()
            p.drawText(QRectF(0, y - 8, self.MARGIN_L - 4, 16),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, f"{v:.3g}")
        tick = max(1, 10 ** math.floor(math.log10(max(1, self.span))))
        if self.span / tick > 6:
            tick *= 2 if self.span / tick < 12 else 5
        grid = QPen(pal["grid_major"], 1)
        for f in range(0, int(self.span) + 1, int(tick)):
            x = self.point_for(f, lo).x()
            p.setPen(grid)
            p.drawLine(QPointF(x, r.top()), QPointF(x, r.bottom()))
            p.setPen(pal["text_dim"])
            p.drawText(QRectF(x - 20, r.bottom() + 1, 40, self.MARGIN_B - 1), Qt.AlignmentFlag.AlignHCenter, str(f))
        if self.playhead is not None:
            x = self.point_for(self.playhead, lo).x()
            p.setPen(QPen(pal["selection"], 1, Qt.PenStyle.DashLine))
            p.drawLine(QPointF(x, r.top()), QPointF(x, r.bottom()))
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        samples = self.samples()
        if samples:
            p.setClipRect(r.adjusted(-1, -1, 1, 1))
            path = QPainterPath(self.point_for(*samples[0]))
            stairs = self.interp is Interp.STEP or self.kind in ("int", "Seed")
            for i, (f, v) in enumerate(samples[1:], 1):
                if stairs:
                    path.lineTo(self.point_for(f, samples[i - 1][1]))
                path.lineTo(self.point_for(f, v))
            p.setPen(QPen(self.curve_color(), 2.0))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawPath(path)
            p.setClipping(False)
        for i, ((f, _), v) in enumerate(zip(self.keys, self.key_values(), strict=True)):
            c = self.point_for(f, v)
            sel = i == self.selected
            if self.is_expression(i):  # an expression key: a hollow diamond (its value is not a point)
                p.setPen(QPen(pal["selection"] if sel else pal["node_text"], 1.5))
                p.setBrush(pal["input_bg"])
                s = 5.5
                p.drawPolygon(QPolygonF([QPointF(c.x(), c.y() - s), QPointF(c.x() + s, c.y()),
                                         QPointF(c.x(), c.y() + s), QPointF(c.x() - s, c.y())]))
            else:
                p.setPen(QPen(pal["selection"] if sel else pal["node_border"], 1.5))
                p.setBrush(pal["selection"] if sel else pal["node_text"])
                p.drawEllipse(c, 4.5, 4.5)
        if self._sched is None:
            p.setPen(pal["failed"])
            p.drawText(r, Qt.AlignmentFlag.AlignCenter, "schedule does not evaluate")
        p.end()


# prompts --------------------------------------------------------------------------------------
class PromptTable(QWidget):
    """(frame, prompt) rows with add and remove; `edited` once per finished cell edit."""

    edited = Signal()

    def __init__(self, keys: list[tuple[int, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.table = QTableWidget(0, 2, self)
        self.table.setHorizontalHeaderLabels(["frame", "prompt"])
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.add_button = QPushButton("Add keyframe", self)
        self.remove_button = QPushButton("Remove", self)
        self.add_button.clicked.connect(self.add_row)
        self.remove_button.clicked.connect(self.remove_row)
        self.error = QLabel(self)
        self.error.setStyleSheet("color: #e0605a")
        self.error.setWordWrap(True)
        self.error.hide()
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.table)
        lay.addLayout(buttons)
        lay.addWidget(self.error)
        self.keys: list[tuple[int, str]] = []
        self.set_keys(keys)
        self.table.itemChanged.connect(self._cell_changed)

    def set_keys(self, keys: list[tuple[int, str]]) -> None:
        self.keys = sorted(keys)
        self.table.blockSignals(True)
        self.table.setRowCount(len(self.keys))
        for row, (f, text) in enumerate(self.keys):
            self.table.setItem(row, 0, QTableWidgetItem(str(f)))
            self.table.setItem(row, 1, QTableWidgetItem(text))
        self.table.blockSignals(False)
        self.remove_button.setEnabled(len(self.keys) > 1)

    def _read(self) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        for row in range(self.table.rowCount()):
            f_item, p_item = self.table.item(row, 0), self.table.item(row, 1)
            head = f_item.text().strip() if f_item else ""
            try:
                frame = int(head)
            except ValueError:
                raise ScheduleError(f"row {row + 1}: '{head}' is not a frame number") from None
            if frame < 0:
                raise ScheduleError(f"row {row + 1}: keyframe {frame} is before frame 0")
            if any(f == frame for f, _ in out):
                raise ScheduleError(f"keyframe {frame} is given twice")
            out.append((frame, (p_item.text() if p_item else "").strip()))
        return sorted(out)

    def _cell_changed(self, _item: QTableWidgetItem) -> None:
        try:
            keys = self._read()
        except ScheduleError as exc:
            self.error.setText(str(exc))
            self.error.show()
            return
        self.error.hide()
        if keys != self.keys:
            self.set_keys(keys)
            self.edited.emit()

    def add_row(self) -> None:
        last_f, last_p = self.keys[-1] if self.keys else (-TAIL_FRAMES, "")
        self.set_keys([*self.keys, (last_f + TAIL_FRAMES, last_p)])
        self.edited.emit()

    def remove_row(self) -> None:
        if len(self.keys) <= 1:
            return
        rows = sorted({i.row() for i in self.table.selectedIndexes()}) or [len(self.keys) - 1]
        keys = [k for i, k in enumerate(self.keys) if i not in rows] or self.keys[:1]
        self.set_keys(keys)
        self.edited.emit()


# the editor -----------------------------------------------------------------------------------
class ScheduleEditor(QWidget):
    """The curve (numbers) or the table (prompts), interpolation, and a scrubber with a readout."""

    def __init__(self, port: Any, value: dict[str, Any], on_commit: Commit, parent: QWidget | None = None,
                 clip_length: int | None = None) -> None:
        super().__init__(parent)
        self.port, self._commit, self.clip_length = port, on_commit, clip_length
        self.kind = port.kind
        self.interp_combo = QComboBox(self)
        self.interp_combo.addItems([m.value for m in Interp])
        self.scrubber = QSlider(Qt.Orientation.Horizontal, self)
        self.readout = QLabel(self)
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.curve: CurveWidget | None = None
        self.table: PromptTable | None = None
        keys, interp = self._parse_value(value)
        r = getattr(port, "range", None)
        if self.kind == "str":
            self.table = PromptTable(keys, self)
            self.table.edited.connect(self._edited)
            body: QWidget = self.table
        else:
            self.curve = CurveWidget(self.kind, keys, interp, r.min if r else None, r.max if r else None,
                                     r.step if r else None, self)
            self.curve.clip_frames = int(clip_length) if clip_length else None
            self.curve._refresh()
            self.curve.edited.connect(self._edited)
            body = self.curve
        self._keys = keys
        self.interp_combo.setCurrentText(interp.value)
        self.interp_combo.currentTextChanged.connect(lambda _t: self._edited())
        top = QHBoxLayout()
        top.addWidget(QLabel("interpolation", self))
        top.addWidget(self.interp_combo)
        top.addStretch(1)
        scrub = QHBoxLayout()
        scrub.addWidget(QLabel("frame", self))
        scrub.addWidget(self.scrubber, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(top)
        lay.addWidget(body, 1)
        lay.addLayout(scrub)
        lay.addWidget(self.readout)
        self.scrubber.valueChanged.connect(self._scrubbed)
        self._update_scrubber()

    @staticmethod
    def _parse_value(value: dict[str, Any]) -> tuple[list[tuple[int, str]], Interp]:
        try:
            interp = Interp(value.get("interp", "linear"))
        except ValueError:
            interp = Interp.LINEAR
        try:
            keys = split_keyframes(str(value.get("schedule", "")))
        except ScheduleError:
            keys = [(0, "0")]
        return keys, interp

    # state ---------------------------------------------------------------------------------
    def keys(self) -> list[tuple[int, str]]:
        if self.curve is not None:
            return list(self.curve.keys)
        assert self.table is not None
        return list(self.table.keys)

    def interp(self) -> Interp:
        return Interp(self.interp_combo.currentText())

    def text(self) -> str:
        return join_keyframes(self.keys())

    def value(self) -> dict[str, Any]:
        return {"schedule": self.text(), "interp": self.interp().value}

    def schedule(self) -> Schedule | None:
        try:
            return Schedule.parse(self.text(), self.kind, self.interp())
        except ScheduleError:
            return None

    def set_value(self, value: dict[str, Any]) -> None:
        """Show `value` (after the schedule line changed it) without committing."""
        keys, interp = self._parse_value(value)
        self.interp_combo.blockSignals(True)
        self.interp_combo.setCurrentText(interp.value)
        self.interp_combo.blockSignals(False)
        if self.curve is not None:
            self.curve.set_keys(keys, interp)
        elif self.table is not None:
            self.table.set_keys(keys)
        self._update_scrubber()

    def span(self) -> int:
        """The scrubber's last frame: the clip's last one when its length is known (or a later keyframe)."""
        keys = self.keys()
        last = keys[-1][0] if keys else 0
        if self.clip_length:
            return max(last, int(self.clip_length) - 1)
        return last + TAIL_FRAMES

    def set_clip_length(self, clip_length: int | None) -> None:
        """The clip feeding the node got known (or changed): span it."""
        clip_length = int(clip_length) if clip_length else None
        if clip_length == self.clip_length:
            return
        self.clip_length = clip_length
        if self.curve is not None:
            self.curve.clip_frames = clip_length
            self.curve._refresh()
        self._update_scrubber()

    def _edited(self) -> None:
        if self.curve is not None:
            self.curve.interp = self.interp()
            self.curve._refresh()
        self._update_scrubber()
        self._commit(self.value())

    def _update_scrubber(self) -> None:
        self.scrubber.blockSignals(True)
        self.scrubber.setRange(0, self.span())
        self.scrubber.blockSignals(False)
        self._scrubbed(self.scrubber.value())

    def _scrubbed(self, frame: int) -> None:
        if self.curve is not None:
            self.curve.playhead = frame
            self.curve.update()
        of = f" / {self.clip_length}" if self.clip_length else ""
        self.readout.setText(f"frame {frame}{of}: {self.readout_at(frame)}")
        self.scrubber.setToolTip(f"frames 0–{self.clip_length - 1} of the clip feeding this node"
                                 if self.clip_length else "frames of the schedule (no clip feeds this node)")

    def readout_at(self, frame: int) -> str:
        sched = self.schedule()
        if sched is None:
            return "—"
        try:
            v = sched.at(frame)
        except ScheduleError as exc:
            return str(exc)
        if self.kind == "str":
            return blend_text(v)
        return format_number(v, self.kind) if self.kind in ("int", "Seed") else f"{v:.4g}"


class ScheduleDialog(QDialog):
    """The schedule editor in a window; commits its value once, on OK."""

    def __init__(self, port: Any, value: dict[str, Any], on_commit: Commit, parent: QWidget | None = None,
                 clip_length: int | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Keyframes: {port.name}")
        self.editor = ScheduleEditor(port, value, lambda _v: None, self, clip_length)
        self._start = dict(value)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.editor, 1)
        lay.addWidget(buttons)
        self.resize(460, 320)
        self._on_commit = on_commit

    def accept(self) -> None:
        value = self.editor.value()
        super().accept()
        if value != self._start:
            self._on_commit(value)
