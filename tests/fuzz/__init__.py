"""Property-based fuzzing of everything that reads untrusted input: workflow files, `--set`
values, LoRA files, image and video files, and the command line.

The property everywhere: any input gives a result or one clear line (the module's own error
type, a message without line breaks), never an unexpected exception type, never a hang, and
never a file written outside the output folder. The helpers here are shared by the test modules.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

#: IMAGEBASH_FUZZ_SCALE=20 runs twenty times the examples (a longer local hunt); CI runs 1x.
SCALE = max(1, int(os.environ.get("IMAGEBASH_FUZZ_SCALE", "1") or 1))


def examples(n: int) -> settings:
    """`@settings` for a test's example budget (n in CI, n x IMAGEBASH_FUZZ_SCALE on demand)."""
    return settings(max_examples=n * SCALE)


#: Names a fuzzed workflow draws node ids, port names and parameter names from: real ones (so
#: links and params sometimes fit) and awkward ones (dots, unicode, line breaks, path tricks).
NAMES = st.sampled_from([
    "a", "b", "n0", "n1", "x", "y", "value", "float", "image", "mask", "path", "op", "low", "high",
    "filename_prefix", "format", "in_model", "model", "a.b", "", " ", "é", "\u2028", "a\nb", "../x",
    "\x00", "__proto__", "0",
])

#: JSON scalars, including the edges: huge and tiny numbers, -0.0, unicode, lone surrogates.
JSON_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12) | NAMES)

JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6) | NAMES, kids, max_size=4),
    max_leaves=12)


TYPES = st.sampled_from([
    "test.const", "test.math", "test.old_math", "test.split", "test.noise", "test.scale", "test.read",
    "test.sink", "test.optional", "imagebash.image.load", "imagebash.image.save", "imagebash.image.blend",
    "imagebash.image.load_folder", "imagebash.video.load", "imagebash.video.save", "imagebash.diffusion.lora",
    "imagebash.replicate.run", "imagebash.replicate.flux_schnell", "imagebash.training.train_lora",
]) | NAMES


def maybe(strategy: st.SearchStrategy, odds: int = 12, other: st.SearchStrategy = JSON_VALUES) -> st.SearchStrategy:
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
def workflow_docs(draw: st.DrawFn, types: st.SearchStrategy[str] = TYPES,
                  params: st.SearchStrategy[dict] = PARAMS) -> dict:
    """Documents shaped like workflows, with any field possibly wrong."""
    ids = draw(st.lists(maybe(st.sampled_from(["a", "b", "c", "n0", "n1", "a.b", "é"]), 8, NAMES),
                        min_size=1, max_size=5, unique=True))
    ports = PORTS
    nodes = []
    for nid in ids:
        node = draw(st.fixed_dictionaries(
            {"id": maybe(st.just(nid)), "type": maybe(types)},
            optional={"params": maybe(params),
                      "pos": maybe(st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)).map(list)),
                      "mode": maybe(st.sampled_from(["normal", "muted", "bypassed"])),
                      "version": maybe(st.integers(-2, 3)), "title": JSON_VALUES, "collapsed": JSON_VALUES,
                      "x": JSON_VALUES, "inputs": JSON_VALUES}))
        nodes.append(node)
    end = st.tuples(st.sampled_from(ids) if ids else NAMES, ports).map(list)
    links = st.lists(maybe(st.fixed_dictionaries({"from": maybe(end), "to": maybe(end)})), max_size=4)
    old_links = st.lists(maybe(st.tuples(NAMES, ports, NAMES, ports).map(list)), max_size=3)
    fmt = maybe(st.sampled_from(["imagebash/1"] * 8 + ["imagebash/0", "imagebash/2", "imagebash/-1",
                                                         "imagebash/01", "imagebash/1.0", "comfy"]))
    doc = draw(st.fixed_dictionaries(
        {"format": fmt, "nodes": maybe(st.just(nodes), 20), "links": maybe(maybe(links, 6, old_links), 20)},
        optional={"groups": maybe(st.lists(st.fixed_dictionaries(
                      {"rect": maybe(st.lists(st.floats(-1e4, 1e4), min_size=4, max_size=4))},
                      optional={"id": JSON_VALUES, "title": JSON_VALUES, "color": JSON_VALUES}), max_size=2)),
                  "notes": maybe(st.lists(st.fixed_dictionaries(
                      {}, optional={"id": JSON_VALUES, "text": JSON_VALUES, "pos": JSON_VALUES,
                                    "size": JSON_VALUES}), max_size=2)),
                  "meta": JSON_VALUES}))
    return doc


def assert_one_line(exc: BaseException, *expected: str) -> str:
    """The error's message: non-empty, on one line, holding each of `expected` (a file, a node)."""
    message = str(exc)
    assert message.strip(), f"{type(exc).__name__} with an empty message"
    assert message.splitlines() == [message], f"{type(exc).__name__} message spans lines: {message!r}"
    for part in expected:
        assert part in message, f"{part!r} not named in {message!r}"
    return message


def tree(root: pathlib.Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `root` -> (size, mtime_ns), to see what a call wrote."""
    out: dict[str, tuple[int, int]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = pathlib.Path(folder) / name
            try:
                st_ = p.lstat()
            except OSError:
                continue
            out[str(p.relative_to(root))] = (st_.st_size if name in files else 0, st_.st_mtime_ns)
    return out


def writes_outside(root: pathlib.Path, before: dict[str, tuple[int, int]], allowed: pathlib.Path) -> list[str]:
    """Paths under `root` created or changed since `before` that are not inside `allowed`."""
    after = tree(root)
    rel_allowed = allowed.resolve().relative_to(root.resolve())
    changed = [p for p, stat in after.items() if before.get(p) != stat]
    return [p for p in changed
            if pathlib.Path(p) != rel_allowed and rel_allowed not in pathlib.Path(p).parents
            # the allowed folder's own parents appear (mkdir -p) when it is made
            and pathlib.Path(p) not in rel_allowed.parents]


def dumps(doc: Any) -> str:
    """JSON text of a fuzzed document (lone surrogates and all)."""
    return json.dumps(doc, ensure_ascii=True)
