"""The canvas's editing commands as QActions: their names, shortcuts and what they call.

Each CanvasView owns one set, with the widget-with-children shortcut context, so the keys work
while the canvas (or an editor on it) has focus and never clash between tabs; the window's Edit
and View menus list the current view's actions, so every shortcut is discoverable. Undo and
redo are the window's (its undo group follows the current document), not the canvas's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence

from app.graph.model import NodeMode

if TYPE_CHECKING:
    from app.ui.canvas.view import CanvasView

K = QKeySequence

#: (name, menu text, shortcuts, menu): the canvas commands, in menu order.
COMMANDS: tuple[tuple[str, str, tuple[Any, ...], str], ...] = (
    ("cut", "Cu&t", (K.StandardKey.Cut,), "edit"),
    ("copy", "&Copy", (K.StandardKey.Copy,), "edit"),
    ("paste", "&Paste", (K.StandardKey.Paste,), "edit"),
    ("duplicate", "&Duplicate", ("Ctrl+D",), "edit"),
    ("delete", "De&lete", ("Delete", "Backspace"), "edit"),
    ("select_all", "Select &All", ("Ctrl+A",), "edit"),
    ("group", "&Group Selection", ("Ctrl+G",), "edit"),
    ("mute", "&Mute / Unmute", ("Ctrl+M",), "edit"),
    ("bypass", "&Bypass / Unbypass", ("Ctrl+B",), "edit"),
    ("collapse", "Collapse / &Expand", ("H",), "edit"),
    ("frame_all", "Frame &All", ("Home", "F"), "view"),
    ("frame_selected", "Frame &Selection", (".",), "view"),
)


def _slots(view: CanvasView) -> dict[str, Callable[[], Any]]:
    def cut() -> None:
        view.copy_selection()
        view.delete_selection()

    def select_all() -> None:
        for item in view.canvas.nodes.values():
            item.setSelected(True)

    return {
        "cut": cut, "copy": view.copy_selection, "paste": lambda: view.paste(view.cursor_scene_pos()),
        "duplicate": view.duplicate_selection, "delete": view.delete_selection, "select_all": select_all,
        "group": view.group_selection,
        "mute": lambda: view.document.toggle_mode(view.selected_node_ids(), NodeMode.MUTED),
        "bypass": lambda: view.document.toggle_mode(view.selected_node_ids(), NodeMode.BYPASSED),
        "collapse": view.toggle_collapse, "frame_all": view.frame_all, "frame_selected": view.frame_selected,
    }


def canvas_actions(view: CanvasView) -> dict[str, QAction]:
    """The view's actions by name, added to the view (see the module docstring)."""
    slots = _slots(view)
    actions: dict[str, QAction] = {}
    for name, text, keys, _menu in COMMANDS:
        a = QAction(text, view)
        seqs: list[QKeySequence] = []
        for k in keys:
            seqs += QKeySequence.keyBindings(k) if isinstance(k, QKeySequence.StandardKey) else [QKeySequence(k)]
        a.setShortcuts(seqs)
        a.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        a.triggered.connect(lambda _=False, slot=slots[name]: slot())
        view.addAction(a)
        actions[name] = a
    return actions


def menu_actions(actions: dict[str, QAction], menu: str) -> list[QAction]:
    """The actions one menu ("edit" or "view") lists, in order."""
    return [actions[name] for name, _text, _keys, m in COMMANDS if m == menu]
