"""Fuzzing the workflow loader (`loads`, `graph_from_dict`, `load` of .json and .png files) and
what runs on whatever loads (`validate`, `upgrade`, saving it back).

Properties: any text, document or file gives a Graph or one WorkflowFormatError line (naming the
file when one was read); a loaded graph validates to one-line Problems without raising, upgrades,
and survives a save/load round trip unchanged.
"""

from __future__ import annotations

import io as pyio
import json
import pathlib
import tempfile

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.graph import io
from app.graph.validate import upgrade, validate
from nodes.registry import Registry, default_registry
from tests.fuzz import JSON_VALUES, NAMES, assert_one_line

pytestmark = pytest.mark.timeout(120)

ROOT = pathlib.Path(__file__).resolve().parents[2]
REAL_WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))

#: 100,000 nested arrays: Python's json parser ran out of stack (RecursionError) on these.
DEEP = "[" * 100_000 + "]" * 100_000
#: Deeper than MAX_DEPTH but shallow enough for json: refused by the loader's own depth check.
NESTED_PARAM = '{"format": "imagebash/1", "nodes": [{"id": "a", "type": "t", "params": {"v": %s}}]}' % (
    "[" * 70 + "]" * 70)

TYPES = st.sampled_from([
    "test.const", "test.math", "test.old_math", "test.split", "test.noise", "test.scale", "test.read",
    "test.sink", "test.optional", "imagebash.image.load", "imagebash.image.save", "imagebash.image.blend",
    "imagebash.image.load_folder", "imagebash.video.load", "imagebash.video.save", "imagebash.diffusion.lora",
    "imagebash.replicate.run", "imagebash.replicate.flux_schnell", "imagebash.training.train_lora",
]) | NAMES


def _maybe(strategy: st.SearchStrategy, odds: int = 12, other: st.SearchStrategy = JSON_VALUES) -> st.SearchStrategy:
    """Mostly the well-formed value; one time in `odds` something else (any JSON value)."""
    return st.integers(1, odds).flatmap(lambda i: other if i == odds else strategy)


PORTS = st.sampled_from(["x", "y", "value", "float", "image", "mask", "low", "high", "video", "model", "path",
                         "path_out", "image_out"]) | NAMES
PARAMS = st.dictionaries(
    st.sampled_from(["value", "x", "y", "op", "path", "filename_prefix", "format", "size", "seed", "model",
                     "file", "weight", "start", "stride", "mode"]) | NAMES,
    st.one_of(st.sampled_from([0, 1, 2.5, -1, 10**6, "add", "mul", "png", "../x", "/tmp", "a.png", True]),
              JSON_VALUES),
    max_size=4)


@st.composite
def workflow_docs(draw: st.DrawFn) -> dict:
    """Documents shaped like workflows, with any field possibly wrong."""
    ids = draw(st.lists(_maybe(st.sampled_from(["a", "b", "c", "n0", "n1", "a.b", "é"]), 8, NAMES),
                        min_size=1, max_size=5, unique=True))
    ports = PORTS
    nodes = []
    for nid in ids:
        node = draw(st.fixed_dictionaries(
            {"id": _maybe(st.just(nid)), "type": _maybe(TYPES)},
            optional={"params": _maybe(PARAMS),
                      "pos": _maybe(st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)).map(list)),
                      "mode": _maybe(st.sampled_from(["normal", "muted", "bypassed"])),
                      "version": _maybe(st.integers(-2, 3)), "title": JSON_VALUES, "collapsed": JSON_VALUES,
                      "x": JSON_VALUES, "inputs": JSON_VALUES}))
        nodes.append(node)
    end = st.tuples(st.sampled_from(ids) if ids else NAMES, ports).map(list)
    links = st.lists(_maybe(st.fixed_dictionaries({"from": _maybe(end), "to": _maybe(end)})), max_size=4)
    old_links = st.lists(_maybe(st.tuples(NAMES, ports, NAMES, ports).map(list)), max_size=3)
    fmt = _maybe(st.sampled_from(["imagebash/1"] * 8 + ["imagebash/0", "imagebash/2", "imagebash/-1",
                                                         "imagebash/01", "imagebash/1.0", "comfy"]))
    doc = draw(st.fixed_dictionaries(
        {"format": fmt, "nodes": _maybe(st.just(nodes), 20), "links": _maybe(_maybe(links, 6, old_links), 20)},
        optional={
                  "groups": _maybe(st.lists(st.fixed_dictionaries(
                      {"rect": _maybe(st.lists(st.floats(-1e4, 1e4), min_size=4, max_size=4))},
                      optional={"id": JSON_VALUES, "title": JSON_VALUES, "color": JSON_VALUES}), max_size=2)),
                  "notes": _maybe(st.lists(st.fixed_dictionaries(
                      {}, optional={"id": JSON_VALUES, "text": JSON_VALUES, "pos": JSON_VALUES,
                                    "size": JSON_VALUES}), max_size=2)),
                  "meta": JSON_VALUES}))
    return doc


def check_loaded(g, registries: list[Registry]) -> None:
    """What every loaded graph must allow: validation, upgrade, saving and reloading."""
    for reg in registries:
        for problem in validate(g, reg):
            assert_one_line(ValueError(str(problem)))
        upgraded, notes = upgrade(g, reg)
        assert len(upgraded) == len(g)
        for note in notes:
            assert_one_line(ValueError(note))
    text = io.dumps(g)
    again = io.loads(text)
    assert io.graph_to_dict(again) == io.graph_to_dict(g)


@pytest.fixture(scope="module")
def registries(test_reg) -> list[Registry]:
    return [test_reg, default_registry()]


def _loads_checked(text: str, registries: list[Registry]) -> None:
    try:
        g = io.loads(text)
    except io.WorkflowFormatError as exc:
        assert_one_line(exc)
        return
    check_loaded(g, registries)


@settings(max_examples=150)
@given(doc=workflow_docs())
@example(doc={"format": "imagebash/1", "groups": 5})  # TypeError: 'int' object is not iterable
@example(doc={"format": "imagebash/1", "notes": True})  # TypeError
@example(doc={"format": "imagebash/-1"})  # KeyError: -1 (int() took the sign)
@example(doc={"format": "imagebash/\u0661"})  # an Arabic-Indic digit: int() read it as version 1
@example(doc={"format": "imagebash/0", "nodes": 5})  # TypeError in the format-0 migration
@example(doc={"format": "imagebash/0", "nodes": ["ab"]})  # ValueError from dict("ab")
@example(doc={"format": "imagebash/0", "links": [[1]]})  # IndexError
@example(doc={"format": "imagebash/1", "nodes": [{"id": "a", "type": "t", "pos": [10**400, 0]}]})  # OverflowError
@example(doc={"format": "imagebash/1", "groups": [{"id": "g", "rect": [10**400, 0, 1, 1]}]})  # OverflowError
@example(doc={"format": "imagebash/1", "notes": [{"id": "n", "pos": [0, 10**400]}]})  # OverflowError
@example(doc={"format": "imagebash/1", "nodes": [{"id": "a", "type": "test.const", "params": {"value": 10**400}}]})
@example(doc={"format": "imagebash/1", "nodes": [{"id": "a", "type": "test.const", "params": {"value": float("nan")}}]})
@example(doc={"format": "imagebash/1", "nodes": [{"id": "a", "type": "t"}, {"id": "b", "type": "t"}],
              "links": [{"from": "a1", "to": "b2"}]})  # strings unpacked into node 'a' port '1'
@example(doc={"format": "imagebash/1", "nodes": [{"id": "a\nb", "type": "t"}]})  # a two-line Problem
@example(doc={"format": "imagebash/1", "nodes": [{"id": "a", "type": "test.const", "params": {"x\ny": 1}}]})
def test_any_document_loads_or_says_why(doc, registries):
    try:
        g = io.graph_from_dict(doc)
    except io.WorkflowFormatError as exc:
        assert_one_line(exc)
        return
    check_loaded(g, registries)


def _mutations() -> st.SearchStrategy[str]:
    """A real workflow's text, cut short or with a few characters replaced."""
    texts = [p.read_text(encoding="utf-8") for p in REAL_WORKFLOWS]

    @st.composite
    def mutate(draw: st.DrawFn) -> str:
        text = draw(st.sampled_from(texts))
        for _ in range(draw(st.integers(0, 4))):
            i = draw(st.integers(0, len(text)))
            text = text[:i] + draw(st.text(max_size=3)) + text[i + draw(st.integers(0, 3)):]
        if draw(st.booleans()):
            text = text[:draw(st.integers(0, len(text)))]
        return text

    return mutate()


@settings(max_examples=120)
@given(text=st.one_of(_mutations(), st.text(max_size=40), JSON_VALUES.map(json.dumps)))
@example(text=DEEP)  # RecursionError in json.loads, before the depth check
@example(text="[" * 100_000)
@example(text=NESTED_PARAM)
@example(text='{"format": "imagebash/1", "meta": {"n": %s}}' % ("9" * 5000))  # ValueError: int digit limit
@example(text='{"format": "imagebash/1", "meta": {"n": NaN}}')
@example(text='{"format": "imagebash/1", "meta": {"n": 1e999}}')  # Infinity
@example(text='{"format": "imagebash/1", "nodes": [{"id": "\\ud800", "type": "t"}]}')  # a lone surrogate
def test_any_text_loads_or_says_why(text, registries):
    _loads_checked(text, registries)


def test_deep_json_is_one_format_error():
    """The recent depth limit, as a plain regression test (loads and graph_from_dict)."""
    for text in (DEEP, NESTED_PARAM):
        with pytest.raises(io.WorkflowFormatError, match="nested too deeply") as info:
            io.loads(text)
        assert_one_line(info.value)


def _png(text_chunks: dict[str, str] | None = None, size: tuple[int, int] = (4, 4)) -> bytes:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for k, v in (text_chunks or {}).items():
        info.add_text(k, v, zip=len(v) > 100)
    buf = pyio.BytesIO()
    Image.new("RGB", size).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def _huge_png() -> bytes:
    """A valid 4x4 PNG whose header declares 100000 x 100000 pixels (a decompression bomb)."""
    import struct
    import zlib

    data = bytearray(_png({io.PNG_WORKFLOW_KEY: '{"format": "imagebash/1"}'}))
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


GOOD_PNG = _png({io.PNG_WORKFLOW_KEY: json.dumps({"format": "imagebash/1", "nodes": [{"id": "a", "type": "t"}]})})


@st.composite
def png_files(draw: st.DrawFn) -> bytes:
    """PNGs carrying fuzzed workflow text, real PNGs cut short or flipped, or plain noise."""
    kind = draw(st.sampled_from(["chunk", "truncated", "flipped", "noise"]))
    if kind == "chunk":
        text = draw(st.one_of(workflow_docs().map(json.dumps), st.text(max_size=30), _mutations()))
        return _png({io.PNG_WORKFLOW_KEY: text})
    if kind == "truncated":
        return GOOD_PNG[:draw(st.integers(0, len(GOOD_PNG)))]
    if kind == "flipped":
        data = bytearray(GOOD_PNG)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    return draw(st.binary(max_size=64))


def _name_in(message: str, path: pathlib.Path) -> bool:
    return str(path) in message or repr(str(path)) in message


@settings(max_examples=80)
@given(data=st.one_of(png_files(), st.binary(max_size=64)), suffix=st.sampled_from([".png", ".PNG", ".json", ".txt"]))
@example(data=_huge_png(), suffix=".png")  # DecompressionBombError from Pillow, not an OSError
@example(data=_png({io.PNG_WORKFLOW_KEY: DEEP}), suffix=".png")
@example(data=_png({io.PNG_WORKFLOW_KEY: "x" * 2_000_000}), suffix=".png")  # ValueError: text chunk too large
@example(data=DEEP.encode(), suffix=".json")
@example(data=b"\xff\xfe{}", suffix=".json")  # not UTF-8
@example(data=GOOD_PNG, suffix=".json")
def test_any_file_loads_or_names_itself(data, suffix, tmp_path, registries):
    folder = pathlib.Path(tempfile.mkdtemp(dir=tmp_path))
    path = folder / f"w{suffix}"
    path.write_bytes(data)
    try:
        g = io.load(path)
    except io.WorkflowFormatError as exc:
        assert _name_in(assert_one_line(exc), path), exc
    else:
        assert g.base_dir == str(folder.resolve())
        check_loaded(g, registries)
    # the PNG probe the editor's drop handler uses never raises either
    if suffix.lower() == ".png":
        doc = io.workflow_from_png(path)
        assert doc is None or isinstance(doc, dict)


@pytest.mark.parametrize("name", ["w.json", "two\nlines.json", "tab\there.png", "missing.json"])
def test_file_names_with_line_breaks_stay_on_one_line(tmp_path, name):
    path = tmp_path / name
    if name != "missing.json":
        path.write_bytes(b"{")
    with pytest.raises(io.WorkflowFormatError) as info:
        io.load(path)
    assert _name_in(assert_one_line(info.value), path)


def test_deep_json_file_is_one_format_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text(DEEP)
    with pytest.raises(io.WorkflowFormatError, match="nested too deeply") as info:
        io.load(path)
    assert str(path) in assert_one_line(info.value)
