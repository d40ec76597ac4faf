"""Dialogs of the main window: settings, crash restore, LoRA training, export."""
