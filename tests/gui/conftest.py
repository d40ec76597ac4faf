"""GUI fixtures: settings and user data in tmp folders, a MainWindow factory, tiny test nodes.

The root conftest already points IMAGEBASH_DATA_DIR / IMAGEBASH_CONFIG_DIR at temporary folders
and sets QT_QPA_PLATFORM=offscreen; here every window gets its own Settings over that folder,
an output folder under tmp_path, and answers to its questions that never open a modal dialog.
"""

from __future__ import annotations

import time
from typing import Annotated

import numpy as np
import pytest

from nodes.registry import Registry, default_registry, node
from nodes.types import Context, Image, Range, Video


@pytest.fixture
def gui_settings(tmp_path):
    from app.ui.settings import Settings

    s = Settings()
    s.output_dir = tmp_path / "out"
    s.set("ui/autosave_interval_s", 0.2)
    s.sync()
    return s


@pytest.fixture
def make_window(qtbot, gui_settings):
    """`make_window(**kwargs)` -> a shown MainWindow; closed (discarding changes) at teardown."""
    from app.ui.window import MainWindow

    made = []

    def make(**kwargs):
        kwargs.setdefault("ask_restore", lambda entries: False)
        win = MainWindow(kwargs.pop("settings", gui_settings), **kwargs)
        win.ask_unsaved = lambda doc: "discard"
        qtbot.addWidget(win)
        win.show()
        qtbot.waitExposed(win)
        activate(qtbot, win)
        made.append(win)
        return win

    yield make
    for win in made:
        win.ask_unsaved = lambda doc: "discard"
        if win.isVisible():
            win.close()


@pytest.fixture
def restore_theme(qapp):
    """Put the application's style sheet and canvas theme back after a test that changes them."""
    from app.ui import theme

    sheet, name = qapp.styleSheet(), theme.current_theme()
    yield
    theme.apply_theme(qapp, name)
    qapp.setStyleSheet(sheet)


def activate(qtbot, win):
    """Make `win` the active window, so its keyboard shortcuts fire (offscreen needs asking)."""
    win.windowHandle().requestActivate()
    qtbot.waitUntil(win.isActiveWindow, timeout=3000)


def node_item(view, node_id):
    """The canvas item that draws `node_id`."""
    from app.ui.canvas.node_item import NodeItem

    for it in view.scene().items():
        if isinstance(it, NodeItem) and it.node_id == node_id:
            return it
    raise KeyError(node_id)


def qimage_rgb(img):
    """A QImage's pixels as an (H, W, 3) uint8 array (for comparing what widgets show)."""
    img = img.convertToFormat(img.Format.Format_RGB888)
    w, h = img.width(), img.height()
    buf = np.frombuffer(img.constBits(), np.uint8, count=img.bytesPerLine() * h).reshape(h, img.bytesPerLine())
    return buf[:, : w * 3].reshape(h, w, 3).copy()


def wait_job(qtbot, window, job, timeout=15000):
    qtbot.waitUntil(lambda: job.finished, timeout=timeout)
    return job


# tiny nodes for run tests, in a registry of their own (the global one stays untouched) ----------
TEST_REGISTRY = Registry(load_packs=False)


@node("test.gui.noise", category="test", registry=TEST_REGISTRY, legacy_ids=("test.gui.old_noise",))
def noise(width: Annotated[int, Range(1, 512)] = 32, height: Annotated[int, Range(1, 512)] = 24,
          seed: int = 0) -> Image:
    """Random pixels (deterministic per seed)."""
    rng = np.random.default_rng(seed)
    return rng.random((1, height, width, 3), dtype=np.float32)


@node("test.gui.slow", category="test", registry=TEST_REGISTRY)
def slow(image: Image, seconds: float = 30.0, ctx: Context = None) -> Image:
    """Waits (checking for cancel), reporting progress with a step preview."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        ctx.check_cancelled()
        ctx.progress((time.monotonic() - t0) / seconds, preview=1.0 - image[0])
        time.sleep(0.02)
    return image


@node("test.gui.chatty", category="test", registry=TEST_REGISTRY)
def chatty(image: Image, reports: int = 50000, ctx: Context = None) -> Image:
    """Reports progress far more often than a screen can show."""
    for i in range(reports):
        ctx.progress(i / reports, text=f"row {i}")
    return image


@node("test.gui.fail", category="test", registry=TEST_REGISTRY)
def fail(image: Image) -> Image:
    """Always fails."""
    raise ValueError("the pixels are upside down")


@node("test.gui.frames", category="test", registry=TEST_REGISTRY)
def frames(count: int = 5) -> Video:
    """A clip whose frame i is a flat grey of level i / count."""
    batch = np.stack([np.full((16, 20, 3), i / count, np.float32) for i in range(count)])
    return Video.from_batch(batch, fps=10)


@pytest.fixture(scope="session")
def test_registry():
    for type_id in ("imagebash.image.save", "imagebash.image.blend"):
        spec = default_registry().get(type_id)
        if spec is not None:
            TEST_REGISTRY.register(spec)
    return TEST_REGISTRY
