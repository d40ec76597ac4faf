"""Export a node's output as an image sequence (PNG/JPEG/WebP) or a video (MP4, WebM, AVI).

The dialog writes nothing itself: it adds a Save Image or Save Video node (hidden from the canvas)
to a copy of the workflow, wired to the chosen output, and runs that copy through the window's
engine, so the export reuses cached results and pulls video frames one at a time.
"""

from __future__ import annotations

import pathlib
from typing import Any

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.engine import events as ev
from app.graph.model import Link, NodeInstance

SAVE_IMAGE = "imagebash.image.save"
SAVE_VIDEO = "imagebash.video.save"
EXPORT_NODE = "__export__"
VIDEO_LABELS = {"mp4v": "MP4 video (mp4v)", "h264": "MP4 video (H.264)", "mjpg": "AVI video (MJPG)",
                "vp8": "WebM video (VP8)"}


def exportable_outputs(document: Any) -> list[tuple[str, str, str]]:
    """(node id, output port, kind) of every Image or Video output in the workflow."""
    found = []
    for n in document.graph:
        spec = document.registry.get(n.type)
        for p in spec.outputs if spec else ():
            if p.kind in ("Image", "Video"):
                found.append((n.id, p.name, p.kind))
    return found


def export_formats(registry: Any) -> list[tuple[str, str, str]]:
    """(label, save node type, format value) for each format the installed save nodes write."""
    out = []
    img = registry.get(SAVE_IMAGE)
    fmt = img.input("format") if img else None
    for m in (fmt.enum if fmt is not None and fmt.enum else ()):
        out.append((f"{str(m.value).upper()} image sequence", SAVE_IMAGE, m.value))
    vid = registry.get(SAVE_VIDEO)
    codec = vid.input("codec") if vid else None
    for m in (codec.enum if codec is not None and codec.enum else ()):
        out.append((VIDEO_LABELS.get(m.value, f"{m.value} video"), SAVE_VIDEO, m.value))
    return out


class ExportDialog(QDialog):
    """Pick an output and a format; Export runs it and lists the files written."""

    def __init__(self, window: Any, document: Any, preselect: str | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent or window)
        self.setWindowTitle("Export")
        self.setMinimumWidth(460)
        self.window_ = window
        self.document = document
        self.job: Any = None
        self.files: list[pathlib.Path] = []
        self.source = QComboBox()
        self._sources = exportable_outputs(document)
        for nid, port, kind in self._sources:
            self.source.addItem(f"{nid}.{port}  ({kind})")
        pre = next((i for i, s in enumerate(self._sources) if s[0] == preselect), None)
        if pre is not None:
            self.source.setCurrentIndex(pre)
        self.format = QComboBox()
        self._formats = export_formats(document.registry)
        for label, _type, _value in self._formats:
            self.format.addItem(label)
        self.prefix = QLineEdit("export/" + (self._sources[self.source.currentIndex()][0] if self._sources else "out"))
        self.prefix.setToolTip("File name start; may hold sub-folders (kept inside the output folder)")
        self.folder = QLineEdit(str(window.settings.output_dir))
        self.quality = QSpinBox()
        self.quality.setRange(1, 100)
        self.quality.setValue(95)
        self.fps = QDoubleSpinBox()
        self.fps.setRange(0, 240)
        self.fps.setSpecialValueText("source")
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Output", self.source)
        form.addRow("Format", self.format)
        form.addRow("File name", self.prefix)
        form.addRow("Folder", self.folder)
        form.addRow("Quality", self.quality)
        form.addRow("Frame rate", self.fps)
        self.export_button = QPushButton("Export")
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self.start_export)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.addButton(self.export_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addWidget(buttons)
        self.format.currentIndexChanged.connect(self._format_changed)
        self._format_changed()
        if not self._sources:
            self.status.setText("This workflow has no image or video output to export.")
            self.export_button.setEnabled(False)
        window.runner.engineEvent.connect(self._event)
        window.runner.jobFinished.connect(self._finished)

    def _format_changed(self) -> None:
        if not self._formats:
            return
        _label, node_type, value = self._formats[self.format.currentIndex()]
        self.quality.setEnabled(node_type == SAVE_IMAGE and value in ("jpeg", "webp"))
        self.fps.setEnabled(node_type == SAVE_VIDEO)

    def export_graph(self) -> Any:
        """A copy of the workflow with a save node wired to the chosen output."""
        nid, port, _kind = self._sources[self.source.currentIndex()]
        _label, node_type, value = self._formats[self.format.currentIndex()]
        graph = self.document.graph.copy()
        if node_type == SAVE_IMAGE:
            params = {"filename_prefix": self.prefix.text().strip() or "export", "format": value,
                      "quality": self.quality.value()}
            dst = "image"
        else:
            params = {"filename_prefix": self.prefix.text().strip() or "export", "codec": value,
                      "fps": self.fps.value()}
            dst = "video"
        graph.add_node(NodeInstance(EXPORT_NODE, node_type, params))
        graph.connect(Link(nid, port, EXPORT_NODE, dst))
        return graph

    def start_export(self) -> Any:
        if not self._sources or not self._formats:
            return None
        graph = self.export_graph()
        self.progress.setValue(0)
        self.status.setText("Exporting…")
        self.export_button.setEnabled(False)
        self.job = self.window_.runner.submit(
            self.document, graph, [EXPORT_NODE], self.folder.text().strip() or self.window_.settings.output_dir,
            title=f"export {self.source.currentText().split()[0]}", hidden_nodes=frozenset({EXPORT_NODE}))
        return self.job

    def _event(self, job: Any, event: Any) -> None:
        if job is self.job and event.node_id == EXPORT_NODE and isinstance(event, ev.NodeProgress):
            self.progress.setValue(int(event.fraction * 100))

    def _finished(self, job: Any) -> None:
        if job is not self.job:
            return
        self.export_button.setEnabled(True)
        self.files = list(job.files)
        if job.status == "done":
            self.progress.setValue(100)
            where = self.files[0].parent if self.files else job.output_dir
            self.status.setText(f"Wrote {len(self.files)} file(s) to {where}")
        else:
            err = job.message or "; ".join(f"{k}: {v}" for k, v in job.errors.items()) or job.status
            self.status.setText(f"Export {job.status}: {err}")
