"""Planning a run: which nodes the requested outputs need, in what order, with which inputs.

networkx gives the ancestors of the targets and a topological order; validation runs on just
that subgraph, so a broken branch the user did not ask for does not block the run.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from dataclasses import dataclass, field
from typing import Any

from app.engine.fingerprint import fingerprint
from app.graph.model import Graph, NodeInstance, NodeMode
from app.graph.validate import Problem, ValidationError, check_nodes, find_cycle
from nodes.registry import NodeSpec, PortSpec, Registry


@dataclass
class PlanNode:
    """One node of a run, with its ports resolved."""

    id: str
    spec: NodeSpec
    instance: NodeInstance  # the node as its current declaration reads it (upgraded view)
    params: dict[str, Any]  # coerced parameter values (unlinked ports only)
    ports: list[PortSpec]
    links: dict[str, tuple[str, str]]  # input port -> (source node, source output)
    consumers: list[str] = field(default_factory=list)
    signature: str = ""

    @property
    def mode(self) -> NodeMode:
        return self.instance.mode


@dataclass
class Plan:
    nodes: dict[str, PlanNode]
    order: list[str]
    targets: list[str]


def default_targets(graph: Graph, registry: Registry) -> list[str]:
    """Output nodes (Save, Preview); if a graph has none, every node nothing consumes."""
    outs = []
    for n in graph:
        spec = registry.get(n.type)
        if spec is not None and spec.output and n.mode is not NodeMode.MUTED:
            outs.append(n.id)
    if outs:
        return outs
    fed = {ln.src for ln in graph.links}
    return [n.id for n in graph if n.id not in fed]


def select(graph: Graph, targets: list[str]) -> list[str]:
    """The targets and their ancestors, in a topological order (raise ValidationError on a cycle)."""
    import networkx as nx  # imported here: it costs ~0.25 s of the editor's start-up

    dag = nx.DiGraph()
    dag.add_nodes_from(graph.nodes)
    dag.add_edges_from((ln.src, ln.dst) for ln in graph.links)
    for t in targets:
        if t not in graph.nodes:
            raise ValidationError([Problem(t, None, "no such node to run")])
    try:
        full_order = list(nx.topological_sort(dag))
    except nx.NetworkXUnfeasible:
        cycle = find_cycle(graph) or []
        raise ValidationError([Problem(None, None, "cycle: " + " -> ".join(cycle + cycle[:1]))]) from None
    needed: set[str] = set()
    for t in targets:
        if t not in needed:
            needed.add(t)
            needed |= nx.ancestors(dag, t)
    return [n for n in full_order if n in needed]


def make_plan(graph: Graph, registry: Registry, targets: list[str] | None = None) -> Plan:
    """Plan the subgraph the targets need; raise ValidationError listing every problem in it.

    The checks are `app.graph.validate`'s, on just that subgraph, so a broken branch the user did
    not ask for does not block the run; the graph itself is never changed.
    """
    if targets is None:
        targets = default_targets(graph, registry)
    order = select(graph, targets)
    checked, problems = check_nodes(graph, registry, set(order))
    if problems:
        raise ValidationError(problems)
    nodes: dict[str, PlanNode] = {}
    for nid in order:
        c = checked[nid]
        if graph.base_dir:
            for p in c.ports:
                v = c.params.get(p.name)
                if p.kind == "Path" and v is not None and not v.is_absolute():
                    c.params[p.name] = pathlib.Path(graph.base_dir) / v
        nodes[nid] = PlanNode(nid, c.spec, c.node, c.params, c.ports, c.links)
    for pn in nodes.values():
        for src in dict.fromkeys(src for src, _ in pn.links.values()):
            nodes[src].consumers.append(pn.id)
    return Plan(nodes, order, list(targets))


def compute_signatures(plan: Plan, nonce: str) -> None:
    """Sign each node by type, version, parameters, file contents and upstream signatures.

    A node that opts out of caching mixes in the run's nonce, so it and everything downstream
    of it recompute on every run.
    """
    for nid in plan.order:
        pn = plan.nodes[nid]
        files = {}
        for p in pn.ports:
            if p.kind == "Path" and pn.params.get(p.name) is not None and p.name not in pn.links:
                files[p.name] = fingerprint(pn.params[p.name])
        if pn.spec.cache_key is not None:
            try:
                files["__key__"] = pn.spec.cache_key(pn.params)
            except Exception as exc:  # noqa: BLE001 - the node itself will report the problem when it runs
                files["__key__"] = f"unresolved: {exc}"
        ups = sorted((port, plan.nodes[src].signature, sp) for port, (src, sp) in pn.links.items())
        # Side effects are per node: two identical Save nodes both write, and an uncacheable node
        # is never merged with an identical twin.
        own = nid if (pn.spec.output or not pn.spec.cacheable) else None
        payload = [pn.spec.id, pn.spec.version, pn.instance.mode.value, pn.instance.params, files, ups,
                   None if pn.spec.cacheable else nonce, own]
        raw = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":")).encode()
        pn.signature = hashlib.blake2b(raw, digest_size=16).hexdigest()
