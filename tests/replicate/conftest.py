"""Fixtures: a fake Replicate server per test, the environment pointed at it, an engine."""

from __future__ import annotations

import pytest

from app.engine import Engine, EngineSettings
from tests.replicate.fake_server import use_fake_replicate


@pytest.fixture
def fake(request):
    return use_fake_replicate(request)


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
