"""Dropping onto the canvas: palette nodes, image/video files, PNGs carrying a workflow."""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo
from PySide6.QtCore import QMimeData, QPointF, Qt
from PySide6.QtTest import QTest

from app.graph import Graph, NodeInstance, io
from app.ui.canvas.palette import NODE_MIME, NodePalette
from tests.gui.canvas_support import REG, drop, file_mime, make_view


def test_drag_node_from_palette_onto_canvas_with_undo_redo(qtbot):
    view = make_view(qtbot)
    palette = NodePalette(REG)
    qtbot.addWidget(palette)
    mime = palette.mime_for("test.canvas.blend")
    assert mime.hasFormat(NODE_MIME)
    assert drop(view, mime, (250, 120))
    doc = view.document
    (nid,) = doc.graph.nodes
    node = doc.graph.nodes[nid]
    assert node.type == "test.canvas.blend"
    assert abs(node.position[0] - 250) <= 1 and abs(node.position[1] - 120) <= 1
    assert node.params == {"mode": "normal", "opacity": 1.0}
    assert view.selected_node_ids() == [nid]
    doc.undo_stack.undo()
    assert not doc.graph.nodes and not view.canvas.nodes
    doc.undo_stack.redo()
    assert list(doc.graph.nodes) == [nid] and nid in view.canvas.nodes


def test_palette_search_filters_and_enter_requests_a_node(qtbot):
    palette = NodePalette(REG)
    qtbot.addWidget(palette)
    assert {"test.canvas.solid", "test.canvas.blend"} <= set(palette.visible_type_ids())
    QTest.keyClicks(palette.search, "blend")
    assert palette.visible_type_ids() == ["test.canvas.blend"]
    with qtbot.waitSignal(palette.nodeRequested) as sig:
        QTest.keyClick(palette.search, Qt.Key.Key_Return)
    assert sig.args == ["test.canvas.blend"]


def test_unknown_drop_is_ignored(qtbot):
    view = make_view(qtbot)
    mime = QMimeData()
    mime.setText("hello")
    assert not drop(view, mime, (0, 0))
    assert not view.document.graph.nodes


def test_dropping_a_png_with_a_workflow_emits_workflow_dropped(qtbot, tmp_path):
    g = Graph()
    g.add_node(NodeInstance("solid_1", "test.canvas.solid", {"value": 0.2}))
    info = PngInfo()
    info.add_text(io.PNG_WORKFLOW_KEY, io.dumps(g))
    png = tmp_path / "made_with_imagebash.png"
    PILImage.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png, pnginfo=info)
    view = make_view(qtbot)
    with qtbot.waitSignal(view.workflowDropped) as sig:
        assert drop(view, file_mime(png), (0, 0))
    assert sig.args == [str(png)]
    assert not view.document.graph.nodes  # opened elsewhere (a new tab), not pasted here


def test_dropping_a_workflow_json_emits_workflow_dropped(qtbot, tmp_path):
    g = Graph()
    g.add_node(NodeInstance("solid_1", "test.canvas.solid", {"value": 0.2}))
    wf = tmp_path / "mine.json"
    io.save(g, wf)
    view = make_view(qtbot)
    with qtbot.waitSignal(view.workflowDropped) as sig:
        assert drop(view, file_mime(wf), (0, 0))
    assert sig.args == [str(wf)]
    assert not view.document.graph.nodes


def test_dropping_images_and_videos_creates_load_nodes(qtbot, tmp_path):
    plain = tmp_path / "photo.png"
    PILImage.fromarray(np.zeros((8, 8, 3), np.uint8)).save(plain)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not decoded here")
    view = make_view(qtbot)
    doc = view.document
    assert drop(view, file_mime(plain, clip), (100, 100))
    nodes = sorted(doc.graph.nodes.values(), key=lambda n: n.position[1])
    assert [n.type for n in nodes] == ["imagebash.image.load", "imagebash.video.load"]
    assert nodes[0].params["path"] == str(plain) and nodes[1].params["path"] == str(clip)
    doc.undo_stack.undo()  # one step for the whole drop
    assert not doc.graph.nodes


def test_dropping_an_unknown_file_says_so(qtbot, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    view = make_view(qtbot)
    messages = []
    view.statusMessage.connect(messages.append)
    drop(view, file_mime(notes), QPointF(0, 0))
    assert not view.document.graph.nodes
    assert messages and "notes.txt" in messages[0]


def _frames(n: int) -> list[PILImage.Image]:
    return [PILImage.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)) for i in range(n)]


def test_dropping_an_animated_webp_creates_a_load_video_node_and_a_still_one_a_load_image(qtbot, tmp_path):
    anim, still, gif = tmp_path / "anim.webp", tmp_path / "still.webp", tmp_path / "anim.gif"
    first, *rest = _frames(3)
    first.save(anim, save_all=True, append_images=rest, duration=100, loop=0)
    first.save(gif, save_all=True, append_images=rest, duration=100, loop=0)
    _frames(1)[0].save(still)
    with PILImage.open(anim) as im:
        assert im.n_frames == 3  # what the test wrote is an animation
    view = make_view(qtbot)
    doc = view.document
    opened = []
    view.workflowDropped.connect(opened.append)
    assert drop(view, file_mime(anim, still, gif), (100, 100))
    assert not opened  # no workflow in any of them
    nodes = sorted(doc.graph.nodes.values(), key=lambda n: n.position[1])
    assert [(n.type, n.params["path"]) for n in nodes] == [
        ("imagebash.video.load", str(anim)), ("imagebash.image.load", str(still)), ("imagebash.video.load", str(gif))]
    # Load Video reads both animations frame by frame
    from nodes.video.reader import open_video
    assert len(open_video(anim)) == 3 and len(open_video(gif)) == 3
