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
from hypothesis import example, given
from hypothesis import strategies as st

from app.graph import io
from app.graph.validate import upgrade, validate
from nodes.registry import Registry, default_registry
from tests.fuzz import JSON_VALUES, assert_one_line, examples, workflow_docs

pytestmark = pytest.mark.timeout(120)

ROOT = pathlib.Path(__file__).resolve().parents[2]
REAL_WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))

#: 100,000 nested arrays: Python's json parser ran out of stack (RecursionError) on these.
DEEP = "[" * 100_000 + "]" * 100_000
#: Deeper than MAX_DEPTH but shallow enough for json: refused by the loader's own depth check.
NESTED_PARAM = '{"format": "imagebash/1", "nodes": [{"id": "a", "type": "t", "params": {"v": %s}}]}' % (
    "[" * 70 + "]" * 70)

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


@examples(150)
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


@examples(120)
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


@examples(80)
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
