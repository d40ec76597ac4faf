"""The Models panel: what is in the models folders, and getting more.

Why a panel: a user should see which checkpoints and LoRAs they have (a LoRA's trigger words, a
file's family) without leaving the canvas, and drag one onto it to get its loader node. The list
is `app.library.scan.scan()`, run on a worker thread (a first pass without hashing so the list
appears at once, then one that fills in the sha256s, cached by the library). "Download…" opens
`DownloadDialog`, which runs `app.library.download.download()` on a worker with progress and
Cancel. The panel computes nothing itself: every fact it shows comes from the library.
"""

from __future__ import annotations

import json
import pathlib
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QMimeData, QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QToolButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.ui.canvas.view import MODEL_LOADERS, MODEL_MIME
from app.ui.signals import emit_safely

ALL = ""  # the filters' "any" entry
COLUMNS = ("Name", "Kind", "Family", "Size", "Trigger words")
ROLE = Qt.ItemDataRole.UserRole


def human_size(n: int | None) -> str:
    """Bytes as a short size (the list and the starters show sizes the way a file manager does)."""
    if not n:
        return ""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit in ("B", "KB") else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def family_text(m: Any) -> str:
    return "/".join(x for x in (m.family, m.variant) if x)


class _Row(QTreeWidgetItem):
    """A row that sorts its Size column by bytes, not by text."""

    def __lt__(self, other: QTreeWidgetItem) -> bool:
        tree = self.treeWidget()
        col = tree.sortColumn() if tree is not None else 0
        if col == 3:
            return (self.data(0, ROLE).size or 0) < (other.data(0, ROLE).size or 0)
        return self.text(col).lower() < other.text(col).lower()


class ModelList(QTreeWidget):
    """The table of models; a dragged row carries MODEL_MIME so the canvas makes its loader node."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setHeaderLabels(list(COLUMNS))
        self.setRootIsDecorated(False)
        self.setUniformRowHeights(True)
        self.setSortingEnabled(True)
        self.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.setIconSize(QSize(32, 32))
        self.setDragEnabled(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setAlternatingRowColors(True)

    def mimeTypes(self) -> list[str]:
        return [MODEL_MIME]

    def mimeData(self, items: list[QTreeWidgetItem]) -> QMimeData:
        mime = QMimeData()
        models = [it.data(0, ROLE) for it in items if it.data(0, ROLE) is not None]
        if models:
            m = models[0]
            mime.setData(MODEL_MIME, json.dumps({"kind": m.kind, "path": str(m.path), "name": m.name}).encode())
            mime.setText(str(m.path))
        return mime


class ModelsPanel(QWidget):
    """See the module docstring. `models` holds the last scan; `visible_models()` what the filters let through."""

    scanned = Signal()
    _found = Signal(int, object, str, bool)  # generation, list[ModelInfo] or None, error line, last pass
    _used = Signal(str, object)  # model path, list[Path]

    def __init__(self, workflow_dirs: Callable[[], list[pathlib.Path]] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.models: list[Any] = []
        self.workflow_dirs = workflow_dirs or (lambda: [])
        self._generation = 0
        self.scanning = False
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search name, trigger word, tag…")
        self.search.setClearButtonEnabled(True)
        self.kind = QComboBox()
        self.kind.setToolTip("Show one kind of model")
        self.family = QComboBox()
        self.family.setToolTip("Show one model family")
        for combo in (self.kind, self.family):  # the panel shares a narrow dock with the node list
            combo.setMinimumContentsLength(5)
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.refresh_button = QToolButton()
        self.refresh_button.setText("Refresh")
        self.refresh_button.setToolTip("Scan the models folders again")
        self.download_button = QToolButton()
        self.download_button.setText("Download…")
        self.download_button.setToolTip("Get a model from the Hugging Face Hub, a URL or Civitai")
        self.list = ModelList()
        self.detail = QLabel()
        self.detail.setObjectName("modelDetail")
        self.detail.setWordWrap(True)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.detail.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.status = QLabel()
        self.status.setObjectName("hint")
        self.status.setWordWrap(True)

        top = QHBoxLayout()
        top.addWidget(self.search, 1)
        top.addWidget(self.refresh_button)
        top.addWidget(self.download_button)
        filters = QHBoxLayout()
        filters.addWidget(self.kind, 1)
        filters.addWidget(self.family, 1)
        detail_scroll = QScrollArea()
        detail_scroll.setWidget(self.detail)
        detail_scroll.setWidgetResizable(True)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.list)
        split.addWidget(detail_scroll)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addLayout(top)
        lay.addLayout(filters)
        lay.addWidget(split, 1)
        lay.addWidget(self.status)
        self._fill_filters()

        self.search.textChanged.connect(self._apply_filters)
        self.kind.currentIndexChanged.connect(self._apply_filters)
        self.family.currentIndexChanged.connect(self._apply_filters)
        self.refresh_button.clicked.connect(self.refresh)
        self.download_button.clicked.connect(self.download_dialog)
        self.list.currentItemChanged.connect(lambda item, _old: self._show_detail(item))
        self._found.connect(self._got_scan)
        self._used.connect(self._got_used)
        self.dialog: DownloadDialog | None = None

    # scanning -----------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Scan the models folders on a worker thread; the list updates when it answers."""
        self._generation += 1
        self.scanning = True
        self.refresh_button.setEnabled(False)
        self.status.setText("Scanning the models folders…")
        threading.Thread(target=self._scan_work, args=(self._generation,), name="imagebash-models-scan",
                         daemon=True).start()

    def _scan_work(self, generation: int) -> None:
        from app.library.scan import scan

        try:
            quick = scan(hashes=False)  # the list at once
            done = all(m.sha256 is not None or not m.path.is_file() for m in quick)
            emit_safely(self._found, generation, quick, "", done)
            if not done:
                emit_safely(self._found, generation, scan(hashes=True), "", True)  # then with every sha256
        except Exception as exc:  # noqa: BLE001 - one line in the panel; the list stays as it was
            line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            emit_safely(self._found, generation, None, line, True)

    def _got_scan(self, generation: int, models: list[Any] | None, error: str, final: bool) -> None:
        if generation != self._generation:
            return  # an older scan answering late
        if models is None:
            self.scanning = False
            self.refresh_button.setEnabled(True)
            self.status.setText(f"Scan failed: {error}")
            return
        current = self.current_model()
        self.models = models
        self._fill_filters()
        self._fill_list(current.path if current is not None else None)
        from app.paths import models_dirs

        where = ", ".join(str(p) for p in models_dirs())
        self.status.setText(f"{len(models)} model(s) in {where}" + ("" if final else "; hashing…"))
        if final:
            self.scanning = False
            self.refresh_button.setEnabled(True)
            self.scanned.emit()

    # list and filters ---------------------------------------------------------------------------
    def _fill_filters(self) -> None:
        from app.library.scan import KINDS, UNREADABLE, UNSAFE

        for combo, label, values in (
            (self.kind, "All kinds", [*KINDS, UNSAFE, UNREADABLE]),
            (self.family, "All families", sorted({m.family for m in self.models if m.family})),
        ):
            keep = combo.currentData()
            combo.blockSignals(True)
            combo.clear()
            combo.addItem(label, ALL)
            present = {m.kind for m in self.models} if combo is self.kind else set(values)
            for v in values:
                if v in present:
                    combo.addItem(v.replace("_", " "), v)
            i = combo.findData(keep)
            combo.setCurrentIndex(i if i >= 0 else 0)
            combo.blockSignals(False)

    def _fill_list(self, select: pathlib.Path | None = None) -> None:
        self.list.setSortingEnabled(False)
        self.list.clear()
        for m in self.models:
            item = _Row([m.title or m.name, m.kind.replace("_", " "), family_text(m), human_size(m.size),
                                    ", ".join(m.trigger_words)])
            item.setData(0, ROLE, m)
            item.setToolTip(0, str(m.path) + (f"\n{m.note}" if m.note else ""))
            if m.preview is not None:
                pix = QPixmap(str(m.preview))
                if not pix.isNull():
                    item.setIcon(0, QIcon(pix.scaled(64, 64, Qt.AspectRatioMode.KeepAspectRatio,
                                                     Qt.TransformationMode.SmoothTransformation)))
            flags = item.flags()
            if m.kind not in MODEL_LOADERS:
                flags &= ~Qt.ItemFlag.ItemIsDragEnabled  # nothing to drop it as
            item.setFlags(flags)
            self.list.addTopLevelItem(item)
            if select is not None and m.path == select:
                self.list.setCurrentItem(item)
        self.list.setSortingEnabled(True)
        for col in range(len(COLUMNS) - 1):
            self.list.resizeColumnToContents(col)
        self._apply_filters()

    def _apply_filters(self) -> None:
        text = self.search.text().strip().lower()
        kind, family = self.kind.currentData(), self.family.currentData()
        for i in range(self.list.topLevelItemCount()):
            item = self.list.topLevelItem(i)
            m = item.data(0, ROLE)
            hay = " ".join([m.name, m.title or "", m.kind, family_text(m), *m.trigger_words,
                            *(t for t, _n in m.tags)]).lower()
            item.setHidden(bool((text and text not in hay) or (kind and m.kind != kind)
                                or (family and m.family != family)))

    def visible_models(self) -> list[Any]:
        """The models the search and filters let through, in the list's order."""
        items = (self.list.topLevelItem(i) for i in range(self.list.topLevelItemCount()))
        return [it.data(0, ROLE) for it in items if not it.isHidden()]

    def item_of(self, path: str | pathlib.Path) -> QTreeWidgetItem | None:
        for i in range(self.list.topLevelItemCount()):
            item = self.list.topLevelItem(i)
            if pathlib.Path(item.data(0, ROLE).path) == pathlib.Path(path):
                return item
        return None

    def current_model(self) -> Any:
        item = self.list.currentItem()
        return item.data(0, ROLE) if item is not None else None

    # details ------------------------------------------------------------------------------------
    def _show_detail(self, item: QTreeWidgetItem | None) -> None:
        m = item.data(0, ROLE) if item is not None else None
        if m is None:
            self.detail.setText("")
            return
        self.detail.setText(self._detail_html(m, None))
        threading.Thread(target=self._used_work, args=(m, self.workflow_dirs()), name="imagebash-models-used",
                         daemon=True).start()

    def _used_work(self, m: Any, dirs: list[pathlib.Path]) -> None:
        from app.library.scan import used_in

        try:
            hits = used_in(m, dirs)
        except Exception:  # noqa: BLE001 - "used in" is a courtesy: no answer leaves it out
            hits = []
        emit_safely(self._used, str(m.path), hits)

    def _got_used(self, path: str, hits: list[pathlib.Path]) -> None:
        m = self.current_model()
        if m is not None and str(m.path) == path:
            self.detail.setText(self._detail_html(m, hits))

    @staticmethod
    def _detail_html(m: Any, used: list[pathlib.Path] | None) -> str:
        from html import escape

        rows = [("File", str(m.path)), ("Kind", m.kind.replace("_", " ")), ("Family", family_text(m) or "unknown"),
                ("Size", human_size(m.size)), ("sha256", m.sha256 or "computing…"),
                ("Licence", m.licence or "not stated in the file")]
        if m.trigger_words:
            rows.append(("Trigger words", ", ".join(m.trigger_words)))
        if m.tags:
            rows.append(("Tags", ", ".join(f"{t} ({n})" for t, n in m.tags[:20])))
        if used is not None:
            rows.append(("Used in", ", ".join(p.name for p in used) if used else "no saved workflow"))
        if m.note:
            rows.append(("Note", m.note))
        body = "".join(f"<tr><td><b>{escape(k)}</b>&nbsp;</td><td>{escape(v)}</td></tr>" for k, v in rows)
        return f"<b>{escape(m.title or m.name)}</b><table>{body}</table>"

    # downloading --------------------------------------------------------------------------------
    def download_dialog(self) -> DownloadDialog:
        """Open (or raise) the download dialog; a finished download rescans the list."""
        if self.dialog is None:
            self.dialog = DownloadDialog(self)
            self.dialog.downloaded.connect(lambda _path: self.refresh())
        self.dialog.show()
        self.dialog.raise_()
        return self.dialog


class DownloadDialog(QDialog):
    """A source line (hub id, URL or civitai:ID) or a starter model, fetched on a worker thread."""

    downloaded = Signal(object)  # the Path the model became
    _progress = Signal(object)  # DownloadProgress
    _done = Signal(object, str)  # Path or None, error line

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Download a model")
        self.cancel_event: threading.Event | None = None
        self.result_path: pathlib.Path | None = None
        self.source = QLineEdit()
        self.source.setPlaceholderText("owner/repo, owner/repo/file.safetensors, https://…, civitai:12345")
        self.go = QPushButton("Download")
        self.go.setDefault(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.rate = QLabel()
        self.rate.setObjectName("hint")
        self.cancel = QPushButton("Cancel")
        self.cancel.setEnabled(False)
        self.error = QLabel()
        self.error.setObjectName("downloadError")
        self.error.setStyleSheet("color: #e0605a")
        self.error.setWordWrap(True)
        self.error.hide()
        self.done_label = QLabel()
        self.done_label.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.source, 1)
        row.addWidget(self.go)
        starters = QWidget()
        starters_lay = QVBoxLayout(starters)
        starters_lay.setContentsMargins(0, 0, 0, 0)
        self.starter_buttons: dict[str, QPushButton] = {}
        for s in _starters():
            b = QPushButton(_starter_text(s))
            b.setObjectName(f"starter_{s.name}")
            b.setToolTip(f"{s.source}\n{s.licence}" + ("\nGated: accept its licence on the Hub and store a "
                                                      "Hugging Face token first" if s.gated else ""))
            b.setStyleSheet("text-align: left; padding: 4px 8px")
            b.clicked.connect(lambda _=False, st=s: self.start(st.source, st.kind))
            starters_lay.addWidget(b)
            self.starter_buttons[s.name] = b
        starters_lay.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(starters)
        scroll.setWidgetResizable(True)
        bar = QHBoxLayout()
        bar.addWidget(self.progress, 1)
        bar.addWidget(self.cancel)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Source:"))
        lay.addLayout(row)
        lay.addWidget(QLabel("Or a starter model (one click):"))
        lay.addWidget(scroll, 1)
        lay.addLayout(bar)
        lay.addWidget(self.rate)
        lay.addWidget(self.error)
        lay.addWidget(self.done_label)
        self.resize(560, 460)
        self.go.clicked.connect(lambda: self.start(self.source.text().strip()))
        self.source.returnPressed.connect(lambda: self.start(self.source.text().strip()))
        self.cancel.clicked.connect(self.cancel_download)
        self._progress.connect(self._show_progress)
        self._done.connect(self._finished)

    @property
    def busy(self) -> bool:
        return self.cancel_event is not None

    def start(self, source: str, kind: str | None = None) -> bool:
        """Fetch `source` on a worker thread; False when there is nothing to fetch or one is running."""
        if not source or self.busy:
            return False
        self.cancel_event = threading.Event()
        self.error.hide()
        self.done_label.setText("")
        self.progress.setRange(0, 0)  # busy until the size is known
        self.progress.show()
        self.rate.setText(f"Starting {source}…")
        self.cancel.setEnabled(True)
        self.go.setEnabled(False)
        threading.Thread(target=self._work, args=(source, kind, self.cancel_event), name="imagebash-download",
                         daemon=True).start()
        return True

    def _work(self, source: str, kind: str | None, cancel: threading.Event) -> None:
        from app.library import download as D

        try:
            path = D.download(source, kind, progress=lambda p: emit_safely(self._progress, p), cancel=cancel)
        except D.DownloadError as exc:
            emit_safely(self._done, None, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - whatever it was, one line for the user
            emit_safely(self._done, None, f"{type(exc).__name__}: {exc}".splitlines()[0])
            return
        emit_safely(self._done, pathlib.Path(path), "")

    def _show_progress(self, p: Any) -> None:
        self.progress.setRange(0, 100)
        self.progress.setValue(int(100 * p.done / p.total) if p.total else 0)
        parts = [p.name, f"{human_size(p.done)}" + (f" of {human_size(p.total)}" if p.total else ""),
                 f"{p.speed / 1e6:.1f} MB/s"]
        if p.eta is not None:
            parts.append(f"ETA {_duration(p.eta)}")
        self.rate.setText(" · ".join(x for x in parts if x))

    def cancel_download(self) -> None:
        if self.cancel_event is not None:
            self.cancel_event.set()
            self.rate.setText("Cancelling…")

    def _finished(self, path: pathlib.Path | None, error: str) -> None:
        self.cancel_event = None
        self.cancel.setEnabled(False)
        self.go.setEnabled(True)
        if path is None:
            self.progress.hide()
            self.error.setText(error)
            self.error.show()
            return
        self.progress.setRange(0, 100)
        self.progress.setValue(100)
        self.result_path = path
        self.done_label.setText(f"Saved {path.name} in {path.parent}")
        self.downloaded.emit(path)


def _starters() -> list[Any]:
    from app.library.starters import STARTERS

    return list(STARTERS)


def _starter_text(s: Any) -> str:
    bits = [s.kind.replace("_", " "), s.family, human_size(s.size_bytes), s.licence]
    return f"{s.title}   —   " + ", ".join(b for b in bits if b) + ("   🔒 gated" if s.gated else "")


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s")
