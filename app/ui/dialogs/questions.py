"""The blocking questions of the main window (the window lets tests replace them)."""

from __future__ import annotations

import pathlib
from typing import Any

from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget


def ask_unsaved(parent: QWidget, name: str) -> str:
    """'save', 'discard' or 'cancel' for a workflow with unsaved changes."""
    box = QMessageBox(QMessageBox.Icon.Warning, "Unsaved changes", f"Save the changes to {name} before closing?",
                      QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                      | QMessageBox.StandardButton.Cancel, parent)
    box.setDefaultButton(QMessageBox.StandardButton.Save)
    answer = QMessageBox.StandardButton(box.exec())
    answers = {QMessageBox.StandardButton.Save: "save", QMessageBox.StandardButton.Discard: "discard"}
    return answers.get(answer, "cancel")


def ask_save_path(parent: QWidget, settings: Any, name: str, current: pathlib.Path | None) -> pathlib.Path | None:
    """Where to save a workflow (starting in the last folder used); None when cancelled."""
    folder = pathlib.Path(str(settings.get("ui/last_dir", pathlib.Path.home())))
    start = current or folder / (name.removesuffix(".json") + ".json")
    f, _ = QFileDialog.getSaveFileName(parent, "Save workflow", str(start), "Workflows (*.json)")
    if not f:
        return None
    settings.set("ui/last_dir", str(pathlib.Path(f).parent))
    return pathlib.Path(f)
