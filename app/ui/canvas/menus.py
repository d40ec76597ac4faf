"""Right-click menus of the canvas: for a node (and the selection), a group, or empty canvas."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF
from PySide6.QtWidgets import QMenu

from app.graph import NodeMode
from app.ui.canvas.frames import GroupItem

if TYPE_CHECKING:
    from app.ui.canvas.view import CanvasView

GROUP_COLOURS = {"Blue": "#3a5f8a", "Green": "#3f7a4f", "Red": "#8a3a3a", "Orange": "#a0662a",
                 "Purple": "#6a4a8a", "Grey": "#5a5d63"}


def build_context_menu(view: CanvasView, pos: QPointF) -> QMenu:
    """The menu for what is at scene point `pos`; its actions go through the view and document."""
    node = view.node_item_at(pos)
    menu = QMenu(view)
    doc = view.document
    group = next((it for it in view.canvas.items(pos) if isinstance(it, GroupItem)), None)
    if node is None and group is not None:
        gid = group.group_id
        menu.addAction("Rename group…", lambda: view.canvas.rename_group(gid))
        colours = menu.addMenu("Colour")
        for name, colour in GROUP_COLOURS.items():
            colours.addAction(name, lambda c=colour: doc.update_group(gid, color=c))
        menu.addAction("Remove group (keep its nodes)", lambda: doc.remove_nodes([], [gid]))
    elif node is not None:
        if not node.isSelected():
            view.select_nodes([node.node_id])
        ids = view.selected_node_ids()
        menu.addAction("Run to here", lambda: view.runNodeRequested.emit(node.node_id))
        menu.addSeparator()
        menu.addAction("Mute\tCtrl+M", lambda: doc.toggle_mode(ids, NodeMode.MUTED))
        menu.addAction("Bypass\tCtrl+B", lambda: doc.toggle_mode(ids, NodeMode.BYPASSED))
        menu.addAction("Collapse / expand\tH", view.toggle_collapse)
        menu.addAction("Rename…", lambda: view.rename_node(node.node_id))
        menu.addAction("Group\tCtrl+G", view.group_selection)
        menu.addSeparator()
        menu.addAction("Duplicate\tCtrl+D", view.duplicate_selection)
        menu.addAction("Copy\tCtrl+C", view.copy_selection)
        menu.addAction("Delete\tDel", view.delete_selection)
    else:
        menu.addAction("Add node…\tTab", lambda: view.open_search(pos))
        menu.addAction("Add note", lambda: doc.add_note("Note", (pos.x(), pos.y())))
        menu.addAction("Paste\tCtrl+V", lambda: view.paste(pos))
        menu.addSeparator()
        menu.addAction("Frame all\tHome", view.frame_all)
        snap = menu.addAction("Snap to grid")
        snap.setCheckable(True)
        snap.setChecked(view.canvas.snap_enabled)
        snap.toggled.connect(lambda on: setattr(view.canvas, "snap_enabled", on))
    return menu
