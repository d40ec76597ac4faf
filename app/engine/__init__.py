"""The headless engine: planning (networkx), execution, caching, events, services. No Qt, no torch."""

from app.engine.events import (
    Event,
    NodeFailed,
    NodeFile,
    NodeFinished,
    NodeLog,
    NodeProgress,
    NodeSkipped,
    NodeStarted,
    RunFinished,
    RunStarted,
)
from app.engine.executor import Engine, EngineSettings, NodeContext, RunHandle, RunResult

__all__ = [
    "Engine",
    "EngineSettings",
    "Event",
    "NodeContext",
    "NodeFailed",
    "NodeFile",
    "NodeFinished",
    "NodeLog",
    "NodeProgress",
    "NodeSkipped",
    "NodeStarted",
    "RunFinished",
    "RunHandle",
    "RunResult",
    "RunStarted",
]
