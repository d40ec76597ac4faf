"""Node declarations: what the registry derives, what it refuses, and a check of every real node."""

from __future__ import annotations

import enum
import re
import subprocess
import sys
from typing import Annotated, NamedTuple

import pytest

from nodes.registry import NodeDeclarationError, Registry, build_spec, default_registry, node
from nodes.types import Image, Mask, Range


def _spec(fn, node_id="test.x", **kw):
    base = dict(version=1, title=None, category="t", device="cpu", io=False, cacheable=True, output=False,
                legacy_ids=(), dynamic_inputs=None, migrate=None)
    base.update(kw)
    return build_spec(fn, node_id, **base)


class Mode(str, enum.Enum):
    A = "a"
    B = "b"


class Out(NamedTuple):
    image: Image
    mask: Mask


def test_ports_are_derived_from_the_signature():
    def f(image: Image, amount: Annotated[float, Range(0, 2, step=0.1)] = 1.0, mode: Mode = Mode.B,
          mask: Mask | None = None) -> Out:
        """Do a thing.

        Args:
            amount: how much
        """

    spec = _spec(f)
    d = spec.describe()
    assert [p["name"] for p in d["inputs"]] == ["image", "amount", "mode", "mask"]
    assert d["inputs"][1] == {"name": "amount", "type": "float", "default": 1.0,
                              "range": {"min": 0, "max": 2, "step": 0.1}, "help": "how much"}
    assert d["inputs"][2]["choices"] == ["a", "b"] and d["inputs"][2]["default"] == "b"
    assert d["inputs"][3]["optional"] is True
    assert [(p["name"], p["type"]) for p in d["outputs"]] == [("image", "Image"), ("mask", "Mask")]
    assert d["description"] == "Do a thing."


@pytest.mark.parametrize("fn, message", [
    (lambda: None, "needs a docstring"),
])
def test_missing_docstring_is_an_error(fn, message):
    with pytest.raises(NodeDeclarationError, match=message):
        _spec(fn)


def test_declaration_mismatches_are_errors():
    def no_ann(x) -> float:
        """Doc."""

    def bad_default(x: Annotated[int, Range(0, 10)] = 50) -> float:
        """Doc."""

    def no_return(x: float):
        """Doc."""

    def weird(x: dict) -> float:
        """Doc."""

    def union(x: int | str) -> float:
        """Doc."""

    with pytest.raises(NodeDeclarationError, match="input 'x' has no type annotation"):
        _spec(no_ann)
    with pytest.raises(NodeDeclarationError, match="out of range"):
        _spec(bad_default)
    with pytest.raises(NodeDeclarationError, match="needs a return annotation"):
        _spec(no_return)
    with pytest.raises(NodeDeclarationError, match="unsupported annotation"):
        _spec(weird)
    with pytest.raises(NodeDeclarationError, match=re.escape("only `X | None` unions")):
        _spec(union)
    with pytest.raises(NodeDeclarationError, match="namespaced"):
        _spec(no_return, node_id="Bad Id")


def test_duplicate_ids_from_different_modules_are_refused():
    reg = Registry(load_packs=False)  # no built-in packs

    @node("test.dup", registry=reg)
    def a() -> float:
        """A."""
        return 1.0

    def b() -> float:
        """B."""
        return 2.0

    b.__module__ = "somewhere.else"
    with pytest.raises(NodeDeclarationError, match="declared twice"):
        node("test.dup", registry=reg)(b)


def test_registries_are_instances_that_each_load_the_packs():
    """A fresh Registry has every built-in node and service; registering into one leaves others alone."""
    a, b = Registry(), Registry()
    assert {s.id for s in a.all()} == {s.id for s in default_registry().all()}
    assert "imagebash.image.blend" in a and "models" in a.services
    assert a.get("imagebash.image.blend").fn is default_registry().get("imagebash.image.blend").fn

    @node("test.only_in_a", registry=a)
    def only() -> float:
        """Only here."""
        return 1.0

    assert "test.only_in_a" in a and "test.only_in_a" not in b and "test.only_in_a" not in default_registry()
    empty = Registry(load_packs=False)
    assert empty.all() == [] and empty.services == {}


def test_every_registered_node_is_consistent():
    """Runs the declaration checks over every node the app ships (and installed packs)."""
    specs = default_registry().all()
    assert not default_registry().load_errors, default_registry().load_errors
    ids = [s.id for s in specs]
    assert len(ids) == len(set(ids))
    for s in specs:
        rebuilt = _spec(s.fn, s.id, version=s.version, title=s.title, category=s.category, device=s.device,
                        io=s.io, cacheable=s.cacheable, output=s.output, legacy_ids=s.legacy_ids,
                        dynamic_inputs=s.dynamic_inputs, migrate=s.migrate, cache_key=s.cache_key,
                        window=s.window, schedules=s.schedules)
        assert rebuilt.describe() == s.describe(), s.id
        assert s.category and s.description, s.id


def test_nodes_json_does_not_import_torch():
    code = ("import sys, json, io, contextlib\n"
            "from app.cli import main\n"
            "buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n"
            "    main(['nodes', '--json'])\n"
            "json.loads(buf.getvalue())\n"
            "heavy = [m for m in ('torch', 'diffusers', 'PySide6', 'cv2', 'replicate') if m in sys.modules]\n"
            "print(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_engine_and_graph_import_neither_qt_nor_torch():
    code = ("import sys\nimport app.graph, app.engine, app.engine.plan, app.engine.executor\n"
            "print([m for m in ('torch', 'PySide6', 'diffusers') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_entry_point_packs_register_and_broken_ones_are_skipped(tmp_path, monkeypatch):
    dist = tmp_path / "mypack-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mypack\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[imagebash.nodes]\ngood = mypack_nodes\nbroken = mypack_broken\n")
    (tmp_path / "mypack_nodes.py").write_text(
        "from nodes.registry import node\nfrom nodes.types import Image\nimport numpy as np\n"
        "@node('mypack.util.ones')\ndef ones(size: int = 4) -> Image:\n"
        "    '''A white square.'''\n    return np.ones((1, size, size, 3), np.float32)\n")
    (tmp_path / "mypack_broken.py").write_text("raise RuntimeError('this pack is broken')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code = ("from nodes.registry import default_registry\n"
            "print(default_registry().get('mypack.util.ones') is not None)\n"
            "print([e for e in default_registry().load_errors if 'broken' in e])\n")
    env = {**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{__import__('os').getcwd()}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "True"
    assert "this pack is broken" in lines[1]


def test_coerce_parses_cli_strings():
    def f(n: Annotated[int, Range(1, 8)] = 2, flag: bool = False, ratio: float = 0.5) -> float:
        """Doc."""

    spec = _spec(f)
    n, flag, ratio = spec.inputs
    assert n.coerce("4") == 4 and flag.coerce("true") is True and ratio.coerce(1) == 1.0
    with pytest.raises(ValueError, match="out of range"):
        n.coerce(9)
    with pytest.raises(ValueError, match="expects an integer"):
        n.coerce(2.5)
    with pytest.raises(ValueError, match="expects true or false"):
        flag.coerce("maybe")
