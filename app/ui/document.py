"""One open workflow: the Graph (the model), its undo stack, its file, and the editing API.

Every edit is one QUndoCommand (or a macro of them for a gesture) pushed on `undo_stack`; views
never change the Graph directly and never keep their own copy of it: they follow `graph.subscribe`.
A document also names the engine its runs go to (`engine`: "local" or a remote engine's URL), a
property of the tab rather than of the workflow (it is not saved, and not undone). The node
declarations come from the local registry whichever engine runs them (the same node ids), but
the model dropdowns ask the document's engine (`choices`), which lists its own models.
"""

from __future__ import annotations

import copy
import pathlib
from collections.abc import Callable, Iterable
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from app.graph import Graph, GraphError, Group, Link, NodeInstance, NodeMode, Note, io
from app.graph.validate import fitting_ports, link_problem, upgrade
from app.ui import commands as C
from nodes.registry import REQUIRED, NodeSpec, PortSpec, Registry, default_registry

REROUTES_KEY = "reroutes"


class WorkflowDocument(QObject):
    """The model of one editor tab; see the module docstring."""

    dirtyChanged = Signal(bool)
    pathChanged = Signal(str)
    reroutesChanged = Signal(str)  # "node:input" of the link whose reroute dots changed
    engineChanged = Signal(str)  # the new engine key

    def __init__(self, graph: Graph | None = None, registry: Registry | None = None,
                 path: pathlib.Path | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.graph = graph if graph is not None else Graph()
        self.registry = registry if registry is not None else default_registry()
        #: What loading changed in an older file (legacy node ids, node versions), one line each.
        self.upgrade_notes: list[str] = []
        self.path = pathlib.Path(path) if path is not None else None
        self.undo_stack = QUndoStack(self)
        self.undo_stack.cleanChanged.connect(self._on_clean_changed)
        self.engine = "local"
        #: (engine key, type id, port) -> suggestions; the window sets it to its engines' lists.
        self.choices_source: Callable[[str, str, str], list[str]] | None = None

    def _on_clean_changed(self, clean: bool) -> None:
        self.dirtyChanged.emit(not clean)

    # files -------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | pathlib.Path, registry: Registry | None = None) -> WorkflowDocument:
        """Open a .json workflow or a PNG carrying one, or a ComfyUI / A1111 file (mapped; its
        `graph.meta["import_note"]` says how) (raises WorkflowFormatError).

        An older file is upgraded here, once (`upgrade_notes` says what changed), and the
        document starts modified so that saving keeps the upgrade.
        """
        p = pathlib.Path(path)
        registry = registry if registry is not None else default_registry()
        graph, notes = upgrade(io.load(p), registry)
        imported = bool(graph.meta.get("import_note")) if isinstance(graph.meta, dict) else False
        # a PNG, or a ComfyUI / A1111 file, is never overwritten by Save: it asks where to save
        doc = cls(graph, registry, None if imported or p.suffix.lower() in (".png", ".webp") else p)
        doc.upgrade_notes = notes
        if notes:
            doc.undo_stack.resetClean()
        return doc

    def save(self, path: str | pathlib.Path | None = None) -> None:
        """Write atomically to `path` (or the current path) and mark the document clean."""
        target = pathlib.Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("this workflow has no file yet: choose where to save it")
        io.save(self.graph, target)
        self.graph.base_dir = str(target.resolve().parent)
        if target != self.path:
            self.path = target
            self.pathChanged.emit(str(target))
        self.undo_stack.setClean()

    def to_json(self) -> str:
        return io.dumps(self.graph)

    def is_dirty(self) -> bool:
        return not self.undo_stack.isClean()

    # engine ------------------------------------------------------------------------------------
    def set_engine(self, key: str) -> None:
        if key != self.engine:
            self.engine = key
            self.engineChanged.emit(key)

    def choices(self, type_id: str, port: str) -> list[str]:
        """A port's suggestions (model names) on this document's engine."""
        if self.choices_source is not None:
            return self.choices_source(self.engine, type_id, port)
        return self.registry.choices(type_id, port)

    # node declarations -------------------------------------------------------------------------
    def spec(self, node_id: str) -> NodeSpec | None:
        return self.registry.get(self.graph.nodes[node_id].type)

    def input_port(self, node_id: str, name: str) -> PortSpec | None:
        spec = self.spec(node_id)
        return spec.input(name, self.graph.nodes[node_id].params) if spec else None

    def output_port(self, node_id: str, name: str) -> PortSpec | None:
        spec = self.spec(node_id)
        return spec.output_port(name) if spec else None

    def link_problem(self, src: str, src_port: str, dst: str, dst_port: str) -> str | None:
        """Why this link cannot be made, in words, or None when it can (the graph's one rule)."""
        problem = link_problem(self.graph, self.registry, Link(src, src_port, dst, dst_port), new=True)
        return problem.message if problem is not None else None

    # editing -----------------------------------------------------------------------------------
    def _macro(self, text: str, cmds: Iterable[QUndoCommand]) -> None:
        cmds = list(cmds)
        if not cmds:
            return
        if len(cmds) == 1:
            self.undo_stack.push(cmds[0])
            return
        self.undo_stack.beginMacro(text)
        try:
            for c in cmds:
                self.undo_stack.push(c)
        finally:
            self.undo_stack.endMacro()

    def new_node(self, type_id: str, position: tuple[float, float] = (0.0, 0.0),
                 params: dict[str, Any] | None = None) -> NodeInstance:
        """A NodeInstance of `type_id` with its declared defaults (not yet in the graph)."""
        spec = self.registry.get(type_id)
        if spec is None:
            raise GraphError(f"unknown node type '{type_id}'")
        values = {p.name: p.to_json(p.default) for p in spec.inputs
                  if p.is_param and p.default is not REQUIRED and p.default is not None}
        values.update(params or {})
        return NodeInstance(id=self.graph.new_id(spec.id), type=spec.id, params=values,
                            position=(float(position[0]), float(position[1])), version=spec.version)

    def add_node(self, type_id: str, position: tuple[float, float] = (0.0, 0.0),
                 params: dict[str, Any] | None = None) -> str:
        node = self.new_node(type_id, position, params)
        spec = self.registry.get(type_id)
        self.undo_stack.push(C.AddNode(self.graph, node, f"Add {spec.title if spec else type_id}"))
        return node.id

    def add_node_connected(self, type_id: str, position: tuple[float, float], src: tuple[str, str] | None = None,
                           dst: tuple[str, str] | None = None) -> str:
        """Add a node and link it to an output `src` (node, port) or an input `dst` in one undo step."""
        node = self.new_node(type_id, position)
        spec = self.registry.get(type_id)
        assert spec is not None
        self.undo_stack.beginMacro(f"Add {spec.title}")
        try:
            self.undo_stack.push(C.AddNode(self.graph, node))
            if src is not None:
                src_kind = self.output_port(*src).kind
                port = next(iter(fitting_ports(spec, src_kind, outputs=False, params=node.params)), None)
                if port is not None:
                    self.undo_stack.push(C.Connect(self.graph, Link(src[0], src[1], node.id, port.name)))
            if dst is not None:
                dst_kind = self.input_port(*dst).kind
                port = next(iter(fitting_ports(spec, dst_kind, outputs=True)), None)
                if port is not None:
                    self.undo_stack.push(C.Connect(self.graph, Link(node.id, port.name, dst[0], dst[1])))
        finally:
            self.undo_stack.endMacro()
        return node.id

    def remove_nodes(self, ids: Iterable[str], group_ids: Iterable[str] = (), note_ids: Iterable[str] = ()) -> None:
        ids = [i for i in ids if i in self.graph.nodes]
        cmds: list[QUndoCommand] = []
        for ln in self.graph.links:
            if (ln.src in ids or ln.dst in ids) and self.reroutes(link_key(ln)):
                cmds.append(C.SetReroutes(self, link_key(ln), []))
        cmds += [C.RemoveNode(self.graph, i) for i in ids]
        cmds += [C.RemoveItem(self.graph, "group", g) for g in group_ids if g in self.graph.groups]
        cmds += [C.RemoveItem(self.graph, "note", n) for n in note_ids if n in self.graph.notes]
        self._macro("Delete", cmds)

    def move_nodes(self, positions: dict[str, tuple[float, float]],
                   groups: dict[str, tuple[float, float, float, float]] | None = None,
                   notes: dict[str, tuple[float, float]] | None = None,
                   reroutes: dict[Link, list[tuple[float, float]]] | None = None) -> None:
        """Push one 'Move' step for a whole drag (nodes, and the groups, notes and reroute dots with them)."""
        positions = {k: v for k, v in positions.items() if self.graph.nodes[k].position != tuple(v)}
        cmds: list[QUndoCommand] = [C.MoveNodes(self.graph, positions)] if positions else []
        for gid, rect in (groups or {}).items():
            if tuple(self.graph.groups[gid].rect) != tuple(rect):
                cmds.append(C.UpdateItem(self.graph, "group", gid, rect=tuple(rect)))
        for nid, pos in (notes or {}).items():
            if tuple(self.graph.notes[nid].position) != tuple(pos):
                cmds.append(C.UpdateItem(self.graph, "note", nid, position=tuple(pos)))
        for link, pts in (reroutes or {}).items():
            if self.reroutes(link_key(link)) != [tuple(p) for p in pts]:
                cmds.append(C.SetReroutes(self, link_key(link), pts))
        self._macro("Move", cmds)

    def connect(self, src: str, src_port: str, dst: str, dst_port: str) -> Link:
        """Link an output to an input; raises GraphError with the reason when they do not fit."""
        problem = self.link_problem(src, src_port, dst, dst_port)
        if problem:
            raise GraphError(problem)
        link = Link(src, src_port, dst, dst_port)
        if link not in self.graph.links:
            self.undo_stack.push(C.Connect(self.graph, link))
        return link

    def disconnect(self, link: Link) -> None:
        self.disconnect_many([link])

    def disconnect_many(self, links: Iterable[Link], text: str = "Disconnect") -> None:
        cmds: list[QUndoCommand] = []
        for ln in links:
            if self.reroutes(link_key(ln)):
                cmds.append(C.SetReroutes(self, link_key(ln), []))
            cmds.append(C.Disconnect(self.graph, ln))
        self._macro(text, cmds)

    def set_param(self, node_id: str, name: str, value: Any) -> None:
        """Change a parameter; the value is checked against the port (ValueError names node and port)."""
        port = self.input_port(node_id, name)
        if port is not None and value is not None:
            try:
                value = port.to_json(port.coerce(value))
            except ValueError as exc:
                raise ValueError(f"node '{node_id}': {exc}") from None
        if self.graph.nodes[node_id].params.get(name) != value:
            self.undo_stack.push(C.SetParam(self.graph, node_id, name, value))

    def set_mode(self, node_id: str, mode: NodeMode) -> None:
        if self.graph.nodes[node_id].mode != NodeMode(mode):
            self.undo_stack.push(C.SetMode(self.graph, node_id, mode))

    def toggle_mode(self, ids: Iterable[str], mode: NodeMode) -> None:
        """Mute or bypass the nodes (back to normal if all of them already are)."""
        ids = [i for i in ids if i in self.graph.nodes]
        target = NodeMode.NORMAL if ids and all(self.graph.nodes[i].mode == mode for i in ids) else mode
        self._macro(f"Set mode {target.value}", [C.SetMode(self.graph, i, target) for i in ids
                                                 if self.graph.nodes[i].mode != target])

    def set_collapsed(self, node_id: str, collapsed: bool) -> None:
        if self.graph.nodes[node_id].collapsed != collapsed:
            self.undo_stack.push(C.SetNodeAttr(self.graph, node_id, "collapsed", bool(collapsed)))

    def set_title(self, node_id: str, title: str | None) -> None:
        self.undo_stack.push(C.SetNodeAttr(self.graph, node_id, "title", title or None))

    def add_group(self, title: str = "Group", rect: tuple[float, float, float, float] = (0, 0, 400, 300),
                  color: str = "#3a5f8a") -> str:
        group = Group(self.graph.new_id("group"), title, tuple(float(v) for v in rect), color)
        self.undo_stack.push(C.AddItem(self.graph, "group", group))
        return group.id

    def update_group(self, group_id: str, **changes: Any) -> None:
        self.undo_stack.push(C.UpdateItem(self.graph, "group", group_id, **changes))

    def add_note(self, text: str = "", position: tuple[float, float] = (0, 0),
                 size: tuple[float, float] = (240, 120)) -> str:
        note = Note(self.graph.new_id("note"), text, tuple(position), tuple(size))
        self.undo_stack.push(C.AddItem(self.graph, "note", note))
        return note.id

    def update_note(self, note_id: str, **changes: Any) -> None:
        self.undo_stack.push(C.UpdateItem(self.graph, "note", note_id, **changes))

    # reroute dots ------------------------------------------------------------------------------
    def reroutes(self, key: str) -> list[tuple[float, float]]:
        """Reroute dots of the link into `key` ('node:input'), in order from source to input."""
        return [tuple(p) for p in self.graph.meta.get(REROUTES_KEY, {}).get(key, [])]

    def set_reroutes(self, link: Link, points: list[tuple[float, float]]) -> None:
        self.undo_stack.push(C.SetReroutes(self, link_key(link), points))

    def _store_reroutes(self, key: str, points: list[tuple[float, float]]) -> None:
        table = self.graph.meta.setdefault(REROUTES_KEY, {})
        if points:
            table[key] = [[round(x, 2), round(y, 2)] for x, y in points]
        else:
            table.pop(key, None)
        if not table:
            self.graph.meta.pop(REROUTES_KEY, None)
        self.reroutesChanged.emit(key)

    # clipboard ---------------------------------------------------------------------------------
    def copy_json(self, node_ids: Iterable[str], group_ids: Iterable[str] = (), note_ids: Iterable[str] = ()) -> str:
        """Workflow JSON of the selection with the links among it (what the clipboard holds)."""
        sub = self.graph.subgraph(set(node_ids))
        sub.groups = {g: copy.deepcopy(self.graph.groups[g]) for g in group_ids if g in self.graph.groups}
        sub.notes = {n: copy.deepcopy(self.graph.notes[n]) for n in note_ids if n in self.graph.notes}
        rr = {link_key(ln): self.graph.meta[REROUTES_KEY][link_key(ln)] for ln in sub.links
              if link_key(ln) in self.graph.meta.get(REROUTES_KEY, {})}
        if rr:
            sub.meta[REROUTES_KEY] = rr
        return io.dumps(sub)

    def paste(self, json_text: str, offset: tuple[float, float] = (30.0, 30.0)) -> list[str]:
        """Add a copied selection with fresh ids, keeping its internal links; returns the new node ids."""
        src = io.loads(json_text)
        dx, dy = offset
        ids: dict[str, str] = {}
        cmds: list[QUndoCommand] = []
        taken: set[str] = set()

        def fresh(old: str) -> str:
            new = self.graph.new_id(old, taken)
            taken.add(new)
            return new

        for n in src.nodes.values():
            ids[n.id] = fresh(n.id)
            node = copy.deepcopy(n)
            node.id = ids[n.id]
            node.position = (n.position[0] + dx, n.position[1] + dy)
            cmds.append(C.AddNode(self.graph, node))
        links = [Link(ids[ln.src], ln.src_port, ids[ln.dst], ln.dst_port) for ln in src.links]
        cmds += [C.Connect(self.graph, ln) for ln in links]
        for old_key, pts in src.meta.get(REROUTES_KEY, {}).items():
            nid, port = old_key.split(":", 1)
            if nid in ids:
                cmds.append(C.SetReroutes(self, f"{ids[nid]}:{port}", [(x + dx, y + dy) for x, y in pts]))
        for g in src.groups.values():
            x, y, w, h = g.rect
            cmds.append(C.AddItem(self.graph, "group", Group(fresh(g.id), g.title, (x + dx, y + dy, w, h), g.color)))
        for nt in src.notes.values():
            pos = (nt.position[0] + dx, nt.position[1] + dy)
            cmds.append(C.AddItem(self.graph, "note", Note(fresh(nt.id), nt.text, pos, nt.size)))
        self._macro("Paste", cmds)
        return list(ids.values())


def link_key(link: Link) -> str:
    """The key reroute dots of `link` are stored under ('node:input': an input takes one link)."""
    return f"{link.dst}:{link.dst_port}"


def is_workflow_json(text: str) -> bool:
    """Whether clipboard text looks like an imagebash workflow (before trying to paste it)."""
    try:
        doc = io.parse_json(text)
    except (io.WorkflowFormatError, TypeError):
        return False
    return isinstance(doc, dict) and str(doc.get("format", "")).startswith(io.FORMAT_PREFIX)
