"""The Train LoRA dialog: a front end for training (dataset, presets, progress, loss, samples).

Training runs through the engine client like any workflow: the dialog turns its form into a
one-node workflow (`app.training.workflow.training_graph`: the Train LoRA node, every setting of
the form and its preset carried) and submits it, so training takes the
engine's device lock, moves the loaded pipelines off the GPU first, and runs where the engine
runs (this process, or a rented GPU). The run's events come back through a queued Qt signal:
progress metrics feed the loss plot, "sample" files the sample strip, the "lora" file is the
result. Stop cancels the run (the trainer writes a checkpoint first); Resume submits the same
workflow with `resume` on. Numeric fields take their ranges from the node's declaration.

The Engine field picks where it trains (default: the current tab's engine): the same calls go to
a remote engine's client, which uploads the dataset and the base model it lacks, keeps the
checkpoints on the server, and brings the LoRA back to the local path the dialog resolved (the
loras folder, or the chosen output file). Nothing here waits on the network: the base-model list
of a remote engine is the one its last probe read, and Stop is sent from a worker thread.
"""

from __future__ import annotations

import logging
import pathlib
import threading
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QSize, Qt, Signal
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

from app.engine import events as ev
from app.graph.model import Graph
from app.training import config as C
from app.training.workflow import TRAIN_NODE, training_graph
from app.ui.dialogs.dataset_browser import DatasetBrowser, thumbnail
from app.ui.dialogs.loss_plot import LossPlot

DEFAULTS = "(defaults)"
log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    """How a training run ended, as the dialog shows it."""

    steps: int = 0
    total_steps: int = 0
    lora: pathlib.Path | None = None
    checkpoint: str = ""


class TrainRun(QObject):
    """One training run on the engine; its events arrive as Qt signals on the GUI thread."""

    progressed = Signal(object)  # app.engine.events.NodeProgress
    logged = Signal(str)
    sampled = Signal(str)  # the path of a new sample image
    finished = Signal(str, object)  # "done" | "stopped" | "failed", TrainOutcome or message
    _bridged = Signal(object)

    def __init__(self, client: Any, graph: Graph, output_dir: pathlib.Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.graph = graph
        self.output_dir = output_dir
        self.outcome = TrainOutcome()
        self.run_id: str | None = None
        self._failure = "training failed"
        self._stop_requested = False
        self._bridged.connect(self._on_event, Qt.ConnectionType.QueuedConnection)
        self._unsubscribe = client.subscribe(self._bridged.emit)

    def start(self) -> None:
        self.run_id = self.client.submit(self.graph, ["train"], self.output_dir).run_id

    def stop(self) -> None:
        """Cancel the run, off the GUI thread (a remote engine is a request away); a run still
        being uploaded is asked again when it starts on its server."""
        if self.run_id is None:
            return
        self._stop_requested = True
        client, run_id = self.client, self.run_id

        def work() -> None:
            try:
                client.cancel(run_id)
            except Exception as exc:  # noqa: BLE001 - an engine that went away stops nothing
                log.info("stop %s: %s", run_id, exc)

        threading.Thread(target=work, name="imagebash-train-stop", daemon=True).start()

    def _on_event(self, e: ev.Event) -> None:
        if e.run_id != self.run_id:
            return
        if isinstance(e, (ev.RunStarted, ev.NodeStarted)) and self._stop_requested:
            self.stop()
        elif isinstance(e, ev.NodeProgress):
            if e.metric("total"):
                self.outcome.steps, self.outcome.total_steps = int(e.metric("step", 0)), int(e.metric("total"))
            if e.metric("checkpoint"):
                self.outcome.checkpoint = str(e.metric("checkpoint"))
            self.progressed.emit(e)
        elif isinstance(e, ev.NodeLog):
            self.logged.emit(e.message)
        elif isinstance(e, ev.NodeFailed):
            self.logged.emit(e.traceback or e.message)
            self._failure = e.message
        elif isinstance(e, ev.NodeFile) and e.file is not None:
            if e.file.kind == "sample":
                self.sampled.emit(str(self.client.fetch_file(e.file)))
            elif e.file.kind == "lora" and self.outcome.lora is None:
                self.outcome.lora = pathlib.Path(e.file.path)
        elif isinstance(e, ev.RunFinished):
            self._unsubscribe()
            if e.error is not None:
                self.finished.emit("failed", e.error)
            elif e.failed:
                self.finished.emit("failed", self._failure)
            elif e.cancelled:
                self.finished.emit("stopped", self.outcome)
            else:
                self.finished.emit("done", self.outcome)


class TrainLoraDialog(QDialog):
    """See the module docstring; `config()` is what Start would train with."""

    def __init__(self, settings: Any = None, parent: QWidget | None = None, engine: Any = None,
                 engines: Any = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Train LoRA")
        self.resize(1100, 760)
        self.settings = settings
        #: The window's engines (`app.ui.engines.EngineSet`), or None: train on `engine` only.
        self.engines = engines
        if engine is None and engines is not None:
            engine = engines.local
        self._own_engine = engine is None
        if engine is None:
            from app.engine.client import LocalEngine

            engine = LocalEngine(settings=settings.engine_settings() if settings is not None else None)
        self.local_engine = self.engine = engine
        self.engine_key = "local"
        spec = engine.registry.get(TRAIN_NODE)  # the local declaration: the same node on every engine
        self._ports = {p.name: p for p in spec.inputs} if spec is not None else {}
        self.worker: TrainRun | None = None
        self.result: TrainOutcome | None = None
        self.status_kind = ""

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

        self.engine_choice = QComboBox()
        self.engine_choice.setToolTip("Where it trains: this computer, or a remote engine (Settings ▸ Engines)")
        self._fill_engines()
        self.engine_choice.currentIndexChanged.connect(self._engine_selected)
        if engines is not None:
            engines.choicesChanged.connect(self._choices_changed)
        self.preset = QComboBox()
        self.preset.addItems([DEFAULTS, *C.preset_names()])
        self.preset.currentTextChanged.connect(self._preset_changed)
        self.base = QComboBox()
        self.base.setEditable(True)
        self.base.lineEdit().setPlaceholderText("diffusers folder or .safetensors checkpoint")
        self.base.addItems(self._models())
        self.out = QLineEdit()
        self.out.setPlaceholderText("default: <data folder>.safetensors in the loras folder")
        self.trigger = QLineEdit()
        self.network = _combo(C.NETWORKS)
        self.rank = self._spin("rank")
        self.alpha = QDoubleSpinBox()
        r = self._range("alpha", (0.01, 1024.0))
        self.alpha.setRange(*r)
        self.learning_rate = QLineEdit()
        self.max_steps = self._spin("steps")
        self.max_steps.setSpecialValueText("from epochs")
        self.epochs = self._spin("epochs")
        self.resolution = self._spin("resolution", 64)
        self.resolution.setMinimum(64)
        self.batch_size = self._spin("batch_size")
        self.gpus = self._spin("gpus")
        self.gpus.setMinimum(1)
        self.gpus.setToolTip("train data-parallel on this many GPUs of the engine (batch size is per GPU)")
        self.save_every = self._spin("save_every")
        self.save_every.setSpecialValueText("at the end")
        self.sample_every = self._spin("sample_every")
        self.sample_every.setSpecialValueText("never")
        self.sample_prompts = QPlainTextEdit()
        self.sample_prompts.setPlaceholderText("one prompt per line (default: the trigger word)")
        self.sample_prompts.setMaximumHeight(60)
        self.sample_steps = self._spin("sample_steps")
        self.sample_steps.setMinimum(1)
        # flow-matching models (Flux.1, SD 3.5, Qwen-Image); SD bases ignore these
        self.base_precision = _combo(C.BASE_PRECISIONS)
        self.base_precision.setToolTip("How the frozen base is stored: fp8 halves a Flux base (24 GB cards), "
                                       "nf4 needs bitsandbytes on CUDA; auto and full keep it as loaded")
        self.timestep_sampling = _combo(C.TIMESTEP_SAMPLING)
        self.timestep_sampling.setToolTip("auto: the family's reference (Flux sigmoid, SD 3.5 / Qwen logit-normal)")
        self.shift = QDoubleSpinBox()
        self.shift.setRange(0.0, 20.0)
        self.shift.setSingleStep(0.1)
        self.shift.setSpecialValueText("the family's")
        self.blocks = QLineEdit()
        self.blocks.setPlaceholderText("all blocks (e.g. double:0-9, single:20-37 for Flux)")
        form = QFormLayout()
        form.addRow("Engine", self.engine_choice)
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
        form.addRow("GPUs", self.gpus)
        form.addRow("Checkpoint every", self.save_every)
        form.addRow("Sample every", self.sample_every)
        form.addRow("Sample prompts", self.sample_prompts)
        form.addRow("Sample steps", self.sample_steps)
        form.addRow("Base precision", self.base_precision)
        form.addRow("Timesteps / shift", _row(self.timestep_sampling, self.shift))
        form.addRow("Blocks", self.blocks)
        form.addRow("", QLabel("Trains on the chosen engine's device (local: Settings ▸ Device)."))
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
        self._fill(C.TrainConfig())
        self.data.textChanged.connect(lambda _t: self._update_resume())
        self.out.textChanged.connect(lambda _t: self._update_resume())

    def _range(self, name: str, fallback: tuple[float, float]) -> tuple[float, float]:
        """The node's declared range for a field (the dialog never offers what the node refuses)."""
        port = self._ports.get(name)
        r = port.range if port is not None else None
        if r is None or r.min is None or r.max is None:
            return fallback
        return float(r.min), float(r.max)

    def _spin(self, name: str, step: int = 1) -> QSpinBox:
        lo, hi = self._range(name, (0, 1_000_000))
        return _spin(int(lo), int(hi), step)

    def _models(self) -> list[str]:
        """The base models the chosen engine has (a remote one's as its last probe read them)."""
        try:
            if self.engines is not None and self.engine_key != "local":
                return self.engines.choices(self.engine_key, TRAIN_NODE, "base")
            return self.engine.models("checkpoint")
        except Exception:  # noqa: BLE001 - no list is still a usable field (type a path)
            return []

    # engine -------------------------------------------------------------------------------------
    def _fill_engines(self) -> None:
        entries = self.engines.entries() if self.engines is not None else []
        self.engine_choice.blockSignals(True)
        self.engine_choice.clear()
        if not entries:
            self.engine_choice.addItem("local", "local")
        for e in entries:
            self.engine_choice.addItem(e.name if e.is_local else f"{e.name} ({e.url})", e.key)
        i = self.engine_choice.findData(self.engine_key)
        self.engine_choice.setCurrentIndex(max(i, 0))
        self.engine_choice.blockSignals(False)

    def use_engine(self, key: str) -> None:
        """Train on engine `key` (the list is read again from Settings); kept while a run is on."""
        if self.worker is not None:
            return
        self._fill_engines()
        i = self.engine_choice.findData(key)
        if i >= 0 and i != self.engine_choice.currentIndex():
            self.engine_choice.setCurrentIndex(i)
        elif i >= 0:
            self._engine_selected(i)

    def _engine_selected(self, index: int) -> None:
        key = self.engine_choice.itemData(index) or "local"
        if self.worker is not None:
            return
        self.engine_key = key
        self.engine = (self.engines.client(key) if self.engines is not None and key != "local"
                       else self.local_engine)
        self._refill_models()
        self._update_resume()

    def _choices_changed(self, key: str) -> None:
        if key == self.engine_key:
            self._refill_models()

    def _refill_models(self) -> None:
        text = self.base.currentText()
        self.base.blockSignals(True)
        self.base.clear()
        self.base.addItems(self._models())
        self.base.setCurrentText(text)
        self.base.blockSignals(False)

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
        self.gpus.setValue(cfg.gpus)
        self.save_every.setValue(cfg.save_every)
        self.sample_every.setValue(cfg.sample_every)
        self.sample_steps.setValue(cfg.sample_steps)
        self.base_precision.setCurrentText(cfg.base_precision)
        self.timestep_sampling.setCurrentText(cfg.timestep_sampling)
        self.shift.setValue(cfg.shift)
        self.blocks.setText(cfg.blocks)
        if cfg.sample_prompts:
            self.sample_prompts.setPlainText("\n".join(cfg.sample_prompts))
        for edit, value in ((self.trigger, cfg.trigger), (self.out, cfg.out)):
            if value:
                edit.setText(value)
        if cfg.base:
            self.base.setCurrentText(cfg.base)

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
            data=self.data.text().strip(), base=self.base.currentText().strip(), out=self.out.text().strip(),
            trigger=self.trigger.text().strip(), network=self.network.currentText(), rank=self.rank.value(),
            alpha=self.alpha.value(), learning_rate=lr, max_steps=self.max_steps.value(),
            epochs=self.epochs.value(), resolution=self.resolution.value(), batch_size=self.batch_size.value(),
            gpus=self.gpus.value(), save_every=self.save_every.value(), sample_every=self.sample_every.value(),
            sample_prompts=prompts, sample_steps=self.sample_steps.value(),
            base_precision=self.base_precision.currentText(), timestep_sampling=self.timestep_sampling.currentText(),
            shift=self.shift.value(), blocks=self.blocks.text().strip()).validate()

    def _update_resume(self) -> None:
        from app.training import checkpoint

        if self.engine_key != "local":  # its checkpoints are on the server, next to its run
            self.resume_button.setEnabled(self.worker is None)
            self.resume_button.setToolTip("Continue from the newest checkpoint the engine keeps of this run")
            return
        try:
            cfg = self.config()
            ck = checkpoint.latest(C.checkpoint_root(cfg)) if cfg.data else None
        except C.ConfigError:
            ck = None
        self.resume_button.setEnabled(ck is not None and self.worker is None)
        self.resume_button.setToolTip(f"Continue from step {ck.step} ({ck.folder})" if ck else
                                      "No checkpoint of this run yet")

    # running ------------------------------------------------------------------------------------
    def start(self, resume: bool = False) -> TrainRun | None:
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
        self.loss_plot.clear()
        self.progress.setValue(0)
        self.result = None
        self.status_kind = "running"
        out_dir = pathlib.Path(self.settings.output_dir) if self.settings is not None else pathlib.Path("output")
        preset = "" if self.preset.currentText() == DEFAULTS else self.preset.currentText()
        cfg = cfg.replace(out=str(C.lora_out_path(cfg)))  # resolved here: the LoRA comes back to this machine
        self.worker = TrainRun(self.engine, training_graph(cfg, preset, resume), out_dir, self)
        self.worker.progressed.connect(self._progress)
        self.worker.logged.connect(self.log_view.appendPlainText)
        self.worker.sampled.connect(self._add_sample)
        self.worker.finished.connect(self._finished)
        self._set_running(True)
        self._say("Resuming from the newest checkpoint…" if resume
                  else "Preparing (loading the model, caching latents)…")
        self.worker.start()
        return self.worker

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.stop_button.setEnabled(False)
            self._say("Stopping after this step (a checkpoint is written first)…")

    def _progress(self, e: ev.NodeProgress) -> None:
        total, step = e.metric("total") or 0, e.metric("step") or 0
        if total:
            self.progress.setValue(int(1000 * step / total))
        if e.text:
            self._say(e.text)
        if e.metric("phase") == "train" and e.metric("loss") is not None:
            self.loss_plot.add(int(step), float(e.metric("loss")), int(total))

    def _finished(self, kind: str, payload: Any) -> None:
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
                      f"{payload.checkpoint or 'the newest checkpoint'}")
        else:
            self._say(f"Training failed: {payload}", error=True)
        self._update_resume()

    def _add_sample(self, path: str) -> None:
        p = pathlib.Path(path)
        item = QListWidgetItem(QIcon(thumbnail(p, 128)), p.stem.replace("step_", "step "))
        item.setToolTip(str(p))
        item.setData(Qt.ItemDataRole.UserRole, str(p))
        self.samples.addItem(item)
        self.samples.scrollToItem(item)

    def _set_running(self, on: bool) -> None:
        self.engine_choice.setEnabled(not on)
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
        f, _ = QFileDialog.getOpenFileName(self, "Base model", self.base.currentText(), "Checkpoints (*.safetensors)")
        if f:
            self.base.setCurrentText(f)

    def _pick_base_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Base model (diffusers folder)", self.base.currentText())
        if folder:
            self.base.setCurrentText(folder)

    def _pick_out(self) -> None:
        f, _ = QFileDialog.getSaveFileName(self, "Save the LoRA as", self.out.text(), "LoRA (*.safetensors)")
        if f:
            self.out.setText(f)

    def closeEvent(self, event: Any) -> None:
        self.stop()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop training (a checkpoint is written) and, if the dialog made its own engine, stop it."""
        self.stop()
        if self._own_engine:
            self.engine.shutdown()


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
