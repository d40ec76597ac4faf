"""The main window: workflows in tabs, file handling, docks, running, autosave and restore.

Each tab is a WorkflowDocument (the model: Graph + undo stack) shown by a CanvasView, and runs on
the engine it names: the in-process one by default, or a remote `imagebash serve` from Settings >
Engines (the toolbar's "Engine: … ▾" switches the current tab). The window keeps one client per
engine (`app.ui.engines.EngineSet`), drives them all through one RunController, and takes its node
catalogue from the local client; it owns one AutosaveManager and the dock panels, routes engine
events to the view of the document that started the run, shows a remote engine's link going
down and coming back, and follows remote jobs a previous window left running
(`app.ui.reattach`). Its actions, menus and toolbar are built in `app.ui.actions`. Questions
that would block (unsaved changes, where to save, restore after a crash) go through replaceable
callables, so tests answer them without a modal dialog.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QByteArray, QRect, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QKeySequence, QUndoGroup
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QMainWindow,
    QMessageBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app import paths
from app.graph.io import WorkflowFormatError
from app.ui import autosave as A
from app.ui.actions import POOL_TITLE, build_actions, check_engine, fill_engines, icon, make_action, show_canvas_actions
from app.ui.canvas.palette import NodePalette
from app.ui.canvas.view import CanvasView
from app.ui.document import WorkflowDocument
from app.ui.engines import EngineSet
from app.ui.panels.inspector import InspectorPanel
from app.ui.panels.log import LogPanel
from app.ui.panels.models import ModelsPanel
from app.ui.panels.preview import PreviewPanel
from app.ui.panels.queue import QueuePanel
from app.ui.panels.welcome import WelcomeStrip
from app.ui.pool_run import POOL, PoolRunner
from app.ui.reattach import InFlightJobs
from app.ui.runner import RunController, RunJob, apply_event_to_view
from app.ui.settings import LOCAL, Settings
from nodes.registry import Registry

DEFAULT_WORKFLOW = "blend_and_grade.json"
WORKFLOW_FILTER = "Workflows (*.json *.png *.webp);;All files (*)"
#: On first start the window fills this much of the screen's available area, centred.
FIRST_START_FRACTION = 0.85
#: Hides / shows every panel at once (Tab opens the canvas's node search; F11 is free).
PANELS_KEY = "F11"


def first_start_geometry(available: QRect) -> QRect:
    """The window's rectangle on first start: most of the screen, centred, so the canvas has room."""
    r = QRect(0, 0, round(available.width() * FIRST_START_FRACTION), round(available.height() * FIRST_START_FRACTION))
    r.moveCenter(available.center())
    return r


class MainWindow(QMainWindow):
    """See the module docstring. `ask_*` attributes may be replaced (tests, embedding)."""

    def __init__(self, settings: Settings | None = None, registry: Registry | None = None,
                 workflow: str | pathlib.Path | None = None, open_default: bool = True,
                 ask_restore: Callable[[list[A.AutosaveEntry]], bool] | None = None,
                 engine: Any = None) -> None:
        super().__init__()
        self.settings = settings or Settings()
        if engine is None:
            from app.engine.client import LocalEngine

            engine = LocalEngine(registry, self.settings.engine_settings())
        #: The local engine client; the node declarations come through it, for every tab.
        self.engine = engine
        self.registry = engine.registry
        #: Every engine a tab may run on, with its client (made on first use).
        self.engines = EngineSet(self.settings, engine, self)
        self.setWindowTitle("imagebash")
        self.setWindowIcon(icon("imagebash"))
        #: Answers "save changes to X?" with "save", "discard" or "cancel".
        self.ask_unsaved: Callable[[WorkflowDocument], str] = self._ask_unsaved_dialog
        #: Answers "save X where?" with a path, or None to cancel.
        self.ask_save_path: Callable[[WorkflowDocument], pathlib.Path | None] = self._ask_save_path_dialog
        self.ask_restore = ask_restore or self._ask_restore_dialog
        self._titles: dict[int, str] = {}  # id(doc) -> title of a document opened from an example
        self._views: list[CanvasView] = []
        #: The last missing-models dialog shown (`check_models`), for tests and for raising it again.
        self.missing_dialog: Any = None

        self.undo_group = QUndoGroup(self)
        self.runner = RunController(engine, self, client_for=self._client_for)
        self.engines.clientAdded.connect(lambda _key, client: self.runner.add_client(client))
        self.engines.changed.connect(self._engine_changed)
        self.engines.choicesChanged.connect(self._choices_changed)
        self.engines.failed.connect(self._engine_failed)
        self.runner.engineStatus.connect(self._engine_status)
        self.runner.engineEvent.connect(self._engine_event)
        self.runner.jobStarted.connect(self._job_started)
        self.runner.jobFinished.connect(self._job_finished)

        self.tabs = QTabWidget()
        self.tabs.setTabsClosable(True)
        self.tabs.setMovable(True)
        self.tabs.setDocumentMode(True)
        self.tabs.tabCloseRequested.connect(lambda i: self.close_tab(i))
        self.tabs.currentChanged.connect(self._tab_changed)
        self.welcome = WelcomeStrip()
        self.welcome.setVisible(self.settings.show_welcome)
        self.welcome.exampleClicked.connect(self.open_example)
        self.welcome.closed.connect(self._hide_welcome)
        self.example_buttons = self.welcome.buttons
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.welcome)
        lay.addWidget(self.tabs, 1)
        self.setCentralWidget(central)

        self.palette_panel = NodePalette(self.registry)
        self.palette_panel.setMinimumWidth(140)
        self.inspector = InspectorPanel()
        self.inspector.run_outputs, self.inspector.ran_params = self.runner.outputs, self.runner.ran_params
        self.preview = PreviewPanel(self.runner)  # frames come from the engine that made them
        self.queue = QueuePanel(self.runner)
        self.log = LogPanel()
        self.log.nodeClicked.connect(self._select_node)
        self.models = ModelsPanel(workflow_dirs=self._workflow_dirs)
        self.docks: dict[str, QDockWidget] = {}
        self._dock("Nodes", self.palette_panel, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._dock("Models", self.models, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.tabifyDockWidget(self.docks["Nodes"], self.docks["Models"])
        self.docks["Nodes"].raise_()
        self.docks["Models"].visibilityChanged.connect(self._models_shown)
        self._dock("Inspector", self.inspector, Qt.DockWidgetArea.RightDockWidgetArea)
        self._dock("Preview", self.preview, Qt.DockWidgetArea.RightDockWidgetArea)
        self._dock("Queue", self.queue, Qt.DockWidgetArea.BottomDockWidgetArea)
        self._dock("Log", self.log, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.tabifyDockWidget(self.docks["Queue"], self.docks["Log"])
        self.docks["Queue"].raise_()

        build_actions(self)
        #: Pooled runs (Run > Run on Pool); `pool_engines()` gives their members as (key, name, client).
        self.pool = PoolRunner(self)
        self.pool_engines: Callable[[], list[tuple[str, str, Any]]] = self.engines.pool_members
        self._hidden_panels: list[str] = []  # the docks F11 hid, shown again by the next F11
        self.act_panels = make_action(self, "Hide / Show &Panels", self.toggle_panels, QKeySequence(PANELS_KEY),
                                      tip="Hide every panel to give the canvas the whole window, or bring them back")
        self.view_menu.insertAction(self.view_menu_canvas, self.act_panels)
        self.statusBar().showMessage("Ready", 3000)
        self._restore_layout()

        self.autosave = A.AutosaveManager(self.settings.autosave_interval_s, self)
        restored = self._offer_restore()
        if workflow is not None:
            self.open_path(workflow)
        elif open_default and not restored:
            self.open_default()
        if self.tabs.count() == 0:
            self.new_document()
        self.in_flight = InFlightJobs(self.settings, self.runner, self.engines, self)
        self.in_flight.reattach()

    # building -----------------------------------------------------------------------------------
    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock_{title.lower()}")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        self.docks[title] = dock
        return dock

    def _models_shown(self, visible: bool) -> None:
        """The library is scanned the first time its panel shows (start-up never waits for a scan)."""
        if visible and not self.models.models and not self.models.scanning:
            self.models.refresh()

    def _workflow_dirs(self) -> list[pathlib.Path]:
        """Where the Models panel looks for the workflows that use a model: the examples, the
        recent files and the open ones (files, not their folders: a home folder is no place to search)."""
        found = [paths.WORKFLOWS, *(pathlib.Path(f) for f in self.settings.recent_files())]
        found += [d.path for d in self.documents if d.path is not None]
        return list(dict.fromkeys(f for f in found if f.exists()))

    def _hide_welcome(self) -> None:
        self.settings.show_welcome = False

    # documents and tabs -------------------------------------------------------------------------
    @property
    def documents(self) -> list[WorkflowDocument]:
        return [self.tabs.widget(i).document for i in range(self.tabs.count())]

    def current_view(self) -> CanvasView | None:
        w = self.tabs.currentWidget()
        return w if isinstance(w, CanvasView) else None

    def current_document(self) -> WorkflowDocument | None:
        v = self.current_view()
        return v.document if v is not None else None

    def view_of(self, document: Any) -> CanvasView | None:
        return next((v for v in self._views if v.document is document), None)

    def add_document(self, doc: WorkflowDocument, title: str | None = None) -> CanvasView:
        view = CanvasView(doc)
        view.selectionChanged.connect(lambda ids, v=view: self._selection_changed(v, ids))
        view.nodeActivated.connect(lambda nid, v=view: self._node_activated(v, nid))
        view.workflowDropped.connect(self.open_path)
        view.runNodeRequested.connect(lambda nid, v=view: self.run_nodes(v, [nid]))
        view.statusMessage.connect(lambda text: self.statusBar().showMessage(text, 5000))
        self._views.append(view)
        if title:
            self._titles[id(doc)] = title
            doc.autosave_title = title  # what the restore dialog calls it after a crash
        doc.choices_source = self.engines.choices
        doc.dirtyChanged.connect(lambda _d, v=view: self._update_title(v))
        doc.engineChanged.connect(lambda _k, v=view: self._update_title(v))
        doc.pathChanged.connect(lambda _p, v=view: self._path_changed(v))
        self.undo_group.addStack(doc.undo_stack)
        self.autosave.register(doc)
        i = self.tabs.addTab(view, "")
        self._update_title(view)
        self.tabs.setCurrentIndex(i)
        QTimer.singleShot(0, view, lambda: view.frame_all(readable=True))
        return view

    def tab_title(self, doc: WorkflowDocument) -> str:
        name = doc.path.name if doc.path else self._titles.get(id(doc), "untitled")
        return name + (" *" if doc.is_dirty() else "")

    def _update_title(self, view: CanvasView) -> None:
        i = self.tabs.indexOf(view)
        if i < 0:
            return
        doc = view.document
        engine = self.engine_name(doc.engine)
        self.tabs.setTabText(i, self.tab_title(doc))
        self.tabs.setTabToolTip(i, (str(doc.path) if doc.path else "not saved yet") + f"\nruns on: {engine}")
        if view is self.current_view():
            on = "" if doc.engine == LOCAL else f" — on {engine}"
            self.setWindowTitle(f"{self.tab_title(doc)}{on} — imagebash")
            self._update_engine_indicator()
            check_engine(self)

    def _path_changed(self, view: CanvasView) -> None:
        self._titles.pop(id(view.document), None)
        self._update_title(view)

    def _tab_changed(self, _index: int) -> None:
        view = self.current_view()
        show_canvas_actions(self, view)
        if view is None:
            self.inspector.clear()
            self.setWindowTitle("imagebash")
            self._update_engine_indicator()
            return
        self.undo_group.setActiveStack(view.document.undo_stack)
        self._update_title(view)
        self.preview.set_outputs(self.runner.outputs(view.document))
        ids = view.selected_node_ids()
        self.inspector.show_node(view.document, ids[0] if len(ids) == 1 else None)

    def new_document(self) -> CanvasView:
        return self.add_document(WorkflowDocument(registry=self.registry))

    def open_default(self) -> CanvasView | None:
        p = paths.WORKFLOWS / DEFAULT_WORKFLOW
        return self.open_example(p) if p.is_file() else None

    def open_example(self, path: str | pathlib.Path) -> CanvasView | None:
        """Open an example as an unsaved copy, so saving never overwrites the shipped file."""
        p = pathlib.Path(path)
        try:
            doc = WorkflowDocument.load(p, self.registry)
        except WorkflowFormatError as exc:
            self.error(str(exc))
            return None
        doc.path = None
        view = self.add_document(doc, title=p.stem)
        self._report_upgrade(doc, p)
        self.check_models(doc)
        return view

    def open_path(self, path: str | pathlib.Path) -> CanvasView | None:
        p = pathlib.Path(path).expanduser()
        for v in self._views:
            if v.document.path is not None and p.suffix.lower() != ".png" and _same(v.document.path, p):
                self.tabs.setCurrentWidget(v)
                return v
        try:
            doc = WorkflowDocument.load(p, self.registry)
        except WorkflowFormatError as exc:
            self.error(str(exc))
            return None
        view = self.add_document(doc, title=p.stem if doc.path is None else None)
        if doc.path is not None:
            self.settings.add_recent(p)
        self.statusBar().showMessage(f"Opened {p}", 4000)
        self._report_upgrade(doc, p)
        self.check_models(doc, p)
        return view

    def check_models(self, doc: WorkflowDocument, source: pathlib.Path | None = None) -> Any:
        """One dialog listing the model files an opened workflow names and this computer lacks
        (`app.library.missing`); None when nothing is missing. A PNG's provenance gives each model's
        hash (for a Civitai look-up). A remote engine has its own models (the pool: this computer's too)."""
        if doc.engine not in (LOCAL, POOL):
            return None
        from app.library.missing import missing_models, png_provenance

        try:
            provenance = png_provenance(source) if source is not None and source.suffix.lower() == ".png" else None
            missing = missing_models(doc.graph, self.registry, provenance=provenance)
        except Exception as exc:  # noqa: BLE001 - a check that fails must not stop the file opening
            self.log.add("warning", f"could not check the workflow's models: {exc}")
            return None
        if not missing:
            return None
        from app.ui.dialogs.missing_models import MissingModelsDialog

        self.log.add("warning", f"{self.tab_title(doc).rstrip(' *')}: {len(missing)} model file(s) missing: "
                                + ", ".join(m.name for m in missing))
        dlg = MissingModelsDialog(doc, missing, self.settings.models_dir, self.tab_title(doc).rstrip(" *"), self)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.relinked.connect(lambda _changes: self.models.refresh() if self.models.models else None)
        self.missing_dialog = dlg
        if self.isVisible():
            dlg.show()
        else:
            QTimer.singleShot(0, dlg.show)  # opened from the command line: after the window shows
        return dlg

    def _report_upgrade(self, doc: WorkflowDocument, path: pathlib.Path) -> None:
        """Say once that an older file was upgraded, or a ComfyUI file imported, on opening."""
        imported = doc.graph.meta.get("import_note") if isinstance(doc.graph.meta, dict) else None
        if imported:
            self.log.add("info", f"{path.name}: {imported}")
            self.statusBar().showMessage(f"{path.name}: {imported}", 10000)
        if doc.upgrade_notes:
            self.log.add("info", f"{path.name}: this file was upgraded (save to keep it): "
                                 + "; ".join(doc.upgrade_notes))
            self.statusBar().showMessage(f"{path.name} was upgraded from an older version; save to keep it", 8000)

    def open_dialog(self) -> None:
        start = str(self.settings.get("ui/last_dir", str(paths.WORKFLOWS)))
        files, _ = QFileDialog.getOpenFileNames(self, "Open workflow", start, WORKFLOW_FILTER)
        for f in files:
            self.settings.set("ui/last_dir", str(pathlib.Path(f).parent))
            self.open_path(f)

    def save_document(self, doc: WorkflowDocument, path: str | pathlib.Path | None = None) -> bool:
        target = pathlib.Path(path) if path is not None else doc.path
        if target is None:
            target = self.ask_save_path(doc)
            if target is None:
                return False
        if target.suffix.lower() != ".json":
            target = target.with_name(target.name + ".json") if target.suffix == "" else target
        try:
            doc.save(target)
        except OSError as exc:
            self.error(f"Could not save {target}: {exc}")
            return False
        self.settings.add_recent(target)
        self.autosave.save_now()
        self.statusBar().showMessage(f"Saved {target}", 4000)
        return True

    def save_current(self) -> bool:
        doc = self.current_document()
        return doc is not None and self.save_document(doc)

    def save_current_as(self) -> bool:
        doc = self.current_document()
        if doc is None:
            return False
        target = self.ask_save_path(doc)
        return target is not None and self.save_document(doc, target)

    def close_tab(self, index: int | None = None) -> bool:
        """Close a tab (the current one by default), asking about unsaved changes; False if kept."""
        i = self.tabs.currentIndex() if index is None else index
        view = self.tabs.widget(i)
        if not isinstance(view, CanvasView):
            return False
        doc = view.document
        if doc.is_dirty():
            answer = self.ask_unsaved(doc)
            if answer == "cancel" or (answer == "save" and not self.save_document(doc)):
                return False
        self.runner.cancel(document=doc)
        self.tabs.removeTab(self.tabs.indexOf(view))
        self._views.remove(view)
        self.undo_group.removeStack(doc.undo_stack)
        self.autosave.unregister(doc)
        self.runner.forget(doc)
        self._titles.pop(id(doc), None)
        if self.inspector.document is doc:
            self.inspector.clear()
        view.deleteLater()
        return True

    # questions (replaceable) --------------------------------------------------------------------
    def _ask_unsaved_dialog(self, doc: WorkflowDocument) -> str:
        from app.ui.dialogs.questions import ask_unsaved

        return ask_unsaved(self, self.tab_title(doc).rstrip(" *"))

    def _ask_save_path_dialog(self, doc: WorkflowDocument) -> pathlib.Path | None:
        from app.ui.dialogs.questions import ask_save_path

        return ask_save_path(self, self.settings, self.tab_title(doc).rstrip(" *"), doc.path)

    def _ask_restore_dialog(self, entries: list[A.AutosaveEntry]) -> bool:
        from app.ui.dialogs.restore import ask_restore

        return ask_restore(entries, self)

    # autosave and restore -----------------------------------------------------------------------
    def _offer_restore(self) -> bool:
        orphans = A.find_orphans()
        if not orphans:
            return False
        entries = [e for o in orphans for e in o.entries]
        restored = False
        if self.ask_restore(entries):
            for e in entries:
                try:
                    graph = e.graph()
                except WorkflowFormatError as exc:
                    self.log.add("warning", f"could not restore {e.title}: {exc}")
                    continue
                doc = WorkflowDocument(graph, self.registry, pathlib.Path(e.path) if e.path else None)
                doc.undo_stack.resetClean()  # restored work is unsaved work
                self.add_document(doc, title=None if e.path else e.title)
                restored = True
            self.autosave.save_now()  # safe in this session before the old one is deleted
            self.log.add("info", f"restored {len(entries)} workflow(s) from the last session's autosave")
        for o in orphans:
            o.discard()
        return restored

    # running ------------------------------------------------------------------------------------
    def run_current(self) -> RunJob | None:
        view = self.current_view()
        return self.run_nodes(view, None) if view is not None else None

    def run_selected(self) -> RunJob | None:
        view = self.current_view()
        if view is None:
            return None
        ids = view.selected_node_ids()
        if not ids:
            self.statusBar().showMessage("Select the nodes to run first", 4000)
            return None
        return self.run_nodes(view, ids)

    def run_nodes(self, view: CanvasView, targets: list[str] | None) -> RunJob | None:
        doc = view.document
        if doc.engine == POOL:  # the tab's engine menu says Pool: what Run > Run on Pool does
            return self.pool.start(doc, targets, self.tab_title(doc).rstrip(" *"))
        missing = self.engines.missing_token(self._client_for(doc)[1])
        if missing is not None:
            self.error(missing)
            return None
        job = self.runner.submit(doc, doc.graph, targets, self.settings.output_dir,
                                 title=self.tab_title(doc).rstrip(" *"))
        return job

    def run_on_pool(self) -> RunJob | None:
        """Run the current tab's workflow split over the pool's engines (`app.ui.pool_run`)."""
        doc = self.current_document()
        return self.pool.start(doc, None, self.tab_title(doc).rstrip(" *")) if doc is not None else None

    def cancel_run(self) -> None:
        if self.runner.cancel() | self.pool.cancel():
            self.statusBar().showMessage("Cancelling…", 3000)

    # engines ------------------------------------------------------------------------------------
    def _client_for(self, doc: Any) -> tuple[Any, str, str]:
        """The client a document's runs go to (the local one when its engine left Settings)."""
        key = doc.engine if doc is not None and self.engines.known(doc.engine) else LOCAL
        return self.engines.client(key), key, self.engines.name(key)

    def current_engine_key(self) -> str:
        doc = self.current_document()
        return doc.engine if doc is not None else LOCAL

    def set_current_engine(self, key: str) -> None:
        doc = self.current_document()
        if doc is not None:
            self.set_document_engine(doc, key)

    def engine_name(self, key: str) -> str:
        """How engine `key` reads in titles and tooltips (the pool too)."""
        return POOL_TITLE if key == POOL else self.engines.name(key)

    def set_document_engine(self, doc: WorkflowDocument, key: str) -> None:
        """Run `doc` on engine `key` from now on; its client is made (and probed) right away.
        `POOL` sends its runs to the pool (`app.ui.pool_run`): there is no client of its own."""
        if key == POOL:
            doc.set_engine(POOL)
            if doc is self.current_document():
                self._refresh_inspector()
            return
        if not self.engines.known(key):
            self.statusBar().showMessage(f"No engine '{key}': add it in Settings > Engines", 6000)
            return
        self.engines.client(key)
        if self.engines.state(key).connected is False:
            self.engines.probe(key)  # chosen again after it failed: ask again
        doc.set_engine(key)
        if doc is self.current_document():
            self._refresh_inspector()

    def _update_engine_indicator(self) -> None:
        key = self.current_engine_key()
        if key == POOL:
            names = ", ".join(self.engines.name(k) for k in self.settings.pool_keys() if self.engines.known(k)) \
                or "none: tick some in Settings > Engines > Pool"
            self.engine_button.setText(f"Engine: {POOL_TITLE} ▾")
            self.engine_button.setToolTip(f"Runs split over the pool's engines ({names})"
                                          "\nClick to run this tab on another engine")
            return
        state = self.engines.state(key)
        name = self.engines.name(key)
        self.engine_button.setText(f"Engine: {name}" + (f" ({state.text})" if state.text else "") + " ▾")
        tip = "Runs in this process" if key == LOCAL else "\n".join(x for x in (key, state.detail) if x)
        self.engine_button.setToolTip(tip + "\nClick to run this tab on another engine")

    def _engine_changed(self, key: str) -> None:
        if key == self.current_engine_key():
            self._update_engine_indicator()

    def _choices_changed(self, key: str) -> None:
        if key == self.current_engine_key():
            self._refresh_inspector()

    def _refresh_inspector(self) -> None:
        """Rebuild the inspector's editors (new model lists), unless the user is typing in it."""
        focus = QApplication.focusWidget()
        if focus is not None and self.inspector.isAncestorOf(focus):
            return
        view = self.current_view()
        if view is not None and self.inspector.document is view.document:
            self.inspector.show_node(view.document, self.inspector.node_id)

    def _engine_failed(self, key: str, line: str) -> None:
        self.log.add("warning", f"engine {self.engines.name(key)}: {line}")
        self.statusBar().showMessage(line, 8000)

    def _engine_status(self, client: Any, event: Any) -> None:
        """A remote engine's link went down or came back: the indicator, and one line each way."""
        key = self.engines.key_of(client)
        if key is None:
            return
        if self.engines.link_changed(key, event.connected, event.message):
            name = self.engines.name(key)
            text = (f"reconnected to the engine {name} ({key})" if event.connected
                    else event.message or f"the engine {name} at {key} went away; reconnecting")
            self.log.add("info" if event.connected else "warning", text)
            self.statusBar().showMessage(text, 8000)

    def _job_started(self, job: RunJob) -> None:
        view = self.view_of(job.document)
        if view is not None:
            view.clear_states()
        self.act_cancel.setEnabled(True)
        what = f"nodes {', '.join(job.targets)}" if job.targets else "workflow"
        on = "" if job.engine_key == LOCAL else f" on {job.engine}"
        verb = "started" if job.document is not None else "followed again"
        self.log.add("info", f"run #{job.number} {verb}: {job.title} ({what}){on}")
        self.statusBar().showMessage(f"Running {job.title}{on}…")

    def _job_finished(self, job: RunJob) -> None:
        self.act_cancel.setEnabled(self.runner.busy or self.pool.busy)
        view = self.view_of(job.document)
        if job.status == "error":
            for pr in job.problems:
                if view is not None and pr.node_id and pr.node_id in job.document.graph.nodes:
                    view.set_node_state(pr.node_id, "failed", message=pr.message)
                self.log.add("error", str(pr), pr.node_id)
            if not job.problems:
                self.log.add("error", job.message, details=job.message)
        what = {"done": "finished", "failed": "finished with errors", "cancelled": "cancelled",
                "error": "could not be followed" if job.gone or job.unreachable else
                ("stopped with an error" if job.ran else "could not start")}.get(job.status, job.status)
        took = f" in {job.duration:.1f}s" if job.duration is not None else ""
        files = f"; {len(job.files)} file(s) in {job.output_dir}" if job.files else ""
        on = "" if job.engine_key == LOCAL else f" on {job.engine}"
        self.log.add("info" if job.status == "done" else "warning", f"run #{job.number}{on} {what}{took}{files}")
        why = f": {job.message}" if job.status == "error" and job.message else ""
        self.statusBar().showMessage(f"Run #{job.number} {what}{took}{why}", 8000)
        if view is not None and view is self.current_view():
            self.preview.set_outputs(self.runner.outputs(job.document))
        if job.engine_key != LOCAL:
            self.engines.probe(job.engine_key)  # its model lists may have grown (a trained LoRA)

    def _engine_event(self, job: RunJob, event: Any) -> None:
        from app.engine import events as ev

        doc = job.document
        view = self.view_of(doc)
        if isinstance(event, ev.NodeProgress) and event.node_id is None and event.text:
            self.statusBar().showMessage(f"{job.title}: {event.text}", 4000)  # an upload to a remote engine
        elif isinstance(event, ev.NodeFailed):
            if event.upstream is None:
                self.log.add("error", event.message, event.node_id, event.traceback)
        elif isinstance(event, ev.NodeLog):
            self.log.add(event.level, event.message, event.node_id)
        if view is not None and event.node_id in doc.graph.nodes and event.node_id not in job.hidden_nodes:
            apply_event_to_view(view, job, event, self.runner.outputs(doc))
        if isinstance(event, ev.NodeFinished) and view is self.current_view():
            self.preview.set_outputs(self.runner.outputs(doc))
        if isinstance(event, ev.NodeFinished) and self.inspector.document is doc:
            self.inspector.refresh_clip_length()  # a loader's outputs tell the clip's length

    # selection ----------------------------------------------------------------------------------
    def _selection_changed(self, view: CanvasView, ids: list) -> None:
        if view is not self.current_view():
            return
        self.inspector.show_node(view.document, ids[0] if len(ids) == 1 else None)
        if len(ids) == 1:
            self._preview_node(view.document, ids[0])

    def _node_activated(self, view: CanvasView, node_id: str) -> None:
        self.preview.set_outputs(self.runner.outputs(view.document))
        if self._preview_node(view.document, node_id):
            self.docks["Preview"].show()
            self.docks["Preview"].raise_()

    def _preview_node(self, doc: WorkflowDocument, node_id: str) -> bool:
        """Show a node's output; for a sink without one (Save), the picture it was fed."""
        if self.preview.show_output(node_id):
            return True
        return any(self.preview.show_output(f"{ln.src}.{ln.src_port}") for ln in doc.graph.links_into(node_id))

    def _select_node(self, node_id: str) -> None:
        view = self.current_view()
        if view is not None and node_id in view.document.graph.nodes:
            view.select_nodes([node_id])
            view.frame_selected(readable=True)

    # dialogs ------------------------------------------------------------------------------------
    def settings_dialog(self) -> None:
        from app.ui.dialogs.settings import SettingsDialog

        dlg = SettingsDialog(self.settings, self)
        if dlg.exec():
            self.apply_settings()

    def apply_settings(self) -> None:
        self.runner.apply_settings(self.settings.engine_settings())
        self.apply_theme(self.settings.theme)
        for key, client in self.engines.stale():  # removed, or its token changed: rebuilt on next use
            if self.runner.remove_client(client):
                self.engines.drop(key)
        for doc in self.documents:
            if doc.engine == POOL:
                continue  # the pool's members are read at each run
            if not self.engines.known(doc.engine):
                doc.set_engine(LOCAL)
            else:
                self.engines.client(doc.engine)  # rebuilt (and probed) now for the tabs on it
        fill_engines(self)
        self._update_engine_indicator()
        if self.models.models or not self.docks["Models"].isHidden():
            self.models.refresh()  # the models folder may have moved

    def apply_theme(self, name: str) -> None:
        from app.ui.theme import apply_theme

        apply_theme(QApplication.instance(), name)

    def toggle_theme(self) -> None:
        self.settings.theme = "light" if self.settings.theme == "dark" else "dark"
        self.apply_theme(self.settings.theme)

    def export_dialog(self) -> None:
        from app.ui.dialogs.export import ExportDialog

        view = self.current_view()
        if view is None:
            return
        ids = view.selected_node_ids()
        ExportDialog(self, view.document, preselect=ids[0] if ids else None).exec()

    def train_dialog(self) -> None:
        from app.ui.dialogs.train_lora import TrainLoraDialog

        if getattr(self, "_train_dialog", None) is None:
            self._train_dialog = TrainLoraDialog(self.settings, self, engine=self.engine, engines=self.engines)
        self._train_dialog.use_engine(self.current_engine_key())  # default: the current tab's engine
        self._train_dialog.show()
        self._train_dialog.raise_()

    def export_comfy_dialog(self) -> None:
        """File > Export as ComfyUI API: the mapped subset as ComfyUI API JSON; what has no
        counterpart is named in the status bar."""
        from app.comfy.export import export_file

        view = self.current_view()
        if view is None:
            return
        doc = view.document
        start = str(doc.path.with_suffix(".comfy-api.json")) if doc.path else "workflow.comfy-api.json"
        path, _ = QFileDialog.getSaveFileName(self, "Export as ComfyUI API", start, "ComfyUI API JSON (*.json)")
        if not path:
            return
        try:
            report = export_file(doc.graph, path, self.registry)
        except OSError as exc:
            self.error(f"Could not write {path}: {exc.strerror or exc}")
            return
        self.log.add("info", " · ".join([report.summary(), *report.warnings]))
        self.statusBar().showMessage(" · ".join([report.summary(), *report.warnings]), 12000)

    def error(self, message: str) -> None:
        """Report a problem without blocking: log line, status bar, and a window-modal note."""
        self.log.add("error", message)
        self.statusBar().showMessage(message, 8000)
        box = QMessageBox(QMessageBox.Icon.Warning, "imagebash", message, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    # closing ------------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:
        for view in list(self._views):
            doc = view.document
            if not doc.is_dirty():
                continue
            self.tabs.setCurrentWidget(view)
            answer = self.ask_unsaved(doc)
            if answer == "cancel" or (answer == "save" and not self.save_document(doc)):
                event.ignore()
                return
        if getattr(self, "_train_dialog", None) is not None:
            self._train_dialog.stop()  # the trainer writes a checkpoint before it stops
        self.save_layout()
        self.pool.shutdown()
        self.runner.shutdown(detach=self.engines.remote_clients())  # remote jobs run on: see app.ui.reattach
        self.autosave.close_clean()
        event.accept()

    def save_layout(self) -> None:
        """Keep the window's size, place and dock layout for the next start (panels hidden by F11
        are saved where they were, with a flag that hides them again)."""
        hidden = list(self._hidden_panels)
        if hidden:
            self.toggle_panels()
        self.settings.set("ui/geometry", self.saveGeometry())
        self.settings.set("ui/state", self.saveState())
        self.settings.set("ui/panels_hidden", ",".join(hidden))
        if hidden:
            self.toggle_panels()
        self.settings.sync()

    def _restore_layout(self) -> None:
        geo = self.settings.get("ui/geometry")
        state = self.settings.get("ui/state")
        hidden = [n for n in str(self.settings.get("ui/panels_hidden", "") or "").split(",") if n in self.docks]
        if not (isinstance(geo, QByteArray) and self.restoreGeometry(geo)):
            screen = self.screen() or QApplication.primaryScreen()
            self.setGeometry(first_start_geometry(screen.availableGeometry()))
        if isinstance(state, QByteArray) and self.restoreState(state):
            if hidden:
                self._hide_panels(hidden)
            return
        QTimer.singleShot(0, self._default_dock_sizes)  # once shown: sizes need a laid-out window

    def _default_dock_sizes(self) -> None:
        """Panels in proportion to the window, so the canvas keeps most of the width on any screen."""
        w, h = self.width(), self.height()
        self.resizeDocks([self.docks["Nodes"]], [max(140, min(240, round(w * 0.14)))], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["Inspector"]], [max(200, min(380, round(w * 0.2)))], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["Inspector"], self.docks["Preview"]], [400, 400], Qt.Orientation.Vertical)
        self.resizeDocks([self.docks["Queue"]], [max(120, min(170, round(h * 0.18)))], Qt.Orientation.Vertical)

    # panels -------------------------------------------------------------------------------------
    def toggle_panels(self) -> None:
        """F11: hide every visible panel (the canvas gets the window), or show the ones it hid."""
        if self._hidden_panels:
            names, self._hidden_panels = self._hidden_panels, []
            for name in names:
                self.docks[name].show()
            self.statusBar().showMessage(f"Panels shown ({PANELS_KEY} hides them)", 3000)
            return
        self._hide_panels(list(self.docks))
        self.statusBar().showMessage(f"Panels hidden: {PANELS_KEY} or View ▸ Hide / Show Panels brings them back",
                                     5000)

    def _hide_panels(self, names: list[str]) -> None:
        self._hidden_panels = [n for n in names if not self.docks[n].isHidden()]
        for name in self._hidden_panels:
            self.docks[name].hide()

    @property
    def panels_hidden(self) -> bool:
        return bool(self._hidden_panels)


def _same(a: pathlib.Path, b: pathlib.Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
