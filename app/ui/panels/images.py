"""Showing node outputs in widgets (display only: no image processing).

The window knows outputs as summaries (`app.engine.wire.OutputSummary`: kind, shape, frame
count, a small thumbnail); a frame at full size is fetched from the engine client by the
summary's reference. Fetching may be slow (a lazy Video runs node code in the engine; a remote
engine is across a network), so `FrameFetcher` does it on a worker thread.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QImage

from app.engine.wire import OutputSummary
from app.ui.signals import emit_safely


def to_qimage(frame: np.ndarray | bytes, max_side: int | None = None) -> QImage:
    """An (H, W, C) float frame in [0, 1] (C = 1, 3 or 4), or encoded image bytes (the engine's
    PNG thumbnails), as an 8-bit QImage that owns its pixels.

    NaN shows as black; with `max_side` the image is scaled down (smoothly) to fit that square.
    """
    if isinstance(frame, bytes):
        return _fit(QImage.fromData(frame), max_side)
    a = np.asarray(frame)
    if a.ndim == 4:
        a = a[0]
    if a.ndim == 2:
        a = a[..., None]
    a8 = (np.clip(np.nan_to_num(a, nan=0.0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    h, w, c = a8.shape
    if c == 1:
        a8, fmt = np.ascontiguousarray(a8[..., 0]), QImage.Format.Format_Grayscale8
    elif c == 3:
        a8, fmt = np.ascontiguousarray(a8), QImage.Format.Format_RGB888
    else:
        a8, fmt = np.ascontiguousarray(a8[..., :4]), QImage.Format.Format_RGBA8888
    return _fit(QImage(a8.data, w, h, a8.strides[0], fmt).copy(), max_side)  # copy: detach from numpy


def _fit(img: QImage, max_side: int | None) -> QImage:
    if max_side is not None and max(img.width(), img.height()) > max_side:
        img = img.scaled(max_side, max_side, Qt.AspectRatioMode.KeepAspectRatio,
                         Qt.TransformationMode.SmoothTransformation)
    return img


class FrameFetcher(QObject):
    """Fetches frames of outputs from the engine client off the GUI thread; only the newest
    request is delivered."""

    frameReady = Signal(int, object)  # index, (H, W, C) float frame
    failed = Signal(str)

    def __init__(self, client: Any = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self._lock = threading.Lock()
        self._wanted: tuple[OutputSummary, int] | None = None
        self._busy = False

    def request(self, source: OutputSummary, index: int) -> None:
        if self.client is None or not source.displayable:
            return
        with self._lock:
            self._wanted = (source, index)
            if self._busy:
                return
            self._busy = True
        threading.Thread(target=self._work, name="imagebash-frames", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                job, self._wanted = self._wanted, None
                if job is None:
                    self._busy = False
                    return
            summary, index = job
            try:
                frame = self.client.fetch_frame(summary.ref, index)
            except Exception as exc:  # noqa: BLE001 - shown to the user, the panel stays usable
                emit_safely(self.failed, f"frame {index}: {exc}")
                continue
            emit_safely(self.frameReady, index, frame)
