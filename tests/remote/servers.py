"""A real `imagebash serve` with the test nodes, on one port for its whole life, so a restarted
server answers where its clients look for it (shared by the client and the GUI tests)."""

from __future__ import annotations

import contextlib
import pathlib
import socket
from collections.abc import Iterator

from tests.server.conftest import ServerProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server(ServerProcess):
    """`python -m tests.server.nodes_for_tests` (imagebash serve with three test nodes) on a fixed port."""

    def __init__(self, tmp: pathlib.Path) -> None:
        self.fixed_port = free_port()
        super().__init__(tmp, tmp / "srv", "tests.server.nodes_for_tests", ("--port", str(self.fixed_port)))


@contextlib.contextmanager
def serving(tmp: pathlib.Path) -> Iterator[Server]:
    """A started Server for a test, stopped (whatever the test did to it) when it ends."""
    s = Server(tmp)
    try:
        yield s.start()
    finally:
        s.stop()
