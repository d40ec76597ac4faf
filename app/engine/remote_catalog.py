"""A remote engine's node catalogue as a Registry: the server's `GET /nodes` read back into specs.

The editor asks a registry for everything it shows (ports, widgets, defaults, ranges, enum
choices, docs) and for model lists (`choices`), so a catalogue built from the server's
descriptions makes a remote tab look and validate exactly like a local one, with the server's
own model lists in the dropdowns. The node functions themselves run on the server only; the
specs here carry a function that says so if anything tries to call it locally. Dynamic ports
(a Replicate model's schema) are read with the local declaration of the same node when there is
one: the schema is the online model's, the same from either machine.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Any

from nodes import types as T
from nodes.registry import REQUIRED, NodeSpec, PortSpec, Registry, default_registry

#: Model lists are asked of the server at most this often per port (dropdowns open often).
CHOICES_TTL_S = 5.0


def _enum_for(kind: str, values: list[Any], cache: dict[str, type[enum.Enum]]) -> type[enum.Enum]:
    key = f"{kind}|{values!r}"
    if key not in cache:
        name = kind.rsplit(".", 1)[-1] or "Choice"
        cache[key] = enum.Enum(name, [(f"v{i}", v) for i, v in enumerate(values)], type=type(values[0]))
    return cache[key]


def port_from_description(d: dict[str, Any], enums: dict[str, type[enum.Enum]]) -> PortSpec:
    """A PortSpec from `PortSpec.describe()`'s JSON (the inverse of describe, without providers)."""
    kind = str(d["type"])
    enum_cls = _enum_for(kind, list(d["choices"]), enums) if d.get("choices") else None
    default: Any = d["default"] if "default" in d else REQUIRED
    if enum_cls is not None and default is not REQUIRED and default is not None:
        default = enum_cls(default)
    rng = d.get("range")
    f = d.get("file")
    return PortSpec(
        name=str(d["name"]), kind=kind, default=default, optional=bool(d.get("optional", False)),
        range=T.Range(rng.get("min"), rng.get("max"), rng.get("step")) if rng else None, enum=enum_cls,
        multiline=bool(d.get("multiline", False)),
        file_filter=T.FileFilter(tuple(f.get("patterns", ())), bool(f.get("folder")), bool(f.get("save")))
        if f else None,
        choices=T.Choices(lambda: [], d.get("model")) if d.get("suggestions") else None,
        help=str(d.get("help", "")))


def _runs_remotely(type_id: str, url: str) -> Callable[..., Any]:
    def fn(**_kwargs: Any) -> Any:
        raise RuntimeError(f"{type_id} runs on the engine at {url}, not in this process")

    return fn


class RemoteRegistry(Registry):
    """The server's node catalogue (see the module docstring); `fetch_choices(type_id, port)`
    asks the server for a port's suggestions."""

    def __init__(self, descriptions: list[dict[str, Any]], url: str,
                 fetch_choices: Callable[[str, str], list[str]], local: Registry | None = None) -> None:
        super().__init__(load_packs=False)
        self.url = url
        self._fetch_choices = fetch_choices
        self._choices: dict[tuple[str, str], tuple[float, list[str]]] = {}
        local = local if local is not None else default_registry()
        enums: dict[str, type[enum.Enum]] = {}
        for d in descriptions:
            mirror = local.get(str(d["id"]))
            spec = NodeSpec(
                id=str(d["id"]), version=int(d.get("version", 1)), title=str(d.get("title", d["id"])),
                category=str(d.get("category", "misc")), description=str(d.get("description", "")),
                fn=_runs_remotely(str(d["id"]), url),
                inputs=[port_from_description(p, enums) for p in d.get("inputs", [])],
                outputs=[port_from_description(p, enums) for p in d.get("outputs", [])],
                device=str(d.get("device", "cpu")), io=bool(d.get("io", False)),
                cacheable=bool(d.get("cacheable", True)), output=bool(d.get("output", False)),
                legacy_ids=tuple(d.get("legacy_ids", ())),
                dynamic_inputs=mirror.dynamic_inputs if mirror is not None and d.get("dynamic_inputs") else None,
                source_module=f"remote:{url}")
            self.register(spec)

    def choices(self, type_id: str, port: str) -> list[str]:
        """The server's suggestions for a port (its models), remembered for a few seconds."""
        key = (type_id, port)
        hit = self._choices.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < CHOICES_TTL_S:
            return list(hit[1])
        spec = self.get(type_id)
        p = spec.input(port) if spec is not None else None
        if p is None or p.choices is None:
            return []
        values = [str(v) for v in self._fetch_choices(type_id, port)]
        self._choices[key] = (now, values)
        return list(values)
