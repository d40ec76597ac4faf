"""The queue panel: every run of this session with its engine, status, times and the files it wrote.

A running remote job shows its latest step that is not a node's (an upload) in the Outputs column,
a pooled run its progress per engine and in total."""

from __future__ import annotations

import pathlib
import time

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QBrush, QColor, QDesktopServices
from PySide6.QtWidgets import QHBoxLayout, QPushButton, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from app.ui.runner import RunController, RunJob

STATUS_COLORS = {"running": "#4a9eda", "done": "#5bb974", "failed": "#e0605a", "error": "#e0605a",
                 "cancelled": "#d9a441", "queued": "#888888"}
PATH_ROLE = Qt.ItemDataRole.UserRole
ENGINE, STATUS, OUTPUTS = 2, 3, 6


class QueuePanel(QWidget):
    """A tree: one row per run, its output files as children (double-click opens one)."""

    fileActivated = Signal(str)

    def __init__(self, runner: RunController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Run", "Workflow", "Engine", "Status", "Queued", "Time", "Outputs"])
        for col, width in enumerate((50, 140, 90, 80, 70, 60)):
            self.tree.setColumnWidth(col, width)
        self._items: dict[int, QTreeWidgetItem] = {}
        cancel = QPushButton("Cancel run")
        cancel.setToolTip("Cancel the running workflow and drop the queued ones (Esc)")
        cancel.clicked.connect(lambda _=False: runner.cancel())
        clear = QPushButton("Clear finished")
        clear.clicked.connect(self.clear_finished)
        bar = QHBoxLayout()
        bar.addStretch(1)
        bar.addWidget(cancel)
        bar.addWidget(clear)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addLayout(bar)
        lay.addWidget(self.tree)
        runner.jobQueued.connect(self.update_job)
        runner.jobStarted.connect(self.update_job)
        runner.jobFinished.connect(self.update_job)
        self.tree.itemDoubleClicked.connect(self._activated)
        self._tick = QTimer(self)
        self._tick.setInterval(500)
        self._tick.timeout.connect(self._refresh_running)
        self._tick.start()

    def update_job(self, job: RunJob) -> None:
        item = self._items.get(job.number)
        if item is None:
            item = QTreeWidgetItem()
            self._items[job.number] = item
            self.tree.insertTopLevelItem(0, item)
        item.setText(0, f"#{job.number}")
        item.setText(1, job.title)
        item.setText(ENGINE, job.engine)
        item.setToolTip(ENGINE, job.engine_key)
        item.setText(STATUS, job.status)
        item.setText(4, time.strftime("%H:%M:%S", time.localtime(job.queued_at)))
        item.setText(5, f"{job.duration:.1f}s" if job.duration is not None else "")
        color = STATUS_COLORS.get(job.status)
        if color:
            item.setForeground(STATUS, QBrush(QColor(color)))
        tip = job.message or "\n".join(f"{k}: {v}" for k, v in job.errors.items())
        item.setToolTip(STATUS, tip)
        if job.finished:
            text = f"{len(job.files)} file(s)" if job.files else (job.message or "")
            item.setText(OUTPUTS, " · ".join(t for t in (text, job.note) if t))  # a pooled run: per engine
            item.takeChildren()
            for f in job.files:
                child = QTreeWidgetItem(["", "", "", "", "", "", f.name])
                child.setToolTip(OUTPUTS, str(f))
                child.setData(0, PATH_ROLE, str(f))
                item.addChild(child)
            if job.files:
                item.setExpanded(True)
        else:
            item.setText(OUTPUTS, job.note)  # a pooled run's progress: "4/7 · local 3, gpu-box 1"

    def files_of(self, number: int) -> list[str]:
        item = self._items[number]
        return [item.child(i).data(0, PATH_ROLE) for i in range(item.childCount())]

    def status_of(self, number: int) -> str:
        return self._items[number].text(STATUS)

    def row_of(self, number: int) -> list[str]:
        """The texts of a run's row (Run, Workflow, Engine, Status, Queued, Time, Outputs)."""
        item = self._items[number]
        return [item.text(c) for c in range(self.tree.columnCount())]

    def clear_finished(self) -> None:
        for number, item in list(self._items.items()):
            if item.text(STATUS) not in ("queued", "running"):
                self.tree.takeTopLevelItem(self.tree.indexOfTopLevelItem(item))
                del self._items[number]

    def _refresh_running(self) -> None:
        for job in [*self.runner.active_jobs(), *(j for j in self.runner.jobs if j.status == "running")]:
            item = self._items.get(job.number)
            if item is not None and job.duration is not None:
                item.setText(5, f"{job.duration:.1f}s")
                item.setText(OUTPUTS, job.note)

    def _activated(self, item: QTreeWidgetItem, _col: int) -> None:
        path = item.data(0, PATH_ROLE)
        if path:
            self.fileActivated.emit(path)
            if pathlib.Path(path).exists():
                QDesktopServices.openUrl(QUrl.fromLocalFile(path))
