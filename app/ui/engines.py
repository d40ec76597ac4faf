"""The window's engines: the local client and one RemoteEngine per remote URL, built on first use.

A tab runs on one of them (`WorkflowDocument.engine` holds its key: "local" or the URL). A remote
client is made lazily, with the token the OS keyring keeps for its URL, and is probed on a worker
thread (its `info()`), which also reads its model lists: the GUI thread never waits on the
network, so a model dropdown shows what the last probe found (`choices`). The link state shown in
the toolbar (`state`) comes from the probe and from the client's EngineStatus events, which the
RunController delivers on the GUI thread.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal

from app.ui.settings import LOCAL, LOCAL_ENGINE, EngineEntry, Settings
from app.ui.signals import emit_safely

log = logging.getLogger(__name__)

DISCONNECTED = "disconnected, reconnecting…"


@dataclass
class LinkState:
    """What the toolbar says about an engine: None = not known yet, True/False = up/down."""

    connected: bool | None = None
    text: str = ""  # "" (fine), "connecting…", "disconnected, reconnecting…", "unreachable"
    detail: str = ""  # the one line behind it (version and device, or the error)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe_info(info: dict[str, Any]) -> str:
    """'imagebash 0.1.0 · NVIDIA H200 · 80.0 GB VRAM free · 3 models' from an engine's info()."""
    parts = [f"imagebash {info.get('version', '?')}", str(info.get("gpu") or "CPU")]
    free = info.get("vram_free")
    parts.append(f"{float(free) / 2**30:.1f} GB VRAM free" if isinstance(free, (int, float)) else "no VRAM")
    n = int(info.get("models") or 0)
    parts.append(f"{n} model{'s' if n != 1 else ''}")
    return " · ".join(parts)


class EngineSet(QObject):
    """See the module docstring. `clientAdded(key, client)` fires when a client is made (the
    RunController subscribes to it); `changed(key)` when its link state changes, `choicesChanged(key)`
    when a probe read its model lists, `failed(key, line)` when a probe found it unreachable."""

    clientAdded = Signal(str, object)
    changed = Signal(str)
    choicesChanged = Signal(str)
    failed = Signal(str, str)  # key, the one line of a probe that could not reach it (or was refused)
    _probed = Signal(object, object, str)  # client, info or None, error (from a worker thread)
    _listed = Signal(object, object)  # client, {(type_id, port): [choices]}

    def __init__(self, settings: Settings, local: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.local = local
        self._clients: dict[str, Any] = {LOCAL: local}
        self._tokens: dict[str, str] = {}  # url -> the token its client was built with
        self._state: dict[str, LinkState] = {LOCAL: LinkState(True)}
        self._choices: dict[str, dict[tuple[str, str], list[str]]] = {}
        self._probing: set[int] = set()  # ids of the clients a probe is out for
        self._probed.connect(self._on_probed, Qt.ConnectionType.QueuedConnection)
        self._listed.connect(self._on_listed, Qt.ConnectionType.QueuedConnection)

    # the list ---------------------------------------------------------------------------------
    def entries(self) -> list[EngineEntry]:
        return [LOCAL_ENGINE, *self.settings.engines()]

    def entry(self, key: str) -> EngineEntry | None:
        return next((e for e in self.entries() if e.key == key), None)

    def name(self, key: str) -> str:
        e = self.entry(key)
        return e.name if e is not None else key

    def known(self, key: str) -> bool:
        return self.entry(key) is not None

    # clients ----------------------------------------------------------------------------------
    def client(self, key: str) -> Any:
        """The client of engine `key` (made now if needed: never blocks); KeyError if unknown."""
        if key in self._clients:
            return self._clients[key]
        if not key.startswith(("http://", "https://")):
            raise KeyError(f"no engine '{key}'")
        return self._make(key)

    def _make(self, url: str) -> Any:
        from app import secrets
        from app.engine.remote import RemoteEngine
        from app.engine.remote_cli import keyring_name

        token = secrets.get_token(keyring_name(url)) or ""
        client = RemoteEngine(url, token, local_registry=self.local.registry)
        self._clients[url] = client
        self._tokens[url] = token
        self._state[url] = LinkState(None, "connecting…")
        self.clientAdded.emit(url, client)
        self.changed.emit(url)
        self.probe(url)
        return client

    def key_of(self, client: Any) -> str | None:
        return next((k for k, c in self._clients.items() if c is client), None)

    def made(self) -> dict[str, Any]:
        """The clients made so far, by key (the local one included)."""
        return dict(self._clients)

    def pool_members(self) -> list[tuple[str, str, Any]]:
        """The engines Settings > Engines > Pool has join a pooled run: (key, name, client) each,
        local first (clients made now if needed: never blocks)."""
        return [(key, self.name(key), self.client(key)) for key in self.settings.pool_keys() if self.known(key)]

    def remote_clients(self) -> list[Any]:
        return [c for k, c in self._clients.items() if k != LOCAL]

    def stale(self) -> list[tuple[str, Any]]:
        """Remote clients whose engine left Settings or whose token changed there: (key, client).
        The caller retires the idle ones (`drop`); the next use builds a fresh client."""
        from app import secrets
        from app.engine.remote_cli import keyring_name

        urls = {e.url for e in self.settings.engines()}
        return [(k, c) for k, c in self._clients.items() if k != LOCAL and
                (k not in urls or (secrets.get_token(keyring_name(k)) or "") != self._tokens.get(k, ""))]

    def drop(self, key: str) -> None:
        self._clients.pop(key, None)
        self._tokens.pop(key, None)
        self._choices.pop(key, None)
        self._state.pop(key, None)
        self.changed.emit(key)

    # link state -------------------------------------------------------------------------------
    def state(self, key: str) -> LinkState:
        return self._state.get(key, LinkState(None, "" if key == LOCAL else "not connected"))

    def link_changed(self, key: str, connected: bool, message: str) -> bool:
        """A client's EngineStatus; True when it changed the state (worth one log line)."""
        old = self.state(key)
        if connected:
            new = LinkState(True, "", old.detail if old.connected else message)
        else:
            new = LinkState(False, DISCONNECTED, message or old.detail)
        self._state[key] = new
        self.changed.emit(key)
        if connected and old.connected is False:
            self.probe(key)  # back (perhaps a restarted server): read what it is and has again
        return old.connected is not None and old.connected != connected

    def missing_token(self, key: str) -> str | None:
        """The line to show when no token is stored for a remote engine (None when one is)."""
        if key == LOCAL or self._tokens.get(key, "x"):
            return None
        return f"no token for the engine {self.name(key)} ({key}): store it in Settings > Engines"

    def probe(self, key: str) -> None:
        """Ask a remote engine what it is, and its model lists, on a worker thread."""
        client = self._clients.get(key)
        if key == LOCAL or client is None or id(client) in self._probing:
            return
        missing = self.missing_token(key)
        if missing is not None:
            if self.state(key).detail != missing:
                self._state[key] = LinkState(False, "no token", missing)
                self.failed.emit(key, missing)
            self.changed.emit(key)
            return
        self._probing.add(id(client))
        threading.Thread(target=self._probe_work, args=(client,), name="imagebash-engine-probe",
                         daemon=True).start()

    def _probe_work(self, client: Any) -> None:
        try:
            info = client.info()
            client.connect()  # the event stream from now on: a server that dies while idle shows at once
        except Exception as exc:  # noqa: BLE001 - any failure is the one line the toolbar shows
            emit_safely(self._probed, client, None, one_line(exc))
            return
        emit_safely(self._probed, client, info, "")
        emit_safely(self._listed, client, self._read_choices(client))

    @staticmethod
    def _read_choices(client: Any) -> dict[tuple[str, str], list[str]]:
        table: dict[tuple[str, str], list[str]] = {}
        try:
            reg = client.registry
            for spec in reg.all():
                for port in spec.inputs:
                    if port.choices is not None:
                        table[(spec.id, port.name)] = list(reg.choices(spec.id, port.name))
        except Exception as exc:  # noqa: BLE001 - no list still leaves the dropdowns usable (free text)
            log.info("model lists of %r: %s", client, one_line(exc))
        return table


    def _on_probed(self, client: Any, info: Any, error: str) -> None:
        self._probing.discard(id(client))
        key = self.key_of(client)
        if key is None:  # dropped meanwhile
            return
        old = self.state(key)
        if info is not None:  # the event stream's word on a drop stands until it reconnects
            self._state[key] = LinkState(old.text != DISCONNECTED, old.text if old.text == DISCONNECTED else "",
                                         describe_info(info))
        elif old.connected is None or (old.connected is False and old.text != DISCONNECTED):
            # (a drop the event stream reported stands: it was said once, and it reconnects itself)
            self._state[key] = LinkState(False, "token refused" if "(401)" in error else "unreachable", error)
            if old.detail != error:
                self.failed.emit(key, error)
        self.changed.emit(key)

    def _on_listed(self, client: Any, table: Any) -> None:
        key = self.key_of(client)
        if key is not None:
            self._choices[key] = dict(table)
            self.choicesChanged.emit(key)

    # catalogue --------------------------------------------------------------------------------
    def choices(self, key: str, type_id: str, port: str) -> list[str]:
        """A port's suggestions (model names) on engine `key`: the local registry asked now, a
        remote engine's as last read by a probe (a probe is started when there is none)."""
        if key == LOCAL or not self.known(key):
            return list(self.local.registry.choices(type_id, port))
        self.client(key)
        table = self._choices.get(key)
        if table is None:
            self.probe(key)
            return []
        return list(table.get((type_id, port), []))
