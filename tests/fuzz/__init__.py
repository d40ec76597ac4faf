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

from hypothesis import strategies as st

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
