"""The workflow file format: round trips, migrations, refusals, and clear messages."""

from __future__ import annotations

import json

import pytest

from app.graph import io
from app.graph.model import Graph, Group, Link, NodeInstance, NodeMode, Note
from app.graph.validate import validate
from tests.engine.conftest import chain


def test_round_trip_keeps_everything(tmp_path):
    g = chain(3)
    g.set_mode("n1", NodeMode.BYPASSED)
    g.set_node_attr("n2", "title", "Last")
    g.move_node("n2", (520, 40))
    g.add_item("group", Group("grp", "Numbers", (0, 0, 600, 200), "#aa3366"))
    g.add_item("note", Note("note", "hello", (10, 300)))
    g.meta["name"] = "demo"
    path = tmp_path / "w.json"
    io.save(g, path)
    doc = json.loads(path.read_text())
    assert doc["format"] == "imagebash/1"
    g2 = io.load(path)
    assert io.graph_to_dict(g2) == io.graph_to_dict(g)
    assert g2.nodes["n1"].mode is NodeMode.BYPASSED
    assert g2.groups["grp"].color == "#aa3366" and g2.notes["note"].text == "hello"


def test_older_format_is_migrated():
    old = {"format": "imagebash/0",
           "nodes": [{"id": "a", "type": "test.const", "x": 5, "y": 6, "inputs": {"value": 2}},
                     {"id": "b", "type": "test.math"}],
           "links": [["a", "float", "b", "x"]]}
    g = io.graph_from_dict(old)
    assert g.nodes["a"].position == (5.0, 6.0) and g.nodes["a"].params == {"value": 2}
    assert g.links == [Link("a", "float", "b", "x")]


def test_newer_format_is_refused():
    with pytest.raises(io.WorkflowFormatError, match="newer than this imagebash"):
        io.graph_from_dict({"format": "imagebash/99", "nodes": []})


@pytest.mark.parametrize("text, message", [
    ("{nope", "not valid JSON"),
    ('{"format": "comfy"}', "not an imagebash workflow"),
    ('{"format": "imagebash/1", "nodes": [{"id": "a"}]}', "node 'a' type must be a non-empty string"),
    ('{"format": "imagebash/1", "nodes": [{"id": "a", "type": "t"}, {"id": "a", "type": "t"}]}', "used twice"),
    ('{"format": "imagebash/1", "nodes": [], "links": [{"from": ["x", "o"], "to": ["y", "i"]}]}',
     "unknown node 'x'"),
    ('{"format": "imagebash/1", "nodes": [{"id": "a", "type": "t", "pos": "left"}]}', "pos must be a pair"),
])
def test_bad_files_say_what_is_wrong(text, message):
    with pytest.raises(io.WorkflowFormatError, match=message):
        io.loads(text)


def test_workflow_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    doc = {"format": "imagebash/1", "nodes": [
        {"id": "a", "type": "__import__('os').system('touch " + str(marker) + "')",
         "params": {"value": "__import__('os')"}}]}
    g = io.graph_from_dict(doc)
    from tests.engine.conftest import make_registry

    problems = validate(g, make_registry())
    assert any("unknown node type" in p.message for p in problems)
    assert not marker.exists()


def test_validate_reports_type_mismatch_and_unknown_ports(reg):
    g = Graph()
    g.add_node(NodeInstance("n", "test.noise"))
    g.add_node(NodeInstance("m", "test.math", {"bogus": 1, "op": "divide"}))
    g.connect(Link("n", "image", "m", "x"))
    g.connect(Link("n", "nothing", "m", "y"))
    text = sorted(str(p) for p in validate(g, reg))
    assert "node 'm' port 'x': type mismatch: n.image gives Image, which cannot feed float input 'x'" in text
    assert "node 'n' port 'nothing': test.noise has no output 'nothing'" in text
    assert "node 'm' port 'bogus': test.math has no input 'bogus'" in text
    assert "node 'm' port 'op': 'op' expects one of add, mul, got 'divide'" in text


def test_graph_events_and_undo_data():
    g = Graph()
    seen = []
    g.subscribe(lambda e: seen.append(e.kind))
    g.add_node(NodeInstance("a", "t"))
    g.add_node(NodeInstance("b", "t"))
    g.connect(Link("a", "o", "b", "i"))
    replaced = g.connect(Link("a", "p", "b", "i"))
    assert replaced == Link("a", "o", "b", "i")
    node, links = g.remove_node("a")
    assert node.id == "a" and links == [Link("a", "p", "b", "i")]
    assert seen == ["node_added", "node_added", "link_added", "link_removed", "link_added", "link_removed",
                    "node_removed"]


def test_png_with_embedded_workflow_loads(tmp_path):
    from PIL import Image, PngImagePlugin

    g = chain(2)
    info = PngImagePlugin.PngInfo()
    info.add_text(io.PNG_WORKFLOW_KEY, io.dumps(g))
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png", pnginfo=info)
    assert list(io.load(tmp_path / "x.png").nodes) == ["n0", "n1"]
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    with pytest.raises(io.WorkflowFormatError, match="carries no imagebash workflow"):
        io.load(tmp_path / "plain.png")
