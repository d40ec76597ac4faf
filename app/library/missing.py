"""What a workflow needs that is not on this machine: the model files its parameters name.

Why before running: a shared workflow names "v1-5-pruned-emaonly.safetensors" and two LoRAs that
the person who opens it may not have; the run would fail at the first of them, one at a time. This
lists them all up front, each with its node and port, so the UI can offer to download or relink.
The model parameters are the ports a node declares with `Choices(..., model=kind)`, the same ones
a remote engine checks (`app.engine.remote_inputs`). Hub ids (`owner/repo`) are not missing: the
model manager downloads them when the node runs. A PNG's provenance records each model's short
content hash, which helps tell the right file from a same-named one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.engine.remote_inputs import is_hub_id
from app.graph.model import Graph

PROVENANCE_KEY = "imagebash.provenance"  # what nodes.image.io writes into a saved PNG


@dataclass(frozen=True)
class MissingModel:
    """One model parameter whose file is not there."""

    node_id: str
    port: str
    kind: str
    name: str
    sha256: str | None = None  # a full hash, when the provenance carries one
    short_hash: str | None = None  # the sha256's first 10 digits (AutoV2) Load Model / LoRA record in provenance
    title: str = ""  # the node's title, for the message


def resolve(name: str, kind: str, base_dir: str | None = None) -> Path | None:
    """The file or folder a model parameter names: a path (relative to the workflow's folder), or
    a name in the models folders of that kind; None when it is not there."""
    from nodes.diffusion.catalog import find

    try:
        p = Path(name).expanduser()
        if p.is_absolute():
            return p if p.exists() else None
        for candidate in ([Path(base_dir) / p] if base_dir else []) + [p]:
            if candidate.exists():
                return candidate
        return find(name, kind)
    except (OSError, ValueError, RuntimeError):  # too long, a NUL byte, an unknown ~user
        return None


def _hints(provenance: dict[str, Any] | None) -> dict[str, dict[str, str]]:
    """name -> {"hash", "sha256"} from a PNG's provenance ({"model": [...], "lora": [...]})."""
    out: dict[str, dict[str, str]] = {}
    for entries in (provenance or {}).values():
        for e in entries if isinstance(entries, list) else [entries]:
            if isinstance(e, dict) and isinstance(e.get("name"), str):
                out.setdefault(e["name"], {}).update({k: str(e[k]) for k in ("hash", "sha256") if e.get(k)})
    return out


def model_ports(graph: Graph, registry: Any) -> list[tuple[str, str, str, str]]:
    """(node id, port, kind, value) of every model parameter set in the graph (linked ports and
    empty values left out)."""
    out: list[tuple[str, str, str, str]] = []
    for node in graph.nodes.values():
        spec = registry.get(node.type)
        if spec is None:
            continue  # an unknown node is the validator's message, not a missing model
        for port in spec.inputs_for(node.params):
            if port.choices is None or not port.choices.model or port.name not in node.params:
                continue
            if graph.link_into(node.id, port.name) is not None:
                continue
            value = node.params[port.name]
            if isinstance(value, (str, os.PathLike)) and str(value).strip():
                out.append((node.id, port.name, port.choices.model, str(value).strip()))
    return out


def missing_models(graph: Graph, registry: Any, provenance: dict[str, Any] | None = None) -> list[MissingModel]:
    """Every model parameter of `graph` naming a file that is not found here, in node order.
    `provenance` (see `png_provenance`) adds the hashes recorded when the image was made."""
    hints = _hints(provenance)
    out: list[MissingModel] = []
    for node_id, port, kind, name in model_ports(graph, registry):
        if is_hub_id(name) or resolve(name, kind, graph.base_dir) is not None:
            continue
        h = hints.get(name) or hints.get(Path(name).name) or {}
        out.append(MissingModel(node_id, port, kind, name, h.get("sha256"), h.get("hash"),
                                graph.nodes[node_id].title or ""))
    return out


def param_value(path: str | os.PathLike[str], kind: str) -> str:
    """What a model parameter should say for this file: its name when the models folders find this
    very file under it (the workflow stays portable), else its absolute path."""
    from nodes.diffusion.catalog import find, search_dirs

    p = Path(path).expanduser().resolve()
    for folder in search_dirs(kind):
        try:
            rel = p.relative_to(folder.resolve()).as_posix()
        except (ValueError, OSError):
            continue
        found = find(rel, kind)
        if found is not None and found.resolve() == p:
            return rel
    return str(p)


def relink_params(graph: Graph, missing: MissingModel, path: str | os.PathLike[str],
                  registry: Any = None) -> dict[tuple[str, str], str]:
    """{(node id, port): new value} pointing `missing`, and every other parameter naming the same
    missing file (same-kind model ports with `registry`, else ports of the same name), at `path`;
    the UI applies it as one undoable command. ValueError (one line) when `path` is not there or
    is plainly not that kind of model."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"{p}: no such file")
    if p.is_file() and p.suffix.lower() == ".safetensors" and missing.kind in ("checkpoint", "lora"):
        from app.engine.probe import ProbeError, probe

        try:
            is_lora = probe(p).looks_like_lora()
        except ProbeError as exc:
            raise ValueError(str(exc)) from None
        if is_lora != (missing.kind == "lora"):
            what = "a LoRA" if is_lora else "not a LoRA"
            raise ValueError(f"{p.name} is {what}; node '{missing.node_id}' needs a {missing.kind}")
    value = param_value(p, missing.kind)
    changes: dict[tuple[str, str], str] = {(missing.node_id, missing.port): value}
    if registry is not None:
        for node_id, port, kind, name in model_ports(graph, registry):
            if kind == missing.kind and name == missing.name:
                changes[(node_id, port)] = value
    else:
        for node in graph.nodes.values():
            v = node.params.get(missing.port)
            if isinstance(v, str) and v.strip() == missing.name and graph.link_into(node.id, missing.port) is None:
                changes[(node.id, missing.port)] = value
    return changes


def png_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The provenance a Save Image node wrote into a PNG ({"model": [...], "lora": [...]}), or None."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(path, formats=["PNG"]) as im:
            text = im.info.get(PROVENANCE_KEY) or getattr(im, "text", {}).get(PROVENANCE_KEY)
        data = json.loads(text) if isinstance(text, str) else None
    except (OSError, ValueError, SyntaxError, EOFError):
        return None
    return data if isinstance(data, dict) else None


def where_to_get(name: str, kind: str) -> str:
    """How to get a missing model, for the one-line error a run gives: the download command when
    it is a starter model, else the folder it belongs in (and the Models panel)."""
    from app.library.starters import starter_for
    from app.paths import models_dirs
    from nodes.diffusion.catalog import DIRS

    starter = starter_for(name)
    if starter is not None:
        return f"download it with `imagebash models download {starter.source}` or from the Models panel"
    sub = next((d for d in DIRS.get(kind, ()) if d), "")
    folder = models_dirs()[0] / sub if models_dirs() else Path(sub)
    return f"put it in {folder} or download it from the Models panel (imagebash models download SOURCE)"
