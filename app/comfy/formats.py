"""Read every form a ComfyUI workflow comes in and return one normalised `ComfyWorkflow`.

Forms: API ("prompt") JSON, bare or wrapped as a /prompt body; UI (litegraph) JSON; PNG text chunks
("workflow" preferred for its positions, else "prompt"; A1111 "parameters"); WebP EXIF
(0x0110 "prompt:{...}", 0x010F "workflow:{...}"); A1111 infotext. A file is data: it is parsed with
`json` and a chunk reader, never evaluated. Bad input raises `ComfyFormatError` with one line that
names the file.

UI-form rules (as ComfyUI's frontend applies them): widget values follow INPUT_TYPES order with the
seed control value after seed widgets (optional in old files); an input converted from a widget
takes its link; Reroutes dissolve; PrimitiveNode values go into every widget they feed; Note and
MarkdownNote become notes; group nodes and subgraphs expand into their inner nodes, inner ids
being "<outer id>:<inner id>" as ComfyUI names them.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.comfy import widgets as W
from app.comfy.infotext import InfotextError, infotext_to_workflow, looks_like_infotext
from app.comfy.model import (
    MODE_BYPASS,
    MODE_MUTED,
    MODE_NORMAL,
    ComfyGroup,
    ComfyLink,
    ComfyNode,
    ComfyNote,
    ComfyWorkflow,
)

#: files above this are refused before anything is parsed (real workflows are well under 5 MB)
MAX_BYTES = 50 * 1024 * 1024
#: nesting deeper than this is no workflow; refusing it keeps json and our recursion safe
MAX_DEPTH = 200
#: subgraphs / group nodes inside each other, at most
MAX_EXPANSION_DEPTH = 16

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
_SUBGRAPH_INPUT, _SUBGRAPH_OUTPUT = -10, -20  # litegraph's ids of a subgraph's input / output nodes
_GROUP_PREFIXES = ("workflow>", "workflow/")


class ComfyFormatError(ValueError):
    """A file that is no readable ComfyUI workflow; the message is one line naming the file."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


# --------------------------------------------------------------------------- entry points


def read(path_or_bytes: str | os.PathLike[str] | bytes, name: str | None = None) -> ComfyWorkflow:
    """Read a workflow from a file path or its bytes, whatever its form (JSON, PNG, WebP, infotext)."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
        name = name or "<workflow>"
        if len(data) > MAX_BYTES:
            raise ComfyFormatError(name, f"{len(data) / 2**20:.0f} MB is more than the {MAX_BYTES // 2**20} MB limit")
    else:
        path = Path(path_or_bytes)
        name = name or path.name
        try:
            size = path.stat().st_size
            if size > MAX_BYTES:
                raise ComfyFormatError(name, f"{size / 2**20:.0f} MB is more than the {MAX_BYTES // 2**20} MB limit")
            data = path.read_bytes()
        except OSError as exc:
            raise ComfyFormatError(name, f"cannot read the file ({exc.strerror or exc})") from None
    if data.startswith(_PNG_SIGNATURE):
        return _read_png(data, name)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _read_webp(data, name)
    if data[:3] == b"\xff\xd8\xff":
        return _read_exif_image(data, name, "jpeg")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ComfyFormatError(name, "not a ComfyUI workflow (neither JSON, PNG, WebP nor A1111 text)") from None
    return read_text(text, name=name)


def read_text(text: str, name: str = "<workflow>") -> ComfyWorkflow:
    """Read a workflow from text: API or UI JSON, or A1111 infotext."""
    if len(text) > MAX_BYTES:
        raise ComfyFormatError(name, f"more than the {MAX_BYTES // 2**20} MB limit")
    stripped = text.lstrip()
    if not stripped:
        raise ComfyFormatError(name, "the file is empty")
    if stripped[0] not in "{[" and looks_like_infotext(text):
        return _read_infotext(text, name)
    return read_json(_parse_json(text, name), name=name)


def read_json(data: Any, name: str = "<workflow>", source: str = "") -> ComfyWorkflow:
    """Read an already-parsed JSON value, detecting API or UI form."""
    if not isinstance(data, dict):
        raise ComfyFormatError(name, f"a workflow is a JSON object, not {_json_kind(data)}")
    if isinstance(data.get("nodes"), list):
        wf = _read_ui(data, name)
        wf.source = source + "ui"
    elif isinstance(data.get("workflow"), dict) and isinstance(data["workflow"].get("nodes"), list):
        wf = _read_ui(data["workflow"], name)  # {"workflow": ..., "prompt": ...} exports
        wf.source = source + "ui"
    elif isinstance(data.get("prompt"), dict) and "class_type" not in data["prompt"]:
        wf = _read_api(data["prompt"], name)  # a /prompt request body
        wf.source = source + "api"
    elif data and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        wf = _read_api(data, name)
        wf.source = source + "api"
    elif not data:
        raise ComfyFormatError(name, "the workflow is an empty JSON object")
    else:
        raise ComfyFormatError(name, "unknown format: neither a ComfyUI API prompt nor a UI workflow")
    _check_graph(wf, name)
    return wf


# --------------------------------------------------------------------------- JSON helpers


def _json_kind(value: Any) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _parse_json(text: str, name: str) -> Any:
    depth, deepest = 0, 0
    in_string = escaped = False
    for ch in text:  # cheap depth scan, so json never recurses near Python's limit
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    raise ComfyFormatError(name, f"JSON nested more than {MAX_DEPTH} levels deep")
        elif ch in "]}":
            depth -= 1
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        what = "truncated JSON" if exc.pos >= len(text.rstrip()) else "invalid JSON"
        raise ComfyFormatError(name, f"{what}: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ComfyFormatError(name, "JSON nested too deeply") from None


def _pair(value: Any) -> tuple[float, float] | None:
    """litegraph pos/size: [x, y], or {"0": x, "1": y} as old files saved Float32Arrays."""
    if isinstance(value, dict):
        value = [value.get("0"), value.get("1")]
    if isinstance(value, (list, tuple)) and len(value) >= 2:
        try:
            return float(value[0]), float(value[1])
        except (TypeError, ValueError):
            return None
    return None


# --------------------------------------------------------------------------- API form


def _read_api(prompt: dict[str, Any], name: str) -> ComfyWorkflow:
    wf = ComfyWorkflow()
    for node_id, entry in prompt.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("class_type"), str):
            raise ComfyFormatError(name, f"node {node_id} has no class_type")
        raw_inputs = entry.get("inputs", {})
        if not isinstance(raw_inputs, dict):
            raise ComfyFormatError(name, f"node {node_id} ({entry['class_type']}): inputs must be an object")
        inputs: dict[str, Any] = {}
        for key, value in raw_inputs.items():
            if (isinstance(value, list) and len(value) == 2 and type(value[0]) in (str, int)
                    and type(value[1]) is int):
                inputs[key] = ComfyLink(str(value[0]), value[1])
            else:
                inputs[key] = value
        meta = entry.get("_meta")
        title = meta.get("title", "") if isinstance(meta, dict) else ""
        wf.nodes[str(node_id)] = ComfyNode(str(node_id), entry["class_type"], inputs, title=str(title or ""))
    return wf


def _check_graph(wf: ComfyWorkflow, name: str) -> None:
    """Every link names an existing node, and the links form no cycle (ComfyUI cannot run one)."""
    for node in wf.nodes.values():
        for key, value in node.inputs.items():
            if isinstance(value, ComfyLink) and value.node not in wf.nodes:
                raise ComfyFormatError(
                    name, f"node {node.id} ({node.class_type}) input {key!r} links to missing node {value.node}")
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    for start in wf.nodes:
        if state.get(start):
            continue
        stack: list[tuple[str, Iterable[str]]] = [(start, _sources(wf, start))]
        path = [start]
        state[start] = 1
        while stack:
            node_id, it = stack[-1]
            nxt = next(iter(it), None)
            if nxt is None:
                stack.pop()
                path.pop()
                state[node_id] = 2
            elif state.get(nxt) == 1:
                cycle = [*path[path.index(nxt):], nxt]
                shown = " -> ".join(f"{n} ({wf.nodes[n].class_type})" for n in cycle)
                raise ComfyFormatError(name, f"the links form a cycle: {shown}")
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, _sources(wf, nxt)))


def _sources(wf: ComfyWorkflow, node_id: str) -> Iterable[str]:
    return iter([v.node for v in wf.nodes[node_id].inputs.values() if isinstance(v, ComfyLink)])


# --------------------------------------------------------------------------- UI form: flattening


@dataclass
class _Raw:
    """A UI node after links are resolved to (source id, slot) per input index."""

    id: str
    data: dict[str, Any]
    sources: dict[int, tuple[str, int]] = field(default_factory=dict)
    #: widget values a subgraph instance promotes over the inner node's own (widget name -> value)
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return str(self.data.get("type", ""))


@dataclass
class _Flat:
    nodes: dict[str, _Raw] = field(default_factory=dict)
    #: (group/subgraph instance id, output slot) -> the inner source it stands for (None: unconnected)
    redirect: dict[tuple[str, int], tuple[str, int] | None] = field(default_factory=dict)


def _link_table(links: Any, name: str) -> dict[Any, tuple[Any, int, Any, int]]:
    """link id -> (origin, origin slot, target, target slot), from list or dict links."""
    table: dict[Any, tuple[Any, int, Any, int]] = {}
    for link in links or []:
        try:
            if isinstance(link, dict):
                table[link["id"]] = (link["origin_id"], int(link["origin_slot"]),
                                     link["target_id"], int(link["target_slot"]))
            elif isinstance(link, list) and len(link) >= 5:
                table[link[0]] = (link[1], int(link[2]), link[3], int(link[4]))
            else:
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise ComfyFormatError(name, f"malformed link {json.dumps(link)[:80]}") from None
    return table


def _flatten(graph: dict[str, Any], prefix: str, name: str, flat: _Flat, defs: dict[str, Any],
             group_nodes: dict[str, Any], warnings: list[str], depth: int,
             outer_inputs: dict[int, tuple[str, int] | None] | None = None) -> dict[int, tuple[str, int] | None]:
    """Add `graph`'s nodes to `flat` under `prefix`; returns what feeds its subgraph outputs by slot."""
    if depth > MAX_EXPANSION_DEPTH:
        raise ComfyFormatError(name, f"subgraphs / group nodes nested more than {MAX_EXPANSION_DEPTH} deep")
    table = _link_table(graph.get("links"), name)
    outputs: dict[int, tuple[str, int] | None] = {}
    for origin, o_slot, target, t_slot in table.values():
        if target == _SUBGRAPH_OUTPUT:
            outputs[t_slot] = None if origin == _SUBGRAPH_INPUT else (f"{prefix}{origin}", o_slot)
    nodes = graph.get("nodes")
    if not isinstance(nodes, list):
        raise ComfyFormatError(name, "'nodes' must be a list")
    for data in nodes:
        if not isinstance(data, dict) or "id" not in data:
            raise ComfyFormatError(name, "a node without an id")
        raw = _Raw(f"{prefix}{data['id']}", dict(data))  # a copy: subgraph definitions are shared
        for index, inp in enumerate(data.get("inputs") or []):
            link_id = inp.get("link") if isinstance(inp, dict) else None
            if link_id is None:
                continue
            if link_id not in table:
                warnings.append(f"node {raw.id} ({raw.type}): input {inp.get('name')!r} names link {link_id}, "
                                "which the file does not have; left unconnected")
                continue
            origin, o_slot, _, _ = table[link_id]
            if origin == _SUBGRAPH_INPUT:
                src = (outer_inputs or {}).get(o_slot)
                if src is not None:
                    raw.sources[index] = src
            else:
                raw.sources[index] = (f"{prefix}{origin}", o_slot)
        if raw.id in flat.nodes:
            raise ComfyFormatError(name, f"two nodes have id {raw.id}")
        flat.nodes[raw.id] = raw
    # expand instances after all nodes of this level exist, so their inputs resolve
    for data in nodes:
        raw = flat.nodes[f"{prefix}{data['id']}"]
        if raw.type in defs:
            _expand_subgraph(raw, defs[raw.type], name, flat, defs, group_nodes, warnings, depth)
        elif raw.type.startswith(_GROUP_PREFIXES) and raw.type[9:] in group_nodes:
            _expand_group_node(raw, group_nodes[raw.type[9:]], name, flat, warnings)
    return outputs


def _expand_subgraph(raw: _Raw, sub: dict[str, Any], name: str, flat: _Flat, defs: dict[str, Any],
                     group_nodes: dict[str, Any], warnings: list[str], depth: int) -> None:
    """Replace a subgraph instance by its inner nodes, wired to what feeds and reads the instance."""
    del flat.nodes[raw.id]
    inner_inputs: dict[int, tuple[str, int] | None] = {}
    by_name = {inp.get("name"): i for i, inp in enumerate(raw.data.get("inputs") or []) if isinstance(inp, dict)}
    for slot, sub_input in enumerate(sub.get("inputs") or []):
        index = by_name.get(sub_input.get("name") if isinstance(sub_input, dict) else None, slot)
        inner_inputs[slot] = raw.sources.get(index)
    outputs = _flatten(sub, f"{raw.id}:", name, flat, defs, group_nodes, warnings, depth + 1, inner_inputs)
    for slot, src in outputs.items():
        flat.redirect[(raw.id, slot)] = src
    # promoted widgets: properties.proxyWidgets [[inner id, widget name], ...] with the instance's values
    proxies = (raw.data.get("properties") or {}).get("proxyWidgets")
    values = raw.data.get("widgets_values")
    if isinstance(proxies, list) and isinstance(values, list):
        for proxy, value in zip(proxies, values, strict=False):
            if isinstance(proxy, list) and len(proxy) == 2 and f"{raw.id}:{proxy[0]}" in flat.nodes:
                flat.nodes[f"{raw.id}:{proxy[0]}"].overrides[str(proxy[1])] = value
    _inherit(raw, [n for n in flat.nodes.values() if n.id.startswith(f"{raw.id}:")])


def _expand_group_node(raw: _Raw, group: dict[str, Any], name: str, flat: _Flat, warnings: list[str]) -> None:
    """Replace a legacy group node ("workflow>NAME") by its inner nodes, as ComfyUI's frontend wires them."""
    del flat.nodes[raw.id]
    inner = group.get("nodes") or []
    links = [lk for lk in group.get("links") or [] if isinstance(lk, list) and len(lk) >= 4]
    linked_to = {(lk[2], lk[3]): (lk[0], lk[1]) for lk in links if lk[0] is not None}
    linked_from = {(lk[0], lk[1]) for lk in links if lk[0] is not None}
    external = {(e[0], e[1]) for e in group.get("external") or [] if isinstance(e, list) and len(e) >= 2}
    created = []
    for index, data in enumerate(inner):
        node = _Raw(f"{raw.id}:{index}", {**data, "id": f"{raw.id}:{index}"})
        for slot in range(len(data.get("inputs") or [])):
            if (index, slot) in linked_to:
                src_index, src_slot = linked_to[(index, slot)]
                node.sources[slot] = (f"{raw.id}:{src_index}", src_slot)
        flat.nodes[node.id] = node
        created.append(node)
    # the instance's inputs: every free plain input, node by node, then every free converted widget
    outer_slot = 0
    for widget_pass in (False, True):
        for index, data in enumerate(inner):
            for slot, inp in enumerate(data.get("inputs") or []):
                if not isinstance(inp, dict) or bool(inp.get("widget")) != widget_pass or (index, slot) in linked_to:
                    continue
                src = raw.sources.get(outer_slot)
                if src is not None:
                    created[index].sources[slot] = src
                outer_slot += 1
    # the instance's outputs: every inner output not used only inside the group
    out_slot = 0
    for index, data in enumerate(inner):
        for slot, _ in enumerate(data.get("outputs") or []):
            if (index, slot) in linked_from and (index, slot) not in external:
                continue
            flat.redirect[(raw.id, out_slot)] = (f"{raw.id}:{index}", slot)
            out_slot += 1
    # the instance's widget values are the inner nodes' values, in order, when the counts agree
    values = raw.data.get("widgets_values")
    counts = [len(d.get("widgets_values") or []) if isinstance(d.get("widgets_values"), list) else 0 for d in inner]
    if isinstance(values, list) and values:
        if len(values) == sum(counts):
            at = 0
            for node, count in zip(created, counts, strict=True):
                node.data["widgets_values"] = values[at:at + count]
                at += count
        else:
            warnings.append(f"group node {raw.id} ({raw.type}): its {len(values)} widget values do not match "
                            f"its inner nodes' {sum(counts)}; the inner nodes keep their saved values")
    _inherit(raw, created)


def _inherit(raw: _Raw, inner: list[_Raw]) -> None:
    """Inner nodes of a muted / bypassed instance are muted / bypassed too."""
    mode = raw.data.get("mode", MODE_NORMAL)
    if mode in (MODE_MUTED, MODE_BYPASS):
        for node in inner:
            node.data["mode"] = mode


# --------------------------------------------------------------------------- UI form: nodes


@dataclass(frozen=True)
class _Value:
    value: Any


def _resolve(flat: _Flat, src: tuple[str, int], name: str, target: str) -> ComfyLink | _Value | None:
    """What an input fed from `src` really gets: a link to a real node, a primitive's value, or nothing."""
    seen: set[tuple[str, int]] = set()
    while True:
        if src in seen:
            raise ComfyFormatError(name, f"reroutes loop back on themselves before node {target}")
        seen.add(src)
        while src in flat.redirect:
            nxt = flat.redirect[src]
            if nxt is None:
                return None
            src = nxt
        node = flat.nodes.get(src[0])
        if node is None:
            raise ComfyFormatError(name, f"node {target} has a link from missing node {src[0]}")
        if node.type == "Reroute":
            if 0 not in node.sources:
                return None
            src = node.sources[0]
            continue
        if node.type == "PrimitiveNode":
            values = node.data.get("widgets_values")
            return _Value(values[0]) if isinstance(values, list) and values else None
        return ComfyLink(node.id, src[1])


def _widget_inputs(data: dict[str, Any]) -> list[str]:
    return [inp["widget"]["name"] for inp in data.get("inputs") or []
            if isinstance(inp, dict) and isinstance(inp.get("widget"), dict) and inp["widget"].get("name")]


def _align(node_id: str, class_type: str, values: Any, data: dict[str, Any], name: str,
           warnings: list[str]) -> dict[str, Any]:
    """Name a UI node's widget values by its class's widget order (see `app.comfy.widgets`)."""
    label = f"node {node_id} ({class_type})"
    if values is None:
        return {}
    if isinstance(values, dict):  # some custom nodes save their widgets by name
        return {k: v for k, v in values.items() if k not in W.UI_ONLY}
    if not isinstance(values, list):
        raise ComfyFormatError(name, f"{label}: widgets_values must be a list, not {_json_kind(values)}")
    known = class_type in W.WIDGETS
    names = list(W.WIDGETS[class_type]) if known else _widget_inputs(data)
    if not names and values:
        warnings.append(f"{label}: unknown node; its {len(values)} widget values are kept as widget_0..")
        return {f"widget_{i}": v for i, v in enumerate(values)}
    out: dict[str, Any] = {}
    i = 0
    for j, widget in enumerate(names):
        if i >= len(values):
            break
        if widget == W.CONTROL:
            if W.is_control_value(values[i]):
                out[W.CONTROL] = values[i]
                i += 1
            continue
        out[widget] = values[i]
        i += 1
        # custom nodes: ComfyUI adds a control value after INT widgets that ask for one
        if (not known and i < len(values) and isinstance(values[i], str) and W.is_control_value(values[i])
                and isinstance(out[widget], int) and not isinstance(out[widget], bool)
                and len(values) - i > len(names) - j - 1):
            out[W.CONTROL] = values[i]
            i += 1
    given = sum(1 for k in out if k != W.CONTROL and k not in W.UI_ONLY)
    if known and given < W.required_count(class_type):
        expected = W.required_count(class_type)
        raise ComfyFormatError(name, f"{label}: {len(values)} widget values, but it needs {expected} "
                                     f"({', '.join(n for n in names if n != W.CONTROL and n not in W.UI_ONLY)})")
    if not known and i < len(names) and len(values) < len(names):
        warnings.append(f"{label}: {len(values)} widget values for {len(names)} widget inputs; the rest are unset")
    if i < len(values):
        extra = values[i:]
        warnings.append(f"{label}: {len(extra)} widget value(s) more than its widgets; kept as widget_{i}..")
        out.update({f"widget_{i + k}": v for k, v in enumerate(extra)})
    for key in W.UI_ONLY:
        out.pop(key, None)
    return out


def _read_ui(graph: dict[str, Any], name: str) -> ComfyWorkflow:
    wf = ComfyWorkflow()
    definitions = graph.get("definitions") if isinstance(graph.get("definitions"), dict) else {}
    defs = {s["id"]: s for s in definitions.get("subgraphs") or [] if isinstance(s, dict) and "id" in s}
    extra = graph.get("extra") if isinstance(graph.get("extra"), dict) else {}
    group_nodes = extra.get("groupNodes") if isinstance(extra.get("groupNodes"), dict) else {}
    flat = _Flat()
    _flatten(graph, "", name, flat, defs, group_nodes, wf.warnings, 0)

    for raw in flat.nodes.values():
        data, class_type = raw.data, raw.type
        if not class_type:
            raise ComfyFormatError(name, f"node {raw.id} has no type")
        if class_type in _NOTE_TYPES:
            values = data.get("widgets_values") or [""]
            wf.notes.append(ComfyNote(str(values[0]) if values else "", _pair(data.get("pos")),
                                      _pair(data.get("size")), str(data.get("title") or "")))
            continue
        if class_type in ("Reroute", "PrimitiveNode"):
            continue
        inputs = _align(raw.id, class_type, data.get("widgets_values"), data, name, wf.warnings)
        inputs.update(raw.overrides)
        for index, inp in enumerate(data.get("inputs") or []):
            if index not in raw.sources or not isinstance(inp, dict):
                continue
            widget = inp.get("widget")
            key = widget.get("name") if isinstance(widget, dict) and widget.get("name") else inp.get("name")
            resolved = _resolve(flat, raw.sources[index], name, raw.id)
            if isinstance(resolved, ComfyLink):
                inputs[str(key)] = resolved
            elif isinstance(resolved, _Value):
                inputs[str(key)] = resolved.value
        mode = data.get("mode", MODE_NORMAL)
        if mode not in (MODE_NORMAL, MODE_MUTED, MODE_BYPASS):
            wf.warnings.append(f"node {raw.id} ({class_type}): mode {mode} is read as normal")
            mode = MODE_NORMAL
        props = data.get("properties") if isinstance(data.get("properties"), dict) else {}
        pack = props.get("cnr_id") or props.get("aux_id")
        outputs = [(str(o.get("name", "")), str(o.get("type", ""))) for o in data.get("outputs") or []
                   if isinstance(o, dict)]
        wf.nodes[raw.id] = ComfyNode(
            raw.id, class_type, inputs, title=str(data.get("title") or ""), pos=_pair(data.get("pos")),
            size=_pair(data.get("size")), color=data.get("color"), bgcolor=data.get("bgcolor"), mode=mode,
            pack=str(pack) if pack else None, outputs=outputs)

    for group in graph.get("groups") or []:
        if not isinstance(group, dict):
            continue
        box = group.get("bounding") or [0, 0, 0, 0]
        try:
            bounding = tuple(float(v) for v in box[:4])
        except (TypeError, ValueError):
            bounding = (0.0, 0.0, 0.0, 0.0)
        if len(bounding) == 4:
            wf.groups.append(ComfyGroup(str(group.get("title") or ""), bounding, group.get("color")))
    return wf


# --------------------------------------------------------------------------- images


def png_text_chunks(data: bytes, name: str = "<png>") -> dict[str, str]:
    """The tEXt / zTXt / iTXt chunks of a PNG, read by hand so a huge compressed chunk cannot explode."""
    chunks: dict[str, str] = {}
    at = len(_PNG_SIGNATURE)
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + length]
        if len(body) < length:
            raise ComfyFormatError(name, "truncated PNG")
        at += 12 + length
        if kind == b"IEND":
            break
        if kind not in (b"tEXt", b"zTXt", b"iTXt") or b"\0" not in body:
            continue
        key_bytes, rest = body.split(b"\0", 1)
        key = key_bytes.decode("latin-1")
        try:
            if kind == b"tEXt":
                chunks[key] = rest.decode("latin-1")
            elif kind == b"zTXt":
                chunks[key] = _inflate(rest[1:], name).decode("latin-1")
            else:
                compressed, rest = rest[0], rest[2:]
                _lang, _translated, text = rest.split(b"\0", 2)
                chunks[key] = (_inflate(text, name) if compressed else text).decode("utf-8")
        except (ValueError, zlib.error):
            raise ComfyFormatError(name, f"PNG text chunk {key!r} is damaged") from None
    return chunks


def _inflate(data: bytes, name: str) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_BYTES)
    if inflater.unconsumed_tail:
        raise ComfyFormatError(name, f"a compressed PNG text chunk unpacks to more than {MAX_BYTES // 2**20} MB")
    return out


def _from_chunks(chunks: dict[str, str], name: str, kind: str) -> ComfyWorkflow:
    """Prefer the UI workflow (it has positions, groups, notes), then the API prompt, then A1111 text."""
    for key in ("workflow", "prompt"):
        if key in chunks:
            text = chunks[key]
            try:
                data = _parse_json(text, name)
            except ComfyFormatError as exc:
                reason = str(exc).split(": ", 1)[1]
                raise ComfyFormatError(name, f"the {kind.upper()}'s {key!r} metadata is not JSON ({reason})") from None
            if key == "workflow" and not (isinstance(data, dict) and isinstance(data.get("nodes"), list)):
                if "prompt" in chunks:
                    continue
            return read_json(data, name=name, source=f"{kind}:")
    if "parameters" in chunks:
        wf = _read_infotext(chunks["parameters"], name)
        wf.source = f"{kind}:a1111"
        return wf
    raise ComfyFormatError(name, f"the {kind.upper()} carries no ComfyUI workflow or A1111 parameters")


def _read_png(data: bytes, name: str) -> ComfyWorkflow:
    return _from_chunks(png_text_chunks(data, name), name, "png")


def _read_webp(data: bytes, name: str) -> ComfyWorkflow:
    return _read_exif_image(data, name, "webp")


def _read_exif_image(data: bytes, name: str, kind: str) -> ComfyWorkflow:
    """ComfyUI's WebP EXIF ("prompt:{...}" in 0x0110, "workflow:{...}" in 0x010F) or A1111's UserComment."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            exif = image.getexif()
            chunks: dict[str, str] = {}
            for tag in (0x0110, 0x010F, 0x010E, 0x010D):
                value = exif.get(tag)
                if isinstance(value, bytes):
                    value = value.decode("utf-8", "replace")
                if isinstance(value, str) and ":" in value:
                    key, text = value.split(":", 1)
                    if key in ("prompt", "workflow"):
                        chunks.setdefault(key, text.rstrip("\0"))
            comment = exif.get_ifd(0x8769).get(0x9286)  # A1111 writes parameters to UserComment
            if comment and "parameters" not in chunks:
                chunks["parameters"] = _user_comment(comment)
            if "parameters" not in chunks and isinstance(image.info.get("parameters"), str):
                chunks["parameters"] = image.info["parameters"]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ComfyFormatError(name, f"cannot read the {kind.upper()} ({exc})") from None
    return _from_chunks(chunks, name, kind)


def _user_comment(value: Any) -> str:
    """EXIF UserComment: an 8-byte charset header then the text (UNICODE is UTF-16)."""
    if isinstance(value, str):
        return value
    head, body = bytes(value[:8]), bytes(value[8:])
    if head.startswith(b"UNICODE"):
        big = body[:2] != b"\xff\xfe" and (len(body) < 2 or body[0] == 0)
        return body.decode("utf-16-be" if big else "utf-16-le", "replace").lstrip("\ufeff").rstrip("\0")
    return body.decode("utf-8", "replace").rstrip("\0")


def _read_infotext(text: str, name: str) -> ComfyWorkflow:
    try:
        return infotext_to_workflow(text)
    except InfotextError as exc:
        raise ComfyFormatError(name, f"not A1111 infotext: {exc}") from None
