"""An engine pool: one run split into shards over several engines (this machine's LocalEngine,
remote `imagebash serve` engines, or the actors of a Ray cluster), joined in order into one
output. `split` says how a workflow splits (and why not, when it does not), `runner` runs the
shards with a work-stealing queue and failover, `ray_backend` puts the engines on a Ray cluster.
"""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Callable
from typing import Any

from app.engine.pool.runner import (
    EngineGone,
    EngineWorker,
    PoolResult,
    Progress,
    ShardFailed,
    engine_name,
    needed_models,
    run_plan,
)
from app.engine.pool.split import Shard, SplitPlan, plan_split, shard_graph
from app.graph.model import Graph

__all__ = ["EngineGone", "EngineWorker", "PoolResult", "Progress", "Shard", "ShardFailed", "SplitPlan",
           "plan_split", "preflight", "run_pool", "shard_graph"]


def preflight(engines: list[Any], graph: Graph) -> tuple[list[Any], list[str]]:
    """The engines that can take the run, and one line for each that cannot (or that needs an
    upload first): a refused token, an engine that does not answer, a model it lacks."""
    from app.engine.remote import EngineUnavailable

    models = needed_models(graph)
    ok: list[Any] = []
    lines: list[str] = []
    local_models: set[str] = set()
    for e in engines:
        if not hasattr(e, "url"):
            try:
                local_models = set(e.models("checkpoint"))
            except Exception:  # noqa: BLE001 - no diffusion pack: nothing to compare with
                local_models = set()
    for e in engines:
        name = engine_name(e)
        try:
            if hasattr(e, "info"):
                e.info()
            have = set(e.models("checkpoint")) if models else set()
        except EngineUnavailable as exc:
            lines.append(f"{name}: left out: {str(exc).splitlines()[0]}")
            continue
        except Exception as exc:  # noqa: BLE001
            lines.append(f"{name}: left out: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        lacking = sorted(m for m in models if m not in have and not pathlib.Path(m).expanduser().exists()
                         and "/" not in m)  # a path or a hub repo id is not a name in the model lists
        if lacking:
            uploadable = [m for m in lacking if m in local_models] if hasattr(e, "url") else []
            missing = [m for m in lacking if m not in uploadable]
            if missing:
                lines.append(f"{name}: left out: it lacks the model {', '.join(missing)} "
                             f"(not here either to upload; `imagebash models download` on that machine)")
                continue
            lines.append(f"{name}: lacks the model {', '.join(uploadable)}: it is uploaded from here before its "
                         "first shard")
        ok.append(e)
    return ok, lines


def run_pool(graph: Graph, engines: list[Any], registry: Any = None, targets: list[str] | None = None,
             output_dir: str | pathlib.Path = "output", per_engine: int = 4,
             on_progress: Callable[[Progress], None] | None = None, part_dtype: str = "float32",
             give_up_s: float = 10.0, workers: list[Any] | None = None,
             cancel: threading.Event | None = None) -> PoolResult:
    """Split `graph` (see `split`), run it on `engines` (EngineClients) or `workers` (Ray), join;
    `cancel` stops it, keeping what finished (see `runner.run_plan`)."""
    from nodes.registry import default_registry

    registry = registry or default_registry()
    pool = workers if workers is not None else [EngineWorker(e, give_up_s=give_up_s) for e in engines]
    seen: dict[str, int] = {}
    for w in pool:  # two local engines (a test, two GPUs) need two names
        seen[w.name] = seen.get(w.name, 0) + 1
        if seen[w.name] > 1:
            w.name = f"{w.name}#{seen[w.name]}"
    plan = plan_split(graph, registry, targets, engines=max(1, len(pool)), per_engine=per_engine)
    if not plan.split:
        pool = pool[:1]
    return run_plan(plan, pool, output_dir, on_progress, part_dtype, needed_models(graph), cancel=cancel)
