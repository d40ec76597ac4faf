"""Colour tokens for the light and dark themes, shared by the qss and the painted canvas items.

Qt style sheets do not reach custom-painted QGraphicsItems, so both read the same token table:
the qss file uses `@token` placeholders that `apply_theme` substitutes, and canvas items ask
`canvas_palette()` for QColors. Change a colour here and both follow.
"""

from __future__ import annotations

import re

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QApplication

from app.paths import resource

TOKENS: dict[str, dict[str, str]] = {
    "dark": {
        "bg": "#1e1f22", "bg_alt": "#26282c", "panel": "#2b2d31", "border": "#3c3f45",
        "text": "#dcdde0", "text_dim": "#8c9096", "accent": "#4f8fe6", "accent_text": "#ffffff",
        "input_bg": "#18191b", "hover": "#34373c", "selection": "#f2b33d",
        "canvas_bg": "#202124", "grid": "#2a2b2f", "grid_major": "#333439",
        "node_bg": "#303236", "node_title": "#3d4046", "node_border": "#17181a", "node_text": "#e4e5e8",
        "node_text_dim": "#9a9ea5", "link": "#9aa0a8",
        "running": "#4f8fe6", "cached": "#3fa36b", "done": "#6cbf84", "failed": "#e0524d",
        "queued": "#b08d3c", "skipped": "#6d7178", "muted": "#5b5e63", "bypassed": "#8a5cc7",
        "refuse": "#e0524d", "note_bg": "#4a4630", "note_text": "#f1ecd2", "minimap_bg": "#17181add",
        "minimap_view": "#f2b33d",
    },
    "light": {
        "bg": "#f3f4f6", "bg_alt": "#e8eaed", "panel": "#ffffff", "border": "#c9ccd1",
        "text": "#1f2328", "text_dim": "#656b73", "accent": "#2f6fd0", "accent_text": "#ffffff",
        "input_bg": "#ffffff", "hover": "#e2e5ea", "selection": "#d98e04",
        "canvas_bg": "#eceef1", "grid": "#e1e3e7", "grid_major": "#d4d7dc",
        "node_bg": "#fbfbfc", "node_title": "#dfe3e9", "node_border": "#a9aeb6", "node_text": "#1f2328",
        "node_text_dim": "#5d636b", "link": "#6d737b",
        "running": "#2f6fd0", "cached": "#2e8a57", "done": "#3f9c5f", "failed": "#c93a35",
        "queued": "#9a7420", "skipped": "#9aa0a8", "muted": "#b4b8be", "bypassed": "#7a48bd",
        "refuse": "#c93a35", "note_bg": "#fff6c8", "note_text": "#3b3520", "minimap_bg": "#ffffffdd",
        "minimap_view": "#d98e04",
    },
}

#: Port colours by wire kind (the same in both themes: a kind is recognised by its colour).
PORT_COLORS: dict[str, str] = {
    "Image": "#5cb85c", "Mask": "#c9c9c9", "Latent": "#e07be0", "Model": "#b080e0",
    "Video": "#f0a030", "int": "#4fb0c6", "Seed": "#4fb0c6", "float": "#7fa7e8", "bool": "#e0c040",
    "str": "#e8b4a0", "Path": "#d0a070", "enum": "#90c0a0", "Any": "#a0a0a0",
}

_TOKEN_RE = re.compile(r"@([a-z_]+)")
_current = "dark"


class _ThemeNotifier(QObject):
    changed = Signal(str)


notifier = _ThemeNotifier()


def port_color(kind: str) -> QColor:
    """The colour of a port of `kind` (enum kinds share one colour)."""
    key = "enum" if kind.startswith("enum:") else kind
    return QColor(PORT_COLORS.get(key, PORT_COLORS["Any"]))


def current_theme() -> str:
    return _current


def stylesheet(name: str) -> str:
    """The qss text with the tokens of theme `name` substituted (unknown tokens are an error)."""
    tokens = TOKENS[name]
    text = resource("theme", "imagebash.qss").read_text(encoding="utf-8")

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in tokens:
            raise KeyError(f"imagebash.qss uses unknown colour token @{m.group(1)}")
        return tokens[m.group(1)]

    return _TOKEN_RE.sub(sub, text)


def apply_theme(app: QApplication, name: str = "dark") -> None:
    """Style the application with theme `name` ('dark' or 'light') and tell the canvases."""
    global _current
    if name not in TOKENS:
        raise ValueError(f"unknown theme {name!r}; choose one of {', '.join(TOKENS)}")
    app.setStyleSheet(stylesheet(name))
    _current = name
    notifier.changed.emit(name)


def canvas_palette(name: str | None = None) -> dict[str, QColor]:
    """QColors for painted canvas items, from the same tokens as the qss."""
    return {k: QColor(v) for k, v in TOKENS[name or _current].items()}
