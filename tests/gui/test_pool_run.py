"""A pooled run from the window: Settings > Engines > Pool (checkboxes, Ray) saved and read back,
Run > Run on Pool on two in-process engines (the same files and pixels as a local run, progress
per engine in the queue row and the status bar), cancel, an engine that refuses named before the
run, all engines gone (one error line, what finished kept)."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from PIL import Image as PILImage

from app.engine.client import LocalEngine
from app.engine.remote import EngineUnavailable
from app.graph.model import Graph, Link, NodeInstance
from app.ui.document import WorkflowDocument
from app.ui.settings import EngineEntry, Settings
from nodes.registry import node
from nodes.types import Context, Image
from tests.gui.conftest import wait_job
from tests.pool import helpers

BOX = "gpu-box"
URL_A = "http://127.0.0.1:9"  # nothing listens there
URL_B = "http://127.0.0.1:10"


@pytest.fixture(scope="module")
def reg():
    r = helpers.registry()

    @node("test.pool.slow", registry=r, category="image/filter")  # one image at a time: splits
    def slow(image: Image, seconds: float = 30.0, ctx: Context = None) -> Image:
        """Waits (checking for cancel)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            ctx.check_cancelled()
            time.sleep(0.02)
        return image

    return r


@pytest.fixture
def second(reg):
    e = LocalEngine(reg)
    yield e
    e.shutdown()


def _pool_window(make_window, reg, second, graph):
    win = make_window(registry=reg, open_default=False)
    win.pool_engines = lambda: [("local", "local", win.engine), ("box", BOX, second)]
    win.add_document(WorkflowDocument(graph, reg))
    return win


def _pixels(paths):
    return [np.asarray(PILImage.open(p)) for p in paths]


# settings -------------------------------------------------------------------------------------------
def test_pool_checkboxes_and_ray_save_and_reload(make_window, qtbot, gui_settings, memory_keyring):
    from app.ui.dialogs.settings import SettingsDialog

    assert gui_settings.pool_ray == "off" and gui_settings.ray_target() is None  # an old file: the defaults
    gui_settings.set_engines([EngineEntry(BOX, URL_A), EngineEntry("other", URL_B)])
    assert gui_settings.pool_keys() == ["local", URL_A, URL_B]  # every engine joins by default
    win = make_window(open_default=False)
    dlg = SettingsDialog(gui_settings, win)
    qtbot.addWidget(dlg)
    pool = dlg.pool
    assert set(pool.boxes) == {"local", BOX, "other"} and all(b.isChecked() for b in pool.boxes.values())
    pool.box("other").click()
    assert not pool.ray_address.isEnabled()
    pool.ray.setCurrentIndex(pool.ray.findData("address"))
    assert pool.ray_address.isEnabled()
    dlg.accept()  # an address is needed
    assert dlg.result() != dlg.DialogCode.Accepted and "address" in dlg.error.text()
    qtbot.keyClicks(pool.ray_address, "ray://head:10001")
    dlg.engines.add_engine("third", "http://127.0.0.1:11")  # an engine added here joins at once
    assert pool.box("third").isChecked()
    pool.box("third").click()
    dlg.accept()
    assert dlg.result() == dlg.DialogCode.Accepted, dlg.error.text()
    gui_settings.sync()

    again = Settings(gui_settings.q.__class__(gui_settings.q.fileName(), gui_settings.q.format()))
    assert again.pool_keys() == ["local", URL_A]
    assert again.pool_ray == "address" and again.ray_target() == "ray://head:10001"
    dlg2 = SettingsDialog(again, win)
    qtbot.addWidget(dlg2)
    states = {name: b.isChecked() for name, b in dlg2.pool.boxes.items()}
    assert states == {"local": True, BOX: True, "other": False, "third": False}
    assert dlg2.pool.ray.currentData() == "address" and dlg2.pool.ray_address.text() == "ray://head:10001"
    dlg2.pool.box("local").click()
    dlg2.pool.ray.setCurrentIndex(dlg2.pool.ray.findData("local"))
    dlg2.accept()
    assert again.pool_keys() == [URL_A] and again.ray_target() == "local"
    assert [k for k, _n, _c in win.engines.pool_members()] == [URL_A]  # the window reads the same store


# runs -----------------------------------------------------------------------------------------------
def test_pooled_seed_sweep_same_files_as_a_local_run_with_progress_per_engine(make_window, qtbot, reg, second):
    win = _pool_window(make_window, reg, second, helpers.sweep(count=6))
    local = wait_job(qtbot, win, win.run_current(), timeout=20000)
    assert local.status == "done" and len(local.files) == 6

    seen: list[tuple[str, str]] = []
    win.pool.progressed.connect(lambda job, p: seen.append((win.queue.row_of(job.number)[6],
                                                            win.pool.bar.format())))
    win.act_run_pool.trigger()
    job = win.runner.jobs[-1]
    assert job.engine == "pool" and win.queue.status_of(job.number) == "running"
    assert win.act_cancel.isEnabled()
    wait_job(qtbot, win, job, timeout=20000)
    assert job.status == "done", job.message
    assert len(job.files) == 6 and all(f.exists() for f in job.files)
    for a, b in zip(_pixels(local.files), _pixels(job.files), strict=True):
        np.testing.assert_array_equal(a, b)
    # per-engine counts in the queue row and the status bar while it ran, the files listed after
    assert seen and all(re.fullmatch(r"\d/6 · local \d, gpu-box \d", row) for row, _bar in seen), seen
    assert seen[-1][0].startswith("6/6") and seen[-1][1] == "pool: " + seen[-1][0]
    assert win.queue.status_of(job.number) == "done" and win.queue.files_of(job.number) == [str(f) for f in job.files]
    assert not win.pool.bar.isVisible()
    lines = _log_lines(win)
    assert any(re.search(r"pool: 6 seeds in \d+ shard\(s\) on local, gpu-box", m) for m in lines), lines


def test_pooled_frame_ranges_same_video_as_a_local_run(make_window, qtbot, reg, second, tmp_path):
    from nodes.video.reader import open_video

    clip = helpers.make_clip(tmp_path / "c.mkv", frames=16)
    win = _pool_window(make_window, reg, second, helpers.clip_graph(clip, save=True))
    local = wait_job(qtbot, win, win.run_current(), timeout=20000)
    assert local.status == "done" and len(local.files) == 1
    win.act_run_pool.trigger()
    job = wait_job(qtbot, win, win.runner.jobs[-1], timeout=20000)
    assert job.status == "done", job.message
    assert len(job.files) == 1 and job.files[0].suffix == ".mkv"
    np.testing.assert_array_equal(open_video(job.files[0]).to_batch(), open_video(local.files[0]).to_batch())
    assert re.fullmatch(r"1 file\(s\) · 16/16 · local \d, gpu-box \d", win.queue.row_of(job.number)[6])


def _choose_in_engine_menu(qtbot, win, key):
    """Open the toolbar's Engine menu and click the entry of engine `key`."""
    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtTest import QTest

    menu = win.engine_button.menu()
    menu.popup(win.engine_button.mapToGlobal(QPoint(0, win.engine_button.height())))
    qtbot.waitExposed(menu)
    action = next(a for a in menu.actions() if a.data() == key)
    QTest.mouseClick(menu, Qt.MouseButton.LeftButton, pos=menu.actionGeometry(action).center())
    qtbot.waitUntil(lambda: not menu.isVisible(), timeout=3000)


def test_pool_chosen_in_a_tabs_engine_menu_makes_ctrl_enter_a_pooled_run(make_window, qtbot, reg, second):
    from PySide6.QtCore import Qt

    from tests.gui.conftest import activate

    win = _pool_window(make_window, reg, second, helpers.sweep(count=4))
    pool_view = win.current_view()
    pool_doc = pool_view.document
    assert "Pool (all engines)" in [a.text() for a in win.engine_button.menu().actions()]
    _choose_in_engine_menu(qtbot, win, "pool")
    assert pool_doc.engine == "pool"
    assert win.engine_button.text() == "Engine: Pool (all engines) ▾"
    checked = [a.data() for a in win.engine_button.menu().actions() if a.isCheckable() and a.isChecked()]
    assert checked == ["pool"]
    activate(qtbot, win)
    pool_view.setFocus()
    before = len(win.runner.jobs)
    with qtbot.waitSignal(win.pool.started, timeout=5000):
        qtbot.keyClick(pool_view, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    job = win.runner.jobs[-1]
    assert len(win.runner.jobs) == before + 1 and job.engine == "pool" and job.document is pool_doc
    wait_job(qtbot, win, job, timeout=20000)
    assert job.status == "done", job.message
    assert len(job.files) == 4 and all(f.exists() for f in job.files)  # as with Run > Run on Pool
    assert re.fullmatch(r"\d+ file\(s\) · 4/4 · local \d, gpu-box \d", win.queue.row_of(job.number)[6]), \
        win.queue.row_of(job.number)
    # the choice is the tab's: another tab runs locally, and coming back shows Pool again
    other = win.add_document(WorkflowDocument(helpers.sweep(count=2), reg))
    assert other.document.engine == "local" and win.engine_button.text() == "Engine: local ▾"
    local = wait_job(qtbot, win, win.run_current(), timeout=20000)
    assert local.engine == "local" and local.status == "done" and len(local.files) == 2
    win.tabs.setCurrentWidget(pool_view)
    assert win.engine_button.text() == "Engine: Pool (all engines) ▾" and pool_doc.engine == "pool"
    pooled_again = win.run_current()
    assert pooled_again.engine == "pool"
    wait_job(qtbot, win, pooled_again, timeout=20000)
    assert pooled_again.status == "done", pooled_again.message
    # and back to local from the same menu
    _choose_in_engine_menu(qtbot, win, "local")
    assert pool_doc.engine == "local" and win.engine_button.text() == "Engine: local ▾"


def _slow_sweep(count: int = 4) -> Graph:
    g = helpers.sweep(count=count, save=False)
    g.add_node(NodeInstance("slow", "test.pool.slow", {"seconds": 30.0}))
    g.connect(Link("b", "image", "slow", "image"))
    return g


def test_cancel_stops_a_pooled_run(make_window, qtbot, reg, second):
    win = _pool_window(make_window, reg, second, _slow_sweep())
    started = time.monotonic()
    win.act_run_pool.trigger()
    job = win.runner.jobs[-1]
    qtbot.waitUntil(lambda: bool(win.pool.active and win.pool.active[0].tracked
                                 and all(t.runs for t in win.pool.active[0].tracked)), timeout=10000)
    win.act_cancel.trigger()
    wait_job(qtbot, win, job, timeout=10000)
    assert job.status == "cancelled" and time.monotonic() - started < 15
    assert win.queue.status_of(job.number) == "cancelled"
    assert not win.pool.busy and not win.act_cancel.isEnabled()


class Refusing:
    """A remote engine that refuses the token (what preflight hears from one)."""

    url = "http://127.0.0.1:9"

    def info(self):
        raise EngineUnavailable("the engine at http://127.0.0.1:9 refused the token (401)")

    def models(self, kind):
        return []

    def subscribe(self, listener):
        return lambda: None


def _log_lines(win):
    return win.log.lines()


def test_an_engine_that_refuses_is_named_before_the_run_and_left_out(make_window, qtbot, reg, second):
    win = _pool_window(make_window, reg, second, helpers.sweep(count=3, save=False))
    win.pool_engines = lambda: [("local", "local", win.engine), (Refusing.url, BOX, Refusing())]
    win.act_run_pool.trigger()
    job = wait_job(qtbot, win, win.runner.jobs[-1], timeout=20000)
    assert job.status == "done", job.message
    lines = _log_lines(win)
    refused = [i for i, t in enumerate(lines) if f"pool: {BOX} ({Refusing.url}): left out:" in t and "401" in t]
    split = [i for i, t in enumerate(lines) if "pool: 3 seeds in" in t and "on local" in t]
    assert refused and split, lines
    assert re.fullmatch(r"3/3 · local \d", win.queue.row_of(job.number)[6])
    assert not any(BOX in t and "shard" in t for t in lines[max(refused):])  # it took no shard


def test_all_engines_gone_is_one_error_line_and_keeps_what_finished(make_window, qtbot, reg, second):
    win = _pool_window(make_window, reg, second, helpers.sweep(count=8))
    win.pool_engines = lambda: [("a", "a", helpers.Flaky(win.engine, 1, "a")),
                                ("b", "b", helpers.Flaky(second, 2, "b"))]
    win.act_run_pool.trigger()
    job = wait_job(qtbot, win, win.runner.jobs[-1], timeout=20000)
    assert job.status == "error" and "every engine left the pool" in job.message and "3 of 8 shards" in job.message
    assert len(job.files) == 3 and all(f.exists() for f in job.files)  # what finished is saved
    lines = _log_lines(win)
    assert sum("every engine left the pool" in t for t in lines) == 1, lines
    assert any("left the pool" in t and "goes to the others" in t for t in lines)


def test_a_ray_address_that_does_not_answer_is_one_line_and_the_engines_run_on(
        make_window, qtbot, reg, second, gui_settings):
    pytest.importorskip("ray")
    gui_settings.pool_ray = "address"
    gui_settings.pool_ray_address = "ray://127.0.0.1:9"
    win = _pool_window(make_window, reg, second, helpers.sweep(count=3, save=False))
    win.act_run_pool.trigger()
    job = wait_job(qtbot, win, win.runner.jobs[-1], timeout=20000)
    assert job.status == "done", job.message
    lines = [t for t in _log_lines(win) if "ray://127.0.0.1:9" in t]
    assert len(lines) == 1 and "does not answer" in lines[0], lines
