"""The workflow file format (`"format": "imagebash/1"`): JSON in, Graph out, and back.

A workflow file is data: it is parsed with `json` and checked field by field; nothing in it is
ever evaluated or unpickled. Files of an older format version are migrated step by step; a file
of a newer version is refused rather than half-read.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from typing import Any

from app.graph.model import Graph, Group, Link, NodeInstance, NodeMode, Note

FORMAT_PREFIX = "imagebash/"
FORMAT_VERSION = 1
FORMAT = f"{FORMAT_PREFIX}{FORMAT_VERSION}"


class WorkflowFormatError(ValueError):
    """The file is not a readable imagebash workflow; the message says where and why."""


#: How deeply parameter values may nest (a prompt list, a schema's object inputs are shallow);
#: deeper documents are refused before anything recurses over them (copy, hashing, saving).
MAX_DEPTH = 64


def parse_json(text: str) -> Any:
    """`json.loads`, with a nesting too deep for Python's parser as one WorkflowFormatError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowFormatError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise WorkflowFormatError(f"JSON nested too deeply (more than {MAX_DEPTH} levels are refused)") from None


def _check_depth(value: Any, what: str) -> None:
    """Refuse values nested deeper than MAX_DEPTH, without recursing."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth > MAX_DEPTH:
                raise WorkflowFormatError(f"{what} is nested too deeply (more than {MAX_DEPTH} levels)")
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))


def _migrate_0_to_1(doc: dict[str, Any]) -> dict[str, Any]:
    """Format 0 (the pre-release drafts) kept links as 4-lists and positions as x/y keys."""
    nodes = []
    for n in doc.get("nodes", []):
        n = dict(n)
        if "x" in n or "y" in n:
            n["pos"] = [n.pop("x", 0), n.pop("y", 0)]
        if "inputs" in n and "params" not in n:
            n["params"] = n.pop("inputs")
        nodes.append(n)
    links = [{"from": [ln[0], ln[1]], "to": [ln[2], ln[3]]} if isinstance(ln, list) else ln
             for ln in doc.get("links", [])]
    return {**doc, "format": f"{FORMAT_PREFIX}1", "nodes": nodes, "links": links}


#: MIGRATIONS[v] turns a version-v document into a version-(v+1) one.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _migrate_0_to_1}


def format_version(doc: dict[str, Any]) -> int:
    fmt = doc.get("format")
    if not isinstance(fmt, str) or not fmt.startswith(FORMAT_PREFIX):
        raise WorkflowFormatError(f"not an imagebash workflow (format is {fmt!r}, expected '{FORMAT}')")
    try:
        return int(fmt[len(FORMAT_PREFIX):])
    except ValueError:
        raise WorkflowFormatError(f"unknown workflow format {fmt!r}") from None


def migrate(doc: dict[str, Any]) -> dict[str, Any]:
    """Bring a document to the current format version; refuse newer ones."""
    v = format_version(doc)
    if v > FORMAT_VERSION:
        raise WorkflowFormatError(
            f"workflow format {v} is newer than this imagebash understands ({FORMAT_VERSION}); update imagebash")
    while v < FORMAT_VERSION:
        doc = MIGRATIONS[v](doc)
        v += 1
    return doc


def _pair(value: Any, what: str) -> tuple[float, float]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise WorkflowFormatError(f"{what} must be a pair of numbers, got {value!r}")
    return float(value[0]), float(value[1])


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise WorkflowFormatError(f"{what} must be a non-empty string, got {value!r}")
    return value


def graph_from_dict(doc: Any) -> Graph:
    """Build a Graph from a parsed document (structure only; `validate` checks it against nodes)."""
    if not isinstance(doc, dict):
        raise WorkflowFormatError("a workflow must be a JSON object")
    _check_depth(doc, "the workflow")
    doc = migrate(doc)
    g = Graph()
    nodes = doc.get("nodes", [])
    if not isinstance(nodes, list):
        raise WorkflowFormatError("'nodes' must be a list")
    for i, n in enumerate(nodes):
        if not isinstance(n, dict):
            raise WorkflowFormatError(f"nodes[{i}] must be an object")
        nid = _str(n.get("id"), f"nodes[{i}].id")
        if nid in g.nodes:
            raise WorkflowFormatError(f"node id '{nid}' is used twice")
        params = n.get("params", {})
        if not isinstance(params, dict):
            raise WorkflowFormatError(f"node '{nid}': 'params' must be an object")
        try:
            mode = NodeMode(n.get("mode", "normal"))
        except ValueError:
            raise WorkflowFormatError(f"node '{nid}': unknown mode {n.get('mode')!r}") from None
        version = n.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise WorkflowFormatError(f"node '{nid}': 'version' must be an integer")
        title = n.get("title")
        g.nodes[nid] = NodeInstance(
            id=nid, type=_str(n.get("type"), f"node '{nid}' type"), params=dict(params),
            position=_pair(n.get("pos", [0, 0]), f"node '{nid}' pos"), mode=mode,
            title=title if isinstance(title, str) else None, collapsed=bool(n.get("collapsed", False)),
            version=version)
    links = doc.get("links", [])
    if not isinstance(links, list):
        raise WorkflowFormatError("'links' must be a list")
    taken: set[tuple[str, str]] = set()
    for i, ln in enumerate(links):
        try:
            (src, sp), (dst, dp) = ln["from"], ln["to"]
            link = Link(_str(src, "id"), _str(sp, "port"), _str(dst, "id"), _str(dp, "port"))
        except (KeyError, TypeError, ValueError):
            raise WorkflowFormatError(
                f"links[{i}] must look like {{\"from\": [node, output], \"to\": [node, input]}}") from None
        for end in (link.src, link.dst):
            if end not in g.nodes:
                raise WorkflowFormatError(f"links[{i}] refers to unknown node '{end}'")
        if (link.dst, link.dst_port) in taken:
            raise WorkflowFormatError(f"node '{link.dst}' input '{link.dst_port}' has two links")
        taken.add((link.dst, link.dst_port))
        g.links.append(link)
    for i, gr in enumerate(doc.get("groups", []) or []):
        try:
            gid = _str(gr.get("id", f"group_{i + 1}"), f"groups[{i}].id")
            rect = gr["rect"]
            if len(rect) != 4:
                raise ValueError
            g.groups[gid] = Group(gid, str(gr.get("title", "")), tuple(float(v) for v in rect),
                                  str(gr.get("color", "#3a5f8a")))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise WorkflowFormatError(f"groups[{i}] needs an id, a title and rect [x, y, w, h]") from None
    for i, nt in enumerate(doc.get("notes", []) or []):
        try:
            nid = _str(nt.get("id", f"note_{i + 1}"), f"notes[{i}].id")
            g.notes[nid] = Note(nid, str(nt.get("text", "")), _pair(nt.get("pos", [0, 0]), "note pos"),
                                _pair(nt.get("size", [240, 120]), "note size"))
        except AttributeError:
            raise WorkflowFormatError(f"notes[{i}] must be an object") from None
    meta = doc.get("meta", {})
    g.meta = dict(meta) if isinstance(meta, dict) else {}
    return g


def _jsonable(value: Any) -> Any:
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if hasattr(value, "value") and not isinstance(value, (int, float, str, bool)):
        return value.value
    return value


def graph_to_dict(g: Graph) -> dict[str, Any]:
    """The JSON document for a Graph (current format version)."""
    nodes = []
    for n in g.nodes.values():
        d: dict[str, Any] = {"id": n.id, "type": n.type}
        if n.version is not None:
            d["version"] = n.version
        d["params"] = {k: _jsonable(v) for k, v in n.params.items()}
        d["pos"] = [round(n.position[0], 2), round(n.position[1], 2)]
        if n.mode is not NodeMode.NORMAL:
            d["mode"] = n.mode.value
        if n.title:
            d["title"] = n.title
        if n.collapsed:
            d["collapsed"] = True
        nodes.append(d)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "nodes": nodes,
        "links": [{"from": [ln.src, ln.src_port], "to": [ln.dst, ln.dst_port]} for ln in g.links],
    }
    if g.groups:
        doc["groups"] = [{"id": gr.id, "title": gr.title, "rect": list(gr.rect), "color": gr.color}
                         for gr in g.groups.values()]
    if g.notes:
        doc["notes"] = [{"id": nt.id, "text": nt.text, "pos": list(nt.position), "size": list(nt.size)}
                        for nt in g.notes.values()]
    if g.meta:
        doc["meta"] = g.meta
    return doc


def loads(text: str) -> Graph:
    return graph_from_dict(parse_json(text))


def dumps(g: Graph) -> str:
    return json.dumps(graph_to_dict(g), indent=2)


def load(path: str | pathlib.Path) -> Graph:
    """Read a workflow from a .json file, or from a PNG that carries one in its text chunk."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise WorkflowFormatError(f"{p}: no such file")
    if p.suffix.lower() == ".png":
        doc = workflow_from_png(p)
        if doc is None:
            raise WorkflowFormatError(f"{p}: this PNG carries no imagebash workflow")
        try:
            g = graph_from_dict(doc)
        except WorkflowFormatError as exc:
            raise WorkflowFormatError(f"{p}: {exc}") from None
        g.base_dir = str(p.resolve().parent)
        return g
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowFormatError(f"{p}: cannot read: {exc}") from None
    try:
        g = loads(text)
    except WorkflowFormatError as exc:
        raise WorkflowFormatError(f"{p}: {exc}") from None
    g.base_dir = str(p.resolve().parent)
    return g


def save(g: Graph, path: str | pathlib.Path) -> None:
    """Write atomically (temp file then rename), so a crash mid-write never eats the old file."""
    p = pathlib.Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(dumps(g), encoding="utf-8")
    tmp.replace(p)


PNG_WORKFLOW_KEY = "imagebash.workflow"


def workflow_from_png(path: str | pathlib.Path) -> dict[str, Any] | None:
    """The workflow JSON a Save Image node embedded in a PNG's text chunk, if any."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as im:
            text = getattr(im, "text", {}).get(PNG_WORKFLOW_KEY)
    except OSError:
        return None
    if not text:
        return None
    try:
        doc = parse_json(text)
    except WorkflowFormatError:
        return None
    return doc if isinstance(doc, dict) else None
