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

#: Every colour token, written once: (dark theme, light theme).
_PAIRS: dict[str, tuple[str, str]] = {
    "bg": ("#1e1f22", "#f3f4f6"),
    "bg_alt": ("#26282c", "#e8eaed"),
    "panel": ("#2b2d31", "#ffffff"),
    "border": ("#3c3f45", "#c9ccd1"),
    "text": ("#dcdde0", "#1f2328"),
    "text_dim": ("#8c9096", "#656b73"),
    "accent": ("#4f8fe6", "#2f6fd0"),
    "accent_text": ("#ffffff", "#ffffff"),
    "input_bg": ("#18191b", "#ffffff"),
    "hover": ("#34373c", "#e2e5ea"),
    "selection": ("#f2b33d", "#d98e04"),
    "canvas_bg": ("#202124", "#eceef1"),
    "grid": ("#2a2b2f", "#e1e3e7"),
    "grid_major": ("#333439", "#d4d7dc"),
    "node_bg": ("#303236", "#fbfbfc"),
    "node_title": ("#3d4046", "#dfe3e9"),
    "node_border": ("#17181a", "#a9aeb6"),
    "node_text": ("#e4e5e8", "#1f2328"),
    "node_text_dim": ("#9a9ea5", "#5d636b"),
    "link": ("#9aa0a8", "#6d737b"),
    "running": ("#4f8fe6", "#2f6fd0"),
    "cached": ("#3fa36b", "#2e8a57"),
    "done": ("#6cbf84", "#3f9c5f"),
    "failed": ("#e0524d", "#c93a35"),
    "queued": ("#b08d3c", "#9a7420"),
    "skipped": ("#6d7178", "#9aa0a8"),
    "muted": ("#5b5e63", "#b4b8be"),
    "bypassed": ("#8a5cc7", "#7a48bd"),
    "refuse": ("#e0524d", "#c93a35"),
    "note_bg": ("#4a4630", "#fff6c8"),
    "note_text": ("#f1ecd2", "#3b3520"),
    "minimap_bg": ("#17181add", "#ffffffdd"),
    "minimap_view": ("#f2b33d", "#d98e04"),
}
TOKENS: dict[str, dict[str, str]] = {theme: {k: pair[i] for k, pair in _PAIRS.items()}
                                   for i, theme in enumerate(("dark", "light"))}

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
