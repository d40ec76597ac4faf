"""The queue panel: every run of this session with its status, times and the files it wrote."""

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


class QueuePanel(QWidget):
    """A tree: one row per run, its output files as children (double-click opens one)."""

    fileActivated = Signal(str)

    def __init__(self, runner: RunController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Run", "Workflow", "Status", "Queued", "Time", "Outputs"])
        self.tree.setColumnWidth(0, 50)
        self.tree.setColumnWidth(1, 140)
        self.tree.setColumnWidth(2, 80)
        self.tree.setColumnWidth(3, 70)
        self.tree.setColumnWidth(4, 60)
        self._items: dict[int, QTreeWidgetItem] = {}
        cancel = QPushButton("Cancel run")
        cancel.setToolTip("Cancel the running workflow and drop the queued ones (Esc)")
        cancel.clicked.connect(runner.cancel)
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
        item.setText(2, job.status)
        item.setText(3, time.strftime("%H:%M:%S", time.localtime(job.queued_at)))
        item.setText(4, f"{job.duration:.1f}s" if job.duration is not None else "")
        color = STATUS_COLORS.get(job.status)
        if color:
            item.setForeground(2, QBrush(QColor(color)))
        tip = job.message or "\n".join(f"{k}: {v}" for k, v in job.errors.items())
        item.setToolTip(2, tip)
        if job.finished:
            item.setText(5, f"{len(job.files)} file(s)" if job.files else (job.message or ""))
            item.takeChildren()
            for f in job.files:
                child = QTreeWidgetItem(["", "", "", "", "", f.name])
                child.setToolTip(5, str(f))
                child.setData(0, PATH_ROLE, str(f))
                item.addChild(child)
            if job.files:
                item.setExpanded(True)

    def files_of(self, number: int) -> list[str]:
        item = self._items[number]
        return [item.child(i).data(0, PATH_ROLE) for i in range(item.childCount())]

    def status_of(self, number: int) -> str:
        return self._items[number].text(2)

    def clear_finished(self) -> None:
        for number, item in list(self._items.items()):
            if item.text(2) not in ("queued", "running"):
                self.tree.takeTopLevelItem(self.tree.indexOfTopLevelItem(item))
                del self._items[number]

    def _refresh_running(self) -> None:
        job = self.runner.current
        if job is not None and job.number in self._items and job.duration is not None:
            self._items[job.number].setText(4, f"{job.duration:.1f}s")

    def _activated(self, item: QTreeWidgetItem, _col: int) -> None:
        path = item.data(0, PATH_ROLE)
        if path:
            self.fileActivated.emit(path)
            if pathlib.Path(path).exists():
                QDesktopServices.openUrl(QUrl.fromLocalFile(path))
