"""Fixtures: a fake Replicate server per test, the environment pointed at it, an engine."""

from __future__ import annotations

import pytest

from app.engine import Engine, EngineSettings
from tests.replicate.fake_server import use_fake_replicate


@pytest.fixture(autouse=True)
def fresh_replicate_memos():
    """Each test starts with no remembered clients, schemas, schema failures or versioned models."""
    from nodes.replicate import client, schema

    def clear() -> None:
        with client._clients_lock:
            client._clients.clear()
        client._versioned_models.clear()
        with schema._lock:
            schema._memory.clear()
            schema._failures.clear()
            schema._enums.clear()

    clear()
    yield
    clear()


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
