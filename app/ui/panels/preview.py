"""The preview panel: any node's output at full size, zoom and fit, a before/after slider, frames.

It only displays what nodes produced: the runner keeps a summary of each node's last outputs,
and the frames shown are fetched from the engine client by reference; converting a float frame
to a QImage is the one thing it does to pixels. Frames are fetched off the GUI thread by a
`FrameFetcher`, so scrubbing a long generated clip (or a remote engine) never freezes the window.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPen
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.engine.wire import OutputSummary
from app.ui.panels.images import FrameFetcher, to_qimage

ZOOM_STEP = 1.25
MIN_ZOOM, MAX_ZOOM = 0.02, 64.0


class ImageView(QWidget):
    """Paints one image, or two split by a draggable line (before on the left, after on the right)."""

    zoomChanged = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(160, 120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMouseTracking(True)
        self.image: QImage | None = None
        self.before: QImage | None = None
        self.compare = False
        self.split = 0.5  # fraction of the image width where "before" ends
        self.zoom = 1.0
        self.fit = True
        self.offset = QPointF(0, 0)  # widget position of the image's top-left corner
        self._drag: str | None = None
        self._last = QPointF()
        self.message = "Run the workflow, then pick a node's output to see it here."

    # state --------------------------------------------------------------------------------------
    def set_images(self, image: QImage | None, before: QImage | None = None) -> None:
        first = self.image is None
        self.image = image
        self.before = before
        if first:
            self.fit = True
        self.update()

    def set_zoom(self, zoom: float, anchor: QPointF | None = None) -> None:
        if self.image is None:
            return
        zoom = max(MIN_ZOOM, min(MAX_ZOOM, zoom))
        anchor = anchor if anchor is not None else QPointF(self.width() / 2, self.height() / 2)
        self._sync_fit()
        img_pt = (anchor - self.offset) / self.zoom
        self.fit = False
        self.zoom = zoom
        self.offset = anchor - img_pt * zoom
        self.zoomChanged.emit(zoom)
        self.update()

    def fit_to_window(self) -> None:
        self.fit = True
        self._sync_fit()
        self.zoomChanged.emit(self.zoom)
        self.update()

    def _sync_fit(self) -> None:
        if not self.fit or self.image is None or self.image.isNull():
            return
        w, h = self.image.width(), self.image.height()
        self.zoom = max(MIN_ZOOM, min(self.width() / w, self.height() / h))
        self.offset = QPointF((self.width() - w * self.zoom) / 2, (self.height() - h * self.zoom) / 2)

    def image_rect(self) -> QRectF:
        self._sync_fit()
        if self.image is None:
            return QRectF()
        return QRectF(self.offset.x(), self.offset.y(), self.image.width() * self.zoom,
                      self.image.height() * self.zoom)

    def split_x(self) -> float:
        r = self.image_rect()
        return r.left() + r.width() * self.split

    # painting -----------------------------------------------------------------------------------
    def paintEvent(self, _event: Any) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), self.palette().color(self.backgroundRole()).darker(115))
        if self.image is None or self.image.isNull():
            p.setPen(self.palette().color(self.foregroundRole()))
            p.drawText(self.rect().adjusted(12, 12, -12, -12), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                       self.message)
            p.end()
            return
        r = self.image_rect()
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self.zoom < 1.0)
        _checker(p, r.intersected(QRectF(self.rect())))
        p.drawImage(r, self.image)
        if self.compare and self.before is not None and not self.before.isNull():
            sx = self.split_x()
            p.save()
            p.setClipRect(QRectF(r.left(), r.top(), sx - r.left(), r.height()))
            p.drawImage(r, self.before)
            p.restore()
            p.setPen(QPen(QColor("#ffffff"), 2))
            p.drawLine(QPointF(sx, r.top()), QPointF(sx, r.bottom()))
            p.setBrush(QColor("#ffffff"))
            p.drawEllipse(QPointF(sx, r.center().y()), 6, 6)
            p.setPen(QColor("#ffffff"))
            p.drawText(QPointF(r.left() + 6, r.top() + 16), "before")
            p.drawText(QPointF(r.right() - 40, r.top() + 16), "after")
        p.end()

    # mouse --------------------------------------------------------------------------------------
    def wheelEvent(self, event: Any) -> None:
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.set_zoom(self.zoom * (ZOOM_STEP ** steps), event.position())
        event.accept()

    def mousePressEvent(self, event: Any) -> None:
        pos = event.position()
        if (self.compare and self.before is not None and event.button() == Qt.MouseButton.LeftButton
                and abs(pos.x() - self.split_x()) < 10):
            self._drag = "split"
        elif event.button() in (Qt.MouseButton.LeftButton, Qt.MouseButton.MiddleButton):
            self._sync_fit()
            self._drag = "pan"
        self._last = pos
        event.accept()

    def mouseMoveEvent(self, event: Any) -> None:
        pos = event.position()
        if self._drag == "split":
            r = self.image_rect()
            if r.width() > 0:
                self.split = max(0.0, min(1.0, (pos.x() - r.left()) / r.width()))
                self.update()
        elif self._drag == "pan":
            self.fit = False
            self.offset += pos - self._last
            self.update()
        elif self.compare:
            near = abs(pos.x() - self.split_x()) < 10
            self.setCursor(Qt.CursorShape.SplitHCursor if near else Qt.CursorShape.ArrowCursor)
        self._last = pos

    def mouseReleaseEvent(self, _event: Any) -> None:
        self._drag = None

    def mouseDoubleClickEvent(self, _event: Any) -> None:
        self.fit_to_window()

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        if self.fit:
            self.zoomChanged.emit(self.image_rect().width() / max(1, self.image.width()) if self.image else 1.0)


def _checker(p: QPainter, r: QRectF, size: int = 8) -> None:
    """A checkerboard under the image, so transparency reads as transparency."""
    p.save()
    p.setClipRect(r)
    p.fillRect(r, QColor("#5a5a5a"))
    dark = QColor("#444444")
    y = int(r.top())
    row = 0
    while y < r.bottom():
        x = int(r.left()) + (size if row % 2 else 0)
        while x < r.right():
            p.fillRect(x, y, size, size, dark)
            x += 2 * size
        y += size
        row += 1
    p.restore()


class PreviewPanel(QWidget):
    """Pick an output (node.port) to show; optionally a second one to compare; scrub frames."""

    def __init__(self, client: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._outputs: dict[str, OutputSummary] = {}  # "node.port" -> summary
        self.source = QComboBox()
        self.source.setToolTip("The node output to show")
        self.compare = QToolButton()
        self.compare.setText("Compare")
        self.compare.setCheckable(True)
        self.compare.setToolTip("Before/after: drag the line to compare with a second output")
        self.before = QComboBox()
        self.before.setToolTip("The 'before' output (left of the line)")
        self.before.setEnabled(False)
        self.before.hide()  # shown with Compare: the panel stays narrow enough for a laptop's canvas
        for combo in (self.source, self.before):
            combo.setMinimumContentsLength(6)
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        fit = QToolButton()
        fit.setText("Fit")
        fit.setToolTip("Fit the image in the panel (double-click the image)")
        one = QToolButton()
        one.setText("1:1")
        one.setToolTip("Actual pixels")
        self.zoom_label = QLabel("")
        self.view = ImageView()
        self.frame = QSlider(Qt.Orientation.Horizontal)
        self.frame.setMinimum(0)
        self.frame_label = QLabel("")
        self.info = QLabel("")
        self.info.setObjectName("hint")
        top = QHBoxLayout()
        top.addWidget(self.source, 2)
        top.addWidget(self.compare)
        top.addWidget(self.before, 2)
        top.addWidget(fit)
        top.addWidget(one)
        top.addWidget(self.zoom_label)
        frames = QHBoxLayout()
        frames.addWidget(self.frame, 1)
        frames.addWidget(self.frame_label)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addLayout(top)
        lay.addWidget(self.view, 1)
        lay.addLayout(frames)
        lay.addWidget(self.info)
        self._show_frames(False)
        self._fetch_a = FrameFetcher(client, self)
        self._fetch_b = FrameFetcher(client, self)
        self._fetch_a.frameReady.connect(self._got_a)
        self._fetch_b.frameReady.connect(self._got_b)
        self._fetch_a.failed.connect(self.info.setText)
        self._fetch_b.failed.connect(self.info.setText)
        self.source.currentIndexChanged.connect(self._refresh)
        self.before.currentIndexChanged.connect(self._refresh)
        self.compare.toggled.connect(self._compare_toggled)
        self.frame.valueChanged.connect(self._frame_changed)
        fit.clicked.connect(self.view.fit_to_window)
        one.clicked.connect(lambda: self.view.set_zoom(1.0))
        self.view.zoomChanged.connect(lambda z: self.zoom_label.setText(f"{z * 100:.0f}%"))
        self._frame_a = self._frame_b = None

    # feeding ------------------------------------------------------------------------------------
    def set_outputs(self, outputs: dict[str, dict[str, OutputSummary]]) -> None:
        """All nodes' last outputs ({node: {port: summary}}); keeps the current picks when it can."""
        flat = {f"{nid}.{port}": v for nid, outs in outputs.items() for port, v in outs.items()
                if v.displayable}
        self._outputs = flat
        for combo in (self.source, self.before):
            keep = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(sorted(flat))
            if keep in flat:
                combo.setCurrentText(keep)
            combo.blockSignals(False)
        self._refresh()

    def show_output(self, key: str) -> bool:
        """Show "node.port" (or a node's first displayable output given just the node id)."""
        if key not in self._outputs:
            key = next((k for k in sorted(self._outputs) if k.split(".", 1)[0] == key), "")
        if not key:
            return False
        self.source.setCurrentText(key)
        self._refresh()
        return True

    def show_compare(self, before: str, after: str) -> None:
        self.compare.setChecked(True)
        self.before.setCurrentText(before)
        self.source.setCurrentText(after)
        self._refresh()

    def clear(self) -> None:
        self.set_outputs({})

    # internals ----------------------------------------------------------------------------------
    def _compare_toggled(self, on: bool) -> None:
        self.before.setEnabled(on)
        self.before.setVisible(on)
        self.view.compare = on
        self._refresh()

    def _current(self, combo: QComboBox) -> OutputSummary | None:
        return self._outputs.get(combo.currentText())

    def _refresh(self) -> None:
        a = self._current(self.source)
        n = a.frames if a is not None else 0
        self._show_frames(n > 1)
        if n > 1:
            self.frame.blockSignals(True)
            self.frame.setMaximum(n - 1)
            self.frame.setValue(min(self.frame.value(), n - 1))
            self.frame.blockSignals(False)
        if a is None:
            self._frame_a = None
            self.view.set_images(None)
            self.info.setText("")
            return
        self._frame_changed(self.frame.value() if n > 1 else 0)

    def _frame_changed(self, index: int) -> None:
        a = self._current(self.source)
        n = a.frames if a is not None else 0
        self.frame_label.setText(f"{index + 1}/{n}" if n > 1 else "")
        if a is not None:
            self._fetch_a.request(a, index)
        b = self._current(self.before) if self.compare.isChecked() else None
        if b is not None:
            self._fetch_b.request(b, min(index, max(b.frames - 1, 0)))
        else:
            self._frame_b = None

    def _got_a(self, _index: int, frame: Any) -> None:
        self._frame_a = to_qimage(frame)
        self._update_view()

    def _got_b(self, _index: int, frame: Any) -> None:
        self._frame_b = to_qimage(frame)
        self._update_view()

    def _update_view(self) -> None:
        img = self._frame_a
        before = self._frame_b if self.compare.isChecked() else None
        self.view.set_images(img, before)
        if img is not None:
            self.info.setText(f"{self.source.currentText()}  ·  {img.width()}×{img.height()}")
            self.zoom_label.setText(f"{self.view.zoom * 100:.0f}%")

    def _show_frames(self, on: bool) -> None:
        self.frame.setVisible(on)
        self.frame_label.setVisible(on)
