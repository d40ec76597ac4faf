"""Dock panels of the main window: inspector, preview, queue, log."""
