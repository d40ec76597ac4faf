"""Fuzzing `--set NODE.PARAM=VALUE`: `parse_set` and `apply_sets`.

Properties: any item gives (node, param, value) with a value a workflow file may hold (finite
numbers, at most MAX_DEPTH levels), or one CliError line; `apply_sets` either stores a value the
node's port accepts (so the graph still validates that parameter and saves) or raises one CliError
line naming the item.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from app.cli import CliError, apply_sets, parse_set
from app.graph import io
from app.graph.model import Graph, NodeInstance
from app.graph.validate import validate
from tests.fuzz import JSON_VALUES, NAMES, assert_one_line, examples

pytestmark = pytest.mark.timeout(120)

#: Values as a shell passes them: JSON of any value, JSON edge cases, or plain text.
RAW_VALUES = st.one_of(
    JSON_VALUES.map(json.dumps),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 400, "9" * 5000,
                     "[" * 100_000, "[" * 70 + "]" * 70, "true", "null", "", "=", "add", "ADD", "Mul", "0x10",
                     "1_000", " 1", "1.5", "-0", "\ud800", "a\nb", "../../x", "/etc/passwd", "~/x"]),
    st.text(max_size=12))

KEYS = st.one_of(
    st.tuples(st.sampled_from(["n0", "n1", "n2", "r", "u", "s", "a.b", "nope"]) | NAMES,
              st.sampled_from(["value", "x", "y", "op", "path", "seconds", "zz"]) | NAMES)
    .map(lambda t: f"{t[0]}.{t[1]}"),
    st.text(max_size=8))


def _graph() -> Graph:
    """One node of each test kind: a ranged float, an enum, a Path, an unknown type."""
    g = Graph()
    for nid, type_ in (("n0", "test.const"), ("n1", "test.math"), ("n2", "test.optional"), ("r", "test.read"),
                       ("s", "test.sleep"), ("a.b", "test.const"), ("u", "no.such.type")):
        g.add_node(NodeInstance(nid, type_))
    return g


@examples(300)
@given(key=KEYS, raw=RAW_VALUES, eq=st.sampled_from(["=", "", "=="]))
@example(key="n0.value", raw="9" * 5000, eq="=")  # ValueError: int digit limit, from json.loads
@example(key="n0.value", raw="[" * 100_000, eq="=")  # RecursionError from json.loads
@example(key="n0.value", raw="[" * 500 + "]" * 500, eq="=")  # deeper than any workflow may be
@example(key="n1.y", raw="NaN", eq="=")  # float('nan') passed the range check
@example(key="n0.value", raw="1" + "0" * 400, eq="=")  # OverflowError in PortSpec.coerce
def test_parse_set_gives_a_storable_value_or_one_line(key, raw, eq):
    item = key + eq + raw
    try:
        node_id, param, value = parse_set(item)
    except CliError as exc:
        assert_one_line(exc, "--set")
        return
    assert node_id and param and f"{node_id}.{param}" == item.partition("=")[0]
    io.check_value(value, "the value")  # what a workflow file may hold (raises otherwise)
    json.dumps(value, allow_nan=False)


@examples(300)
@given(sets=st.lists(st.tuples(KEYS, RAW_VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"), min_size=1, max_size=3))
@example(sets=["n0.value=" + "1" + "0" * 400])  # OverflowError: int too large to convert to float
@example(sets=["n0.value=" + "9" * 5000])
@example(sets=["n1.y=NaN"])
@example(sets=["n1.y=1e400"])  # inf stored for a float port without a range
@example(sets=["n0.value=-Infinity"])
@example(sets=["s.seconds=nan"])  # the plain-text spelling reaches float() too
@example(sets=["n2.x=" + "[" * 100_000])
def test_apply_sets_stores_a_valid_value_or_one_line(sets, test_reg):
    g = _graph()
    try:
        apply_sets(g, test_reg, sets)
    except CliError as exc:
        assert_one_line(exc, "--set")
        return
    for item in sets:
        node_id, param, _ = parse_set(item)
        value = g.nodes[node_id].params.get(param)
        if isinstance(value, float):
            assert math.isfinite(value), (item, value)
    # what was stored validates (for the known types) and saves as strict JSON
    touched = {parse_set(item)[:2] for item in sets}
    for problem in validate(g, test_reg):
        assert problem.node_id == "u" or (problem.node_id, problem.port) not in touched, (sets, str(problem))
    json.loads(io.dumps(g))
    assert io.graph_to_dict(io.loads(io.dumps(g))) == io.graph_to_dict(g)


def test_text_that_looks_like_json_constants_stays_text():
    """`--set p.path=NaN` is the word NaN, not float('nan') turned into 'nan'."""
    assert parse_set("r.path=NaN") == ("r", "path", "NaN")
    assert parse_set("r.path=1e400") == ("r", "path", "1e400")
    assert parse_set("n0.value=1.5") == ("n0", "value", 1.5)
