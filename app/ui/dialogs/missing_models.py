"""The dialog a workflow's missing models open: every absent file at once, each with a way to get it.

Why: a shared workflow names files the person opening it may not have, and a run would stop at the
first one. This lists them all (node, port, file name) as soon as the workflow opens, from
`app.library.missing.missing_models`. Each row offers "Download" when a source is known (a starter
of that file name, or what Civitai finds for the recorded sha256 on "Look up on Civitai"), and
"Choose file…" for a copy the user has elsewhere. Either way the node is relinked through the
undo stack (one step, Ctrl+Z brings the old name back) with `relink_params`. Closing the dialog
leaves the graph as it is. Downloads and look-ups run on worker threads.
"""

from __future__ import annotations

import pathlib
import threading
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.ui.signals import emit_safely

MODEL_FILTER = "Models (*.safetensors *.sft *.gguf);;All files (*)"


class MissingRow(QWidget):
    """One missing model: what names it, and the buttons that fetch or relink it."""

    _progress = Signal(object)  # DownloadProgress
    _downloaded = Signal(object, str)  # Path or None, error line
    _looked_up = Signal(object, str)  # source or None, error line

    def __init__(self, dialog: MissingModelsDialog, missing: Any) -> None:
        super().__init__(dialog)
        from app.library.starters import starter_for

        self.dialog, self.missing = dialog, missing
        self.starter = starter_for(missing.name)
        self.source: str | None = self.starter.source if self.starter is not None else None
        self.cancel_event: threading.Event | None = None
        self.done = False
        self.status = QLabel()
        self.status.setObjectName("hint")
        self.status.setWordWrap(True)
        self.download = QPushButton("Download")
        self.lookup = QPushButton("Look up on Civitai")
        self.lookup.setToolTip("Ask Civitai which model has this file's sha256 (recorded when the image was made)")
        self.choose = QPushButton("Choose file…")
        self.choose.setToolTip(f"Point the node at your copy of {missing.name}")
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.hide()
        self.download.setVisible(self.source is not None)
        self.lookup.setVisible(self.source is None and bool(missing.sha256 or missing.short_hash))
        self._describe_source()
        buttons = QHBoxLayout(self)
        buttons.setContentsMargins(0, 0, 0, 0)
        for b in (self.download, self.lookup, self.choose):
            buttons.addWidget(b)
        self.download.clicked.connect(self.start_download)
        self.lookup.clicked.connect(self.look_up)
        self.choose.clicked.connect(self.choose_file)
        self._progress.connect(self._show_progress)
        self._downloaded.connect(self._download_done)
        self._looked_up.connect(self._lookup_done)

    def _describe_source(self) -> None:
        if self.starter is not None:
            s = self.starter
            gated = "; gated: accept its licence on the Hub first" if s.gated else ""
            self.status.setText(f"{s.title}, {s.size_bytes / 1e9:.1f} GB, {s.licence}{gated}")
            self.download.setToolTip(s.source)
        elif self.source is not None:
            self.status.setText(f"found: {self.source}")
            self.download.setToolTip(self.source)
        else:
            self.status.setText("no known source: choose your copy" + (", or look it up on Civitai by its hash"
                                                                         if self.missing.sha256 or
                                                                         self.missing.short_hash else ""))

    # getting it ---------------------------------------------------------------------------------
    def start_download(self) -> None:
        if self.source is None or self.cancel_event is not None:
            return
        self.cancel_event = threading.Event()
        self.progress.setRange(0, 0)
        self.progress.show()
        self.download.setText("Cancel")
        self.download.clicked.disconnect()
        self.download.clicked.connect(self.cancel_download)
        kind = self.starter.kind if self.starter is not None else self.missing.kind
        threading.Thread(target=self._download_work, args=(self.source, kind, self.cancel_event),
                         name="imagebash-missing-download", daemon=True).start()

    def _download_work(self, source: str, kind: str, cancel: threading.Event) -> None:
        from app.library import download as D

        try:
            path = D.download(source, kind, progress=lambda p: emit_safely(self._progress, p), cancel=cancel)
        except D.DownloadError as exc:
            emit_safely(self._downloaded, None, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - one line for the user, whatever it was
            emit_safely(self._downloaded, None, f"{type(exc).__name__}: {exc}".splitlines()[0])
            return
        emit_safely(self._downloaded, pathlib.Path(path), "")

    def cancel_download(self) -> None:
        if self.cancel_event is not None:
            self.cancel_event.set()

    def _show_progress(self, p: Any) -> None:
        self.progress.setRange(0, 100)
        self.progress.setValue(int(100 * p.done / p.total) if p.total else 0)
        eta = f", {p.eta:.0f} s left" if p.eta is not None else ""
        self.status.setText(f"{p.done / 1e6:.0f} of {(p.total or 0) / 1e6:.0f} MB, {p.speed / 1e6:.1f} MB/s{eta}")

    def _download_done(self, path: pathlib.Path | None, error: str) -> None:
        self.cancel_event = None
        self.progress.hide()
        self.download.setText("Download")
        self.download.clicked.disconnect()
        self.download.clicked.connect(self.start_download)
        if path is None:
            self.status.setText(error)
            return
        self.relink(path)

    def look_up(self) -> None:
        """Ask Civitai on a worker (only when the user clicks: it is a network call)."""
        self.lookup.setEnabled(False)
        self.status.setText("asking Civitai…")
        digest = self.missing.sha256 or self.missing.short_hash
        threading.Thread(target=self._lookup_work, args=(digest,), name="imagebash-civitai-lookup",
                         daemon=True).start()

    def _lookup_work(self, sha256: str) -> None:
        from app.library.starters import civitai_by_hash

        try:
            emit_safely(self._looked_up, civitai_by_hash(sha256), "")
        except Exception as exc:  # noqa: BLE001 - DownloadError or anything else: one line
            emit_safely(self._looked_up, None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    def _lookup_done(self, source: str | None, error: str) -> None:
        self.lookup.setEnabled(True)
        if source is None:
            self.status.setText(error or "Civitai has no model with this file's hash")
            return
        self.source = source
        self.lookup.hide()
        self.download.show()
        self._describe_source()

    def choose_file(self) -> None:
        start = str(self.dialog.start_dir(self.missing.kind))
        path, _ = QFileDialog.getOpenFileName(self, f"Where is {self.missing.name}?", start, MODEL_FILTER)
        if path:
            self.relink(pathlib.Path(path))

    def relink(self, path: pathlib.Path) -> None:
        error = self.dialog.relink(self.missing, path)
        if error:
            self.status.setText(error)

    def mark_done(self, value: str) -> None:
        self.done = True
        for b in (self.download, self.lookup, self.choose):
            b.setEnabled(False)
        self.status.setText(f"✓ now {value}")


class MissingModelsDialog(QDialog):
    """See the module docstring. `rows` follow the order of `missing`."""

    relinked = Signal(dict)  # {(node id, port): new value}

    def __init__(self, document: Any, missing: list[Any], models_dir: pathlib.Path | None = None,
                 title: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.document = document
        self.missing = list(missing)
        self.models_dir = models_dir
        self.setWindowTitle("Missing models")
        head = QLabel(f"<b>{title or 'This workflow'}</b> needs {len(missing)} model file(s) that are not on "
                      "this computer. Download them, or point the nodes at your copies. You can also close this "
                      "and fix them later: the run names the missing file.")
        head.setWordWrap(True)
        grid = QGridLayout()
        for col, text in enumerate(("Node", "Port", "File", "")):
            label = QLabel(f"<b>{text}</b>")
            grid.addWidget(label, 0, col)
        self.rows: list[MissingRow] = []
        for i, m in enumerate(self.missing):
            node = document.graph.nodes.get(m.node_id)
            node_title = m.title or (node.title if node is not None and node.title else "")
            spec = document.spec(m.node_id)
            shown = node_title or (spec.title if spec is not None else m.node_id)
            row = MissingRow(self, m)
            r = 1 + 2 * i
            grid.addWidget(QLabel(shown), r, 0)
            grid.addWidget(QLabel(m.port), r, 1)
            name = QLabel(m.name)
            name.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            grid.addWidget(name, r, 2)
            grid.addWidget(row, r, 3)
            grid.addWidget(row.status, r + 1, 0, 1, 3)
            grid.addWidget(row.progress, r + 1, 3)
            self.rows.append(row)
        grid.setColumnStretch(2, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        lay = QVBoxLayout(self)
        lay.addWidget(head)
        lay.addLayout(grid)
        lay.addStretch(1)
        lay.addWidget(buttons)
        self.resize(760, min(640, 160 + 70 * len(self.missing)))

    def start_dir(self, kind: str) -> pathlib.Path:
        """Where "Choose file…" starts: the models folder of that kind, when there is one."""
        if self.models_dir is None:
            return pathlib.Path.home()
        from app.library.download import kind_folder

        try:
            folder = kind_folder(self.models_dir, kind)
        except KeyError:
            folder = self.models_dir
        return folder if folder.is_dir() else self.models_dir

    def relink(self, missing: Any, path: pathlib.Path) -> str:
        """Point `missing` (and every port naming the same file) at `path`, one undo step; the error
        line when the file cannot be used, else ""."""
        from app.library.missing import relink_params

        doc = self.document
        try:
            changes = relink_params(doc.graph, missing, path, doc.registry)
        except ValueError as exc:
            return str(exc)
        doc.undo_stack.beginMacro(f"Relink {missing.name}")
        try:
            for (node_id, port), value in changes.items():
                doc.set_param(node_id, port, value)
        finally:
            doc.undo_stack.endMacro()
        for row in self.rows:
            if (row.missing.node_id, row.missing.port) in changes:
                row.mark_done(changes[(row.missing.node_id, row.missing.port)])
        self.relinked.emit(changes)
        return ""

    def done(self, result: int) -> None:
        for row in self.rows:
            row.cancel_download()  # a closed dialog leaves nothing running
        super().done(result)
