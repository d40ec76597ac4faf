"""A real `imagebash serve` for the client tests (started as a user starts it, on 127.0.0.1 with a
temporary data dir and token, always stopped), and RemoteEngine clients of it."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.remote.servers import Server, serving


@pytest.fixture
def server(tmp_path: pathlib.Path) -> Iterator[Server]:
    with serving(tmp_path) as s:
        yield s


@pytest.fixture
def remote(server: Server) -> Iterator[Any]:
    """remote() -> a RemoteEngine of `server` (with the test nodes' declarations); all shut down."""
    from app.engine.remote import RemoteEngine
    from tests.server.nodes_for_tests import make_registry

    made: list[Any] = []

    def make(token: str | None = None) -> Any:
        e = RemoteEngine(server.url, token or server.token, make_registry())
        made.append(e)
        return e

    try:
        yield make
    finally:
        for e in made:
            e.shutdown()
