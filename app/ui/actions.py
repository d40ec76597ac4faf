"""The main window's actions, menus and toolbar: what each command is called, its shortcut and icon.

Kept apart from `app.ui.window`, which owns the behaviour the actions trigger. `build_actions`
sets the `act_*` attributes on the window (tests and dialogs reach the actions there) and fills
the menu bar and the main toolbar.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QIcon, QKeySequence
from PySide6.QtWidgets import QMenu, QToolButton

from app import paths
from app.ui.panels.welcome import example_title, example_workflows
from app.ui.pool_run import POOL

#: The Engine menu's entry that sends the tab's runs to the pool (its engine key is `POOL`).
POOL_TITLE = "Pool (all engines)"

if TYPE_CHECKING:
    from app.ui.window import MainWindow


def icon(name: str) -> QIcon:
    """An icon from resources/icons (an empty icon when the file is missing)."""
    p = paths.resource("icons", f"{name}.svg")
    return QIcon(str(p)) if p.exists() else QIcon()


def make_action(win: MainWindow, text: str, slot: Callable[[], Any], shortcut: Any = None,
                icon_name: str = "", tip: str = "") -> QAction:
    """A window-wide action; its tooltip names the shortcut."""
    a = QAction(icon(icon_name) if icon_name else QIcon(), text, win)
    if shortcut is not None:
        a.setShortcuts(shortcut if isinstance(shortcut, list) else [QKeySequence(shortcut)])
    a.setToolTip(f"{tip or text} ({a.shortcut().toString()})" if shortcut is not None else (tip or text))
    a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
    a.triggered.connect(lambda _=False: slot())
    win.addAction(a)
    return a


def build_actions(win: MainWindow) -> None:
    """Create the window's actions (`win.act_*`), its menus (`win.recent_menu`, `win.engine_menu`)
    and toolbar (`win.engine_button`: the current tab's engine, its menu switches it)."""
    K = QKeySequence
    act = make_action
    win.act_new = act(win, "&New", win.new_document, K.StandardKey.New, "new")
    win.act_open = act(win, "&Open…", win.open_dialog, K.StandardKey.Open, "open")
    win.act_save = act(win, "&Save", win.save_current, K.StandardKey.Save, "save")
    win.act_save_as = act(win, "Save &As…", win.save_current_as, K("Ctrl+Shift+S"))
    win.act_close = act(win, "&Close Tab", win.close_tab, K("Ctrl+W"))
    win.act_export = act(win, "&Export…", win.export_dialog, K("Ctrl+E"), "export",
                         "Export a node's output as images or a video")
    win.act_export_comfy = act(win, "Export as ComfyUI &API…", win.export_comfy_dialog, None, None,
                               "Write the workflow as ComfyUI API JSON (what ComfyUI's /prompt runs)")
    win.act_settings = act(win, "Se&ttings…", win.settings_dialog, K("Ctrl+,"), "settings")
    win.act_quit = act(win, "&Quit", win.close, K("Ctrl+Q"))
    win.act_run = act(win, "&Run", win.run_current, [K("Ctrl+Return"), K("Ctrl+Enter")], "run",
                      "Run the workflow")
    win.act_run_selected = act(win, "Run &Selected", win.run_selected,
                               [K("Ctrl+Shift+Return"), K("Ctrl+Shift+Enter")], "run_selected",
                               "Run the selected nodes and what they need")
    win.act_run_pool = act(win, "Run on &Pool", win.run_on_pool, [K("Ctrl+Alt+Return"), K("Ctrl+Alt+Enter")],
                           "run", "Run the workflow split over the engines of Settings > Engines > Pool")
    win.act_cancel = act(win, "&Cancel", win.cancel_run, K("Esc"), "cancel", "Cancel the run")
    win.act_cancel.setEnabled(False)
    win.act_train = act(win, "Train &LoRA…", win.train_dialog, None, "train",
                        "Train a style LoRA or DoRA on a folder of images")
    win.act_undo = win.undo_group.createUndoAction(win, "&Undo")
    win.act_undo.setShortcuts(QKeySequence.StandardKey.Undo)
    win.act_redo = win.undo_group.createRedoAction(win, "&Redo")
    win.act_redo.setShortcuts([K("Ctrl+Shift+Z"), K("Ctrl+Y")])
    for a in (win.act_undo, win.act_redo):
        win.addAction(a)
    win.engine_menu = QMenu("&Engine", win)
    win.engine_menu.aboutToShow.connect(lambda: fill_engines(win))
    _build_menus(win)
    _build_toolbar(win)


def _build_menus(win: MainWindow) -> None:
    mb = win.menuBar()
    m = mb.addMenu("&File")
    m.addActions([win.act_new, win.act_open])
    win.recent_menu = m.addMenu("Open &Recent")
    win.recent_menu.aboutToShow.connect(lambda: fill_recent(win))
    m.addSeparator()
    m.addActions([win.act_save, win.act_save_as, win.act_export])
    m.addAction(win.act_export_comfy)
    m.addSeparator()
    m.addActions([win.act_settings, win.act_close, win.act_quit])
    e = mb.addMenu("&Edit")
    e.addActions([win.act_undo, win.act_redo])
    e.addSeparator()
    win.edit_menu = e
    r = mb.addMenu("&Run")
    r.addActions([win.act_run, win.act_run_selected, win.act_run_pool, win.act_cancel])
    r.addSeparator()
    r.addMenu(win.engine_menu)
    t = mb.addMenu("&Tools")
    t.addAction(win.act_train)
    v = mb.addMenu("&View")
    win.view_menu = v
    win.view_menu_canvas = v.addSeparator()  # the current canvas's framing actions go above this
    for dock in win.docks.values():
        v.addAction(dock.toggleViewAction())
    v.addSeparator()
    v.addAction(make_action(win, "Toggle Light/Dark Theme", win.toggle_theme))
    v.addAction(make_action(win, "Show Welcome Strip", lambda: win.welcome.show()))
    h = mb.addMenu("&Help")
    ex = h.addMenu("&Examples")
    for p in example_workflows():
        ex.addAction(example_title(p), lambda path=p: win.open_example(path))


def show_canvas_actions(win: MainWindow, view: Any) -> None:
    """List the current canvas's commands (cut, copy, group, frame, ...) in the Edit and View menus."""
    from app.ui.canvas.shortcuts import menu_actions

    for menu in (win.edit_menu, win.view_menu):
        for a in list(menu.actions()):
            if a.property("canvas_command"):
                menu.removeAction(a)
    if view is None:
        return
    for a in view.actions.values():
        a.setProperty("canvas_command", True)
    win.edit_menu.addActions(menu_actions(view.actions, "edit"))
    win.view_menu.insertActions(win.view_menu_canvas, menu_actions(view.actions, "view"))


def _build_toolbar(win: MainWindow) -> None:
    tb = win.addToolBar("Main")
    tb.setObjectName("toolbar_main")
    tb.setMovable(False)
    tb.addActions([win.act_new, win.act_open, win.act_save])
    tb.addSeparator()
    tb.addActions([win.act_run, win.act_run_selected, win.act_cancel])
    tb.addSeparator()
    win.engine_button = QToolButton()
    win.engine_button.setObjectName("engine_button")
    win.engine_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
    win.engine_button.setMenu(win.engine_menu)
    win.engine_button.setText("Engine: local ▾")
    tb.addWidget(win.engine_button)
    tb.addSeparator()
    tb.addActions([win.act_export, win.act_train, win.act_settings])
    fill_engines(win)


def fill_engines(win: MainWindow) -> None:
    """List the engines in the Engine menu, the current tab's checked; choosing one switches it."""
    menu = win.engine_menu
    for a in menu.actions():  # deleted later: this may run inside one of their own signals
        menu.removeAction(a)
        a.deleteLater()
    old = getattr(win, "_engine_group", None)
    if old is not None:
        old.deleteLater()
    win._engine_group = group = QActionGroup(menu)
    current = win.current_engine_key() if hasattr(win, "tabs") else "local"
    for e in win.engines.entries():
        a = menu.addAction(e.name if e.is_local else f"{e.name}   {e.url}")
        a.setCheckable(True)
        a.setChecked(e.key == current)
        a.setData(e.key)
        a.setToolTip("this computer" if e.is_local else e.url)
        group.addAction(a)
        a.triggered.connect(lambda _=False, key=e.key: win.set_current_engine(key))
    menu.addSeparator()
    # the tab's runs split over the engines of Settings > Engines > Pool (what Run > Run on Pool does)
    a = menu.addAction(POOL_TITLE)
    a.setCheckable(True)
    a.setChecked(current == POOL)
    a.setData(POOL)
    a.setToolTip("Run this tab split over the engines of Settings > Engines > Pool (as Run > Run on Pool)")
    group.addAction(a)
    a.triggered.connect(lambda _=False: win.set_current_engine(POOL))
    menu.addSeparator()
    menu.addAction("Manage engines…", win.settings_dialog)


def check_engine(win: MainWindow) -> None:
    """Check the current tab's engine in the Engine menu."""
    current = win.current_engine_key()
    for a in win.engine_menu.actions():
        if a.isCheckable():
            a.setChecked(a.data() == current)


def fill_recent(win: MainWindow) -> None:
    """Fill File > Open Recent from the settings (each time the menu opens)."""
    win.recent_menu.clear()
    items = win.settings.recent_files()
    for p in items:
        win.recent_menu.addAction(p, lambda path=p: win.open_path(path))
    if not items:
        win.recent_menu.addAction("(none)").setEnabled(False)
