"""The editor reaches the engine only through its client interface, so a remote engine is a second
implementation of that interface and no widget changes: no UI module imports the executor, the
model manager, the output store, the trainer or a node pack's internals."""

from __future__ import annotations

import ast
import pathlib

UI = pathlib.Path(__file__).resolve().parents[2] / "app" / "ui"

#: What a UI module may import from the engine side: the client, the plain-data events and wire
#: records, the settings dataclass, the node declarations (the catalogue the client hands over)
#: and the trainer's settings and path rules (presets are data files); and the remote client (the
#: same interface over HTTP) with the name of its token's keyring entry.
ALLOWED = {"app.engine.client", "app.engine.events", "app.engine.wire", "app.engine.EngineSettings",
           "app.engine.remote", "app.engine.remote_cli", "app.engine.pool",
           "nodes.registry", "nodes.types", "nodes.schedule", "app.training.config", "app.training.checkpoint",
           "app.training.workflow"}


def _engine_side_imports(path: pathlib.Path) -> set[str]:
    found: set[str] = set()
    for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(n, ast.ImportFrom) and n.module:
            names = [f"{n.module}.{a.name}" for a in n.names] if n.module in ("app.engine", "app.training") \
                else [n.module]
            found.update(names)
        elif isinstance(n, ast.Import):
            found.update(a.name for a in n.names)
    return {m for m in found if m.startswith(("app.engine", "app.training", "nodes"))}


def test_ui_modules_use_only_the_engine_client_interface():
    offending = {str(p.relative_to(UI)): sorted(bad) for p in sorted(UI.rglob("*.py"))
                 if (bad := _engine_side_imports(p) - ALLOWED)}
    assert offending == {}
