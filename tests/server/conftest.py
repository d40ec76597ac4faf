"""Servers for the tests: in-process (FastAPI's TestClient on a ServerState, lifespan included)
and as a real process (`python -m app.server` / `python -m tests.server.nodes_for_tests` on a
free 127.0.0.1 port, a temporary data dir, and user folders pointed at tmp), always stopped."""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from app.engine.protocol import API
from app.paths import REPO_ROOT

TOKEN = "test-token-" + "x" * 24


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


class InProcess:
    """A ServerState behind a TestClient; `.c` is the client, `.h` the auth header."""

    def __init__(self, data_dir: pathlib.Path, registry: Any = None, **config: Any) -> None:
        from fastapi.testclient import TestClient

        from app.server.app import create_app
        from app.server.state import ServerConfig, ServerState
        from tests.server.nodes_for_tests import make_registry

        self.state = ServerState(ServerConfig(data_dir, TOKEN, **config), registry=registry or make_registry())
        self.client = TestClient(create_app(self.state))
        self.h = {"Authorization": f"Bearer {TOKEN}"}

    def __enter__(self) -> InProcess:
        self.client.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.client.__exit__(*exc)

    def request(self, method: str, path: str, **kw: Any) -> Any:
        headers = {**self.h, **kw.pop("headers", {})}
        return self.client.request(method, API + path, headers=headers, **kw)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def put(self, path: str, **kw: Any) -> Any:
        return self.request("PUT", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    def upload(self, data: bytes, chunk: int = 1 << 20) -> str:
        digest = sha(data)
        for off in range(0, max(len(data), 1), chunk):
            r = self.put(f"/blobs/{digest}", params={"offset": off}, content=data[off:off + chunk],
                         headers={"X-Blob-Size": str(len(data))})
            assert r.status_code in (200, 201), r.text
        return digest

    def wait(self, job_id: str, timeout: float = 20.0) -> dict:
        return self.state.jobs.wait(job_id, timeout)


@pytest.fixture
def server(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InProcess]:
    monkeypatch.setenv("IMAGEBASH_MODELS", str(tmp_path / "models"))
    with InProcess(tmp_path / "srv") as s:
        yield s


def workflow(*nodes: dict, links: list | None = None) -> dict:
    return {"format": "imagebash/1", "nodes": [{"pos": [0, 0], "params": {}, **n} for n in nodes],
            "links": links or []}


class ServerProcess:
    """`python -m <module> --port 0 --data-dir D ARGS` with its output collected; `stop()` always ends it."""

    BANNER = re.compile(r"listening on (https?)://[^\s:]+:(\d+)")

    def __init__(self, tmp: pathlib.Path, data_dir: pathlib.Path, module: str = "app.server",
                 args: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 command: tuple[str, ...] = ()) -> None:
        self.tmp = tmp
        self.command = command  # a subcommand first: ("serve",) for `python -m app`
        self.data_dir = data_dir
        self.module = module
        self.args = args
        self.env = {**os.environ, "IMAGEBASH_DATA_DIR": str(tmp / "home" / "data"),
                    "IMAGEBASH_CONFIG_DIR": str(tmp / "home" / "config"),
                    "IMAGEBASH_CACHE_DIR": str(tmp / "home" / "cache"),
                    "IMAGEBASH_MODELS": str(tmp / "models"), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self.port = 0
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.lines, self.port = [], 0
        self._ready.clear()
        # `args` come last: they override --port 0 and the data dir (tests/remote pins a port this way)
        cmd = [sys.executable, "-m", self.module, *self.command, "--port", "0", "--data-dir", str(self.data_dir),
               *self.args]
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        if not self._ready.wait(timeout):
            self.stop()
            raise AssertionError(f"the server did not start:\n{self.output}")
        # the rest of the banner follows the first line; a loopback server's ends with the ssh line
        last = "proxy.runpod.net" if self.env.get("RUNPOD_POD_ID") else "ssh -L"
        wait_for(lambda: any(last in line for line in self.lines), 10)
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))
            m = self.BANNER.search(line)
            if m and not self.port:
                self.port = int(m.group(2))
                self._ready.set()

    @property
    def token(self) -> str:
        return (self.data_dir / "token").read_text().strip()

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (what a crashed box or an OOM kill does)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        finally:
            rc = self.proc.returncode
            self.proc = None
        return rc


@pytest.fixture
def spawn(tmp_path: pathlib.Path) -> Iterator[Any]:
    """spawn(module=..., args=..., env=...) -> a started ServerProcess; all are stopped at the end."""
    started: list[ServerProcess] = []

    def make(module: str = "app.server", args: tuple[str, ...] = (), env: dict[str, str] | None = None,
             data_dir: pathlib.Path | None = None, start: bool = True, command: tuple[str, ...] = ()) -> ServerProcess:
        p = ServerProcess(tmp_path, data_dir or tmp_path / "srv", module, args, env, command)
        started.append(p)
        return p.start() if start else p

    try:
        yield make
    finally:
        for p in started:
            p.stop()
