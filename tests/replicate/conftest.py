"""Fixtures: a fake Replicate server per test, the environment pointed at it, an engine."""

from __future__ import annotations

import pytest

from app.engine import Engine, EngineSettings
from tests.replicate.fake_server import TOKEN, FakeReplicate


@pytest.fixture
def fake(monkeypatch):
    server = FakeReplicate().start()
    monkeypatch.setenv("REPLICATE_BASE_URL", server.url)
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.02")
    yield server
    server.stop()


@pytest.fixture
def make_engine():
    engines = []

    def make(**replicate_limits) -> Engine:
        settings = EngineSettings(extra={"replicate": replicate_limits} if replicate_limits else {})
        engine = Engine(settings=settings)
        engines.append(engine)
        return engine

    yield make
    for e in engines:
        e.shutdown()
