"""The headless engine: planning (networkx), execution, caching, events, services. No Qt, no torch."""

from app.engine.events import (
    Event,
    NodeFailed,
    NodeFinished,
    NodeLog,
    NodeProgress,
    NodeSkipped,
    NodeStarted,
    RunFinished,
)
from app.engine.executor import Engine, EngineSettings, NodeContext, RunHandle, RunResult
from app.engine.services import register_service

__all__ = [
    "Engine",
    "EngineSettings",
    "Event",
    "NodeContext",
    "NodeFailed",
    "NodeFinished",
    "NodeLog",
    "NodeProgress",
    "NodeSkipped",
    "NodeStarted",
    "RunFinished",
    "RunHandle",
    "RunResult",
    "register_service",
]
