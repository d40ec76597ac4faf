"""Getting a workflow's inputs to a remote engine: files by content, models by name or by upload.

A workflow on the laptop names files on the laptop. Before it is submitted to a server every
`Path` parameter that names a local file becomes a `blob:<sha256>/<name>` reference and every
local folder a `tree:<sha256>` (uploading only the blobs the server lacks, in resumable chunks),
and every model parameter (ports declared `Choices(..., model=kind)`) is checked against the
server's model list: a name it has stays, a local file it lacks (a personal LoRA) is uploaded
and adopted, a local diffusers folder it lacks (a ControlNet, a checkpoint) goes up as a tree
(the node then reads the tree's folder on the server), and anything else is one "missing on the
server" line per model, before anything runs. A file a node is asked to write
(`FileFilter(save=True)`, Train LoRA's `out`) is left to the node's default place on the server
(for a LoRA: the server's loras folder, named by the dataset's hash, so a stopped training
resumes from its checkpoints in a later job) and remembered here, so the client brings the
result back to where the user asked for it.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.engine.fingerprint import file_hash
from app.engine.protocol import blob_ref, tree_hash, tree_ref
from app.graph.io import graph_to_dict
from app.graph.model import Graph
from nodes.registry import PortSpec, Registry

Progress = Callable[[str, int, int], None]  # (what, bytes done, bytes total)

MODEL_SUFFIXES = (".safetensors",)


class RemoteInputError(ValueError):
    """An input that cannot reach the server (a model it lacks, a file that vanished); one line
    per problem."""


class Transport(Protocol):
    """What preparing a workflow asks of the server (RemoteEngine implements it)."""

    def missing(self, hashes: list[str]) -> list[str]: ...

    def upload(self, path: pathlib.Path, sha256: str, size: int, progress: Progress | None) -> None: ...

    def put_tree(self, files: dict[str, str]) -> str: ...

    def server_models(self) -> list[dict[str, Any]]: ...

    def adopt(self, sha256: str, kind: str, name: str) -> str: ...


def sha256_of(path: pathlib.Path) -> str:
    """The file's sha256, memoised on (path, size, mtime): a 7 GB checkpoint is read once."""
    return file_hash(path, algorithm="sha256")


@dataclass
class Prepared:
    """A workflow ready for the server, and where results the user asked for should land."""

    workflow: dict[str, Any]
    #: node id -> local file a node was asked to write (its result is brought back there).
    destinations: dict[str, pathlib.Path] = field(default_factory=dict)
    uploaded_bytes: int = 0
    uploaded: list[str] = field(default_factory=list)  # names of what was sent (for the log)


def _local(value: Any, base_dir: str | None) -> pathlib.Path | None:
    """The existing local file or folder a parameter value names, else None."""
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        return None
    try:
        p = pathlib.Path(value).expanduser()
        if not p.is_absolute() and base_dir:
            p = pathlib.Path(base_dir) / p
        return p if p.exists() else None
    except (OSError, RuntimeError, ValueError):
        return None


class Preparer:
    """Turns one graph into a `Prepared` (see the module docstring); one per submit."""

    def __init__(self, transport: Transport, registry: Registry, progress: Progress | None = None) -> None:
        self.t = transport
        self.registry = registry
        self.progress = progress
        self._models: list[dict[str, Any]] | None = None
        self.result = Prepared({})

    def prepare(self, graph: Graph) -> Prepared:
        g = graph.copy()
        problems: list[str] = []
        for node in g.nodes.values():
            spec = self.registry.get(node.type)
            if spec is None:
                continue  # the server says what it does not know
            for port in spec.inputs_for(node.params):
                if port.name not in node.params:
                    continue
                value = node.params[port.name]
                try:
                    new = self._value(node.id, port, value, g.base_dir)
                except RemoteInputError as exc:
                    problems.append(f"node '{node.id}' port '{port.name}': {exc}")
                    continue
                if new is not value:
                    node.params[port.name] = new
        if problems:
            raise RemoteInputError("; ".join(problems))
        doc = graph_to_dict(g)
        self.result.workflow = doc
        return self.result

    # one parameter ---------------------------------------------------------------------------------
    def _value(self, node_id: str, port: PortSpec, value: Any, base_dir: str | None) -> Any:
        if port.kind == "Path" and port.file_filter is not None and port.file_filter.save:
            if value is None or not str(value).strip():
                return value
            dest = pathlib.Path(str(value)).expanduser()
            if not dest.is_absolute() and base_dir:
                dest = pathlib.Path(base_dir) / dest
            self.result.destinations[node_id] = dest
            return None  # the node's own default place on the server; the result is brought back here
        if port.kind == "Path":
            local = _local(value, base_dir)
            if local is None:
                return value  # a path on the server's side (a mounted volume), or nothing
            return self._folder(local) if local.is_dir() else self._file(local)
        if port.choices is not None and port.choices.model:
            return self._model(port.choices.model, value, base_dir)
        return value

    def _file(self, path: pathlib.Path) -> str:
        sha = sha256_of(path)
        if self.t.missing([sha]):
            self._send(path, sha)
        return blob_ref(sha, path.name)

    def _folder(self, folder: pathlib.Path) -> str:
        files: dict[str, str] = {}
        paths: dict[str, pathlib.Path] = {}
        for root, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if name.startswith("."):
                    continue
                p = pathlib.Path(root) / name
                rel = p.relative_to(folder).as_posix()
                files[rel] = sha256_of(p)
                paths[files[rel]] = p
        missing = set(self.t.missing(sorted(set(files.values()))))
        for sha in sorted(missing):
            self._send(paths[sha], sha)
        tree = self.t.put_tree(files)
        if tree != tree_hash(files):
            raise RemoteInputError(f"the server stored the folder {folder.name} under another hash")
        return tree_ref(tree)

    def _send(self, path: pathlib.Path, sha: str) -> None:
        size = path.stat().st_size
        self.t.upload(path, sha, size, self.progress)
        self.result.uploaded_bytes += size
        self.result.uploaded.append(path.name)

    def _model(self, kind: str, value: Any, base_dir: str | None) -> Any:
        name = str(value or "").strip()
        if not name:
            return value
        listed = self.server_models()
        names = {m.get("name") for m in listed if m.get("kind") == kind}
        local = _local(name, base_dir)
        if local is None and not pathlib.Path(name).is_absolute():
            local = self._in_local_models(name, kind)
        if local is not None and local.is_file():
            sha = sha256_of(local)
            same = next((m for m in listed if m.get("sha256") == sha and m.get("kind") == kind), None)
            if same is not None:
                return same["name"]  # the server has these very weights (under some name)
            if local.suffix.lower() not in MODEL_SUFFIXES:
                raise RemoteInputError(f"{local.name} is not a .safetensors file; only those are uploaded")
            if self.t.missing([sha]):
                self._send(local, sha)
            stored = self.t.adopt(sha, kind, local.name)
            self._models = None
            return stored
        if name in names:
            return value
        if local is not None and local.is_dir():
            return self._folder(local)  # a diffusers folder goes up as a tree (its files by hash, once)
        if is_hub_id(name):
            return value  # the server downloads it from the Hugging Face hub
        raise RemoteInputError(f"{kind} '{name}' is missing on the server (and is not a file here)")

    def server_models(self) -> list[dict[str, Any]]:
        if self._models is None:
            self._models = list(self.t.server_models())
        return self._models

    @staticmethod
    def _in_local_models(name: str, kind: str) -> pathlib.Path | None:
        from nodes.diffusion.catalog import find

        try:
            return find(name, kind)
        except (OSError, ValueError):
            return None


def is_hub_id(name: str) -> bool:
    """Whether a model name is a Hugging Face Hub id (owner/repo), which downloads at run time."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.lower().endswith(MODEL_SUFFIXES) and not name.startswith(".")
