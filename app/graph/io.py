"""The workflow file format (`"format": "imagebash/1"`): JSON in, Graph out, and back.

A workflow file is data: it is parsed with `json` and checked field by field; nothing in it is
ever evaluated or unpickled. Files of an older format version are migrated step by step; a file
of a newer version is refused rather than half-read.
"""

from __future__ import annotations

import json
import math
import pathlib
import re
import reprlib
import sys
import unicodedata
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
    """`json.loads`, with a nesting too deep for Python's parser, or an integer too long for it,
    as one WorkflowFormatError (json raises RecursionError and a bare ValueError for those)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowFormatError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise WorkflowFormatError(
            f"JSON nested too deeply to read (a workflow nests at most {MAX_DEPTH} levels)") from None
    except ValueError:  # int('9' * 5000): Python refuses integers longer than its digit limit
        raise WorkflowFormatError(f"not valid JSON: a number has more than {sys.get_int_max_str_digits()} "
                                  "digits") from None


def check_value(value: Any, what: str) -> None:
    """Refuse values nested deeper than MAX_DEPTH and numbers no float can hold (NaN, Infinity,
    integers beyond 1.8e308: every consumer converts numbers to float), without recursing."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth > MAX_DEPTH:
                raise WorkflowFormatError(f"{what} is nested too deeply (more than {MAX_DEPTH} levels)")
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
        elif isinstance(v, float) and not math.isfinite(v):
            raise WorkflowFormatError(f"{what} holds {v!r}, which is not a JSON number")
        elif isinstance(v, int) and not isinstance(v, bool) and abs(v) > sys.float_info.max:
            raise WorkflowFormatError(f"{what} holds a number too large for a float ({_short(v)})")


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlong = 40


def _short(value: Any) -> str:
    """A repr short enough for a one-line message, however big the value in the file."""
    return _repr.repr(value)


def _no_line_breaks(s: str) -> bool:
    """Ids and port names end up in one-line messages and terminal output: no control characters."""
    return not any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in s)


def _migrate_0_to_1(doc: dict[str, Any]) -> dict[str, Any]:
    """Format 0 (the pre-release drafts) kept links as 4-lists and positions as x/y keys."""
    nodes = doc.get("nodes", [])
    links = doc.get("links", [])
    if not isinstance(nodes, list) or not isinstance(links, list):
        raise WorkflowFormatError("'nodes' and 'links' must be lists")
    migrated = []
    for n in nodes:
        if isinstance(n, dict):  # anything else is reported by graph_from_dict, with its index
            n = dict(n)
            if "x" in n or "y" in n:
                n["pos"] = [n.pop("x", 0), n.pop("y", 0)]
            if "inputs" in n and "params" not in n:
                n["params"] = n.pop("inputs")
        migrated.append(n)
    new_links = []
    for i, ln in enumerate(links):
        if isinstance(ln, list):
            if len(ln) != 4:
                raise WorkflowFormatError(f"links[{i}] must be [node, output, node, input] in format 0")
            ln = {"from": [ln[0], ln[1]], "to": [ln[2], ln[3]]}
        new_links.append(ln)
    return {**doc, "format": f"{FORMAT_PREFIX}1", "nodes": migrated, "links": new_links}


#: MIGRATIONS[v] turns a version-v document into a version-(v+1) one.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _migrate_0_to_1}


def format_version(doc: dict[str, Any]) -> int:
    fmt = doc.get("format")
    if not isinstance(fmt, str) or not fmt.startswith(FORMAT_PREFIX):
        raise WorkflowFormatError(f"not an imagebash workflow (format is {_short(fmt)}, expected '{FORMAT}')")
    digits = fmt[len(FORMAT_PREFIX):]
    if not re.fullmatch(r"[0-9]{1,6}", digits):  # int() would take '-1', ' 1' and non-ASCII digits
        raise WorkflowFormatError(f"unknown workflow format {_short(fmt)}")
    return int(digits)


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


def _numbers(value: Any, n: int, what: str, shape: str) -> tuple[float, ...]:
    if (not isinstance(value, (list, tuple)) or len(value) != n
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise WorkflowFormatError(f"{what} must be {shape}, got {_short(value)}")
    return tuple(float(v) for v in value)


def _pair(value: Any, what: str) -> tuple[float, float]:
    x, y = _numbers(value, 2, what, "a pair of numbers")
    return x, y


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise WorkflowFormatError(f"{what} must be a non-empty string, got {_short(value)}")
    if not _no_line_breaks(value):
        raise WorkflowFormatError(f"{what} must not hold line breaks or control characters, got {_short(value)}")
    return value


def _list(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key)
    if value is None or (key in ("groups", "notes") and value in ({}, "", 0)):  # older files: {} for none
        return []
    if not isinstance(value, list):
        raise WorkflowFormatError(f"'{key}' must be a list")
    return value


def _end(value: Any) -> tuple[str, str]:
    """One end of a link, [node, port] (a string or an object would unpack into letters or keys)."""
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError
    return _str(value[0], "id"), _str(value[1], "port")


def graph_from_dict(doc: Any) -> Graph:
    """Build a Graph from a parsed document (structure only; `validate` checks it against nodes)."""
    if not isinstance(doc, dict):
        raise WorkflowFormatError("a workflow must be a JSON object")
    check_value(doc, "the workflow")
    doc = migrate(doc)
    g = Graph()
    for i, n in enumerate(_list(doc, "nodes")):
        if not isinstance(n, dict):
            raise WorkflowFormatError(f"nodes[{i}] must be an object")
        nid = _str(n.get("id"), f"nodes[{i}].id")
        if nid in g.nodes:
            raise WorkflowFormatError(f"node id '{nid}' is used twice")
        params = n.get("params", {})
        if not isinstance(params, dict):
            raise WorkflowFormatError(f"node '{nid}': 'params' must be an object")
        for name in params:
            _str(name, f"node '{nid}': a parameter name")
        try:
            mode = NodeMode(n.get("mode", "normal"))
        except ValueError:
            raise WorkflowFormatError(f"node '{nid}': unknown mode {_short(n.get('mode'))}") from None
        version = n.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise WorkflowFormatError(f"node '{nid}': 'version' must be an integer")
        title = n.get("title")
        g.nodes[nid] = NodeInstance(
            id=nid, type=_str(n.get("type"), f"node '{nid}' type"), params=dict(params),
            position=_pair(n.get("pos", [0, 0]), f"node '{nid}' pos"), mode=mode,
            title=title if isinstance(title, str) else None, collapsed=bool(n.get("collapsed", False)),
            version=version)
    taken: set[tuple[str, str]] = set()
    for i, ln in enumerate(_list(doc, "links")):
        try:
            if not isinstance(ln, dict):
                raise ValueError
            link = Link(*_end(ln.get("from")), *_end(ln.get("to")))
        except ValueError:  # WorkflowFormatError from _str included: one message for every bad shape
            raise WorkflowFormatError(
                f"links[{i}] must look like {{\"from\": [node, output], \"to\": [node, input]}}") from None
        for end in (link.src, link.dst):
            if end not in g.nodes:
                raise WorkflowFormatError(f"links[{i}] refers to unknown node '{end}'")
        if (link.dst, link.dst_port) in taken:
            raise WorkflowFormatError(f"node '{link.dst}' input '{link.dst_port}' has two links")
        taken.add((link.dst, link.dst_port))
        g.links.append(link)
    for i, gr in enumerate(_list(doc, "groups")):
        try:
            if not isinstance(gr, dict):
                raise ValueError
            gid = _str(gr.get("id", f"group_{i + 1}"), f"groups[{i}].id")
            x, y, w, h = _numbers(gr.get("rect"), 4, "rect", "[x, y, w, h]")
            g.groups[gid] = Group(gid, str(gr.get("title", "")), (x, y, w, h), str(gr.get("color", "#3a5f8a")))
        except ValueError:
            raise WorkflowFormatError(f"groups[{i}] needs an id, a title and rect [x, y, w, h]") from None
    for i, nt in enumerate(_list(doc, "notes")):
        if not isinstance(nt, dict):
            raise WorkflowFormatError(f"notes[{i}] must be an object")
        nid = _str(nt.get("id", f"note_{i + 1}"), f"notes[{i}].id")
        g.notes[nid] = Note(nid, str(nt.get("text", "")), _pair(nt.get("pos", [0, 0]), f"note '{nid}' pos"),
                            _pair(nt.get("size", [240, 120]), f"note '{nid}' size"))
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


def shown_path(p: pathlib.Path) -> str:
    """A path for a one-line message: a file name may hold a line break; repr escapes it."""
    text = str(p)
    return text if _no_line_breaks(text) else repr(text)


def looks_like_comfy(doc: Any) -> bool:
    """A ComfyUI workflow rather than ours: API form (id -> {"class_type"}) or UI (litegraph) form."""
    if not isinstance(doc, dict) or "format" in doc or not doc:
        return False
    if "prompt" in doc and isinstance(doc["prompt"], dict):  # a /prompt request body
        doc = doc["prompt"]
    if all(isinstance(v, dict) and "class_type" in v for v in doc.values()):
        return True
    nodes = doc.get("nodes")
    return isinstance(nodes, list) and ("last_node_id" in doc or "last_link_id" in doc or any(
        isinstance(n, dict) and ("widgets_values" in n or "outputs" in n) for n in nodes[:50]))


def _png_has_comfy(p: pathlib.Path) -> bool:
    from PIL import Image as PILImage

    try:
        with PILImage.open(p, formats=["PNG"]) as im:
            return any(k in im.info for k in ("prompt", "workflow", "parameters"))
    except Exception:  # noqa: BLE001 - png_workflow_text has already reported an unreadable file
        return False


def carries_workflow(path: str | pathlib.Path) -> bool:
    """Whether an image file opens as a workflow (ours, ComfyUI's, or A1111 parameters) rather
    than as a picture to load: what a drop onto the canvas decides by."""
    p = pathlib.Path(path)
    suffix = p.suffix.lower()
    if suffix == ".png":
        return workflow_from_png(p) is not None or _png_has_comfy(p)
    if suffix in VIDEO_SUFFIXES:
        return video_workflow_text(p) is not None
    if suffix == ".webp":
        if webp_workflow_text(p) is not None:
            return True
        from app.comfy.formats import ComfyFormatError, read

        try:
            read(p)
        except ComfyFormatError:
            return False
        return True
    return False


def load_comfy(p: pathlib.Path) -> Graph:
    """A ComfyUI (or A1111) file mapped onto a Graph; `meta["import_note"]` says what was mapped."""
    from app.comfy.formats import ComfyFormatError, read
    from app.comfy.mapping import to_graph
    from nodes.registry import default_registry

    try:
        wf = read(p)
    except ComfyFormatError as exc:
        raise WorkflowFormatError(str(exc).split(": ", 1)[-1]) from None
    g, report = to_graph(wf, default_registry(), base_dir=p.resolve().parent)
    g.meta["import_note"] = f"imported from ComfyUI ({wf.source or 'unknown form'}): {report.summary()}"
    return g


def load(path: str | pathlib.Path) -> Graph:
    """Read a workflow from a .json file, a PNG that carries one in its text chunk, or a video
    Save Video wrote (container metadata, a GIF comment, a WebP's EXIF, or NAME.json next to it).

    ComfyUI files (API or UI JSON, a PNG or WebP carrying one, an A1111 PNG) are mapped onto a
    Graph (`app.comfy.mapping`), with a line about the import in `meta["import_note"]`.
    """
    p = pathlib.Path(path)
    where = shown_path(p)
    if not p.is_file():
        raise WorkflowFormatError(f"{where}: " + ("a folder, not a workflow file" if p.is_dir() else "no such file"))
    try:
        suffix = p.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            text = video_workflow_text(p)
            if not text:
                raise WorkflowFormatError(f"this video carries no imagebash workflow (no metadata, no "
                                          f"{shown_path(p.with_suffix('.json').relative_to(p.parent))} next to it)")
        elif suffix == ".webp":
            text = webp_workflow_text(p)  # one imagebash wrote: its workflow, never a ComfyUI reading
            if not text:
                return load_comfy(p)
        elif suffix == ".png":
            text = png_workflow_text(p)
            if not text:
                if _png_has_comfy(p):
                    return load_comfy(p)
                raise WorkflowFormatError("this PNG carries no imagebash workflow")
        else:
            try:
                text = p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise WorkflowFormatError(f"cannot read: {exc}") from None
        doc = parse_json(text)
        if looks_like_comfy(doc):
            return load_comfy(p)
        g = graph_from_dict(doc)
    except WorkflowFormatError as exc:
        raise WorkflowFormatError(f"{where}: {exc}") from None
    g.base_dir = str(p.resolve().parent)
    return g


def save(g: Graph, path: str | pathlib.Path) -> None:
    """Write atomically (temp file then rename), so a crash mid-write never eats the old file."""
    p = pathlib.Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(dumps(g), encoding="utf-8")
    tmp.replace(p)


PNG_WORKFLOW_KEY = "imagebash.workflow"


def png_workflow_text(path: str | pathlib.Path) -> str | None:
    """The workflow text a Save Image node embedded in a PNG, or None when it has none.

    Raises WorkflowFormatError for a file Pillow cannot read: Pillow reports a corrupt PNG as
    OSError, ValueError (an oversized text chunk), SyntaxError, EOFError, struct.error, or
    DecompressionBombError for huge declared dimensions.
    """
    import struct

    from PIL import Image as PILImage

    try:
        with PILImage.open(path, formats=["PNG"]) as im:  # a PNG, whatever else Pillow could read
            # Save Image writes its text chunks before the pixels (`info`); only a file with
            # none there has its pixels read to reach text chunks that follow them.
            text = im.info.get(PNG_WORKFLOW_KEY)
            if text is None:
                text = im.text.get(PNG_WORKFLOW_KEY)
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, PILImage.DecompressionBombError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WorkflowFormatError(f"cannot read PNG: {message}") from None
    return text if isinstance(text, str) else None


def workflow_from_png(path: str | pathlib.Path) -> dict[str, Any] | None:
    """The workflow JSON a Save Image node embedded in a PNG's text chunk, if any."""
    try:
        text = png_workflow_text(path)
        doc = parse_json(text) if text else None
    except WorkflowFormatError:
        return None
    return doc if isinstance(doc, dict) else None


#: Files Save Video writes; the workflow is in their metadata (or a NAME.json next to them).
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".m4v", ".avi", ".gif")
VIDEO_WORKFLOW_KEY = "imagebash_workflow"


def video_workflow_text(path: str | pathlib.Path) -> str | None:
    """The workflow JSON a Save Video node stored in a video: container metadata first (the
    `imagebash_workflow` tag, else a `comment` holding an imagebash workflow), the sidecar
    NAME.json second; None when neither has one."""
    p = pathlib.Path(path)
    try:
        import av

        with av.open(str(p), metadata_errors="ignore") as c:
            tags = {str(k).lower(): v for k, v in dict(c.metadata).items()}
    except Exception:  # noqa: BLE001 - no PyAV, or an unreadable file: try the sidecar
        tags = {}
    for key in (VIDEO_WORKFLOW_KEY, "comment"):
        text = tags.get(key)
        if isinstance(text, str) and text.lstrip().startswith("{"):
            try:
                doc = parse_json(text)
            except WorkflowFormatError:
                continue
            if isinstance(doc, dict) and str(doc.get("format", "")).startswith(FORMAT_PREFIX):
                return text
    return _sidecar_text(p, strict=False)


def _sidecar_text(p: pathlib.Path, strict: bool) -> str | None:
    """The text of NAME.json next to `p` when it holds a workflow (strict: an imagebash one only)."""
    side = p.with_suffix(".json")
    if side.is_file():
        try:
            text = side.read_text(encoding="utf-8")
            doc = parse_json(text)
        except (OSError, UnicodeDecodeError, WorkflowFormatError):
            return None
        if isinstance(doc, dict) and (str(doc.get("format", "")).startswith(FORMAT_PREFIX)
                                      or (not strict and "nodes" in doc)):
            return text
    return None


#: An animated WebP from Save Video holds its workflow in EXIF ImageDescription (0x010E) as
#: "imagebash:{...}"; ComfyUI's keys are "prompt:" / "workflow:" (0x0110 / 0x010F), so no clash.
WEBP_EXIF_TAG, WEBP_EXIF_PREFIX = 0x010E, "imagebash:"


def webp_workflow_text(path: str | pathlib.Path) -> str | None:
    """The imagebash workflow a WebP carries (its EXIF, else an imagebash NAME.json next to it), or None."""
    p = pathlib.Path(path)
    from PIL import Image as PILImage

    try:
        with PILImage.open(p, formats=["WEBP"]) as im:
            value = im.getexif().get(WEBP_EXIF_TAG)
    except Exception:  # noqa: BLE001 - not a readable WebP: the ComfyUI reader reports it
        value = None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and value.startswith(WEBP_EXIF_PREFIX):
        text = value[len(WEBP_EXIF_PREFIX):].rstrip("\0")
        try:
            doc = parse_json(text)
        except WorkflowFormatError:
            doc = None
        if isinstance(doc, dict) and str(doc.get("format", "")).startswith(FORMAT_PREFIX):
            return text
    return _sidecar_text(p, strict=True)
