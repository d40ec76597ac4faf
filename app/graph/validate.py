"""Check a Graph against the node registry; every problem names the node and the port.

Also upgrades nodes in place: legacy type ids become current ones and a node saved by an older
version of its type goes through that type's `migrate` hook, so old files keep loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.graph.model import Graph, NodeMode

if TYPE_CHECKING:
    from nodes.registry import NodeSpec, Registry


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


def upgrade_nodes(graph: Graph, registry: Registry) -> list[Problem]:
    """Rename legacy ids and migrate old node versions in place; report newer-than-known nodes."""
    problems: list[Problem] = []
    for n in graph:
        spec = registry.get(n.type)
        if spec is None:
            continue
        if n.type != spec.id:
            n.type = spec.id
        if n.version is not None and n.version > spec.version:
            problems.append(Problem(n.id, None, f"was saved by version {n.version} of {spec.id}, "
                                                f"this imagebash knows version {spec.version}"))
            continue
        if n.version is not None and n.version < spec.version and spec.migrate is not None:
            n.params = spec.migrate(dict(n.params), n.version)
        n.version = spec.version
    return problems


def dynamic_hint(spec: NodeSpec) -> str:
    """For nodes whose ports come from their settings (an online model's schema), say so."""
    if spec.dynamic_inputs is None:
        return ""
    return (" with its current settings (this node's inputs are read from its parameters, e.g. an online "
            "model's schema, which may be unreadable right now: check the model name, token and network)")


def find_cycle(graph: Graph) -> list[str] | None:
    """The node ids of one cycle, in order, or None."""
    import networkx as nx  # imported here: it costs ~0.25 s of the editor's start-up

    g = nx.DiGraph()
    g.add_edges_from((ln.src, ln.dst) for ln in graph.links)
    try:
        edges = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        return None
    return [e[0] for e in edges]


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


def validate(graph: Graph, registry: Registry) -> list[Problem]:
    """Every problem in the graph: unknown types, bad params, missing inputs, bad links, cycles."""
    problems = upgrade_nodes(graph, registry)
    specs: dict[str, NodeSpec] = {}
    for n in graph:
        spec = registry.get(n.type)
        if spec is None:
            problems.append(Problem(n.id, None, f"unknown node type '{n.type}' (is its node pack installed?)"))
        else:
            specs[n.id] = spec
    linked_ports: dict[str, set[str]] = {}
    for ln in graph.links:
        linked_ports.setdefault(ln.dst, set()).add(ln.dst_port)
        src, dst = specs.get(ln.src), specs.get(ln.dst)
        if src is None or dst is None:
            continue
        out = src.output_port(ln.src_port)
        if out is None:
            problems.append(Problem(ln.src, ln.src_port, f"{src.id} has no output '{ln.src_port}'"))
            continue
        inp = dst.input(ln.dst_port, graph.nodes[ln.dst].params)
        if inp is None:
            problems.append(Problem(ln.dst, ln.dst_port, f"{dst.id} has no input '{ln.dst_port}'"
                                                         + dynamic_hint(dst)))
            continue
        from nodes.registry import compatible

        if not compatible(out.kind, inp.kind):
            problems.append(Problem(ln.dst, ln.dst_port, f"type mismatch: {ln.src}.{ln.src_port} gives "
                                                         f"{_kind(out.kind)}, this input takes {_kind(inp.kind)}"))
    for n in graph:
        spec = specs.get(n.id)
        if spec is None:
            continue
        linked = linked_ports.get(n.id, set())
        _, bad = coerce_params(spec, n.params, n.id, linked)
        problems.extend(bad)
        if n.mode is NodeMode.MUTED:
            continue
        for port in spec.inputs_for(n.params):
            if port.required and port.name not in linked and port.name not in n.params:
                what = "a link" if not port.is_param else "a value or a link"
                problems.append(Problem(n.id, port.name, f"required input '{port.name}' needs {what}"))
    cycle = find_cycle(graph)
    if cycle:
        problems.append(Problem(None, None, "cycle: " + " -> ".join(cycle + cycle[:1])))
    return problems


def _kind(kind: str) -> str:
    return kind.rsplit(".", 1)[-1] if kind.startswith("enum:") else kind
