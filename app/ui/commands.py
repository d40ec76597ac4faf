"""Undo commands: each one is a tiny redo/undo pair calling one Graph method (orange-canvas style).

The commands never touch Qt items; the canvas hears of every change through the Graph's events.
Gestures that make several changes are wrapped in a macro by WorkflowDocument.
"""

from __future__ import annotations

import copy
from typing import Any

from PySide6.QtGui import QUndoCommand

from app.graph import Graph, Group, Link, NodeInstance, NodeMode, Note


class AddNode(QUndoCommand):
    def __init__(self, graph: Graph, node: NodeInstance, text: str = "Add node") -> None:
        super().__init__(text)
        self.graph, self.node = graph, node

    def redo(self) -> None:
        self.graph.add_node(self.node)

    def undo(self) -> None:
        self.graph.remove_node(self.node.id)


class RemoveNode(QUndoCommand):
    """Removes a node and its links; undo puts both back."""

    def __init__(self, graph: Graph, node_id: str) -> None:
        super().__init__("Remove node")
        self.graph, self.node_id = graph, node_id
        self.node: NodeInstance | None = None
        self.links: list[Link] = []

    def redo(self) -> None:
        self.node, self.links = self.graph.remove_node(self.node_id)

    def undo(self) -> None:
        assert self.node is not None
        self.graph.add_node(self.node)
        for ln in self.links:
            self.graph.connect(ln)


class MoveNodes(QUndoCommand):
    def __init__(self, graph: Graph, new: dict[str, tuple[float, float]]) -> None:
        super().__init__("Move")
        self.graph, self.new = graph, dict(new)
        self.old = {nid: graph.nodes[nid].position for nid in new}

    def redo(self) -> None:
        for nid, pos in self.new.items():
            self.graph.move_node(nid, pos)

    def undo(self) -> None:
        for nid, pos in self.old.items():
            self.graph.move_node(nid, pos)


class Connect(QUndoCommand):
    """Adds a link; the link it replaces on the same input comes back on undo."""

    def __init__(self, graph: Graph, link: Link) -> None:
        super().__init__("Connect")
        self.graph, self.link = graph, link
        self.replaced: Link | None = None

    def redo(self) -> None:
        self.replaced = self.graph.connect(self.link)

    def undo(self) -> None:
        self.graph.disconnect(self.link)
        if self.replaced is not None:
            self.graph.connect(self.replaced)


class Disconnect(QUndoCommand):
    def __init__(self, graph: Graph, link: Link) -> None:
        super().__init__("Disconnect")
        self.graph, self.link = graph, link

    def redo(self) -> None:
        self.graph.disconnect(self.link)

    def undo(self) -> None:
        self.graph.connect(self.link)


class SetParam(QUndoCommand):
    def __init__(self, graph: Graph, node_id: str, name: str, value: Any) -> None:
        super().__init__(f"Change {name}")
        self.graph, self.node_id, self.name, self.value = graph, node_id, name, value
        self.old = graph.nodes[node_id].params.get(name)

    def redo(self) -> None:
        self.graph.set_param(self.node_id, self.name, self.value)

    def undo(self) -> None:
        self.graph.set_param(self.node_id, self.name, self.old)


class SetMode(QUndoCommand):
    def __init__(self, graph: Graph, node_id: str, mode: NodeMode) -> None:
        super().__init__(f"Set mode {NodeMode(mode).value}")
        self.graph, self.node_id, self.mode = graph, node_id, NodeMode(mode)
        self.old = graph.nodes[node_id].mode

    def redo(self) -> None:
        self.graph.set_mode(self.node_id, self.mode)

    def undo(self) -> None:
        self.graph.set_mode(self.node_id, self.old)


class SetNodeAttr(QUndoCommand):
    def __init__(self, graph: Graph, node_id: str, attr: str, value: Any) -> None:
        super().__init__(f"Change {attr}")
        self.graph, self.node_id, self.attr, self.value = graph, node_id, attr, value
        self.old = getattr(graph.nodes[node_id], attr)

    def redo(self) -> None:
        self.graph.set_node_attr(self.node_id, self.attr, self.value)

    def undo(self) -> None:
        self.graph.set_node_attr(self.node_id, self.attr, self.old)


class AddItem(QUndoCommand):
    """Add a group or a note (`kind` is "group" or "note")."""

    def __init__(self, graph: Graph, kind: str, item: Group | Note) -> None:
        super().__init__(f"Add {kind}")
        self.graph, self.kind, self.item = graph, kind, item

    def redo(self) -> None:
        self.graph.add_item(self.kind, self.item)

    def undo(self) -> None:
        self.graph.remove_item(self.kind, self.item.id)


class RemoveItem(QUndoCommand):
    def __init__(self, graph: Graph, kind: str, item_id: str) -> None:
        super().__init__(f"Remove {kind}")
        self.graph, self.kind = graph, kind
        self.item = graph.groups[item_id] if kind == "group" else graph.notes[item_id]

    def redo(self) -> None:
        self.graph.remove_item(self.kind, self.item.id)

    def undo(self) -> None:
        self.graph.add_item(self.kind, self.item)


class UpdateItem(QUndoCommand):
    def __init__(self, graph: Graph, kind: str, item_id: str, **changes: Any) -> None:
        super().__init__(f"Change {kind}")
        self.graph, self.kind, self.item_id, self.changes = graph, kind, item_id, changes
        item = graph.groups[item_id] if kind == "group" else graph.notes[item_id]
        self.old = {k: getattr(item, k) for k in changes}

    def redo(self) -> None:
        self.graph.update_item(self.kind, self.item_id, **self.changes)

    def undo(self) -> None:
        self.graph.update_item(self.kind, self.item_id, **self.old)


class SetReroutes(QUndoCommand):
    """Reroute dots of the link into (node, input), kept in `graph.meta['reroutes']`.

    The Graph has no event for meta, so the document announces the change (`reroutesChanged`).
    """

    def __init__(self, doc: Any, key: str, points: list[tuple[float, float]]) -> None:
        super().__init__("Reroute link")
        self.doc, self.key, self.points = doc, key, [tuple(p) for p in points]
        self.old = copy.deepcopy(doc.reroutes(key))

    def redo(self) -> None:
        self.doc._store_reroutes(self.key, self.points)

    def undo(self) -> None:
        self.doc._store_reroutes(self.key, self.old)
