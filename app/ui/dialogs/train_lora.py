"""The Train LoRA dialog: a front end for `app.training` (dataset, presets, progress, loss, samples).

Training runs `app.training.loop.Trainer` on a worker thread; its progress and log callbacks are
re-emitted as Qt signals (queued onto the GUI thread), so the window stays responsive. Stop asks
the trainer to halt between steps (it writes a checkpoint first); Resume continues from the newest
checkpoint. Sample images appear as the trainer writes them into its samples folder.
"""

from __future__ import annotations

import pathlib
import threading
import traceback
from typing import Any

from PySide6.QtCore import QObject, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.training import config as C
from app.ui.dialogs.dataset_browser import DatasetBrowser, thumbnail
from app.ui.dialogs.loss_plot import LossPlot

DEFAULTS = "(defaults)"


class TrainWorker(QObject):
    """Runs one Trainer on a thread; every callback becomes a queued Qt signal."""

    progressed = Signal(object)  # app.training.loop.Progress
    logged = Signal(str)
    finished = Signal(str, object)  # "done" | "stopped" | "failed", TrainResult or message

    def __init__(self, cfg: C.TrainConfig, resume: bool, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.cfg = cfg
        self.resume = resume
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="imagebash-train", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from app.training.loop import Trainer, TrainingStopped

        try:
            trainer = Trainer(self.cfg, progress=self.progressed.emit, log=self.logged.emit, stop=self.stop)
            result = trainer.run(resume=self.resume)
        except TrainingStopped as exc:
            self.finished.emit("stopped", exc.result)
        except Exception as exc:  # noqa: BLE001 - shown in the dialog; the app keeps running
            self.logged.emit(traceback.format_exc())
            self.finished.emit("failed", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        else:
            self.finished.emit("done", result)


class TrainLoraDialog(QDialog):
    """See the module docstring; `config()` is what Start would train with."""

    def __init__(self, settings: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Train LoRA")
        self.resize(1100, 760)
        self.settings = settings
        self.worker: TrainWorker | None = None
        self.result: Any = None
        self.status_kind = ""
        self._samples_dir: pathlib.Path | None = None
        self._seen_samples: set[str] = set()

        self.browser = DatasetBrowser()
        self.data = QLineEdit()
        self.data.setPlaceholderText("folder of training images (kohya layout: 10_style/ for repeats)")
        self.data.editingFinished.connect(lambda: self.browser.set_folder(self.data.text()))
        data_row = _row(self.data, _button("Browse…", self._pick_data))
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addLayout(data_row)
        ll.addWidget(self.browser, 1)

        self.preset = QComboBox()
        self.preset.addItems([DEFAULTS, *C.preset_names()])
        self.preset.currentTextChanged.connect(self._preset_changed)
        self.base = QLineEdit()
        self.base.setPlaceholderText("diffusers folder or .safetensors checkpoint")
        self.out = QLineEdit()
        self.out.setPlaceholderText("default: <data folder>.safetensors in the loras folder")
        self.trigger = QLineEdit()
        self.network = _combo(C.NETWORKS)
        self.rank = _spin(1, 512)
        self.alpha = QDoubleSpinBox()
        self.alpha.setRange(0.01, 1024)
        self.learning_rate = QLineEdit()
        self.max_steps = _spin(0, 10_000_000)
        self.max_steps.setSpecialValueText("from epochs")
        self.epochs = _spin(0, 100_000)
        self.resolution = _spin(64, 4096, 64)
        self.batch_size = _spin(1, 256)
        self.save_every = _spin(0, 10_000_000)
        self.save_every.setSpecialValueText("at the end")
        self.sample_every = _spin(0, 10_000_000)
        self.sample_every.setSpecialValueText("never")
        self.sample_prompts = QPlainTextEdit()
        self.sample_prompts.setPlaceholderText("one prompt per line (default: the trigger word)")
        self.sample_prompts.setMaximumHeight(60)
        self.sample_steps = _spin(1, 1000)
        self.device = _combo(C.DEVICES)
        form = QFormLayout()
        form.addRow("Preset", self.preset)
        form.addRow("Base model", _row(self.base, _button("File…", self._pick_base_file),
                                       _button("Folder…", self._pick_base_folder)))
        form.addRow("Output file", _row(self.out, _button("…", self._pick_out)))
        form.addRow("Trigger word", self.trigger)
        form.addRow("Network", self.network)
        form.addRow("Rank / alpha", _row(self.rank, self.alpha))
        form.addRow("Learning rate", self.learning_rate)
        form.addRow("Steps", self.max_steps)
        form.addRow("Epochs", self.epochs)
        form.addRow("Resolution", self.resolution)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Checkpoint every", self.save_every)
        form.addRow("Sample every", self.sample_every)
        form.addRow("Sample prompts", self.sample_prompts)
        form.addRow("Sample steps", self.sample_steps)
        form.addRow("Device", self.device)
        right = QWidget()
        right.setLayout(form)

        self.start_button = _button("Start", lambda: self.start(resume=False))
        self.resume_button = _button("Resume", lambda: self.start(resume=True))
        self.stop_button = _button("Stop", self.stop)
        self.stop_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.loss_plot = LossPlot()
        self.samples = QListWidget()
        self.samples.setViewMode(QListView.ViewMode.IconMode)
        self.samples.setIconSize(QSize(128, 128))
        self.samples.setMovement(QListView.Movement.Static)
        self.samples.setResizeMode(QListView.ResizeMode.Adjust)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumHeight(80)

        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(left)
        top.addWidget(right)
        top.setSizes([550, 550])
        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(self.loss_plot)
        bottom.addWidget(self.samples)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.resume_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.progress, 1)
        lay = QVBoxLayout(self)
        lay.addWidget(top, 3)
        lay.addLayout(buttons)
        lay.addWidget(self.status)
        lay.addWidget(bottom, 2)
        lay.addWidget(self.log_view)
        self._poll = QTimer(self)
        self._poll.setInterval(500)
        self._poll.timeout.connect(self._check_samples)
        self._fill(C.TrainConfig())
        self.data.textChanged.connect(lambda _t: self._update_resume())
        self.out.textChanged.connect(lambda _t: self._update_resume())

    # form <-> config ----------------------------------------------------------------------------
    def _fill(self, cfg: C.TrainConfig) -> None:
        self.network.setCurrentText(cfg.network)
        self.rank.setValue(cfg.rank)
        self.alpha.setValue(cfg.alpha)
        self.learning_rate.setText(f"{cfg.learning_rate:g}")
        self.max_steps.setValue(cfg.max_steps)
        self.epochs.setValue(cfg.epochs)
        self.resolution.setValue(cfg.resolution)
        self.batch_size.setValue(cfg.batch_size)
        self.save_every.setValue(cfg.save_every)
        self.sample_every.setValue(cfg.sample_every)
        self.sample_steps.setValue(cfg.sample_steps)
        self.device.setCurrentText(cfg.device if cfg.device in C.DEVICES else "auto")
        if cfg.sample_prompts:
            self.sample_prompts.setPlainText("\n".join(cfg.sample_prompts))
        for edit, value in ((self.trigger, cfg.trigger), (self.base, cfg.base), (self.out, cfg.out)):
            if value:
                edit.setText(value)

    def _preset_changed(self, name: str) -> None:
        try:
            self._fill(C.TrainConfig() if name == DEFAULTS else C.load_preset(name))
        except C.ConfigError as exc:
            self._say(str(exc), error=True)

    def config(self) -> C.TrainConfig:
        """The TrainConfig of the form (raises ConfigError naming a bad field)."""
        name = self.preset.currentText()
        base = C.TrainConfig() if name == DEFAULTS else C.load_preset(name)
        try:
            lr = float(self.learning_rate.text())
        except ValueError:
            raise C.ConfigError(f"learning rate must be a number, got {self.learning_rate.text()!r}") from None
        prompts = [p.strip() for p in self.sample_prompts.toPlainText().splitlines() if p.strip()]
        return base.replace(
            data=self.data.text().strip(), base=self.base.text().strip(), out=self.out.text().strip(),
            trigger=self.trigger.text().strip(), network=self.network.currentText(), rank=self.rank.value(),
            alpha=self.alpha.value(), learning_rate=lr, max_steps=self.max_steps.value(),
            epochs=self.epochs.value(), resolution=self.resolution.value(), batch_size=self.batch_size.value(),
            save_every=self.save_every.value(), sample_every=self.sample_every.value(),
            sample_prompts=prompts, sample_steps=self.sample_steps.value(),
            device=self.device.currentText()).validate()

    def _checkpoint_root(self, cfg: C.TrainConfig) -> pathlib.Path:
        from app.training.loop import Trainer

        return Trainer(cfg).checkpoint_root

    def _update_resume(self) -> None:
        from app.training import checkpoint

        try:
            cfg = self.config()
            ck = checkpoint.latest(self._checkpoint_root(cfg)) if cfg.data else None
        except C.ConfigError:
            ck = None
        self.resume_button.setEnabled(ck is not None and self.worker is None)
        self.resume_button.setToolTip(f"Continue from step {ck.step} ({ck.folder})" if ck else
                                      "No checkpoint of this run yet")

    # running ------------------------------------------------------------------------------------
    def start(self, resume: bool = False) -> TrainWorker | None:
        if self.worker is not None:
            return None
        try:
            cfg = self.config()
            if not cfg.data:
                raise C.ConfigError("choose the folder of training images")
            if not cfg.base:
                raise C.ConfigError("choose the base model to train on")
        except C.ConfigError as exc:
            self._say(str(exc), error=True)
            return None
        self._samples_dir = self._checkpoint_root(cfg) / "samples"
        self._seen_samples = {str(p) for p in self._samples_dir.glob("*.png")} if not resume else set()
        self.loss_plot.clear()
        self.progress.setValue(0)
        self.result = None
        self.status_kind = "running"
        self.worker = TrainWorker(cfg, resume, self)
        self.worker.progressed.connect(self._progress)
        self.worker.logged.connect(self.log_view.appendPlainText)
        self.worker.finished.connect(self._finished)
        self._set_running(True)
        self._say("Resuming from the newest checkpoint…" if resume
                  else "Preparing (loading the model, caching latents)…")
        self.worker.start()
        self._poll.start()
        return self.worker

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop.set()
            self.stop_button.setEnabled(False)
            self._say("Stopping after this step (a checkpoint is written first)…")

    def _progress(self, p: Any) -> None:
        if p.total:
            self.progress.setValue(int(1000 * p.step / p.total))
        self._say(p.text())
        if p.phase == "train":
            self.loss_plot.add(p.step, p.loss, p.total)

    def _finished(self, kind: str, payload: Any) -> None:
        self._poll.stop()
        self._check_samples()
        self.worker = None
        self.status_kind = kind
        self._set_running(False)
        if kind == "done":
            self.result = payload
            self.progress.setValue(1000)
            self._say(f"Done: {payload.lora} after {payload.steps} steps")
        elif kind == "stopped":
            self.result = payload
            self._say(f"Stopped at step {payload.steps}/{payload.total_steps}; Resume continues from "
                      f"{payload.checkpoint}")
        else:
            self._say(f"Training failed: {payload}", error=True)
        self._update_resume()

    def _check_samples(self) -> None:
        if self._samples_dir is None or not self._samples_dir.is_dir():
            return
        for p in sorted(self._samples_dir.glob("*.png")):
            if str(p) in self._seen_samples:
                continue
            self._seen_samples.add(str(p))
            item = QListWidgetItem(QIcon(thumbnail(p, 128)), p.stem.replace("step_", "step "))
            item.setToolTip(str(p))
            item.setData(Qt.ItemDataRole.UserRole, str(p))
            self.samples.addItem(item)
            self.samples.scrollToItem(item)

    def _set_running(self, on: bool) -> None:
        self.start_button.setEnabled(not on)
        self.stop_button.setEnabled(on)
        if on:
            self.resume_button.setEnabled(False)

    def _say(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet("color: #e0605a" if error else "")
        self.status.setText(text)

    # pickers ------------------------------------------------------------------------------------
    def _pick_data(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Training images", self.data.text())
        if folder:
            self.data.setText(folder)
            self.browser.set_folder(folder)

    def _pick_base_file(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self, "Base model", self.base.text(), "Checkpoints (*.safetensors)")
        if f:
            self.base.setText(f)

    def _pick_base_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Base model (diffusers folder)", self.base.text())
        if folder:
            self.base.setText(folder)

    def _pick_out(self) -> None:
        f, _ = QFileDialog.getSaveFileName(self, "Save the LoRA as", self.out.text(), "LoRA (*.safetensors)")
        if f:
            self.out.setText(f)

    def closeEvent(self, event: Any) -> None:
        self.stop()
        super().closeEvent(event)


def _button(text: str, slot: Any) -> QPushButton:
    b = QPushButton(text)
    b.clicked.connect(lambda _=False: slot())
    return b


def _combo(values: tuple[str, ...]) -> QComboBox:
    c = QComboBox()
    c.addItems(list(values))
    return c


def _spin(lo: int, hi: int, step: int = 1) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setSingleStep(step)
    return s


def _row(*widgets: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    for i, w in enumerate(widgets):
        row.addWidget(w, 1 if i == 0 else 0)
    return row
