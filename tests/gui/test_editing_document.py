"""WorkflowDocument: every edit is one undo step on the Graph; files, dirty state and link checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

from app.graph import GraphError, Link, NodeMode, io
from app.ui.document import WorkflowDocument
from tests.gui.canvas_support import REG


@pytest.fixture
def doc(qapp):
    return WorkflowDocument(registry=REG)


def snapshot(d: WorkflowDocument) -> str:
    """The workflow as saved, with nodes and links in a stable order (their order carries no meaning)."""
    doc = io.graph_to_dict(d.graph)
    for key in ("nodes", "links"):
        doc[key] = sorted(doc[key], key=json.dumps)
    return json.dumps(doc, sort_keys=True)


def test_each_edit_is_one_undo_step_that_restores_the_graph_exactly(doc):
    a = doc.add_node("test.canvas.solid", (0, 0))
    b = doc.add_node("test.canvas.blend", (300, 0))
    doc.connect(a, "image", b, "base")
    edits = [
        lambda: doc.set_param(b, "opacity", 0.5),
        lambda: doc.set_mode(b, NodeMode.BYPASSED),
        lambda: doc.set_collapsed(a, True),
        lambda: doc.set_title(a, "Backdrop"),
        lambda: doc.move_nodes({a: (10.0, 20.0), b: (310.0, 20.0)}),
        lambda: doc.connect(a, "image", b, "layer"),
        lambda: doc.disconnect(Link(a, "image", b, "base")),
        lambda: doc.add_group("G", (0, 0, 100, 100), "#112233"),
        lambda: doc.add_note("hi", (5, 5)),
        lambda: doc.remove_nodes([a]),
        lambda: doc.paste(doc.copy_json([a, b]), (50, 50)),
    ]
    for edit in edits:
        before = snapshot(doc)
        count = doc.undo_stack.count()
        edit()
        after = snapshot(doc)
        assert after != before and doc.undo_stack.count() == count + 1
        doc.undo_stack.undo()
        assert snapshot(doc) == before
        doc.undo_stack.redo()
        assert snapshot(doc) == after


def test_connect_refuses_with_the_reason(doc):
    a = doc.add_node("test.canvas.solid")
    b = doc.add_node("test.canvas.blend")
    p = doc.add_node("test.canvas.prompt")
    with pytest.raises(GraphError, match="gives Image, which cannot feed Mask input 'mask'"):
        doc.connect(a, "image", b, "mask")
    with pytest.raises(GraphError, match="has no input 'nope'"):
        doc.connect(a, "image", b, "nope")
    with pytest.raises(GraphError, match="cannot feed"):
        doc.connect(p, "str", b, "opacity")
    doc.connect(a, "image", b, "base")
    c = doc.add_node("test.canvas.blend")
    doc.connect(b, "image", c, "base")
    with pytest.raises(GraphError, match="loop"):
        doc.connect(c, "image", b, "layer")
    assert len(doc.graph.links) == 2


def test_new_nodes_carry_their_declared_defaults(doc):
    b = doc.add_node("test.canvas.blend", params={"opacity": 0.25})
    node = doc.graph.nodes[b]
    assert node.params == {"mode": "normal", "opacity": 0.25} and node.version == 1
    assert b == "blend_1" and doc.add_node("test.canvas.blend") == "blend_2"


def test_save_marks_clean_and_load_round_trips(doc, tmp_path, qtbot):
    a = doc.add_node("test.canvas.solid", (1, 2))
    assert doc.is_dirty()
    path = tmp_path / "w.json"
    with qtbot.waitSignal(doc.dirtyChanged) as sig:
        doc.save(path)
    assert sig.args == [False] and not doc.is_dirty() and doc.path == path
    doc.set_param(a, "value", 0.9)
    assert doc.is_dirty()
    doc.undo_stack.undo()
    assert not doc.is_dirty()  # back where it was saved
    again = WorkflowDocument.load(path, REG)
    assert again.to_json() == doc.to_json() and not again.is_dirty()
    with pytest.raises(ValueError, match="no file yet"):
        WorkflowDocument(registry=REG).save()


def test_a_png_with_a_workflow_opens_as_an_unsaved_document(doc, tmp_path):
    doc.add_node("test.canvas.solid")
    info = PngInfo()
    info.add_text(io.PNG_WORKFLOW_KEY, doc.to_json())
    png = tmp_path / "out.png"
    PILImage.fromarray(np.zeros((4, 4, 3), np.uint8)).save(png, pnginfo=info)
    opened = WorkflowDocument.load(png, REG)
    assert opened.path is None  # saving must not overwrite the image
    assert json.loads(opened.to_json())["nodes"] == json.loads(doc.to_json())["nodes"]


def test_reroutes_follow_their_link(doc):
    a = doc.add_node("test.canvas.solid")
    b = doc.add_node("test.canvas.blend")
    link = doc.connect(a, "image", b, "base")
    doc.set_reroutes(link, [(100, 50)])
    pasted = doc.paste(doc.copy_json([a, b]), (10, 10))
    nb = next(n for n in pasted if doc.graph.nodes[n].type == "test.canvas.blend")
    assert doc.reroutes(f"{nb}:base") == [(110.0, 60.0)]
    doc.disconnect(link)
    assert doc.reroutes(f"{b}:base") == []
    doc.undo_stack.undo()
    assert doc.reroutes(f"{b}:base") == [(100.0, 50.0)]
