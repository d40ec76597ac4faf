"""Node declarations: the `@node` decorator, port and node specs derived from a typed function.

A node is declared once, as a typed function. Its annotations give the ports, its defaults the
widget values, `Annotated` markers the ranges, choices and editors, its docstring the docs. The
registry checks each declaration when it is registered (a mismatch is an error) and resolves
legacy ids so renamed nodes keep old workflow files loading.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import logging
import math
import pathlib
import re
import sys
import threading
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nodes import types as T
from nodes.schedule import SCHEDULABLE_KINDS, Schedule, is_schedule_json

log = logging.getLogger(__name__)

REQUIRED = inspect.Parameter.empty

#: Kinds that only arrive over links (no widget); everything else is a parameter with a widget.
LINK_KINDS = {"Image", "Mask", "Latent", "Model", "Video", "Any"}

_CLASS_KINDS: dict[type, str] = {
    int: "int", float: "float", str: "str", bool: "bool", pathlib.Path: "Path",
    T.Latent: "Latent", T.Model: "Model", T.Video: "Video", T.Frames: "Video", object: "Any",
}

#: (source kind, destination kind) pairs that connect besides identical kinds.
_COMPATIBLE = {
    ("int", "float"), ("int", "Seed"), ("Seed", "int"), ("Seed", "float"),
    ("Video", "Image"),  # an image node fed a Video maps over its frames lazily
    ("Image", "Video"),  # an Image batch plays as frames
    ("str", "Path"), ("Path", "str"),
}

_ID_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")


class NodeDeclarationError(TypeError):
    """A node's declaration is inconsistent (bad annotation, default out of range, ...)."""


def kind_name(kind: str) -> str:
    """A port kind as users read it: `BlendMode`, not `enum:nodes.image.blend.BlendMode`."""
    return kind.rsplit(".", 1)[-1] if kind.startswith("enum:") else kind


def compatible(src_kind: str, dst_kind: str) -> bool:
    """Whether an output of `src_kind` may feed an input of `dst_kind`."""
    return src_kind == dst_kind or dst_kind == "Any" or (src_kind, dst_kind) in _COMPATIBLE


@dataclass
class PortSpec:
    """One input or output port, with everything a widget, a validator or a doc page needs."""

    name: str
    kind: str
    default: Any = REQUIRED
    optional: bool = False
    range: T.Range | None = None
    enum: type[enum.Enum] | None = None
    multiline: bool = False
    file_filter: T.FileFilter | None = None
    choices: T.Choices | None = None
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED and not self.optional

    @property
    def kind_name(self) -> str:
        return kind_name(self.kind)

    @property
    def is_param(self) -> bool:
        """Scalar ports get a widget and a value in the workflow; they may also be linked."""
        return self.kind not in LINK_KINDS

    def coerce(self, value: Any) -> Any:
        """Turn a JSON value (or a CLI string) into this port's Python value, or raise ValueError."""
        if value is None:
            if self.optional or self.default is None:
                return None
            raise ValueError(f"'{self.name}' needs a value")
        k = self.kind
        if k in SCHEDULABLE_KINDS and (isinstance(value, Schedule) or is_schedule_json(value)) \
                and self.enum is None:
            return self._coerce_schedule(value)
        try:
            if self.enum is not None:
                if isinstance(value, self.enum):
                    return value
                for member in self.enum:
                    if value in (member.value, member.name) or str(value).lower() == str(member.value).lower():
                        return member
                raise ValueError
            if k == "bool":
                return parse_bool(value)
            if k in ("int", "Seed"):
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                v = int(value)
            elif k == "float":
                if isinstance(value, bool):
                    raise ValueError
                v = float(value)
                if not math.isfinite(v):
                    raise ValueError
            elif k == "str":
                if not isinstance(value, (str, int, float)):
                    raise ValueError
                return str(value)
            elif k == "Path":
                if not isinstance(value, (str, pathlib.PurePath)) or "\x00" in str(value):
                    raise ValueError
                try:
                    return pathlib.Path(value).expanduser()
                except RuntimeError:  # ~name of a user this machine does not have
                    return pathlib.Path(value)
            else:
                return value
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"'{self.name}' expects {self.describe_kind()}, got {value!r}") from None
        r = self.range
        if r is not None and ((r.min is not None and v < r.min) or (r.max is not None and v > r.max)):
            raise ValueError(f"'{self.name}' = {v} is out of range [{_fmt(r.min)}, {_fmt(r.max)}]")
        return v

    def _coerce_schedule(self, value: Any) -> Schedule:
        """A keyframe schedule for this port; constant keyframes must be in the port's range."""
        sched = value if isinstance(value, Schedule) else Schedule.from_json(value, self.kind, "schedule")
        if sched.kind != self.kind and {sched.kind, self.kind} != {"int", "Seed"}:
            sched = Schedule.parse(sched.text, self.kind, sched.interp, "schedule")
        r = self.range
        if r is not None:
            for frame, v in sched.constants():
                if (r.min is not None and v < r.min) or (r.max is not None and v > r.max):
                    raise ValueError(f"'{self.name}' keyframe {frame} = {v:g} is out of range "
                                     f"[{_fmt(r.min)}, {_fmt(r.max)}]")
        return sched

    def to_json(self, value: Any) -> Any:
        """The JSON form of a parameter value (enums by value, paths as strings, schedules as dicts)."""
        if isinstance(value, Schedule):
            return value.to_json()
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, pathlib.PurePath):
            return str(value)
        return value

    def describe_kind(self) -> str:
        if self.enum is not None:
            return "one of " + ", ".join(str(m.value) for m in self.enum)
        return {"int": "an integer", "Seed": "an integer seed", "float": "a number",
                "bool": "true or false", "str": "text", "Path": "a file path"}.get(self.kind, self.kind)

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (for `imagebash nodes --json`, docs and UIs)."""
        d: dict[str, Any] = {"name": self.name, "type": self.kind}
        if self.default is not REQUIRED:
            d["default"] = self.to_json(self.default)
        if self.optional:
            d["optional"] = True
        if self.range is not None:
            d["range"] = {k: v for k, v in (("min", self.range.min), ("max", self.range.max),
                                             ("step", self.range.step)) if v is not None}
        if self.enum is not None:
            d["choices"] = [m.value for m in self.enum]
        if self.multiline:
            d["multiline"] = True
        if self.file_filter is not None:
            d["file"] = {"patterns": list(self.file_filter.patterns), "folder": self.file_filter.folder}
            if self.file_filter.save:
                d["file"]["save"] = True
        if self.choices is not None:
            d["suggestions"] = True  # ask the engine (Registry.choices) for the current list
            if self.choices.model:
                d["model"] = self.choices.model
        if self.help:
            d["help"] = self.help
        return d


def parse_bool(value: Any) -> bool:
    """A bool from JSON, TOML or a command line ('true', 'off', 1 ...); raise ValueError otherwise."""
    if isinstance(value, str):
        if value.lower() in ("true", "1", "yes", "on"):
            return True
        if value.lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(value)
    return bool(value)


def _fmt(x: float | None) -> str:
    return "-inf" if x is None else f"{x:g}"


@dataclass
class NodeSpec:
    """Everything derived from one declaration."""

    id: str
    version: int
    title: str
    category: str
    description: str
    fn: Callable[..., Any]
    inputs: list[PortSpec]
    outputs: list[PortSpec]
    device: str = "cpu"  # "cpu" or "gpu": gpu nodes serialise on the engine's device lock
    io: bool = False  # network/disk bound: always runs on the pool
    cacheable: bool = True
    output: bool = False  # a sink the engine runs by default (Save, Preview)
    legacy_ids: tuple[str, ...] = ()
    wants_ctx: bool = False
    multi_output: bool = False  # fn returns a NamedTuple
    dynamic_inputs: Callable[[dict[str, Any]], list[PortSpec]] | None = None
    migrate: Callable[[dict[str, Any], int], dict[str, Any]] | None = None
    cache_key: Callable[[dict[str, Any]], str] | None = None
    source_module: str = ""
    #: A temporal node's neighbour frames; its `Frames` inputs get a FrameWindow per output frame.
    window: T.Window | None = None
    window_ports: tuple[str, ...] = ()
    #: The node handles keyframe schedules itself (gets Schedule objects, not per-frame values).
    schedules: bool = False
    _by_name: dict[str, PortSpec] = field(default_factory=dict, repr=False)
    _out_by_name: dict[str, PortSpec] = field(default_factory=dict, repr=False)
    #: Output port name -> kind (what the engine's wire types are chosen by).
    output_kinds: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {p.name: p for p in self.inputs}
        self._out_by_name = {p.name: p for p in self.outputs}
        self.output_kinds = {p.name: p.kind for p in self.outputs}

    def inputs_for(self, params: dict[str, Any] | None = None) -> list[PortSpec]:
        """Static inputs plus those a dynamic node derives from its parameters (a schema)."""
        if self.dynamic_inputs is None:
            return self.inputs
        extra = self.dynamic_inputs(params or {})
        names = {p.name for p in self.inputs}
        return self.inputs + [p for p in extra if p.name not in names]

    def input(self, name: str, params: dict[str, Any] | None = None) -> PortSpec | None:
        p = self._by_name.get(name)
        if p is None and self.dynamic_inputs is not None:
            p = next((q for q in self.inputs_for(params) if q.name == name), None)
        return p

    def output_port(self, name: str) -> PortSpec | None:
        return self._out_by_name.get(name)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id, "version": self.version, "title": self.title, "category": self.category,
            "description": self.description, "device": self.device, "io": self.io,
            "cacheable": self.cacheable, "output": self.output, "legacy_ids": list(self.legacy_ids),
            "inputs": [p.describe() for p in self.inputs],
            "outputs": [p.describe() for p in self.outputs],
            "dynamic_inputs": self.dynamic_inputs is not None,
            **({"window": {"before": self.window.before, "after": self.window.after,
                           "previous": self.window.previous}} if self.window else {}),
        }


def port_from_annotation(name: str, annotation: Any, default: Any = REQUIRED,
                         help_text: str = "") -> PortSpec:
    """Build a PortSpec from a type annotation; raise NodeDeclarationError if it is unknown."""
    optional = False
    metas: list[Any] = []
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            metas = list(annotation.__metadata__) + metas
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = typing.get_args(annotation)
            rest = [a for a in args if a is not type(None)]
            if len(rest) != 1 or len(args) != 2:
                raise NodeDeclarationError(f"port '{name}': only `X | None` unions are allowed")
            optional = True
            annotation = rest[0]
        else:
            break
    kind = None
    enum_cls = None
    for m in metas:
        if isinstance(m, T.Port):
            kind = m.kind
    if kind is None:
        if inspect.isclass(annotation) and issubclass(annotation, enum.Enum):
            enum_cls = annotation
            kind = f"enum:{annotation.__module__}.{annotation.__qualname__}"
        elif annotation in _CLASS_KINDS:
            kind = _CLASS_KINDS[annotation]
        elif annotation is Any:
            kind = "Any"
        else:
            raise NodeDeclarationError(f"port '{name}': unsupported annotation {annotation!r}")
    spec = PortSpec(name=name, kind=kind, default=default, optional=optional, enum=enum_cls,
                    help=help_text)
    for m in metas:
        if isinstance(m, T.Range):
            if kind not in ("int", "float", "Seed"):
                raise NodeDeclarationError(f"port '{name}': Range on a {kind} port")
            spec.range = m
        elif isinstance(m, T.Multiline):
            spec.multiline = True
        elif isinstance(m, T.FileFilter):
            spec.file_filter = m
        elif isinstance(m, T.Choices):
            spec.choices = m
        elif isinstance(m, T.Help):
            spec.help = m.text
    if default is None:
        spec.optional = True
    return spec


def _strip_annotation(annotation: Any) -> Any:
    """The class under `Annotated[...]` and `X | None`."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        else:
            return annotation


def _docstring_parts(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The description (text before `Args:`) and per-argument help from a Google-style docstring."""
    doc = inspect.getdoc(fn) or ""
    head, _, args = doc.partition("\nArgs:\n")
    helps: dict[str, str] = {}
    current = None
    for line in args.splitlines():
        m = re.match(r"^\s{2,}(\w+)(?: \([^)]*\))?:\s*(.*)$", line)
        if m:
            current = m.group(1)
            helps[current] = m.group(2).strip()
        elif current and line.strip():
            helps[current] += " " + line.strip()
        elif not line.strip():
            current = None
    return head.strip(), helps


class Registry:
    """All known node types by id (and legacy id), and the services their packs declare.

    A registry is an instance: each one loads the built-in packs and the entry-point packs on
    first use (unless `load_packs=False`, for a registry of hand-picked nodes), so two engines,
    two servers or two tests never share or patch one. Declaring a node with `@node` records it
    with its module; loading a pack copies the declarations of that pack's modules in.
    """

    def __init__(self, load_packs: bool = True) -> None:
        self._specs: dict[str, NodeSpec] = {}
        self._legacy: dict[str, str] = {}
        #: Long-lived managers packs need (name -> factory(engine)), from their `SERVICES` dicts.
        self.services: dict[str, Callable[[Any], Any]] = {}
        #: Nodes a pack knowingly leaves out (title -> why), from their `LEFT_OUT` dicts, so the node
        #: list can say so instead of staying silent.
        self.left_out: dict[str, str] = {}
        self.load_errors: list[str] = []
        self._loaded = not load_packs
        self._load_lock = threading.Lock()

    def register(self, spec: NodeSpec) -> NodeSpec:
        if spec.id in self._specs and self._specs[spec.id].fn is not spec.fn:
            old = self._specs[spec.id]
            if old.source_module != spec.source_module:
                raise NodeDeclarationError(
                    f"node id '{spec.id}' is declared twice ({old.source_module} and {spec.source_module})")
        self._specs[spec.id] = spec
        for legacy in spec.legacy_ids:
            self._legacy[legacy] = spec.id
        return spec

    def get(self, type_id: str) -> NodeSpec | None:
        self.ensure_loaded()
        spec = self._specs.get(type_id)
        if spec is None and type_id in self._legacy:
            spec = self._specs.get(self._legacy[type_id])
        return spec

    def __contains__(self, type_id: str) -> bool:
        return self.get(type_id) is not None

    def all(self) -> list[NodeSpec]:
        self.ensure_loaded()
        return sorted(self._specs.values(), key=lambda s: (s.category, s.title))

    def choices(self, type_id: str, port: str) -> list[str]:
        """The suggestions behind a `Choices` port (model and LoRA lists), computed now; [] for a
        port without them. A remote catalogue answers this from its server."""
        spec = self.get(type_id)
        p = spec.input(port) if spec is not None else None
        if p is None or p.choices is None:
            return []
        return [str(c) for c in p.choices.provider()]

    def ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._load_lock:
            if not self._loaded:
                load_node_packs(self)
                self._loaded = True

    def add_module(self, module: types.ModuleType) -> None:
        """Register what a pack module (and its submodules) declared: `@node`s, `SERVICES`, `LEFT_OUT`."""
        name = module.__name__
        for mod_name, specs in list(_DECLARED.items()):
            if mod_name == name or mod_name.startswith(name + "."):
                for spec in specs:
                    self.register(spec)
        for mod_name, mod in list(sys.modules.items()):
            if (mod_name == name or mod_name.startswith(name + ".")) and mod is not None:
                self.services.update(getattr(mod, "SERVICES", None) or {})
                self.left_out.update(getattr(mod, "LEFT_OUT", None) or {})


#: Declarations by module: `@node` without a registry records here; `Registry.add_module` reads it.
_DECLARED: dict[str, list[NodeSpec]] = {}
_default: Registry | None = None
_default_lock = threading.Lock()


def default_registry() -> Registry:
    """The app's registry (the editor, the CLI): one instance made on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Registry()
        return _default


def node(node_id: str, *, version: int = 1, title: str | None = None, category: str = "misc",
         device: str = "cpu", io: bool = False, cacheable: bool = True, output: bool = False,
         legacy_ids: tuple[str, ...] = (),
         dynamic_inputs: Callable[[dict[str, Any]], list[PortSpec]] | None = None,
         migrate: Callable[[dict[str, Any], int], dict[str, Any]] | None = None,
         cache_key: Callable[[dict[str, Any]], str] | None = None,
         window: T.Window | None = None, schedules: bool = False,
         registry: Registry | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a node: decorate a typed function; its signature is the single source of truth.

    Without `registry` the node is recorded with its module, and every registry that loads that
    module's pack gets it; with one, it goes into that registry only (tests, hand-built sets).
    `cache_key(params)` adds to the node's cache signature what its parameters do not show, such
    as the content of a file named by a str parameter (a model looked up in the models folder).
    `window` makes a temporal node: its `Frames` inputs arrive as a FrameWindow around each
    output frame and its Image outputs become lazy Videos; `schedules=True` hands keyframe
    schedules to the node instead of evaluating them per frame.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        spec = build_spec(fn, node_id, version=version, title=title, category=category,
                          device=device, io=io, cacheable=cacheable, output=output,
                          legacy_ids=legacy_ids, dynamic_inputs=dynamic_inputs, migrate=migrate,
                          cache_key=cache_key, window=window, schedules=schedules)
        if registry is not None:
            registry.register(spec)
        else:
            _DECLARED.setdefault(fn.__module__, []).append(spec)
        fn.__node_spec__ = spec  # type: ignore[attr-defined]
        return fn

    return decorate


def build_spec(fn: Callable[..., Any], node_id: str, **kw: Any) -> NodeSpec:
    """Derive and check a NodeSpec from a typed function (raises NodeDeclarationError)."""
    where = f"node '{node_id}' ({fn.__module__}.{fn.__qualname__})"
    if not _ID_RE.match(node_id):
        raise NodeDeclarationError(f"{where}: id must be namespaced like 'pack.family.name'")
    if kw["device"] not in ("cpu", "gpu"):
        raise NodeDeclarationError(f"{where}: device must be 'cpu' or 'gpu'")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise NodeDeclarationError(f"{where}: cannot resolve annotations: {exc}") from exc
    description, helps = _docstring_parts(fn)
    if not description:
        raise NodeDeclarationError(f"{where}: needs a docstring (it becomes the node's docs)")
    inputs: list[PortSpec] = []
    window_ports: list[str] = []
    wants_ctx = False
    has_var_kw = False
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            has_var_kw = True
            continue
        if p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY):
            raise NodeDeclarationError(f"{where}: '{p.name}' must be a named parameter")
        ann = hints.get(p.name, REQUIRED)
        if p.name == "ctx" or ann is T.Context:
            wants_ctx = True
            continue
        if ann is REQUIRED:
            raise NodeDeclarationError(f"{where}: input '{p.name}' has no type annotation")
        if _strip_annotation(ann) is T.Frames:
            window_ports.append(p.name)
        try:
            spec = port_from_annotation(p.name, ann, p.default, helps.get(p.name, ""))
        except NodeDeclarationError as exc:
            raise NodeDeclarationError(f"{where}: {exc}") from None
        if spec.default is not REQUIRED and spec.default is not None:
            try:
                spec.coerce(spec.default)
            except ValueError as exc:
                raise NodeDeclarationError(f"{where}: default of {exc}") from None
            if spec.enum is not None and not isinstance(spec.default, spec.enum):
                raise NodeDeclarationError(f"{where}: default of '{p.name}' is not a {spec.enum.__name__}")
        inputs.append(spec)
    if kw["dynamic_inputs"] is not None and not has_var_kw:
        raise NodeDeclarationError(f"{where}: dynamic inputs need a **kwargs parameter")
    ret = hints.get("return", REQUIRED)
    if ret is REQUIRED:
        raise NodeDeclarationError(f"{where}: needs a return annotation (its outputs)")
    outputs: list[PortSpec] = []
    multi = False
    if ret is None or ret is type(None):
        pass
    elif inspect.isclass(ret) and issubclass(ret, tuple) and hasattr(ret, "_fields"):
        multi = True
        fhints = typing.get_type_hints(ret, include_extras=True)
        for fname in ret._fields:
            if fname not in fhints:
                raise NodeDeclarationError(f"{where}: output '{fname}' has no type annotation")
            outputs.append(port_from_annotation(fname, fhints[fname]))
    else:
        try:
            out = port_from_annotation("out", ret)
        except NodeDeclarationError as exc:
            raise NodeDeclarationError(f"{where}: return {exc}") from None
        out.name = out.kind.split(".")[-1].lower() if not out.kind.startswith("enum:") else "value"
        outputs.append(out)
    if kw["output"] is False and not outputs:
        raise NodeDeclarationError(f"{where}: a node without outputs must be declared output=True")
    window = kw.get("window")
    if window is not None:
        if not window_ports:
            raise NodeDeclarationError(f"{where}: a windowed node needs a `Frames` input")
        if kw["output"] or kw["io"] or any(o.kind not in ("Image", "Mask") for o in outputs) or not outputs:
            raise NodeDeclarationError(f"{where}: a windowed node makes frames: Image/Mask outputs only, "
                                       "and it cannot be an output or io node")
        if min(window.before, window.after) < 0:
            raise NodeDeclarationError(f"{where}: window offsets must be >= 0")
        for o in outputs:
            o.kind = "Video"  # frame by frame inside, a lazy Video on the wire
        if not multi:
            outputs[0].name = "video"
    elif window_ports:
        raise NodeDeclarationError(f"{where}: `Frames` inputs need @node(window=Window(...))")
    return NodeSpec(
        id=node_id, version=kw["version"], title=kw["title"] or fn.__name__.replace("_", " ").title(),
        category=kw["category"], description=description, fn=fn, inputs=inputs, outputs=outputs,
        device=kw["device"], io=kw["io"], cacheable=kw["cacheable"], output=kw["output"],
        legacy_ids=tuple(kw["legacy_ids"]), wants_ctx=wants_ctx, multi_output=multi,
        dynamic_inputs=kw["dynamic_inputs"], migrate=kw["migrate"], cache_key=kw.get("cache_key"),
        source_module=fn.__module__, window=window, window_ports=tuple(window_ports),
        schedules=bool(kw.get("schedules")))


#: The built-in node modules; each imports torch lazily so listing nodes stays fast.
BUILTIN_MODULES = (
    "nodes.image",
    "nodes.video",
    "nodes.diffusion",
    "nodes.guidance",
    "nodes.comfy",
    "nodes.replicate",
    "nodes.training",
    "nodes.seeds",
)

ENTRY_POINT_GROUP = "imagebash.nodes"


def load_node_packs(registry: Registry) -> None:
    """Import the built-in node modules, then third-party packs from the entry-point group.

    A pack that fails to import is logged and recorded in `registry.load_errors`, not fatal.
    An entry point names a module (what it and its submodules declare is registered) or a
    callable that is given the registry.
    """
    for mod in BUILTIN_MODULES:
        try:
            registry.add_module(importlib.import_module(mod))
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                registry.load_errors.append(f"{mod}: {exc}")
                log.warning("node module %s failed to load: %s", mod, exc)
        except Exception as exc:  # noqa: BLE001 - a broken module must not take the app down
            registry.load_errors.append(f"{mod}: {exc}")
            log.warning("node module %s failed to load: %s", mod, exc)
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if inspect.ismodule(obj):
                registry.add_module(obj)
            elif callable(obj):
                obj(registry)
        except Exception as exc:  # noqa: BLE001 - third-party code; skip it and say why
            registry.load_errors.append(f"{ep.name} ({ep.value}): {exc}")
            log.warning("node pack %s failed to load: %s", ep.name, exc)
