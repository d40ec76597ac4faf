"""Settings > Engines: the local engine and the remote ones (a name and a URL), and their tokens.

The list goes to `Settings.engines()` (QSettings); a token goes to the OS keyring only, under
`keyring_name(url)` (the name the CLI reads too), and is never shown back: the field says
whether one is stored. An engine whose URL changes takes its stored token along; a removed one
takes it away. "Test connection" asks the engine's `info()` on a worker thread (with a timeout)
and reports its version, GPU, free VRAM and model count, or the one-line error.

The Pool section (`PoolEditor`) says which engines join a pooled run (Run > Run on Pool): a
checkbox for this computer and for each engine listed above (every one joins by default), and
whether the run also goes to a Ray cluster (off, a Ray instance started here, or an address).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app import secrets
from app.ui import settings as S
from app.ui.engines import describe_info, one_line
from app.ui.signals import emit_safely

#: Seconds Test connection waits for an answer (on a worker thread: the dialog stays live). A
#: server's first /info imports torch to name its GPU, which takes seconds on a cold box.
TEST_TIMEOUT_S = 20.0
DEFAULT_URL = "http://127.0.0.1:8188"


def _keyring_name(url: str) -> str:
    from app.engine.remote_cli import keyring_name

    return keyring_name(url)


def stored_token(url: str) -> str | None:
    try:
        return secrets.get_token(_keyring_name(S.normalize_url(url)))
    except ValueError:
        return None


@dataclass
class _Row:
    name: str
    url: str
    original_url: str = ""  # the URL its token is stored under ("" for a new engine)
    token: str = ""  # typed in this dialog, not stored yet


class EnginesEditor(QGroupBox):
    """The Engines section of the settings dialog; `apply()` writes it (False with `error` set
    when it cannot: a bad URL, a duplicate, a keyring that refuses)."""

    tested = Signal(str)  # the line Test connection ended with
    rowsChanged = Signal()  # an engine was added, removed or renamed (the Pool section follows)
    _result = Signal(object, str)  # (row, line), from the worker thread

    def __init__(self, settings: S.Settings, parent: QWidget | None = None) -> None:
        super().__init__("Engines", parent)
        self.settings = settings
        self.rows = [_Row(e.name, e.url, e.url) for e in settings.engines()]
        self.error = ""
        self.list = QListWidget()
        self.list.setMaximumHeight(110)
        self.name = QLineEdit()
        self.url = QLineEdit()
        self.url.setPlaceholderText(DEFAULT_URL)
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.add_button = QPushButton("Add")
        self.remove_button = QPushButton("Remove")
        self.test_button = QPushButton("Test connection")
        self.status = QLabel("Jobs of a tab run on its engine; switch it from the toolbar.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QHBoxLayout()
        for b in (self.add_button, self.remove_button, self.test_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("URL", self.url)
        form.addRow("Token", self.token)
        lay = QVBoxLayout(self)
        lay.addWidget(self.list)
        lay.addLayout(buttons)
        lay.addLayout(form)
        lay.addWidget(self.status)

        self.add_button.clicked.connect(lambda _=False: self.add_engine())
        self.remove_button.clicked.connect(lambda _=False: self.remove_engine())
        self.test_button.clicked.connect(lambda _=False: self.test_connection())
        self.list.currentRowChanged.connect(self._select)
        self.name.textEdited.connect(self._edited)
        self.url.textEdited.connect(self._edited)
        self.token.textEdited.connect(self._edited)
        self._result.connect(self._show_result, Qt.ConnectionType.QueuedConnection)
        self._fill()
        self.list.setCurrentRow(0)

    # the list ---------------------------------------------------------------------------------
    def _fill(self) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        self.list.addItem(QListWidgetItem("local — this computer"))
        for r in self.rows:
            self.list.addItem(QListWidgetItem(f"{r.name} — {r.url}"))
        self.list.blockSignals(False)
        self.rowsChanged.emit()

    def _row(self) -> _Row | None:
        i = self.list.currentRow()
        return self.rows[i - 1] if 1 <= i <= len(self.rows) else None

    def _select(self, _i: int) -> None:
        r = self._row()
        for w in (self.name, self.url, self.token, self.remove_button, self.test_button):
            w.setEnabled(r is not None)
        self.name.setText(r.name if r else "local")
        self.url.setText(r.url if r else "")
        self.token.setText(r.token if r else "")
        stored = r is not None and stored_token(r.original_url or r.url) is not None
        self.token.setPlaceholderText("a token is stored in the OS keyring; type to replace it" if stored
                                      else "the engine's token (kept in the OS keyring, never in files)")

    def _edited(self, _text: str) -> None:
        r = self._row()
        if r is None:
            return
        r.name, r.url, r.token = self.name.text().strip(), self.url.text().strip(), self.token.text().strip()
        self.list.currentItem().setText(f"{r.name} — {r.url}")
        self.rowsChanged.emit()

    def add_engine(self, name: str = "", url: str = "", token: str = "") -> None:
        """A new engine row (the fields then edit it)."""
        self.rows.append(_Row(name or f"engine {len(self.rows) + 1}", url or DEFAULT_URL, "", token))
        self._fill()
        self.list.setCurrentRow(len(self.rows))

    def remove_engine(self) -> None:
        r = self._row()
        if r is not None:
            self.rows.remove(r)
            self._fill()
            self.list.setCurrentRow(min(len(self.rows), max(0, self.list.count() - 1)))

    # test -------------------------------------------------------------------------------------
    def test_connection(self) -> None:
        """Ask the selected engine what it is, on a worker thread (the answer comes as `tested`)."""
        r = self._row()
        if r is None:
            return
        try:
            url = S.normalize_url(r.url)
        except ValueError as exc:
            self._show_result(r, str(exc))
            return
        token = r.token or stored_token(r.original_url or url) or ""
        self.test_button.setEnabled(False)
        self.status.setText(f"Asking {url}…")
        threading.Thread(target=self._test_work, args=(r, url, token), name="imagebash-test-engine",
                         daemon=True).start()

    def _test_work(self, row: _Row, url: str, token: str) -> None:
        from app.engine.remote import RemoteEngine

        if token:
            secrets.remember(token)  # never in a log line, even in an error message
        engine = None
        try:
            engine = RemoteEngine(url, token, timeout=TEST_TIMEOUT_S)
            line = "Connected: " + describe_info(engine.info())
        except Exception as exc:  # noqa: BLE001 - whatever went wrong is the line to show
            line = one_line(exc)
        finally:
            if engine is not None:
                engine.shutdown()
        emit_safely(self._result, row, line)

    def _show_result(self, row: _Row, line: str) -> None:
        if row is self._row():
            self.test_button.setEnabled(True)
        self.status.setText(secrets.redact(line))
        self.tested.emit(self.status.text())

    # writing ----------------------------------------------------------------------------------
    def validate(self) -> list[S.EngineEntry]:
        """The entries as they would be stored (ValueError naming the first bad row)."""
        entries: list[S.EngineEntry] = []
        for r in self.rows:
            if not r.name:
                raise ValueError(f"the engine at {r.url} needs a name")
            url = S.normalize_url(r.url)
            if r.name == S.LOCAL_ENGINE.name or any(e.name == r.name for e in entries):
                raise ValueError(f"two engines are called '{r.name}': give each its own name")
            if any(e.url == url for e in entries):
                raise ValueError(f"{url} is listed twice")
            entries.append(S.EngineEntry(r.name, url))
        return entries

    def apply(self) -> bool:
        try:
            entries = self.validate()
            kept = {e.url for e in entries}
            for r, e in zip(self.rows, entries, strict=True):
                if r.token:
                    secrets.set_token(_keyring_name(e.url), r.token)
                elif r.original_url and r.original_url != e.url:  # moved: its token goes along
                    old = secrets.get_token(_keyring_name(r.original_url))
                    if old:
                        secrets.set_token(_keyring_name(e.url), old)
                if r.original_url and r.original_url not in kept:
                    secrets.delete_token(_keyring_name(r.original_url))
            originals = {r.original_url for r in self.rows}
            for gone in (e.url for e in self.settings.engines()):
                if gone not in originals and gone not in kept:
                    secrets.delete_token(_keyring_name(gone))
        except (ValueError, secrets.SecretStoreError) as exc:
            self.error = str(exc)
            return False
        self.settings.set_engines(entries)
        for r, e in zip(self.rows, entries, strict=True):
            r.url = r.original_url = e.url
            r.token = ""
        self.token.clear()
        self.error = ""
        return True


RAY_LABELS = {"off": "off", "local": "a Ray instance on this computer", "address": "the Ray cluster at"}


class PoolEditor(QGroupBox):
    """Settings > Engines > Pool: a checkbox per engine (this computer and each engine of the
    EnginesEditor, following its edits), and the Ray choice; `apply()` writes them (after the
    EnginesEditor's own apply, which settles the URLs)."""

    def __init__(self, settings: S.Settings, engines: EnginesEditor, parent: QWidget | None = None) -> None:
        super().__init__("Pool", parent)
        self.settings = settings
        self.engines = engines
        self.error = ""
        excluded = set(settings.pool_excluded())
        self._local = S.LOCAL not in excluded
        self._joins: dict[int, bool] = {id(r): r.url not in excluded for r in engines.rows}
        self.boxes: dict[str, QCheckBox] = {}  # engine name -> its checkbox
        self._box_lay = QVBoxLayout()
        self._box_lay.setContentsMargins(0, 0, 0, 0)
        hint = QLabel("Run > Run on Pool splits a seed sweep, a batch or a video's frames over these engines.")
        hint.setWordWrap(True)
        self.ray = QComboBox()
        for mode in S.POOL_RAY.values:
            self.ray.addItem(RAY_LABELS[mode], mode)
        self.ray.setCurrentIndex(max(0, self.ray.findData(settings.pool_ray)))
        self.ray.setToolTip("Also run the shards on a Ray cluster's actors (one per GPU); needs "
                            "pip install 'imagebash[ray]'")
        self.ray_address = QLineEdit(settings.pool_ray_address)
        self.ray_address.setPlaceholderText("ray://head:10001")
        ray_row = QHBoxLayout()
        ray_row.addWidget(self.ray)
        ray_row.addWidget(self.ray_address, 1)
        form = QFormLayout()
        form.addRow("Ray", ray_row)
        lay = QVBoxLayout(self)
        lay.addWidget(hint)
        lay.addLayout(self._box_lay)
        lay.addLayout(form)
        self.ray.currentIndexChanged.connect(lambda _i: self._ray_changed())
        engines.rowsChanged.connect(self._fill)
        self._fill()
        self._ray_changed()

    def _ray_changed(self) -> None:
        self.ray_address.setEnabled(self.ray.currentData() == "address")

    def _fill(self) -> None:
        while self._box_lay.count():
            w = self._box_lay.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self.boxes = {}
        local = QCheckBox("local — this computer")
        local.setChecked(self._local)
        local.toggled.connect(lambda on: setattr(self, "_local", bool(on)))
        self._box_lay.addWidget(local)
        self.boxes[S.LOCAL_ENGINE.name] = local
        for r in self.engines.rows:
            box = QCheckBox(f"{r.name} — {r.url}")
            box.setChecked(self._joins.setdefault(id(r), True))
            box.toggled.connect(lambda on, rid=id(r): self._joins.__setitem__(rid, bool(on)))
            self._box_lay.addWidget(box)
            self.boxes[r.name] = box

    def box(self, name: str) -> QCheckBox:
        """The checkbox of the engine called `name` ("local" for this computer)."""
        return self.boxes[name]

    def validate(self) -> None:
        if self.ray.currentData() == "address" and not self.ray_address.text().strip():
            raise ValueError("the pool's Ray cluster needs an address (ray://head:10001), or choose another Ray option")

    def apply(self) -> bool:
        try:
            self.validate()
        except ValueError as exc:
            self.error = str(exc)
            return False
        excluded = [] if self._local else [S.LOCAL]
        for r in self.engines.rows:
            if not self._joins.get(id(r), True):
                try:
                    excluded.append(S.normalize_url(r.url))
                except ValueError:
                    continue
        self.settings.set_pool_excluded(excluded)
        self.settings.pool_ray = str(self.ray.currentData())
        self.settings.pool_ray_address = self.ray_address.text()
        self.error = ""
        return True
