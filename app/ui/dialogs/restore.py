"""After a crash: offer to restore the workflows the last session had not saved."""

from __future__ import annotations

import time

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QListWidget, QVBoxLayout, QWidget

from app.ui.autosave import AutosaveEntry


class RestoreDialog(QDialog):
    """Lists the autosaved workflows; Restore opens them in tabs, Discard deletes them."""

    def __init__(self, entries: list[AutosaveEntry], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Restore unsaved work?")
        text = QLabel("imagebash did not close cleanly last time. These workflows had unsaved changes; "
                      "restore them from their last autosave?")
        text.setWordWrap(True)
        items = QListWidget()
        for e in entries:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.saved_at))
            items.addItem(f"{e.title}  —  {e.path or 'never saved'}  (autosaved {when})")
        buttons = QDialogButtonBox()
        buttons.addButton("Restore", QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton("Discard", QDialogButtonBox.ButtonRole.RejectRole)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(text)
        lay.addWidget(items)
        lay.addWidget(buttons)


def ask_restore(entries: list[AutosaveEntry], parent: QWidget | None = None) -> bool:
    return RestoreDialog(entries, parent).exec() == QDialog.DialogCode.Accepted
