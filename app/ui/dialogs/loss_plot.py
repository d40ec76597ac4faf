"""A small loss curve painted with QPainter: every step faintly, a running mean on top."""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 48, 10, 10, 22


def running_mean(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


class LossPlot(QWidget):
    """`add(step, loss)` as training reports; paints steps on x, loss on y (auto-scaled)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(260, 150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.total_steps = 0

    def clear(self) -> None:
        self.steps, self.losses = [], []
        self.update()

    def add(self, step: int, loss: float, total: int = 0) -> None:
        if math.isfinite(loss):
            self.steps.append(step)
            self.losses.append(loss)
        self.total_steps = max(self.total_steps, total, step)
        self.update()

    def plot_rect(self) -> QRectF:
        return QRectF(MARGIN_L, MARGIN_T, max(1, self.width() - MARGIN_L - MARGIN_R),
                      max(1, self.height() - MARGIN_T - MARGIN_B))

    def to_point(self, step: int, loss: float) -> QPointF:
        r = self.plot_rect()
        lo, hi = self._range()
        x = r.left() + r.width() * (step / max(1, self.total_steps))
        y = r.bottom() - r.height() * ((loss - lo) / (hi - lo))
        return QPointF(x, y)

    def _range(self) -> tuple[float, float]:
        lo, hi = min(self.losses), max(self.losses)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5 * abs(lo or 1), hi + 0.5 * abs(hi or 1)
        return lo, hi

    def paintEvent(self, _event: object) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        text = pal.color(self.foregroundRole())
        r = self.plot_rect()
        p.fillRect(self.rect(), pal.color(self.backgroundRole()).darker(110))
        grid = QColor(text)
        grid.setAlpha(40)
        p.setPen(QPen(grid, 1))
        for i in range(5):
            y = r.top() + r.height() * i / 4
            p.drawLine(QPointF(r.left(), y), QPointF(r.right(), y))
        p.setPen(text)
        if not self.losses:
            p.drawText(r, Qt.AlignmentFlag.AlignCenter, "The loss appears here once training starts.")
            p.end()
            return
        lo, hi = self._range()
        for i in range(5):
            y = r.top() + r.height() * i / 4
            p.drawText(QRectF(0, y - 8, MARGIN_L - 4, 16), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                       f"{hi - (hi - lo) * i / 4:.3g}")
        p.drawText(QRectF(r.left(), r.bottom() + 4, r.width(), 16), Qt.AlignmentFlag.AlignRight,
                   f"step {self.steps[-1]} / {self.total_steps}")
        raw = QColor("#4f8fe6")
        raw.setAlpha(90)
        self._curve(p, self.losses, QPen(raw, 1))
        window = max(1, len(self.losses) // 20)
        self._curve(p, running_mean(self.losses, window), QPen(QColor("#f2b33d"), 2))
        p.end()

    def _curve(self, p: QPainter, values: list[float], pen: QPen) -> None:
        path = QPainterPath()
        for i, (s, v) in enumerate(zip(self.steps, values, strict=True)):
            pt = self.to_point(s, v)
            if i == 0:
                path.moveTo(pt)
            else:
                path.lineTo(pt)
        p.setPen(pen)
        p.setBrush(Qt.BrushStyle.NoBrush)
        if len(values) == 1:
            p.drawEllipse(self.to_point(self.steps[0], values[0]), 2, 2)
        p.drawPath(path)
