"""Model families: one module per family, found by scanning this package.

Each module in this package that defines `FAMILY` (a `Family`) is a family; `all_families()`
imports them once, in the order of their `ORDER` (lower first: detection tries specific layouts
before general ones). Adding a family is one new module here plus its configs under
`resources/model_configs/`; nothing else names families. `register()` adds one from elsewhere
(a node pack, a test).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import threading
from pathlib import Path

from app.engine.families.base import TASKS, Family, NameMap, Target, TrainingSpec, Variant
from app.engine.probe import Probe

__all__ = ["TASKS", "Family", "FamilyNotFound", "NameMap", "Target", "TrainingSpec", "Variant", "all_families",
           "detect", "detect_folder", "family_of_pipeline", "get_family", "lora_family", "register"]

_lock = threading.Lock()
_families: dict[str, Family] | None = None
_extra: list[Family] = []


class FamilyNotFound(ValueError):
    """A file or folder no family recognises; the message lists the families tried."""


def _scan() -> dict[str, Family]:
    found: list[tuple[int, Family]] = []
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base" or info.name.startswith("_") or info.name.endswith("_names"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        family = getattr(module, "FAMILY", None)
        if isinstance(family, Family):
            found.append((int(getattr(module, "ORDER", 50)), family))
    found.sort(key=lambda pair: pair[0])
    return {f.name: f for _order, f in found}


def all_families() -> list[Family]:
    """Every family, in detection order."""
    global _families
    with _lock:
        if _families is None:
            _families = _scan()
        return [*_families.values(), *_extra]


def register(family: Family) -> None:
    """Add a family defined outside this package (tried after the built-in ones)."""
    all_families()
    with _lock:
        _extra[:] = [f for f in _extra if f.name != family.name] + [family]


def get_family(name: str) -> Family:
    for family in all_families():
        if family.name == name:
            return family
    known = ", ".join(f.name for f in all_families())
    raise KeyError(f"unknown model family '{name}' (known: {known})")


def family_of_pipeline(pipe: object) -> Family:
    """The family whose pipelines (plain, per-variant, ControlNet, Union ControlNet, T2I-Adapter)
    include `pipe`'s class, for code handed a bare pipeline (SD 1.x and 2.x share classes: the first
    registered answers)."""
    name = type(pipe).__name__
    for family in all_families():
        names = {*family.pipelines.values(), *family.control_pipelines.values(), *family.union_pipelines.values(),
                 *family.adapter_pipelines.values(), *(cls for v in family.variants for _task, cls in v.pipelines)}
        if name in names:
            return family
    raise KeyError(f"no model family uses {name}")


def lora_family(header: Probe) -> str | None:
    """The family a LoRA file was made for, from its metadata or key names; None when unsure."""
    for family in all_families():
        if family.claims_lora(header):
            return family.name
    return None


def detect(header: Probe) -> tuple[Family, str]:
    """(family, variant) of a single-file checkpoint, from its keys and shapes."""
    for family in all_families():
        variant = family.detect(header)
        if variant:
            return family, variant
    tried = ", ".join(f.title for f in all_families())
    raise FamilyNotFound(f"{header.path.name} is not a model of a known family (tried {tried})")


def detect_folder(folder: Path) -> tuple[Family, str]:
    """(family, variant) of a diffusers folder, from its model_index.json and configs."""
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise FamilyNotFound(f"{folder} is a folder but not a diffusers model (no model_index.json)")
    index = json.loads(index_file.read_text(encoding="utf-8"))
    for family in all_families():
        variant = family.detect_folder(index, folder)
        if variant:
            return family, variant
    tried = ", ".join(f.title for f in all_families())
    raise FamilyNotFound(f"{folder.name} ({index.get('_class_name', '?')}) is not a model of a known family "
                         f"(tried {tried})")
