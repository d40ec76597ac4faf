"""The Graph: pure data for one workflow (nodes, links, groups, notes), with change events.

Every edit goes through a method here, and each method tells the listeners what changed, so an
editor's views and undo stack (app/ui) and the engine see one model. No Qt, no torch.
"""

from __future__ import annotations

import copy
import enum
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


class NodeMode(str, enum.Enum):
    """How the engine treats a node: run it, skip it (muted) or pass inputs through (bypassed)."""

    NORMAL = "normal"
    MUTED = "muted"
    BYPASSED = "bypassed"


@dataclass
class NodeInstance:
    """A node placed in a workflow: its type, parameter values and canvas state."""

    id: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    position: tuple[float, float] = (0.0, 0.0)
    mode: NodeMode = NodeMode.NORMAL
    title: str | None = None
    collapsed: bool = False
    version: int | None = None


@dataclass(frozen=True)
class Link:
    """An edge from one node's output to another node's input; an input takes one link."""

    src: str
    src_port: str
    dst: str
    dst_port: str


@dataclass
class Group:
    """A titled, coloured frame on the canvas; nodes inside its rect move with it."""

    id: str
    title: str
    rect: tuple[float, float, float, float]  # x, y, width, height
    color: str = "#3a5f8a"


@dataclass
class Note:
    """A free text note on the canvas."""

    id: str
    text: str
    position: tuple[float, float] = (0.0, 0.0)
    size: tuple[float, float] = (240.0, 120.0)


@dataclass(frozen=True)
class GraphEvent:
    """What changed: `kind` is e.g. 'node_added', 'link_removed', 'param_changed'."""

    kind: str
    data: dict[str, Any]


Listener = Callable[[GraphEvent], None]


class GraphError(ValueError):
    """An edit that cannot be applied (unknown node, occupied id, ...)."""


class Graph:
    """A workflow. Mutate it only through its methods so that listeners hear of every change.

    Threads: a Graph belongs to one thread (the editor's GUI thread, or the CLI's main thread)
    and is not locked; listeners are called on that thread, synchronously. Work on other
    threads (the engine, autosave writers) takes `copy()` on the owner's thread and reads only
    the copy, which is why the engine runs on snapshots.
    """

    def __init__(self) -> None:
        self.nodes: dict[str, NodeInstance] = {}
        self.links: list[Link] = []
        self.groups: dict[str, Group] = {}
        self.notes: dict[str, Note] = {}
        self.meta: dict[str, Any] = {}
        #: The folder relative paths in parameters resolve against (the workflow file's folder).
        self.base_dir: str | None = None
        self._listeners: list[Listener] = []

    # listeners ---------------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, kind: str, **data: Any) -> None:
        ev = GraphEvent(kind, data)
        for listener in list(self._listeners):
            listener(ev)

    # ids ---------------------------------------------------------------------------------------
    def new_id(self, prefix: str = "node", taken: set[str] | None = None) -> str:
        """A fresh id like 'blend_3' that no node, group or note (nor `taken`) uses.

        `prefix` may be a type id ('imagebash.image.blend') or an existing id ('blend_2'): the
        last dotted part, without a numeric suffix, is the base.
        """
        base = prefix.rsplit(".", 1)[-1] or "node"
        stem, _, num = base.rpartition("_")
        if stem and num.isdigit():
            base = stem
        used = set(self.nodes) | set(self.groups) | set(self.notes) | (taken or set())
        for i in itertools.count(1):
            cand = f"{base}_{i}"
            if cand not in used:
                return cand
        raise AssertionError("unreachable")

    # nodes -------------------------------------------------------------------------------------
    def add_node(self, node: NodeInstance) -> NodeInstance:
        if node.id in self.nodes:
            raise GraphError(f"a node with id '{node.id}' already exists")
        self.nodes[node.id] = node
        self._emit("node_added", node=node)
        return node

    def remove_node(self, node_id: str) -> tuple[NodeInstance, list[Link]]:
        """Remove a node and its links; returns both so an undo can put them back."""
        node = self._node(node_id)
        gone = [ln for ln in self.links if node_id in (ln.src, ln.dst)]
        for ln in gone:
            self.disconnect(ln)
        del self.nodes[node_id]
        self._emit("node_removed", node=node)
        return node, gone

    def _node(self, node_id: str) -> NodeInstance:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise GraphError(f"no node '{node_id}'") from None

    def set_param(self, node_id: str, name: str, value: Any) -> Any:
        """Set a parameter (None removes it, falling back to the default); returns the old value."""
        node = self._node(node_id)
        old = node.params.get(name)
        if value is None:
            node.params.pop(name, None)
        else:
            node.params[name] = value
        self._emit("param_changed", node_id=node_id, name=name, old=old, value=value)
        return old

    def move_node(self, node_id: str, position: tuple[float, float]) -> tuple[float, float]:
        node = self._node(node_id)
        old = node.position
        node.position = (float(position[0]), float(position[1]))
        self._emit("node_moved", node_id=node_id, old=old, position=node.position)
        return old

    def set_mode(self, node_id: str, mode: NodeMode) -> NodeMode:
        node = self._node(node_id)
        old = node.mode
        node.mode = NodeMode(mode)
        self._emit("mode_changed", node_id=node_id, old=old, mode=node.mode)
        return old

    def set_node_attr(self, node_id: str, attr: str, value: Any) -> Any:
        """Change a canvas attribute of a node ('title' or 'collapsed')."""
        if attr not in ("title", "collapsed"):
            raise GraphError(f"'{attr}' is not a node attribute that can be set")
        node = self._node(node_id)
        old = getattr(node, attr)
        setattr(node, attr, value)
        self._emit("node_changed", node_id=node_id, attr=attr, old=old, value=value)
        return old

    # links -------------------------------------------------------------------------------------
    def connect(self, link: Link) -> Link | None:
        """Add a link; an input takes one link, so the one it replaces (if any) is returned."""
        self._node(link.src)
        self._node(link.dst)
        if link.src == link.dst:
            raise GraphError(f"node '{link.src}' cannot feed itself")
        old = self.link_into(link.dst, link.dst_port)
        if old is not None:
            self.disconnect(old)
        self.links.append(link)
        self._emit("link_added", link=link)
        return old

    def disconnect(self, link: Link) -> None:
        try:
            self.links.remove(link)
        except ValueError:
            raise GraphError(f"no link {link.src}.{link.src_port} -> {link.dst}.{link.dst_port}") from None
        self._emit("link_removed", link=link)

    def link_into(self, node_id: str, port: str) -> Link | None:
        return next((ln for ln in self.links if ln.dst == node_id and ln.dst_port == port), None)

    def links_from(self, node_id: str) -> list[Link]:
        return [ln for ln in self.links if ln.src == node_id]

    def links_into(self, node_id: str) -> list[Link]:
        return [ln for ln in self.links if ln.dst == node_id]

    # groups and notes --------------------------------------------------------------------------
    def _items(self, kind: str) -> dict[str, Any]:
        if kind == "group":
            return self.groups
        if kind == "note":
            return self.notes
        raise GraphError(f"'{kind}' is not a kind of canvas item (group or note)")

    def add_item(self, kind: str, item: Group | Note) -> Group | Note:
        """Add a group or a note (event '<kind>_added')."""
        table = self._items(kind)
        if item.id in table:
            raise GraphError(f"a {kind} with id '{item.id}' already exists")
        table[item.id] = item
        self._emit(f"{kind}_added", **{kind: item})
        return item

    def remove_item(self, kind: str, item_id: str) -> Group | Note:
        item = self._items(kind).pop(item_id)
        self._emit(f"{kind}_removed", **{kind: item})
        return item

    def update_item(self, kind: str, item_id: str, **changes: Any) -> dict[str, Any]:
        """Change fields of a group (title, rect, color) or note (text, position, size); returns
        the old values, for undo."""
        item = self._items(kind)[item_id]
        old = {k: getattr(item, k) for k in changes}
        for k, v in changes.items():
            setattr(item, k, v)
        self._emit(f"{kind}_changed", **{kind: item}, old=old)
        return old

    # whole graph -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[NodeInstance]:
        return iter(list(self.nodes.values()))

    def __len__(self) -> int:
        return len(self.nodes)

    def copy(self) -> Graph:
        """A deep copy without listeners (the engine runs on a snapshot)."""
        g = Graph()
        g.nodes = copy.deepcopy(self.nodes)
        g.links = list(self.links)
        g.groups = copy.deepcopy(self.groups)
        g.notes = copy.deepcopy(self.notes)
        g.meta = copy.deepcopy(self.meta)
        g.base_dir = self.base_dir
        return g

    def subgraph(self, node_ids: set[str]) -> Graph:
        """A copy holding only `node_ids` and the links between them (copy/paste)."""
        g = Graph()
        for nid in self.nodes:
            if nid in node_ids:
                g.nodes[nid] = copy.deepcopy(self.nodes[nid])
        g.links = [ln for ln in self.links if ln.src in node_ids and ln.dst in node_ids]
        return g
