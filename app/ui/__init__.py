"""The PySide6 desktop editor: main window, canvas, panels and dialogs (the only package that imports Qt)."""
