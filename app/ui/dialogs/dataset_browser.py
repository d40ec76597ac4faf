"""The training images of a folder as thumbnails, with their captions editable in place.

Captions are the kohya convention: a sidecar `image.txt` (or `.caption`) beside each image. Saving
a caption writes that file atomically; nothing else in the folder is touched.
"""

from __future__ import annotations

import pathlib

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImageReader, QPixmap
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CAPTION_SUFFIXES = (".txt", ".caption")
THUMB = 96
MAX_THUMBS = 2000
PATH_ROLE = Qt.ItemDataRole.UserRole


def caption_file(image: pathlib.Path) -> pathlib.Path:
    """The sidecar that holds (or will hold) `image`'s caption."""
    for ext in CAPTION_SUFFIXES:
        c = image.with_suffix(ext)
        if c.is_file():
            return c
    return image.with_suffix(".txt")


def read_caption(image: pathlib.Path) -> str:
    c = caption_file(image)
    return c.read_text(encoding="utf-8", errors="replace").strip() if c.is_file() else ""


def write_caption(image: pathlib.Path, text: str) -> pathlib.Path:
    c = caption_file(image)
    tmp = c.with_name(c.name + ".tmp")
    tmp.write_text(text.strip() + "\n", encoding="utf-8")
    tmp.replace(c)
    return c


def thumbnail(path: pathlib.Path, size: int = THUMB) -> QPixmap:
    """A small preview decoded at reduced size (fast even for large photos)."""
    reader = QImageReader(str(path))
    reader.setAutoTransform(True)
    full = reader.size()
    if full.isValid() and max(full.width(), full.height()) > size:
        reader.setScaledSize(full.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio))
    img = reader.read()
    return QPixmap.fromImage(img) if not img.isNull() else QPixmap()


class DatasetBrowser(QWidget):
    """`set_folder(path)`; select a thumbnail to edit its caption; `Save caption` writes it."""

    captionSaved = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.folder: pathlib.Path | None = None
        self.list = QListWidget()
        self.list.setViewMode(QListView.ViewMode.IconMode)
        self.list.setIconSize(QSize(THUMB, THUMB))
        self.list.setResizeMode(QListView.ResizeMode.Adjust)
        self.list.setMovement(QListView.Movement.Static)
        self.list.setSpacing(4)
        self.list.setUniformItemSizes(True)
        self.summary = QLabel("Choose a folder of training images.")
        self.summary.setWordWrap(True)
        self.caption = QPlainTextEdit()
        self.caption.setPlaceholderText("Caption of the selected image (saved beside it as a .txt file)")
        self.caption.setMaximumHeight(70)
        self.caption.setEnabled(False)
        self.save_button = QPushButton("Save caption")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self.save_caption)
        row = QHBoxLayout()
        row.addWidget(self.caption, 1)
        row.addWidget(self.save_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.summary)
        lay.addWidget(self.list, 1)
        lay.addLayout(row)
        self.list.currentItemChanged.connect(self._selected)

    def images(self) -> list[pathlib.Path]:
        return [pathlib.Path(self.list.item(i).data(PATH_ROLE)) for i in range(self.list.count())]

    def set_folder(self, folder: str | pathlib.Path) -> None:
        self.list.clear()
        self.caption.clear()
        self.caption.setEnabled(False)
        self.save_button.setEnabled(False)
        root = pathlib.Path(folder).expanduser()
        self.folder = root
        if not root.is_dir():
            self.summary.setText(f"Not a folder: {root}")
            return
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        for p in files[:MAX_THUMBS]:
            item = QListWidgetItem(QIcon(thumbnail(p)), p.name)
            item.setData(PATH_ROLE, str(p))
            item.setToolTip(read_caption(p) or "(no caption)")
            self.list.addItem(item)
        self._update_summary()

    def _update_summary(self) -> None:
        imgs = self.images()
        captioned = sum(1 for p in imgs if read_caption(p))
        self.summary.setText(f"{len(imgs)} images, {captioned} with a caption" if imgs
                             else f"No images in {self.folder} (png, jpg, webp)")

    def _selected(self, item: QListWidgetItem | None, _prev: QListWidgetItem | None = None) -> None:
        on = item is not None
        self.caption.setEnabled(on)
        self.save_button.setEnabled(on)
        self.caption.setPlainText(read_caption(pathlib.Path(item.data(PATH_ROLE))) if on else "")

    def save_caption(self) -> pathlib.Path | None:
        item = self.list.currentItem()
        if item is None:
            return None
        image = pathlib.Path(item.data(PATH_ROLE))
        written = write_caption(image, self.caption.toPlainText())
        item.setToolTip(self.caption.toPlainText().strip() or "(no caption)")
        self._update_summary()
        self.captionSaved.emit(str(written))
        return written
