"""The inspector: every parameter of the selected node, with its docs from the declaration.

Editors come from `app.ui.widgets.param_editors.make_editor` and commit through
`WorkflowDocument.set_param`, so each change is one undo step; the panel rebuilds itself when the
node changes from elsewhere (an undo, the canvas' inline editor). A keyframed parameter shows its
schedule line with the curve editor embedded below it (a ◆ before its name); turning keyframes on
or off rebuilds the panel, since the parameter's editor changes kind. The curve and its scrubber
span the clip feeding the node (`app.ui.clip`: the nearest Load Video / Load Image Sequence
upstream, from the last run's outputs or a probe of its file), updated as that clip changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFormLayout,
    QFrame,
    QLabel,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app.graph.model import GraphEvent
from app.ui.clip import ClipLengths
from app.ui.widgets.param_editors import ScheduleField, make_editor
from nodes.registry import REQUIRED
from nodes.schedule import is_schedule_json

_NODE_EVENTS = {"param_changed", "mode_changed", "node_changed", "link_added", "link_removed"}


class InspectorPanel(QScrollArea):
    """Shows one node of one document; `show_node(document, node_id)` or `clear()`."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.document: Any = None
        self.node_id: str | None = None
        self.editors: dict[str, QWidget] = {}
        self.error = QLabel()
        self._unsubscribe = None
        self._committing = False
        #: (node id, port) of scheduled parameters whose curve editor the user folded away.
        self._curves_closed: set[tuple[str, str]] = set()
        #: Lengths of the clips feeding nodes (probes cached per file); the window sets `run_outputs`
        #: (document -> {node: {port: OutputSummary}}) and `ran_params` ((document, node) -> params).
        self.clips = ClipLengths(self)
        self.clips.changed.connect(self.refresh_clip_length)
        self.run_outputs: Callable[[Any], dict] | None = None
        self.ran_params: Callable[[Any, str], dict | None] | None = None
        self.clip_length: int | None = None
        self.clear()

    # public -------------------------------------------------------------------------------------
    def show_node(self, document: Any, node_id: str | None) -> None:
        if document is not self.document:
            self._detach()
            self.document = document
            if document is not None:
                self._unsubscribe = document.graph.subscribe(self._graph_event)
        self.node_id = node_id if document is not None and node_id in document.graph.nodes else None
        self._rebuild()

    def refresh_clip_length(self) -> None:
        """Give the scheduled parameters' editors the (new) length of the clip feeding the node."""
        n = self._clip_length()
        if n == self.clip_length:
            return
        self.clip_length = n
        for w in self.editors.values():
            if isinstance(w, ScheduleField):
                w.set_clip_length(n)

    def _clip_length(self) -> int | None:
        if self.document is None or self.node_id is None:
            return None
        doc = self.document
        outputs = self.run_outputs(doc) if self.run_outputs is not None else None
        ran = (lambda nid: self.ran_params(doc, nid)) if self.ran_params is not None else None
        return self.clips.clip_length(doc, self.node_id, outputs, ran)

    def clear(self) -> None:
        self._detach()
        self.document = None
        self.node_id = None
        self._rebuild()

    # building -----------------------------------------------------------------------------------
    def _detach(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _set_body(self, body: QWidget) -> None:
        # the old body may hold the widget whose signal got us here: delete it later, not now, and
        # silence it first (a spin box losing focus as it goes would commit its text once more)
        old = self.widget()
        if old is not None:
            for w in old.findChildren(QWidget):
                w.blockSignals(True)
            old = self.takeWidget()
        self.setWidget(body)
        if old is not None:
            old.deleteLater()

    def _rebuild(self) -> None:
        self.editors = {}
        self.clip_length = self._clip_length()
        body = QWidget()
        lay = QVBoxLayout(body)
        lay.setAlignment(Qt.AlignmentFlag.AlignTop)
        if self.document is None or self.node_id is None:
            hint = QLabel("Select a node to see its parameters and documentation.")
            hint.setWordWrap(True)
            hint.setObjectName("hint")
            lay.addWidget(hint)
            self._set_body(body)
            return
        node = self.document.graph.nodes[self.node_id]
        spec = self.document.registry.get(node.type)
        title = QLabel(f"<b>{node.title or (spec.title if spec else node.type)}</b>"
                       f"<br><span style='color:#888'>{self.node_id} · {node.type}"
                       f"{' · ' + node.mode.value if node.mode.value != 'normal' else ''}</span>")
        title.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(title)
        if spec is None:
            missing = QLabel(f"Unknown node type '{node.type}': is its node pack installed?")
            missing.setWordWrap(True)
            lay.addWidget(missing)
            self._set_body(body)
            return
        doc = QLabel(_reflow(spec.description))
        doc.setWordWrap(True)
        doc.setObjectName("nodeDoc")
        doc.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(doc)
        lay.addWidget(_line())
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for port in spec.inputs_for(node.params):
            link = self.document.graph.link_into(self.node_id, port.name)
            label = QLabel(port.name.replace("_", " "))
            label.setToolTip(_port_tip(port))
            if link is not None:
                w: QWidget = QLabel(f"← {link.src}.{link.src_port}")
            elif port.is_param:
                value = node.params.get(port.name, port.default if port.default is not REQUIRED else None)
                key = (self.node_id, port.name)
                if is_schedule_json(value):
                    label.setText("◆ " + label.text())
                    label.setProperty("scheduled", True)
                w = make_editor(port, value, lambda v, name=port.name: self._commit(name, v),
                                choices=lambda name=port.name: self.document.choices(spec.id, name),
                                clip_length=self.clip_length,
                                curve_inline=True, curve_open=key not in self._curves_closed,
                                on_curve_toggled=lambda shown, key=key: self._curve_toggled(key, shown))
                self.editors[port.name] = w
            else:
                w = QLabel(f"{port.kind} input — not connected" + ("" if port.required else " (optional)"))
                w.setObjectName("hint")
            w.setToolTip(_port_tip(port))
            form.addRow(label, w)
            if port.help:
                helptext = QLabel(port.help)
                helptext.setWordWrap(True)
                helptext.setObjectName("hint")
                form.addRow("", helptext)
        lay.addLayout(form)
        if spec.outputs:
            lay.addWidget(_line())
            outs = QLabel("Outputs: " + ", ".join(f"{p.name} ({p.kind})" for p in spec.outputs))
            outs.setWordWrap(True)
            lay.addWidget(outs)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #e0605a")
        self.error.hide()
        lay.addWidget(self.error)
        self._set_body(body)

    # editing ------------------------------------------------------------------------------------
    def _commit(self, name: str, value: Any) -> None:
        if self.document is None or self.node_id is None:
            return
        old = self.document.graph.nodes[self.node_id].params.get(name)
        self._committing = True
        try:
            self.document.set_param(self.node_id, name, value)
            self.error.hide()
        except ValueError as exc:
            self.error.setText(str(exc))
            self.error.show()
            return
        finally:
            self._committing = False
        new = self.document.graph.nodes[self.node_id].params.get(name)
        if is_schedule_json(old) != is_schedule_json(new):  # keyframes on or off: another editor
            self._rebuild()

    def _curve_toggled(self, key: tuple[str, str], shown: bool) -> None:
        if shown:
            self._curves_closed.discard(key)
        else:
            self._curves_closed.add(key)

    def _graph_event(self, event: GraphEvent) -> None:
        if self._committing or self.node_id is None:
            return
        if event.kind == "node_removed" and event.data["node"].id == self.node_id:
            self.node_id = None
            self._rebuild()
            return
        if event.kind not in _NODE_EVENTS:
            return
        link = event.data.get("link")
        touched = event.data.get("node_id") == self.node_id or (link is not None and link.dst == self.node_id)
        if touched:
            self._rebuild()
        else:  # upstream: a loader's path or trim, a link, may change the clip
            self.refresh_clip_length()


def _reflow(text: str) -> str:
    """Docstring text with its hard line breaks joined; blank lines stay paragraph breaks."""
    paras = [" ".join(line.strip() for line in para.splitlines()) for para in text.split("\n\n")]
    return "\n\n".join(p for p in paras if p)


def _port_tip(port: Any) -> str:
    parts = [f"{port.name}: {port.describe_kind()}"]
    if port.help:
        parts.append(port.help)
    if port.range is not None:
        parts.append(f"range {port.range.min} … {port.range.max}")
    return "\n".join(parts)


def _line() -> QFrame:
    f = QFrame()
    f.setFrameShape(QFrame.Shape.HLine)
    f.setFrameShadow(QFrame.Shadow.Sunken)
    return f
