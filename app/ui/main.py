"""Starting the editor: `run_gui(path)` builds the QApplication and the main window.

Nothing on the way to the first paint imports torch (node modules import it inside the nodes
that need it), so the window appears in about a second. With IMAGEBASH_EXIT_AFTER_FIRST_PAINT=1
the process prints `first_paint_s=<seconds since the process started>` after the window's first
paint and exits 0 (the start-up benchmark uses it).
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication, QWidget

_IMPORTED_AT = time.time()


def process_age_s() -> float:
    """Seconds since this process started (from /proc on Linux, else since this module loaded)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time() - _IMPORTED_AT


class _FirstPaint(QObject):
    """Reports the first paint of the window's canvas, then quits (benchmark mode)."""

    def __init__(self, window: QWidget) -> None:
        super().__init__(window)
        self.window = window
        self.done = False

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if (not self.done and event.type() == QEvent.Type.Paint and isinstance(obj, QWidget)
                and obj.window() is self.window):
            self.done = True
            QTimer.singleShot(0, self._report)
        return False

    def _report(self) -> None:
        print(f"first_paint_s={process_age_s():.3f}", flush=True)
        self.window.runner.shutdown()
        self.window.autosave.close_clean()
        QApplication.instance().exit(0)


def make_app(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv[:1])
    app.setApplicationName("imagebash")
    app.setOrganizationName("imagebash")
    return app


def run_gui(workflow_path: pathlib.Path | None = None) -> int:
    """Open the editor (with `workflow_path`, else the default workflow); returns the exit status."""
    app = make_app()
    from app import secrets
    from app.ui.settings import Settings
    from app.ui.theme import apply_theme
    from app.ui.window import MainWindow

    secrets.install_log_redaction()
    settings = Settings()
    apply_theme(app, settings.theme)
    window = MainWindow(settings, workflow=workflow_path)
    if os.environ.get("IMAGEBASH_EXIT_AFTER_FIRST_PAINT") == "1":
        window.ask_unsaved = lambda _doc: "discard"
        app.installEventFilter(_FirstPaint(window))
    window.show()
    code = app.exec()
    return int(code)
