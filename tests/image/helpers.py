"""Helpers for the image node tests: a stand-in node context, graph building, solid images."""

from __future__ import annotations

import pathlib
import threading
from typing import Any

import numpy as np

from app.graph.io import graph_from_dict
from app.graph.model import Graph
from nodes.types import Cancelled


class FakeContext:
    """What a node sees of the engine, for calling node functions directly.

    `cancel_after` makes check_cancelled raise on its n-th call (counted in `checks`).
    """

    def __init__(self, output_dir: pathlib.Path, cancel_after: int | None = None,
                 workflow: dict | None = None, provenance: dict | None = None) -> None:
        self.node_id = "test"
        self.output_dir = output_dir
        self.device = "cpu"
        self.cancel_after = cancel_after
        self.checks = 0
        self.progress_calls: list[float] = []
        self.logs: list[str] = []
        self.files: list[tuple[str, str]] = []
        self.workflow = workflow
        self.provenance = provenance or {}
        self.cancel_event = threading.Event()

    def check_cancelled(self) -> None:
        self.checks += 1
        if self.cancel_after is not None and self.checks > self.cancel_after:
            raise Cancelled("cancelled")

    @property
    def cancelled(self) -> bool:
        return False

    def progress(self, fraction: float, preview: Any = None, text: str | None = None) -> None:
        self.progress_calls.append(fraction)

    def log(self, message: str, level: str = "info") -> None:
        self.logs.append(message)

    def add_file(self, path: Any, kind: str = "file", frame: int | None = None) -> None:
        self.files.append((str(path), kind))

    def annotate(self, key: str, value: Any) -> None:
        self.provenance[key] = value

    def service(self, name: str) -> Any:
        raise KeyError(name)


def solid(h: int, w: int, rgb: tuple[float, ...], n: int = 1) -> np.ndarray:
    """An (n, h, w, len(rgb)) batch of one colour."""
    out = np.empty((n, h, w, len(rgb)), np.float32)
    out[...] = np.asarray(rgb, np.float32)
    return out


def make_graph(nodes: dict[str, tuple[str, dict[str, Any]]], links: list[str]) -> Graph:
    """A Graph from {id: (short type, params)} and links written 'src.port -> dst.port'."""
    doc = {"format": "imagebash/1",
           "nodes": [{"id": nid, "type": t if t.startswith("imagebash.") else "imagebash." + t, "params": p}
                     for nid, (t, p) in nodes.items()],
           "links": []}
    for ln in links:
        a, b = (s.strip() for s in ln.split("->"))
        doc["links"].append({"from": a.split("."), "to": b.split(".")})
    return graph_from_dict(doc)


def open_handles(path: pathlib.Path) -> int:
    """How many open files of this process are `path` (psutil comes with accelerate)."""
    import psutil

    target = pathlib.Path(path).resolve()
    return sum(1 for f in psutil.Process().open_files() if pathlib.Path(f.path).resolve() == target)
