"""The rules a workflow must follow, written once: `validate`, the engine's planner and the
editor's document all ask this module, so a link the editor allows is a link the engine runs,
and every message names the node and the port the same way.

- Links: the source has that output, the destination that input (dynamic ports included), the
  kinds fit (`compatible`), a node never feeds itself, and no link closes a cycle.
- Nodes: the type is known, the parameters coerce, every required input has a link or a value.
- Upgrades: legacy type ids and older node versions are read through the type's current
  declaration (`effective_node`). Checking and planning never change the graph they are given;
  `upgrade` makes the upgraded copy a loader keeps, and says what it changed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.graph.model import Graph, Link, NodeInstance, NodeMode

if TYPE_CHECKING:
    from nodes.registry import NodeSpec, PortSpec, Registry


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a workflow."""

    node_id: str | None
    port: str | None
    message: str

    def __str__(self) -> str:
        where = ""
        if self.node_id:
            where = f"node '{self.node_id}'"
            if self.port:
                where += f" port '{self.port}'"
            where += ": "
        return where + self.message


class ValidationError(ValueError):
    """A workflow has problems; `problems` lists them all, the message shows the first few."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = [str(p) for p in problems[:5]]
        if len(problems) > 5:
            lines.append(f"... and {len(problems) - 5} more")
        super().__init__("; ".join(lines))


# upgrades ------------------------------------------------------------------------------------------
def effective_node(node: NodeInstance, spec: NodeSpec) -> tuple[NodeInstance, Problem | None]:
    """The node as its current declaration reads it: current type id, migrated params, version.

    Returns the node itself when nothing changes, else a new instance; the Problem says that the
    file was saved by a newer version of the type than this imagebash knows.
    """
    if node.version is not None and node.version > spec.version:
        return node, Problem(node.id, None, f"was saved by version {node.version} of {spec.id}, "
                                            f"this imagebash knows version {spec.version}")
    migrate = node.version is not None and node.version < spec.version and spec.migrate is not None
    if node.type == spec.id and node.version in (None, spec.version) and not migrate:
        return node, None
    new = copy.copy(node)
    new.type = spec.id
    if migrate:
        new.params = spec.migrate(dict(node.params), node.version)
    new.version = spec.version
    return new, None


def upgrade(graph: Graph, registry: Registry) -> tuple[Graph, list[str]]:
    """A copy of `graph` with legacy ids renamed and old node versions migrated, and one line per
    node that changed (empty when the file was current). Unknown and newer nodes stay as they are."""
    out = graph.copy()
    notes: list[str] = []
    for n in list(out.nodes.values()):
        spec = registry.get(n.type)
        if spec is None:
            continue
        new, problem = effective_node(n, spec)
        if problem is not None or new is n:
            continue
        what = []
        if new.type != n.type:
            what.append(f"{n.type} is now {new.type}")
        if n.version is not None and n.version != new.version:
            what.append(f"version {n.version} -> {new.version}")
        if what:
            notes.append(f"node '{n.id}': " + ", ".join(what))
        out.nodes[n.id] = new
    return out, notes


# links ---------------------------------------------------------------------------------------------
def dynamic_hint(spec: NodeSpec) -> str:
    """For nodes whose ports come from their settings (an online model's schema), say so."""
    if spec.dynamic_inputs is None:
        return ""
    return (" with its current settings (this node's inputs are read from its parameters, e.g. an online "
            "model's schema, which may be unreadable right now: check the model name, token and network)")


def ports_unavailable(spec: NodeSpec, params: dict[str, Any]) -> str | None:
    """Why a dynamic node's ports cannot be read right now (an online model's schema the server
    refused: one line naming the model and the cause, from `dynamic_inputs.unavailable`), or None."""
    why = getattr(spec.dynamic_inputs, "unavailable", None)
    reason = why(params) if callable(why) else None
    return str(reason) if reason else None


def missing_input(spec: NodeSpec, port: str, params: dict[str, Any]) -> str:
    """Why `spec` has no input `port` with these `params`, in one line."""
    return ports_unavailable(spec, params) or f"{spec.id} has no input '{port}'" + dynamic_hint(spec)


def find_cycle(graph: Graph, extra: Link | None = None) -> list[str] | None:
    """The node ids of one cycle, in order, or None; `extra` is a link being considered."""
    import networkx as nx  # imported here: it costs ~0.25 s of the editor's start-up

    g = nx.DiGraph()
    g.add_edges_from((ln.src, ln.dst) for ln in graph.links)
    if extra is not None:
        g.add_edge(extra.src, extra.dst)
    try:
        edges = nx.find_cycle(g, source=extra.src if extra is not None else None)
    except nx.NetworkXNoCycle:
        return None
    return [e[0] for e in edges]


def link_problem(graph: Graph, registry: Registry, link: Link, *, new: bool = False) -> Problem | None:
    """What is wrong with `link` in `graph` (None when it is fine); `new` also refuses a link that
    would close a cycle (for an existing graph `validate` reports the cycle once instead)."""
    if link.src == link.dst:
        return Problem(link.dst, link.dst_port, "a node cannot feed itself")
    src_node, dst_node = graph.nodes.get(link.src), graph.nodes.get(link.dst)
    if src_node is None or dst_node is None:
        missing = link.src if src_node is None else link.dst
        return Problem(link.dst, link.dst_port, f"no node '{missing}'")
    src, dst = registry.get(src_node.type), registry.get(dst_node.type)
    if src is None or dst is None:
        return None  # an unknown node type is reported once, on the node
    out = src.output_port(link.src_port)
    if out is None:
        return Problem(link.src, link.src_port, f"{src.id} has no output '{link.src_port}'")
    inp = dst.input(link.dst_port, dst_node.params)
    if inp is None:
        return Problem(link.dst, link.dst_port, missing_input(dst, link.dst_port, dst_node.params))
    problem = kind_problem(out, inp, link)
    if problem is not None:
        return problem
    if new and find_cycle(graph, link):
        return Problem(link.dst, link.dst_port, f"this link would make a loop through '{link.dst}'")
    return None


def fitting_ports(spec: NodeSpec, kind: str, outputs: bool, params: dict[str, Any] | None = None) -> list[PortSpec]:
    """The ports of `spec` a port of `kind` can link with: its outputs that can feed a `kind`
    input (`outputs=True`), or its inputs (dynamic ones included) a `kind` output can feed."""
    from nodes.registry import compatible

    if outputs:
        return [p for p in spec.outputs if compatible(p.kind, kind)]
    return [p for p in spec.inputs_for(params or {}) if compatible(kind, p.kind)]


def kind_problem(out: PortSpec, inp: PortSpec, link: Link) -> Problem | None:
    from nodes.registry import compatible

    if compatible(out.kind, inp.kind):
        return None
    return Problem(link.dst, link.dst_port, f"type mismatch: {link.src}.{link.src_port} gives {out.kind_name}, "
                                            f"which cannot feed {inp.kind_name} input '{link.dst_port}'")


# nodes ---------------------------------------------------------------------------------------------
@dataclass
class CheckedNode:
    """A node read through its declaration, with its coerced parameters and incoming links."""

    node: NodeInstance  # the effective (upgraded) node; the graph's own stays untouched
    spec: NodeSpec
    params: dict[str, Any]  # coerced values of the unlinked parameters
    ports: list[PortSpec]
    links: dict[str, tuple[str, str]]  # input port -> (source node, source output)


def coerce_params(spec: NodeSpec, params: dict[str, Any], node_id: str,
                  linked: set[str]) -> tuple[dict[str, Any], list[Problem]]:
    """Parameter values converted to Python (enums, paths), with a Problem for each bad one."""
    out: dict[str, Any] = {}
    problems: list[Problem] = []
    ports = {p.name: p for p in spec.inputs_for(params)}
    for name, value in params.items():
        port = ports.get(name)
        if port is None:
            problems.append(Problem(node_id, name, f"{spec.id} has no input '{name}'"))
            continue
        if name in linked:
            continue
        try:
            out[name] = port.coerce(value)
        except ValueError as exc:
            problems.append(Problem(node_id, name, str(exc)))
    return out, problems


def check_nodes(graph: Graph, registry: Registry,
                only: set[str] | None = None) -> tuple[dict[str, CheckedNode], list[Problem]]:
    """Every node (or those in `only`) checked against its declaration, with the links into it."""
    problems: list[Problem] = []
    into: dict[str, list[Link]] = {}
    for ln in graph.links:
        if only is None or ln.dst in only:
            into.setdefault(ln.dst, []).append(ln)
    checked: dict[str, CheckedNode] = {}
    for nid, raw in graph.nodes.items():
        if only is not None and nid not in only:
            continue
        spec = registry.get(raw.type)
        if spec is None:
            problems.append(Problem(nid, None, f"unknown node type '{raw.type}' (is its node pack installed?)"))
            continue
        node, newer = effective_node(raw, spec)
        if newer is not None:
            problems.append(newer)
            continue
        links = {ln.dst_port: (ln.src, ln.src_port) for ln in into.get(nid, [])}
        for ln in into.get(nid, []):
            bad = link_problem(graph, registry, ln)
            if bad is not None:
                problems.append(bad)
        params, bad_params = coerce_params(spec, node.params, nid, set(links))
        problems.extend(bad_params)
        ports = spec.inputs_for(node.params)
        if node.mode is not NodeMode.MUTED:
            for p in ports:
                if p.required and p.name not in links and p.name not in node.params:
                    what = "a link" if not p.is_param else "a value or a link"
                    problems.append(Problem(nid, p.name, f"required input '{p.name}' needs {what}"))
        checked[nid] = CheckedNode(node, spec, params, ports, links)
    return checked, problems


def validate(graph: Graph, registry: Registry) -> list[Problem]:
    """Every problem in the graph: unknown types, bad params, missing inputs, bad links, cycles.

    The graph is not changed (see `upgrade` for making an upgraded copy).
    """
    _, problems = check_nodes(graph, registry)
    cycle = find_cycle(graph)
    if cycle:
        problems.append(Problem(None, None, "cycle: " + " -> ".join(cycle + cycle[:1])))
    return problems
