"""The desktop on a remote engine: Settings > Engines (token in the keyring only, Test connection),
a tab switched to a real `imagebash serve` from the toolbar and run with Ctrl+Enter (states,
thumbnails, files, preview pixels equal to a local run), Esc, a server that dies and comes back,
and a job followed again by a new window. Each server is `python -m tests.server.nodes_for_tests`
(the serve command with three test nodes) on 127.0.0.1 with a temporary data dir, always stopped."""

from __future__ import annotations

import pathlib

import httpx
import numpy as np
import pytest
from PySide6.QtCore import Qt

from app import __version__, paths, secrets
from app.engine.protocol import API
from app.engine.remote_cli import keyring_name
from app.graph.model import Graph, Link, NodeInstance
from app.ui.document import WorkflowDocument
from app.ui.settings import EngineEntry
from tests.gui.conftest import activate, node_item, qimage_rgb, wait_job
from tests.remote.servers import serving
from tests.server.conftest import wait_for

NAME = "gpu box"


@pytest.fixture
def server(tmp_path):
    """A real server, with one checkpoint of its own in its models folder; always stopped."""
    model = tmp_path / "models" / "checkpoints" / "server-only-model"
    model.mkdir(parents=True)
    (model / "model_index.json").write_text("{}")
    with serving(tmp_path) as s:
        yield s


@pytest.fixture
def registry():
    from tests.server.nodes_for_tests import make_registry

    return make_registry()  # the built-in packs and the server's test nodes, declared here too


@pytest.fixture
def remote_settings(gui_settings, server, memory_keyring):
    gui_settings.set_engines([EngineEntry(NAME, server.url)])
    secrets.set_token(keyring_name(server.url), server.token)
    return gui_settings


def _switch(win, key):
    """Choose an engine in the toolbar's Engine menu, as a click on its entry does."""
    action = next(a for a in win.engine_button.menu().actions() if a.data() == key)
    action.trigger()


def _server_job(server, run_id):
    return httpx.get(f"{server.url}{API}/jobs/{run_id}", headers=server.headers(), timeout=5).json()


def _preview_of(qtbot, win, node_id):
    """Select a node and wait for the preview panel's frame of it (fetched off the GUI thread).

    Waits on the panel's state, not with waitSignal on the fetcher's signal: that signal comes
    from a worker thread, and a second queued emission reaching pytest-qt's receiver after it
    disconnected crashes the interpreter (seen once in a full run)."""
    pv = win.preview
    before = pv._frame_a
    win.current_view().select_nodes([node_id])
    qtbot.waitUntil(lambda: pv._frame_a is not None and pv._frame_a is not before
                    and pv._current(pv.source) is not None and pv._current(pv.source).ref.node_id == node_id,
                    timeout=10000)
    return pv._current(pv.source), qimage_rgb(pv.view.image)


def _gate_graph(gate_file: pathlib.Path) -> Graph:
    """A node that waits until `gate_file` exists, then a picture that is saved."""
    g = Graph()
    g.add_node(NodeInstance("gate", "test.gate", {"path": str(gate_file), "x": -1.0}))
    g.add_node(NodeInstance("picture", "test.progress", {"steps": 3, "size": 8}, position=(260, 0)))
    g.add_node(NodeInstance("save", "imagebash.image.save", {"filename_prefix": "gated"}, position=(520, 0)))
    g.connect(Link("gate", "float", "picture", "delay"))
    g.connect(Link("picture", "image", "save", "image"))
    return g


def test_settings_adds_an_engine_tests_it_and_keeps_its_token_in_the_keyring_only(
        make_window, qtbot, gui_settings, server, memory_keyring):
    from app.ui.dialogs.settings import SettingsDialog

    win = make_window()
    dlg = SettingsDialog(gui_settings, win)
    qtbot.addWidget(dlg)
    ed = dlg.engines
    qtbot.mouseClick(ed.add_button, Qt.MouseButton.LeftButton)
    for field, text in ((ed.name, NAME), (ed.url, server.url + "/"), (ed.token, "not-the-token")):
        field.selectAll()
        qtbot.keyClicks(field, text)
    with qtbot.waitSignal(ed.tested, timeout=10000) as refused:
        qtbot.mouseClick(ed.test_button, Qt.MouseButton.LeftButton)
    assert "401" in refused.args[0] and "not-the-token" not in refused.args[0]
    ed.token.selectAll()
    qtbot.keyClicks(ed.token, server.token)
    with qtbot.waitSignal(ed.tested, timeout=30000) as ok:  # a first /info imports torch there
        qtbot.mouseClick(ed.test_button, Qt.MouseButton.LeftButton)
    assert ok.args[0] == f"Connected: imagebash {__version__} · CPU · no VRAM · 1 model", ok.args[0]
    dlg.accept()
    assert dlg.result() == dlg.DialogCode.Accepted, dlg.error.text()
    win.apply_settings()
    assert gui_settings.engines() == [EngineEntry(NAME, server.url)]
    assert memory_keyring.store == {("imagebash", f"engine:{server.url}"): server.token}
    gui_settings.sync()
    for root in (paths.config_dir(), paths.data_dir()):
        for f in root.rglob("*"):
            if f.is_file():
                assert server.token not in f.read_bytes().decode("utf-8", "replace"), f
    # the toolbar's Engine menu offers it now; a reopened dialog says a token is stored
    assert [a.data() for a in win.engine_button.menu().actions() if a.data()] == ["local", server.url, "pool"]
    again = SettingsDialog(gui_settings, win)
    qtbot.addWidget(again)
    again.engines.list.setCurrentRow(1)
    assert again.engines.token.text() == "" and "stored" in again.engines.token.placeholderText()
    # removing the engine removes its token
    qtbot.mouseClick(again.engines.remove_button, Qt.MouseButton.LeftButton)
    again.accept()
    assert gui_settings.engines() == [] and memory_keyring.store == {}


def test_a_tab_runs_on_the_remote_engine_as_on_the_local_one(make_window, qtbot, remote_settings, server):
    win = make_window()
    out = remote_settings.output_dir
    view = win.current_view()
    # a local run of the default workflow first: the pixels to compare with
    local_job = wait_job(qtbot, win, win.run_current(), timeout=20000)
    assert local_job.status == "done"
    local_summary, local_pixels = _preview_of(qtbot, win, "grade")
    assert local_summary.ref.run_id == local_job.run_id

    _switch(win, server.url)
    assert win.current_document().engine == server.url
    qtbot.waitUntil(lambda: win.engine_button.text() == f"Engine: {NAME} ▾", timeout=30000)  # probed
    assert f"on {NAME}" in win.windowTitle()
    assert NAME in win.tabs.tabToolTip(win.tabs.currentIndex())
    messages: list[str] = []
    win.statusBar().messageChanged.connect(messages.append)
    activate(qtbot, win)
    view.setFocus()
    with qtbot.waitSignal(win.runner.jobFinished, timeout=30000) as finished:
        qtbot.keyClick(view, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    job = finished.args[0]
    assert job.status == "done", job.message or job.errors
    assert job.engine == NAME and job.client is not win.engine
    assert any("uploading sky.png" in m for m in messages)  # the inputs went up, and it said so
    # canvas: states and thumbnails, as for a local run
    for nid in ("grade", "save"):
        item = node_item(view, nid)
        assert item.state == "done" and item.thumbnail is not None and not item.thumbnail.isNull()
    assert qimage_rgb(node_item(view, "save").thumbnail).std() > 5
    # the PNG came into the local output folder, next to the local run's (not over it)
    assert len(job.files) == 1 and job.files[0].parent == out and job.files[0].is_file()
    assert job.files[0] not in local_job.files and all(p.is_file() for p in local_job.files)
    from PySide6.QtGui import QImage

    assert np.array_equal(qimage_rgb(QImage(str(job.files[0]))), qimage_rgb(QImage(str(local_job.files[0]))))
    row = win.queue.row_of(job.number)
    assert row[2] == NAME and row[3] == "done" and win.queue.files_of(job.number) == [str(job.files[0])]
    # the preview shows the remote output, fetched from the server, with the local run's pixels
    win.current_view().select_nodes([])
    remote_summary, remote_pixels = _preview_of(qtbot, win, "grade")
    assert remote_summary.ref.run_id == job.run_id
    assert np.array_equal(remote_pixels, local_pixels)

    # model dropdowns of a remote tab list the server's models; a local tab's do not
    remote_doc = win.current_document()
    nid = remote_doc.add_node("imagebash.diffusion.load_model", (0, 600))
    qtbot.waitUntil(lambda: "server-only-model" in remote_doc.choices("imagebash.diffusion.load_model",
                                                                       "checkpoint"), timeout=30000)
    win.current_view().select_nodes([nid])
    combo = win.inspector.editors["checkpoint"]
    assert "server-only-model" in [combo.itemText(i) for i in range(combo.count())]
    local_view = win.new_document()
    local_nid = local_view.document.add_node("imagebash.diffusion.load_model")
    local_view.select_nodes([local_nid])
    combo = win.inspector.editors["checkpoint"]
    assert "server-only-model" not in [combo.itemText(i) for i in range(combo.count())]
    assert win.engine_button.text() == "Engine: local ▾"


def test_a_refused_workflow_and_a_refused_token_end_like_local_errors(
        make_window, qtbot, remote_settings, server, registry, tmp_path):
    from nodes.registry import node

    @node("test.gui.only_here", category="test", registry=registry)
    def only_here(x: float = 0.0) -> float:
        """A node this desktop has and the server does not."""
        return x

    g = _gate_graph(tmp_path / "never")
    g.add_node(NodeInstance("mine", "test.gui.only_here", position=(0, 200)))
    g.connect(Link("mine", "float", "gate", "x"))
    win = make_window(registry=registry, open_default=False)
    view = win.add_document(WorkflowDocument(g, registry))
    _switch(win, server.url)
    job = wait_job(qtbot, win, win.run_current(), timeout=20000)
    assert job.status == "error" and "test.gui.only_here" in job.message
    mine = node_item(view, "mine")
    assert mine.state == "failed" and "test.gui.only_here" in mine.message  # on the node, as locally
    assert any("mine" in ln and "test.gui.only_here" in ln for ln in win.log.lines())
    assert "could not start" in win.statusBar().currentMessage()

    # a token the server refuses (changed in the keyring): the client is rebuilt with it, and says so
    secrets.set_token(keyring_name(server.url), "a-wrong-token")
    win.apply_settings()
    _switch(win, server.url)
    qtbot.waitUntil(lambda: "(token refused)" in win.engine_button.text(), timeout=30000)
    assert "401" in win.engine_button.toolTip()
    assert len([ln for ln in win.log.lines() if "401" in ln]) == 1
    job = wait_job(qtbot, win, win.run_current(), timeout=20000)
    assert job.status == "error" and "401" in job.message and "a-wrong-token" not in job.message


def test_escape_cancels_a_remote_run(make_window, qtbot, remote_settings, server, registry, tmp_path):
    win = make_window(registry=registry, open_default=False)
    view = win.add_document(WorkflowDocument(_gate_graph(tmp_path / "never"), registry))
    _switch(win, server.url)
    job = win.run_current()
    gate = node_item(view, "gate")
    qtbot.waitUntil(lambda: gate.state == "running", timeout=20000)
    view.document.set_param("gate", "x", 5.0)  # the GUI thread is free while it runs remotely
    assert view.document.graph.nodes["gate"].params["x"] == 5.0
    activate(qtbot, win)
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_Escape)
    wait_job(qtbot, win, job, timeout=10000)
    assert job.status == "cancelled"
    assert win.queue.status_of(job.number) == "cancelled"
    assert _server_job(server, job.run_id)["status"] == "cancelled"
    assert remote_settings.in_flight() == []


def test_a_server_that_dies_shows_disconnected_and_reconnects_when_back(
        make_window, qtbot, remote_settings, server, registry, tmp_path):
    win = make_window(registry=registry, open_default=False)
    view = win.add_document(WorkflowDocument(_gate_graph(tmp_path / "never"), registry))
    _switch(win, server.url)
    job = win.run_current()
    qtbot.waitUntil(lambda: node_item(view, "gate").state == "running", timeout=20000)
    server.kill()
    qtbot.waitUntil(lambda: "disconnected, reconnecting…" in win.engine_button.text(), timeout=10000)
    assert win.engine_button.text() == f"Engine: {NAME} (disconnected, reconnecting…) ▾"
    assert "went away" in win.statusBar().currentMessage()
    qtbot.wait(1500)  # a few reconnect attempts fail meanwhile
    server.start()  # the same port and data dir
    qtbot.waitUntil(lambda: win.engine_button.text() == f"Engine: {NAME} ▾", timeout=20000)
    went = [ln for ln in win.log.lines() if "went away" in ln]
    assert len(went) == 1, went  # one line for the drop, however many attempts it took
    assert any("reconnected" in ln for ln in win.log.lines())
    # the client caught up from the event log: the restarted server says the job was interrupted
    wait_job(qtbot, win, job, timeout=10000)
    assert job.status == "error" and "interrupted" in job.message


def test_a_new_window_follows_a_remote_job_the_last_one_left_running(
        make_window, qtbot, remote_settings, server, registry, tmp_path):
    gate_file = tmp_path / "open"
    win = make_window(registry=registry, open_default=False)
    view = win.add_document(WorkflowDocument(_gate_graph(gate_file), registry), title="gated")
    _switch(win, server.url)
    job = win.run_current()
    qtbot.waitUntil(lambda: node_item(view, "gate").state == "running", timeout=20000)
    assert [(i["url"], i["run_id"], i["title"]) for i in remote_settings.in_flight()] == \
        [(server.url, job.run_id, "gated")]
    win.close()  # the desktop closes; the job runs on on the server
    assert _server_job(server, job.run_id)["status"] == "running"

    again = make_window(registry=registry, open_default=False)
    followed = next(j for j in again.runner.jobs if j.run_id == job.run_id)
    row = again.queue.row_of(followed.number)
    assert row[1:4] == ["gated", NAME, "running"]
    gate_file.touch()
    wait_job(qtbot, again, followed, timeout=20000)
    assert followed.status == "done", followed.message
    assert again.queue.status_of(followed.number) == "done"
    saved = [p for p in followed.files if p.suffix == ".png"]
    assert len(saved) == 1 and saved[0].parent == remote_settings.output_dir and saved[0].is_file()
    assert wait_for(lambda: remote_settings.in_flight() == [], 2.0)


def test_train_lora_on_the_current_tabs_remote_engine(make_window, qtbot, remote_settings, server, tiny_sd_dir,
                                                      tmp_path):
    import shutil

    from tests.gui.test_window_train import _dataset

    data = _dataset(tmp_path / "data")
    shutil.copytree(tiny_sd_dir, tmp_path / "models" / "checkpoints" / "tiny-sd")  # a model of the server's
    win = make_window(open_default=False)
    _switch(win, server.url)
    win.act_train.trigger()
    dlg = win._train_dialog
    assert dlg.engine_choice.currentData() == server.url  # the current tab's engine by default
    dlg.data.setText(str(data))  # a local folder: it goes up to the server
    qtbot.waitUntil(lambda: dlg.base.findText("tiny-sd") >= 0, timeout=30000)  # the server's model list
    assert dlg.base.findText("server-only-model") >= 0
    dlg.base.setCurrentIndex(dlg.base.findText("tiny-sd"))
    out = tmp_path / "loras" / "remote_style.safetensors"
    dlg.out.setText(str(out))
    dlg.resolution.setValue(64)
    dlg.rank.setValue(4)
    dlg.max_steps.setValue(2)
    dlg.sample_every.setValue(1)
    dlg.sample_steps.setValue(1)
    worker = dlg.start()
    qtbot.waitUntil(lambda: dlg.status_kind != "running", timeout=120000)
    assert dlg.status_kind == "done", dlg.status.text() + dlg.log_view.toPlainText()[-2000:]
    assert _server_job(server, worker.run_id)["status"] == "done"  # it trained there, not here
    assert out.is_file() and dlg.result.lora == out  # the LoRA came back to the path asked for
    assert dlg.loss_plot.steps == [1, 2]
    samples = [dlg.samples.item(i).data(Qt.ItemDataRole.UserRole) for i in range(dlg.samples.count())]
    assert len(samples) == 2 and all(pathlib.Path(p).is_file() for p in samples)  # downloaded here
