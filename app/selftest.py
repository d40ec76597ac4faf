"""`imagebash --self-test`: check that this install (or a PyInstaller bundle) works, without a model.

Runs the editor's default workflow headless through the real engine into a temporary folder and
checks the images it wrote; checks that the node packs loaded, that Qt's offscreen platform plugin
loads (no window is opened), that the shipped resources are found, and that the diffusion stack
(torch, diffusers, transformers with the shipped tokenizer files) imports. Prints one line per
check and a final "self-test passed" or "self-test failed: <reason>" line.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable


class SelfTestError(Exception):
    """A check found a problem; the message is the one-line reason."""


def default_workflow() -> pathlib.Path:
    """The workflow the editor opens on first start (`app.ui.window.DEFAULT_WORKFLOW`)."""
    from app import paths
    from app.ui.window import DEFAULT_WORKFLOW

    return paths.WORKFLOWS / DEFAULT_WORKFLOW


def check_node_packs() -> str:
    """Every built-in node module registered nodes, and no pack failed to load."""
    from nodes.registry import BUILTIN_MODULES, default_registry

    registry = default_registry()
    registry.ensure_loaded()
    if registry.load_errors:
        raise SelfTestError("node pack failed to load: " + "; ".join(registry.load_errors))
    specs = registry.all()
    missing = [m for m in BUILTIN_MODULES
               if not any(s.source_module == m or s.source_module.startswith(m + ".") for s in specs)]
    if missing:
        raise SelfTestError(f"built-in node modules registered no nodes: {', '.join(missing)}")
    return f"{len(specs)} nodes from {len(BUILTIN_MODULES)} built-in modules"


def check_resources() -> str:
    """The shipped resources are where `app.paths` looks: theme, icons, samples, model configs."""
    from app import paths
    from app.engine.model_configs import shipped_families

    needed = [paths.resource("theme", "imagebash.qss"), paths.resource("icons", "imagebash.svg"),
              paths.resource("samples", "sky.png"), paths.resource("model_configs", "sd1", "model_index.json")]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise SelfTestError(f"resource files missing: {', '.join(missing)} (resources: {paths.RESOURCES})")
    families = shipped_families()
    workflows = sorted(paths.WORKFLOWS.glob("*.json"))
    if not workflows:
        raise SelfTestError(f"no example workflows in {paths.WORKFLOWS}")
    return f"{paths.RESOURCES}: {len(families)} model configs, {len(workflows)} example workflows"


def check_qt() -> str:
    """PySide6 widgets import, the offscreen platform plugin loads, the theme and an svg icon render."""
    try:
        from PySide6.QtGui import QGuiApplication, QIcon
        from PySide6.QtWidgets import QApplication
    except ImportError as exc:
        raise SelfTestError(f"PySide6 does not import: {exc}") from None
    import PySide6

    from app import paths
    from app.ui.theme import stylesheet

    _app = QApplication.instance() or QApplication(["imagebash", "-platform", "offscreen"])  # kept: one per process
    platform = QGuiApplication.platformName()
    if not platform:
        raise SelfTestError("Qt started without a platform plugin")
    qss = stylesheet("dark")
    if not qss.strip():
        raise SelfTestError("the theme stylesheet is empty")
    image = QIcon(str(paths.resource("icons", "imagebash.svg"))).pixmap(64, 64).toImage()
    if image.isNull() or not any(image.pixelColor(x, y).alpha() for x in range(0, 64, 4) for y in range(0, 64, 4)):
        raise SelfTestError("the svg icon did not render (Qt's svg plugin is missing?)")
    return f"PySide6 {PySide6.__version__}, platform '{platform}', theme and svg icon render"


def check_diffusion_stack() -> str:
    """torch computes, diffusers builds the shipped SD1 scheduler, transformers the shipped CLIP tokenizer."""
    import json

    import torch

    from app import paths
    from app.engine.model_configs import complete_tokenizer

    if float((torch.ones(2, 2) @ torch.ones(2, 2)).sum()) != 8.0:
        raise SelfTestError("torch computed a wrong matrix product")
    import diffusers
    import transformers

    sd1 = paths.resource("model_configs", "sd1")
    config = json.loads((sd1 / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
    scheduler.set_timesteps(4)
    if len(scheduler.timesteps) < 4:
        raise SelfTestError(f"{config['_class_name']} made {len(scheduler.timesteps)} timesteps, not 4")
    with tempfile.TemporaryDirectory(prefix="imagebash-selftest-") as tmp:
        folder = pathlib.Path(tmp) / "tokenizer"
        shutil.copytree(sd1 / "tokenizer", folder)
        complete_tokenizer(folder)
        tokenizer = transformers.CLIPTokenizer.from_pretrained(folder)
        ids = tokenizer("a photo of a cat")["input_ids"]
    if ids[0] != tokenizer.bos_token_id or ids[-1] != tokenizer.eos_token_id or len(ids) < 4:
        raise SelfTestError(f"the CLIP tokenizer made unexpected ids {ids}")
    return (f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
            f"transformers {transformers.__version__}; scheduler and tokenizer load offline")


def check_default_workflow() -> str:
    """Run the default workflow on the CPU into a temporary folder and check the images it wrote."""
    import numpy as np
    from PIL import Image as PILImage

    from app.engine import Engine, EngineSettings, NodeFailed
    from app.graph.io import WorkflowFormatError, load
    from app.graph.validate import ValidationError, upgrade
    from nodes.registry import default_registry

    path = default_workflow()
    registry = default_registry()
    try:
        graph, _notes = upgrade(load(path), registry)
    except WorkflowFormatError as exc:
        raise SelfTestError(str(exc)) from None
    engine = Engine(registry, EngineSettings(device="cpu", output_store_bytes=0))
    root_failures: dict[str, str] = {}  # nodes that failed themselves, not for a failed upstream
    engine.events.subscribe(
        lambda e: root_failures.setdefault(e.node_id, e.message)
        if isinstance(e, NodeFailed) and e.upstream is None else None)
    with tempfile.TemporaryDirectory(prefix="imagebash-selftest-") as out:
        try:
            result = engine.run(graph, output_dir=out)
        except ValidationError as exc:
            raise SelfTestError(f"{path.name} does not validate: {exc}") from None
        finally:
            engine.shutdown()
        if not result.ok:
            errors = "; ".join(f"node '{n}': {m}" for n, m in (root_failures or result.errors).items())
            raise SelfTestError(f"{path.name}: {errors or 'the run was cancelled'}")
        images = [f for f in result.files if f.kind == "image"]
        if not images:
            raise SelfTestError(f"{path.name} wrote no image (files: {[f.path for f in result.files]})")
        sizes = []
        for f in images:
            p = pathlib.Path(f.path)
            if not p.is_file() or p.stat().st_size == 0:
                raise SelfTestError(f"{p.name} was reported but is missing or empty")
            try:
                with PILImage.open(p) as im:
                    im.load()
                    pixels = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
            except OSError as exc:
                raise SelfTestError(f"{p.name} does not decode: {exc}") from None
            h, w = pixels.shape[:2]
            if w < 16 or h < 16:
                raise SelfTestError(f"{p.name} is only {w}x{h}")
            if float(pixels.std()) < 0.01:
                raise SelfTestError(f"{p.name} is blank (one colour, mean {float(pixels.mean()):.3f})")
            sizes.append(f"{p.name} {w}x{h}")
    return f"{path.name}: {len(result.status)} nodes in {result.duration:.2f}s wrote {', '.join(sizes)}"


#: The checks in order: (name, function returning a detail line or raising).
CHECKS: list[tuple[str, Callable[[], str]]] = [
    ("node packs", check_node_packs),
    ("resources", check_resources),
    ("qt", check_qt),
    ("diffusion stack", check_diffusion_stack),
    ("default workflow", check_default_workflow),
]


def run_self_test() -> int:
    """Run every check, print one line each and a verdict; 0 when all passed, else 1."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the network
    started = time.perf_counter()
    failures: list[str] = []
    print(f"imagebash self-test ({'bundle' if getattr(sys, 'frozen', False) else 'python'} {sys.version.split()[0]})",
          flush=True)
    for name, check in CHECKS:
        t = time.perf_counter()
        try:
            detail = check()
        except SelfTestError as exc:
            failures.append(f"{name}: {exc}")
            print(f"FAIL {name}: {exc}", flush=True)
            continue
        except Exception as exc:  # noqa: BLE001 - any error is a failed check, reported in one line
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
            failures.append(f"{name}: {reason}")
            print(f"FAIL {name}: {reason}", flush=True)
            continue
        print(f"ok   {name}: {detail} ({time.perf_counter() - t:.2f}s)", flush=True)
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        print(f"self-test failed: {failures[0]}{more}", flush=True)
        return 1
    print(f"self-test passed ({len(CHECKS)} checks in {time.perf_counter() - started:.1f}s)", flush=True)
    return 0
