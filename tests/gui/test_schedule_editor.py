"""Keyframe schedules in the editor: the toggle, the schedule line, the curve, the prompt table, the scrubber."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QLabel, QLineEdit

from app.ui.widgets.param_editors import ScheduleField, SliderSpin, make_editor
from app.ui.widgets.schedule_editor import CurveWidget, ScheduleEditor, join_keyframes
from nodes.registry import PortSpec
from nodes.schedule import Schedule, split_keyframes
from nodes.types import Range
from tests.gui.canvas_support import click, make_view
from tests.gui.conftest import qimage_rgb

OPACITY = PortSpec("opacity", "float", 1.0, range=Range(0, 1, 0.01))


def sched(text, interp="linear"):
    return {"schedule": text, "interp": interp}


def scheduled_field(qtbot, text, port=OPACITY, interp="linear"):
    got = []
    field = make_editor(port, sched(text, interp), got.append, curve_inline=True)
    qtbot.addWidget(field)
    field.resize(420, 320)
    field.show()
    qtbot.waitExposed(field)
    assert isinstance(field, ScheduleField)
    return field, got


def pt(curve, frame, value):
    return curve.point_for(frame, value).toPoint()


# the inspector of a real window ----------------------------------------------------------------
def test_keyframe_toggle_in_the_inspector_schedules_and_undo_restores(make_window, qtbot):
    win = make_window()
    doc = win.current_view().document
    win.current_view().select_nodes(["blend"])
    editor = win.inspector.editors["opacity"]
    assert isinstance(editor, SliderSpin) and editor.key_button is not None
    editor.key_button.click()
    value = doc.graph.nodes["blend"].params["opacity"]
    assert value == {"schedule": "0:(0.4)", "interp": "linear"}
    assert doc.undo_stack.count() == 1
    field = win.inspector.editors["opacity"]
    assert isinstance(field, ScheduleField) and field.key_button.isChecked()
    assert field.line.text() == "0:(0.4)" and field.editor is not None  # the curve, embedded
    labels = [w.text() for w in win.inspector.widget().findChildren(QLabel)]
    assert "◆ opacity" in labels
    # a bad schedule typed in the line is refused with the keyframe named; the graph keeps its value
    field.line.setFocus()
    field.line.selectAll()
    qtbot.keyClicks(field.line, "0:(0.4), 48:(oops)")
    qtbot.keyClick(field.line, Qt.Key.Key_Return)
    assert field.error.isVisible() and "keyframe 48" in field.error.text()
    assert field.line.toolTip() == field.error.text()
    assert doc.graph.nodes["blend"].params["opacity"] == value and doc.undo_stack.count() == 1
    # a good one commits, and the curve follows it
    field.line.selectAll()
    qtbot.keyClicks(field.line, "0:(0.4), 48:(0.9)")
    qtbot.keyClick(field.line, Qt.Key.Key_Return)
    assert not field.error.isVisible()
    assert doc.graph.nodes["blend"].params["opacity"]["schedule"] == "0:(0.4), 48:(0.9)"
    assert field.editor.curve.keys == [(0, "0.4"), (48, "0.9")]
    # out of the port's range is refused too
    field.line.selectAll()
    qtbot.keyClicks(field.line, "0:(3)")
    qtbot.keyClick(field.line, Qt.Key.Key_Return)
    assert "out of range" in field.error.text()
    assert doc.undo_stack.count() == 2
    win.act_undo.trigger()
    win.act_undo.trigger()
    assert doc.graph.nodes["blend"].params["opacity"] == pytest.approx(0.4)
    assert isinstance(win.inspector.editors["opacity"], SliderSpin)


def test_a_curve_drag_in_the_inspector_is_one_undo_step_and_ctrl_z_undoes_it(make_window, qtbot):
    win = make_window()
    doc = win.current_view().document
    doc.set_param("blend", "opacity", sched("0:(0.4), 48:(0.8)"))
    doc.undo_stack.clear()
    win.current_view().select_nodes(["blend"])
    field = win.inspector.editors["opacity"]
    curve = field.editor.curve
    qtbot.waitExposed(curve)
    QTest.mousePress(curve, Qt.MouseButton.LeftButton, pos=pt(curve, 48, 0.8))
    for f, v in ((44, 0.7), (40, 0.6)):
        QTest.mouseMove(curve, pt(curve, f, v))
    QTest.mouseRelease(curve, Qt.MouseButton.LeftButton, pos=pt(curve, 40, 0.6))
    assert doc.graph.nodes["blend"].params["opacity"]["schedule"] == "0:(0.4), 40:(0.6)"
    assert doc.undo_stack.count() == 1
    assert field.line.text() == "0:(0.4), 40:(0.6)"
    curve.setFocus()
    QTest.keyClick(curve, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # the app's undo
    assert doc.graph.nodes["blend"].params["opacity"]["schedule"] == "0:(0.4), 48:(0.8)"
    assert win.inspector.editors["opacity"].line.text() == "0:(0.4), 48:(0.8)"


# the curve -------------------------------------------------------------------------------------
def test_drag_double_click_delete_and_nudge_on_the_curve(qtbot):
    field, got = scheduled_field(qtbot, "0:(1.0), 48:(0.4)")
    curve = field.editor.curve
    # drag the second key: frame snaps to whole frames, the value is clamped to the range
    QTest.mousePress(curve, Qt.MouseButton.LeftButton, pos=pt(curve, 48, 0.4))
    QTest.mouseMove(curve, pt(curve, 30.3, 0.5))
    QTest.mouseMove(curve, curve.point_for(30, 1.0).toPoint() - QPoint(0, 40))  # above the top: 1
    QTest.mouseRelease(curve, Qt.MouseButton.LeftButton, pos=curve.point_for(30, 1.0).toPoint() - QPoint(0, 40))
    assert len(got) == 1 and got[-1] == sched("0:(1.0), 30:(1)")
    # a click without a move commits nothing
    QTest.mouseClick(curve, Qt.MouseButton.LeftButton, pos=pt(curve, 30, 1.0))
    assert len(got) == 1 and curve.selected == 1
    # double-click on empty space adds a keyframe there
    QTest.mouseDClick(curve, Qt.MouseButton.LeftButton, pos=pt(curve, 15, 0.2))
    assert len(got) == 2
    frames = [f for f, _ in split_keyframes(got[-1]["schedule"])]
    assert frames == [0, 15, 30]
    assert float(dict(split_keyframes(got[-1]["schedule"]))[15]) == pytest.approx(0.2, abs=0.02)
    # Delete removes the selected (the new) one; never the last one
    QTest.keyClick(curve, Qt.Key.Key_Delete)
    assert got[-1] == sched("0:(1.0), 30:(1)")
    QTest.mouseClick(curve, Qt.MouseButton.LeftButton, pos=pt(curve, 30, 1.0))
    QTest.keyClick(curve, Qt.Key.Key_Backspace)
    assert got[-1] == sched("0:(1.0)")
    n = len(got)
    QTest.mouseClick(curve, Qt.MouseButton.LeftButton, pos=pt(curve, 0, 1.0))
    QTest.keyClick(curve, Qt.Key.Key_Delete)
    assert len(got) == n and curve.keys == [(0, "1.0")]
    # arrows nudge the selected key (shift: x10)
    QTest.keyClick(curve, Qt.Key.Key_Right, Qt.KeyboardModifier.ShiftModifier)
    assert got[-1]["schedule"] == "10:(1.0)"
    QTest.keyClick(curve, Qt.Key.Key_Down)
    assert got[-1]["schedule"] == "10:(0.99)"
    assert field.line.text() == "10:(0.99)"


def test_expression_keys_move_in_frame_only_and_keep_their_text(qtbot):
    port = PortSpec("strength", "float", 0.5, range=Range(0, 1, 0.01))
    field, got = scheduled_field(qtbot, "0:(0.6+0.1*sin(2*pi*t/24)), 48:(0.2)", port)
    curve = field.editor.curve
    v0 = curve.key_values()[0]
    QTest.mousePress(curve, Qt.MouseButton.LeftButton, pos=pt(curve, 0, v0))
    QTest.mouseMove(curve, pt(curve, 6, 0.1))
    QTest.mouseRelease(curve, Qt.MouseButton.LeftButton, pos=pt(curve, 6, 0.1))
    assert got[-1]["schedule"] == "6:(0.6+0.1*sin(2*pi*t/24)), 48:(0.2)"


def test_interpolation_combo_commits_and_the_scrubber_reads_schedule_at(qtbot):
    field, got = scheduled_field(qtbot, "0:(1.0), 48:(0.4), 96:(1.0)")
    ed: ScheduleEditor = field.editor
    assert ed.scrubber.maximum() == 96 + 24
    for interp in ("linear", "ease"):
        if ed.interp_combo.currentText() != interp:
            ed.interp_combo.setCurrentText(interp)
            assert got[-1] == sched("0:(1.0), 48:(0.4), 96:(1.0)", interp)
        ref = Schedule.parse("0:(1.0), 48:(0.4), 96:(1.0)", "float", interp)
        for frame in (12, 30, 70):
            ed.scrubber.setValue(frame)
            assert ed.readout.text() == f"frame {frame}: {ref.at(frame):.4g}"
        assert ed.curve.playhead == 70
    assert ed.readout_at(12) != ScheduleEditor(OPACITY, sched("0:(1.0), 48:(0.4)"), lambda v: None).readout_at(12)
    # the caller's clip length sets the scrubber's span: its frames 0 .. 199 (a later keyframe widens it)
    clip = ScheduleEditor(OPACITY, sched("0:(1.0)"), lambda v: None, clip_length=200)
    qtbot.addWidget(clip)
    assert clip.scrubber.maximum() == 199 and clip.curve.span == 199
    clip.scrubber.setValue(12)
    assert clip.readout.text() == "frame 12 / 200: 1"
    clip.set_clip_length(30)
    assert clip.scrubber.maximum() == 29 and clip.curve.span == 29
    clip.set_clip_length(None)
    assert clip.scrubber.maximum() == 24
    late = ScheduleEditor(OPACITY, sched("0:(1.0), 40:(0.5)"), lambda v: None, clip_length=30)
    qtbot.addWidget(late)
    assert late.scrubber.maximum() == 40


def test_the_curve_is_drawn_where_the_values_are(qtbot):
    curve = CurveWidget("float", [(0, "1.0"), (48, "0.2")], "linear", 0.0, 1.0, 0.01)
    qtbot.addWidget(curve)
    curve.resize(400, 200)
    curve.show()
    qtbot.waitExposed(curve)
    img = qimage_rgb(curve.grab().toImage())
    dpr = curve.devicePixelRatioF()
    want = curve.curve_color()
    ref = Schedule.parse(curve.text(), "float")

    def near_curve(frame, value):
        p = curve.point_for(frame, value)
        x, y = round(p.x() * dpr), round(p.y() * dpr)
        patch = img[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).astype(int)
        return min(abs(px - [want.red(), want.green(), want.blue()]).sum() for px in patch) < 40

    for frame in (12, 30):
        assert near_curve(frame, ref.at(frame))
        assert not near_curve(frame, ref.at(frame) + 0.3)  # and not somewhere else
    assert near_curve(60, 0.2)  # held after the last keyframe


# prompts ---------------------------------------------------------------------------------------
def test_prompt_schedule_rows_commit_and_the_readout_shows_the_blend(qtbot):
    port = PortSpec("prompt", "str", "a cat", multiline=True)
    field, got = scheduled_field(qtbot, "0:(a cat), 48:(a dog)", port)
    ed = field.editor
    assert ed.table is not None and ed.curve is None
    ed.scrubber.setValue(12)
    assert ed.readout.text() == "frame 12: a cat 75% / a dog 25%"
    ed.table.table.item(1, 1).setText("a (red:1.2) fox")
    assert got[-1] == sched("0:(a cat), 48:(a (red:1.2) fox)")
    ed.table.table.item(1, 0).setText("24")
    assert got[-1]["schedule"] == "0:(a cat), 24:(a (red:1.2) fox)"
    n = len(got)
    ed.table.table.item(1, 0).setText("zero")  # not a frame: shown, not committed
    assert len(got) == n and ed.table.error.isVisible()
    ed.table.table.item(1, 0).setText("24")
    ed.table.add_button.click()
    assert got[-1]["schedule"] == "0:(a cat), 24:(a (red:1.2) fox), 48:(a (red:1.2) fox)"
    ed.table.table.selectRow(0)
    ed.table.remove_button.click()
    assert got[-1]["schedule"] == "24:(a (red:1.2) fox), 48:(a (red:1.2) fox)"
    assert field.line.text() == got[-1]["schedule"]


def test_prompt_toggle_and_unbalanced_brackets_round_trip(qtbot):
    port = PortSpec("prompt", "str", "a cat", multiline=True)
    got = []
    prompt = make_editor(port, "a cat :)", got.append)
    qtbot.addWidget(prompt)
    prompt.key_button.click()
    assert split_keyframes(got[-1]["schedule"]) == [(0, "a cat :)")]
    assert join_keyframes([(0, "x"), (5, "y (z)")]) == "0:(x), 5:(y (z))"
    field, got2 = scheduled_field(qtbot, got[-1]["schedule"], port)
    field.key_button.click()  # keyframes off: the value at frame 0
    assert got2[-1] == "a cat :)"


# the canvas' inline editor and the node face ---------------------------------------------------
def test_canvas_shows_and_edits_a_scheduled_parameter(qtbot):
    from app.ui.canvas.node_item import format_value
    from tests.gui.test_canvas_params import row_point

    view = make_view(qtbot)
    doc = view.document
    nid = doc.add_node("test.canvas.blend", (0, 0))
    doc.undo_stack.clear()
    click(view, row_point(view, nid, "opacity"))
    editor = view.canvas.editor_widget()
    assert isinstance(editor, SliderSpin)
    editor.key_button.click()
    qtbot.waitUntil(lambda: view.canvas.editor is None)
    assert doc.graph.nodes[nid].params["opacity"] == sched("0:(1)")
    port = doc.input_port(nid, "opacity")
    assert format_value(port, doc.graph.nodes[nid].params["opacity"]) == "◆ 0:(1)"
    view.grab()  # painting a scheduled row does not fail
    click(view, row_point(view, nid, "opacity"))
    field = view.canvas.editor_widget()
    assert isinstance(field, ScheduleField) and field.editor is None
    field.line.setText("0:(1), 24:(0.5)")
    field.line.editingFinished.emit()
    qtbot.waitUntil(lambda: view.canvas.editor is None)
    assert doc.graph.nodes[nid].params["opacity"] == sched("0:(1), 24:(0.5)")
    # the curve dialog commits once, on OK
    click(view, row_point(view, nid, "opacity"))
    field = view.canvas.editor_widget()
    field.curve_button.click()
    dialog = field.dialog
    dialog.editor.interp_combo.setCurrentText("step")
    dialog.accept()
    assert doc.graph.nodes[nid].params["opacity"] == sched("0:(1), 24:(0.5)", "step")
    # an int port without a range has its toggle inside the spin box's line
    got = []
    steps = make_editor(PortSpec("steps", "int", 20), 20, got.append)
    qtbot.addWidget(steps)
    line = steps.findChild(QLineEdit)
    action = next(a for a in line.actions() if a.objectName() == "keyframeAction")
    action.trigger()
    assert got == [sched("0:(20)")]


# the scrubber spans the clip feeding the node ----------------------------------------------------
def test_the_inspector_scrubber_spans_the_clip_of_the_load_video_upstream(make_window, qtbot, tmp_path):
    from types import SimpleNamespace

    from app.ui.document import WorkflowDocument
    from tests.video.conftest import make_clip

    clip = make_clip(tmp_path / "thirty.mp4", n=30)
    win = make_window()
    view = win.add_document(WorkflowDocument(registry=win.registry))
    doc = view.document
    load = doc.add_node("imagebash.video.load", (0, 0), {"path": str(clip)})
    adjust = doc.add_node("imagebash.image.color_adjust", (300, 0),
                          {"brightness": {"schedule": "0:(0), 6:(0.5)", "interp": "linear"}})
    doc.connect(load, "video", adjust, "image")
    view.select_nodes([adjust])
    field = win.inspector.editors["brightness"]
    assert isinstance(field, ScheduleField)
    ed: ScheduleEditor = field.editor
    qtbot.waitUntil(lambda: ed.scrubber.maximum() == 29, timeout=5000)  # probed off the GUI thread
    assert ed.curve.span == 29
    ed.scrubber.setValue(6)
    assert ed.readout.text() == "frame 6 / 30: 0.5"
    # the loader's trim is honoured, and follows its edits
    doc.set_param(load, "max_frames", 10)
    assert win.inspector.editors["brightness"].editor.scrubber.maximum() == 9
    doc.set_param(load, "max_frames", 0)
    doc.set_param(load, "start", 4)
    doc.set_param(load, "stride", 2)
    assert win.inspector.editors["brightness"].editor.scrubber.maximum() == 12  # frames 4, 6, .. 28
    # the last run's outputs tell it when the loader ran with these parameters
    outputs = {load: {"frame_count": SimpleNamespace(kind="int", value=7, frames=0)}}
    win.inspector.run_outputs = lambda d: outputs if d is doc else {}
    win.inspector.ran_params = lambda d, nid: dict(doc.graph.nodes[nid].params)
    win.inspector.refresh_clip_length()
    assert win.inspector.editors["brightness"].editor.scrubber.maximum() == 6
    win.inspector.ran_params = lambda d, nid: {"path": str(clip)}  # stale: ran before the trim changed
    win.inspector.refresh_clip_length()
    assert win.inspector.editors["brightness"].editor.scrubber.maximum() == 12
    # no clip upstream: the default span
    doc.disconnect(doc.graph.link_into(adjust, "image"))
    assert win.inspector.editors["brightness"].editor.scrubber.maximum() == 6 + 24


def test_after_a_run_the_scrubber_spans_the_clip_that_reaches_the_node(make_window, qtbot, tmp_path):
    """A length-changing node between the loader and the scheduled node counts once it has run."""
    from app.ui.document import WorkflowDocument
    from tests.gui.conftest import wait_job
    from tests.video.conftest import make_clip

    clip = make_clip(tmp_path / "thirty.mp4", n=30, size=(32, 32))
    win = make_window()
    view = win.add_document(WorkflowDocument(registry=win.registry))
    doc = view.document
    load = doc.add_node("imagebash.video.load", (0, 0), {"path": str(clip)})
    nth = doc.add_node("imagebash.video.select_nth", (250, 0), {"n": 3})
    adjust = doc.add_node("imagebash.image.color_adjust", (500, 0),
                          {"brightness": {"schedule": "0:(0), 6:(0.5)", "interp": "linear"}})
    doc.connect(load, "video", nth, "video")
    doc.connect(nth, "video", adjust, "image")
    view.select_nodes([adjust])
    qtbot.waitUntil(lambda: win.inspector.editors["brightness"].editor.scrubber.maximum() == 29, timeout=5000)
    assert wait_job(qtbot, win, win.run_current(), timeout=60000).status == "done"
    qtbot.waitUntil(lambda: win.inspector.editors["brightness"].editor.scrubber.maximum() == 9, timeout=5000)
    assert win.inspector.editors["brightness"].editor.readout.text().endswith("/ 10: 0")
    # an edit above the scheduled node makes that run's clip stale: back to the loader's file
    doc.set_param(nth, "n", 2)
    assert win.inspector.editors["brightness"].editor.scrubber.maximum() == 29
