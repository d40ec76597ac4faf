"""Render the window with the default workflow after a run, for reviewers to look at."""

from __future__ import annotations

import os
import shutil

import numpy as np

from tests.gui.conftest import wait_job


def test_render_window_with_default_workflow(make_window, qtbot, tmp_path, restore_theme):
    win = make_window()
    win.apply_theme("dark")
    win.resize(1600, 1000)
    win._default_dock_sizes()
    assert win.width() <= 1600  # no panel forces the window wider than a laptop screen
    job = wait_job(qtbot, win, win.run_current())
    assert job.status == "done"
    win.current_view().select_nodes(["grade"])
    qtbot.waitUntil(lambda: win.preview.view.image is not None, timeout=5000)
    qtbot.wait(50)
    shot = win.grab()
    path = tmp_path / "imagebash_window.png"
    assert shot.save(str(path))
    print(f"\nwindow screenshot: {path}")
    if os.environ.get("IMAGEBASH_SCREENSHOT_COPY"):
        shutil.copy(path, os.environ["IMAGEBASH_SCREENSHOT_COPY"])
    img = shot.toImage().convertToFormat(shot.toImage().Format.Format_RGB888)
    arr = np.frombuffer(img.constBits(), np.uint8, count=img.bytesPerLine() * img.height())
    arr = arr.reshape(img.height(), img.bytesPerLine())[:, : img.width() * 3].reshape(img.height(), img.width(), 3)
    # the preview dock shows the graded picture: many distinct colours, not a flat panel
    pr = win.preview.view
    top_left = pr.mapTo(win, pr.rect().topLeft())
    region = arr[top_left.y(): top_left.y() + pr.height(), top_left.x(): top_left.x() + pr.width()]
    assert len(np.unique(region.reshape(-1, 3), axis=0)) > 500
