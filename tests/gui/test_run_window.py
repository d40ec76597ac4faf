"""Running from the window: Ctrl+Enter, live node states and thumbnails, cancel, errors, queue, preview."""

from __future__ import annotations

from PySide6.QtCore import Qt

from app.engine import NodeProgress
from app.graph.model import Graph, Link, NodeInstance
from app.ui.document import WorkflowDocument
from tests.gui.conftest import activate, node_item, qimage_rgb, wait_job


def test_ctrl_enter_runs_the_default_workflow(make_window, qtbot, gui_settings):
    win = make_window()
    view = win.current_view()
    view.setFocus()
    with qtbot.waitSignal(win.runner.jobFinished, timeout=20000) as finished:
        qtbot.keyClick(view, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    job = finished.args[0]
    assert job.status == "done", job.message or job.errors
    files = list(gui_settings.output_dir.glob("blend_and_grade_*.png"))
    assert len(files) == 1 and job.files == files
    # the Save node shows the picture it saved; the grade node its own output
    save = node_item(view, "save")
    assert save.state == "done" and save.thumbnail is not None and not save.thumbnail.isNull()
    pixels = qimage_rgb(save.thumbnail)
    assert pixels.std() > 5  # a real picture, not a flat placeholder
    assert node_item(view, "grade").thumbnail is not None
    # the queue lists the run with its file; the preview offers every node's output
    assert win.queue.status_of(job.number) == "done"
    assert win.queue.files_of(job.number) == [str(files[0])]
    assert "grade.image" in [win.preview.source.itemText(i) for i in range(win.preview.source.count())]
    view.select_nodes(["save"])  # a sink: the preview shows what it saved
    assert win.preview.source.currentText() == "grade.image"

    # a second run hits the cache for unchanged nodes and writes a second file
    job2 = wait_job(qtbot, win, win.run_current())
    assert job2.status == "done"
    assert node_item(view, "grade").state == "cached"
    assert len(list(gui_settings.output_dir.glob("blend_and_grade_*.png"))) == 2


def _slow_graph() -> Graph:
    g = Graph()
    g.add_node(NodeInstance("noise", "test.gui.noise", {"width": 24, "height": 16}))
    g.add_node(NodeInstance("slow", "test.gui.slow", {"seconds": 60.0}, position=(260, 0)))
    g.connect(Link("noise", "image", "slow", "image"))
    return g


def test_escape_cancels_a_slow_run_and_the_window_stays_responsive(make_window, qtbot, test_registry):
    win = make_window(registry=test_registry, open_default=False)
    view = win.add_document(WorkflowDocument(_slow_graph(), test_registry))
    progress: list[float] = []
    win.runner.engineEvent.connect(
        lambda job, e: progress.append(e.fraction) if isinstance(e, NodeProgress) and e.node_id == "slow" else None)
    job = win.run_current()
    item = node_item(view, "slow")
    qtbot.waitUntil(lambda: item.state == "running" and (item.progress or 0) > 0, timeout=10000)
    qtbot.waitUntil(lambda: item.thumbnail is not None, timeout=5000)  # the step preview arrived
    # the GUI thread is free while the node runs: edits go through
    view.document.set_param("noise", "seed", 5)
    assert view.document.graph.nodes["noise"].params["seed"] == 5
    activate(qtbot, win)
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_Escape)
    wait_job(qtbot, win, job, timeout=5000)
    assert job.status == "cancelled"
    assert job.handle.wait(0).status["slow"] == "cancelled"
    assert progress and progress[-1] < 1  # stopped part-way, not run to the end
    assert win.queue.status_of(job.number) == "cancelled"


def test_a_failing_node_shows_its_error_on_the_node_and_in_the_log(make_window, qtbot, test_registry):
    win = make_window(registry=test_registry, open_default=False)
    g = Graph()
    g.add_node(NodeInstance("noise", "test.gui.noise"))
    g.add_node(NodeInstance("bad", "test.gui.fail", position=(260, 0)))
    g.add_node(NodeInstance("after", "test.gui.slow", {"seconds": 0.0}, position=(520, 0)))
    g.connect(Link("noise", "image", "bad", "image"))
    g.connect(Link("bad", "image", "after", "image"))
    view = win.add_document(WorkflowDocument(g, test_registry))
    job = wait_job(qtbot, win, win.run_current())
    assert job.status == "failed"
    bad = node_item(view, "bad")
    assert bad.state == "failed" and "upside down" in bad.message
    assert node_item(view, "after").state == "failed"  # the descendant did not run
    assert node_item(view, "noise").state == "done"
    errors = [ln for ln in win.log.lines() if "upside down" in ln]
    assert len(errors) == 1  # one line per error, not one per descendant
    item = next(win.log.tree.topLevelItem(i) for i in range(win.log.tree.topLevelItemCount())
                if "upside down" in win.log.tree.topLevelItem(i).text(3))
    win.log.show_details_of(item)
    assert "Traceback" in win.log.details.toPlainText() and "ValueError" in win.log.details.toPlainText()


def test_a_workflow_that_cannot_start_names_the_node(make_window, qtbot, test_registry):
    win = make_window(registry=test_registry, open_default=False)
    g = Graph()
    g.add_node(NodeInstance("slow", "test.gui.slow"))  # its image input is not connected
    view = win.add_document(WorkflowDocument(g, test_registry))
    job = wait_job(qtbot, win, win.run_current())
    assert job.status == "error"
    assert node_item(view, "slow").state == "failed"
    assert any("slow" in ln and "image" in ln for ln in win.log.lines())


def test_run_selected_runs_only_what_the_node_needs(make_window, qtbot, test_registry):
    win = make_window(registry=test_registry, open_default=False)
    g = _slow_graph()
    g.add_node(NodeInstance("other", "test.gui.noise", {"seed": 3}, position=(0, 200)))
    view = win.add_document(WorkflowDocument(g, test_registry))
    view.scene().clearSelection()
    node_item(view, "other").setSelected(True)
    assert view.selected_node_ids() == ["other"]
    view.setFocus()
    with qtbot.waitSignal(win.runner.jobFinished, timeout=20000) as finished:
        qtbot.keyClick(view, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    job = finished.args[0]
    assert job.targets == ["other"]
    assert job.status == "done"
    assert node_item(view, "other").state == "done"
    assert node_item(view, "slow").state == "idle" and node_item(view, "noise").state == "idle"


def test_a_saved_png_reopens_its_workflow(make_window, qtbot, gui_settings):
    win = make_window()
    doc = win.current_document()
    doc.set_param("grade", "saturation", 0.5)
    job = wait_job(qtbot, win, win.run_current())
    png = next(p for p in job.files if p.suffix == ".png")
    view = win.open_path(png)  # what dropping the PNG on the canvas does (workflowDropped)
    assert win.tabs.count() == 2 and view is win.current_view()
    reopened = view.document
    assert set(reopened.graph.nodes) == set(doc.graph.nodes)
    assert reopened.graph.nodes["grade"].params["saturation"] == 0.5
    assert reopened.path is None  # saving asks where: the PNG is never overwritten with JSON


def test_a_flood_of_progress_reports_does_not_flood_the_window(make_window, qtbot, test_registry):
    win = make_window(registry=test_registry, open_default=False)
    g = Graph()
    g.add_node(NodeInstance("noise", "test.gui.noise"))
    g.add_node(NodeInstance("chatty", "test.gui.chatty", {"reports": 50000}, position=(260, 0)))
    g.connect(Link("noise", "image", "chatty", "image"))
    view = win.add_document(WorkflowDocument(g, test_registry))
    delivered = []
    win.runner.engineEvent.connect(lambda job, e: delivered.append(type(e).__name__))
    job = wait_job(qtbot, win, win.run_current(), timeout=60000)
    assert job.status == "done"
    assert node_item(view, "chatty").state == "done"
    assert delivered.count("NodeProgress") < 2000  # throttled: the GUI thread saw a few per frame
    assert delivered[-1] == "RunFinished"
