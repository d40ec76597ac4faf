"""The normalised ComfyUI workflow the readers produce and the mapper consumes.

Whatever the source (API JSON, UI JSON, a PNG, a WebP, A1111 infotext), a workflow becomes the
API form ComfyUI's server executes, node id -> class and named inputs (a value, or a link to
another node's output by index), plus what only the UI form has (titles, positions, colours,
groups, notes, muted/bypassed modes), so nothing the user made is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: litegraph node modes: 0 always, 2 never (muted), 4 bypass
MODE_NORMAL, MODE_MUTED, MODE_BYPASS = 0, 2, 4


@dataclass(frozen=True)
class ComfyLink:
    """An input fed by another node's output (`node` id, output index `slot`)."""

    node: str
    slot: int


@dataclass
class ComfyNode:
    """One ComfyUI node in API form: its class and inputs (widget values and links by input name)."""

    id: str
    class_type: str
    inputs: dict[str, Any] = field(default_factory=dict)  # name -> value | ComfyLink
    title: str = ""
    pos: tuple[float, float] | None = None
    size: tuple[float, float] | None = None
    color: str | None = None
    bgcolor: str | None = None
    mode: int = MODE_NORMAL
    #: the custom node pack it comes from, when the file says (UI "properties": {"cnr_id"/"aux_id"})
    pack: str | None = None
    #: output names/types when the UI file lists them (placeholders keep their ports)
    outputs: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class ComfyGroup:
    title: str
    bounding: tuple[float, float, float, float]  # x, y, w, h
    color: str | None = None


@dataclass
class ComfyNote:
    text: str
    pos: tuple[float, float] | None = None
    size: tuple[float, float] | None = None
    title: str = ""


@dataclass
class ComfyWorkflow:
    """A workflow in API form with the UI extras; `source` says what it was read from."""

    nodes: dict[str, ComfyNode] = field(default_factory=dict)
    groups: list[ComfyGroup] = field(default_factory=list)
    notes: list[ComfyNote] = field(default_factory=list)
    source: str = ""  # "api", "ui", "png:api", "png:ui", "webp:ui", "a1111", ...
    warnings: list[str] = field(default_factory=list)  # what the reader had to guess or drop, one line each
