"""The main window's actions, menus and toolbar: what each command is called, its shortcut and icon.

Kept apart from `app.ui.window`, which owns the behaviour the actions trigger. `build_actions`
sets the `act_*` attributes on the window (tests and dialogs reach the actions there) and fills
the menu bar and the main toolbar.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QIcon, QKeySequence

from app import paths
from app.ui.panels.welcome import example_title, example_workflows

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
    """Create the window's actions (`win.act_*`), its menus (`win.recent_menu`) and toolbar."""
    K = QKeySequence
    act = make_action
    win.act_new = act(win, "&New", win.new_document, K.StandardKey.New, "new")
    win.act_open = act(win, "&Open…", win.open_dialog, K.StandardKey.Open, "open")
    win.act_save = act(win, "&Save", win.save_current, K.StandardKey.Save, "save")
    win.act_save_as = act(win, "Save &As…", win.save_current_as, K("Ctrl+Shift+S"))
    win.act_close = act(win, "&Close Tab", win.close_tab, K("Ctrl+W"))
    win.act_export = act(win, "&Export…", win.export_dialog, K("Ctrl+E"), "export",
                         "Export a node's output as images or a video")
    win.act_settings = act(win, "Se&ttings…", win.settings_dialog, K("Ctrl+,"), "settings")
    win.act_quit = act(win, "&Quit", win.close, K("Ctrl+Q"))
    win.act_run = act(win, "&Run", win.run_current, [K("Ctrl+Return"), K("Ctrl+Enter")], "run",
                      "Run the workflow")
    win.act_run_selected = act(win, "Run &Selected", win.run_selected,
                               [K("Ctrl+Shift+Return"), K("Ctrl+Shift+Enter")], "run_selected",
                               "Run the selected nodes and what they need")
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
    m.addSeparator()
    m.addActions([win.act_settings, win.act_close, win.act_quit])
    e = mb.addMenu("&Edit")
    e.addActions([win.act_undo, win.act_redo])
    e.addSeparator()
    win.edit_menu = e
    r = mb.addMenu("&Run")
    r.addActions([win.act_run, win.act_run_selected, win.act_cancel])
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
    tb.addActions([win.act_export, win.act_train, win.act_settings])


def fill_recent(win: MainWindow) -> None:
    """Fill File > Open Recent from the settings (each time the menu opens)."""
    win.recent_menu.clear()
    items = win.settings.recent_files()
    for p in items:
        win.recent_menu.addAction(p, lambda path=p: win.open_path(path))
    if not items:
        win.recent_menu.addAction("(none)").setEnabled(False)
