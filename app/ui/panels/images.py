"""Turning node outputs into something a widget can show (display only: no image processing).

Node outputs are float arrays in [0, 1] (Image (N, H, W, C), Mask (N, H, W)) or lazy Videos; the
panels show one frame of them as a QImage. Pulling a Video frame may run node code, so callers
that may block (scrubbing) do it on a worker thread (`FrameFetcher`).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QImage

from nodes.types import Video


def is_displayable(value: Any) -> bool:
    if isinstance(value, Video):
        return True
    return isinstance(value, np.ndarray) and value.ndim in (3, 4) and value.dtype.kind == "f"


def first_frame(value: Any, index: int = 0) -> np.ndarray | None:
    """One (H, W, C) float frame of an Image batch or Mask batch; None for anything else.

    Videos are not pulled here (that may be slow): use `FrameFetcher`.
    """
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
        return None
    if value.ndim == 4 and value.shape[-1] in (1, 3, 4) and value.shape[0]:
        return value[min(index, value.shape[0] - 1)]
    if value.ndim == 3 and value.shape[0]:  # a Mask batch
        return value[min(index, value.shape[0] - 1)][..., None]
    return None


def frame_count(value: Any) -> int:
    if isinstance(value, Video):
        return len(value)
    if isinstance(value, np.ndarray) and value.ndim in (3, 4):
        return int(value.shape[0])
    return 0


def to_qimage(frame: np.ndarray, max_side: int | None = None) -> QImage:
    """An (H, W, C) float frame in [0, 1] (C = 1, 3 or 4) as an 8-bit QImage that owns its pixels.

    NaN shows as black; with `max_side` the image is scaled down (smoothly) to fit that square.
    """
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
    img = QImage(a8.data, w, h, a8.strides[0], fmt).copy()  # detach from the numpy buffer
    if max_side is not None and max(w, h) > max_side:
        img = img.scaled(max_side, max_side, Qt.AspectRatioMode.KeepAspectRatio,
                         Qt.TransformationMode.SmoothTransformation)
    return img


class FrameFetcher(QObject):
    """Pulls frames of a Video off the GUI thread; only the newest request is delivered."""

    frameReady = Signal(int, object)  # index, (H, W, C) float frame
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._lock = threading.Lock()
        self._wanted: tuple[Any, int] | None = None
        self._busy = False

    def request(self, source: Any, index: int) -> None:
        frame = first_frame(source, index)
        if frame is not None:
            self.frameReady.emit(index, frame)
            return
        if not isinstance(source, Video):
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
            video, index = job
            try:
                frame = video.frame(index)[0]
            except Exception as exc:  # noqa: BLE001 - shown to the user, the panel stays usable
                self._deliver(self.failed, f"frame {index}: {exc}")
                continue
            self._deliver(self.frameReady, index, frame)

    @staticmethod
    def _deliver(signal: Any, *args: Any) -> None:
        try:
            signal.emit(*args)
        except RuntimeError:  # the panel was closed while the frame was being made
            pass
