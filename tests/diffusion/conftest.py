"""Helpers for the diffusion tests: an engine on CPU and a compact way to build graphs."""

from __future__ import annotations

from typing import Any

import pytest

from app.engine import Engine, EngineSettings, RunResult
from app.graph.model import Graph, Link, NodeInstance
from nodes.registry import default_registry

D = "imagebash.diffusion."


def make_graph(nodes: dict[str, tuple[str, dict[str, Any]]], links: list[str]) -> Graph:
    """nodes: id -> (type, params) (a type without a dot gets the diffusion prefix);
    links: "src.port>dst.port"."""
    g = Graph()
    for nid, (typ, params) in nodes.items():
        g.add_node(NodeInstance(nid, typ if "." in typ else D + typ, dict(params)))
    for text in links:
        a, b = text.split(">")
        (s, sp), (d, dp) = a.split("."), b.split(".")
        g.connect(Link(s, sp, d, dp))
    return g


def run_ok(engine: Engine, graph: Graph, **kw: Any) -> RunResult:
    result = engine.run(graph, **kw)
    assert result.ok, result.errors
    return result


@pytest.fixture(scope="session")
def shared_models():
    """One model manager for the tests that do not count loads: a pipeline's first call is slow."""
    from app.engine.models import ModelManager

    return ModelManager(EngineSettings(device="cpu"))


@pytest.fixture
def engine(shared_models):
    """An engine whose model manager is shared across tests (loaded pipelines and LoRAs persist)."""
    eng = Engine(default_registry(), EngineSettings(device="cpu", max_workers=2))
    eng.services.set("models", shared_models)
    yield eng
    eng.shutdown()


@pytest.fixture
def fresh_engine():
    """An engine with its own model manager, for tests that count loads."""
    eng = Engine(default_registry(), EngineSettings(device="cpu", max_workers=2))
    yield eng
    eng.shutdown()


def txt2img_graph(model: str, steps: int = 2, size: int = 64, seed: int = 1, loras=(), **extra: Any) -> Graph:
    nodes: dict[str, tuple[str, dict[str, Any]]] = {"load": ("load_model", {"checkpoint": str(model)})}
    links = []
    src = "load"
    for i, (path, weight) in enumerate(loras):
        nodes[f"lora{i}"] = ("lora", {"file": str(path), "weight": weight})
        links.append(f"{src}.model>lora{i}.model")
        src = f"lora{i}"
    params = {"prompt": "a red house", "width": size, "height": size, "steps": steps, "seed": seed,
              "scheduler": "euler", **extra}
    nodes["gen"] = ("txt2img", params)
    links.append(f"{src}.model>gen.model")
    return make_graph(nodes, links)


def direct_ctx(engine: Engine, cancel: Any = None) -> Any:
    """The engine's own NodeContext for calling node functions directly (progress and logs go to
    the engine's bus, models come from its services)."""
    import tempfile
    import threading
    from pathlib import Path

    from app.engine.executor import NodeContext, _Run
    from app.engine.plan import Plan

    run = _Run(0, Graph(), Plan.__new__(Plan), Path(tempfile.mkdtemp()), cancel or threading.Event())
    return NodeContext(engine, run, "direct")
