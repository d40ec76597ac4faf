"""The engine pool on a Ray cluster: one actor per GPU (`num_gpus=1`; one per CPU, `num_cpus=1`,
on a CPU-only cluster) holding a LocalEngine that keeps its models warm across shards; each shard
is a method call on an actor, taken from the same work-stealing queue as the other engines, so
outputs come back in order and an actor that dies gives its shard back.

`ray` is an optional extra (`pip install 'imagebash[ray]'`). `connect(None)` starts a local
instance (tests: `num_cpus=2`); `connect("ray://HEAD:10001")` joins a cluster, whose machines have
imagebash installed and the models on a shared volume (`packaging/cloud/ray-cluster.md`).
"""

from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import urlparse

import numpy as np

from app.engine.pool.runner import EngineGone, ShardFailed
from app.engine.pool.split import Shard, SplitPlan, shard_graph
from app.paths import REPO_ROOT


class RayUnavailable(ConnectionError):
    """Ray is not installed, or the address does not answer (one line)."""


def _probe(address: str, timeout: float = 3.0) -> None:
    """A TCP connect to the address first: a cluster that is not there is one line in seconds,
    not a minute of Ray's own retries."""
    if address in ("auto", "local"):
        return
    u = urlparse(address if "://" in address else f"tcp://{address}")
    host, port = u.hostname or "127.0.0.1", u.port or (10001 if u.scheme == "ray" else 6379)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise RayUnavailable(f"the Ray cluster at {address} does not answer "
                             f"({exc.strerror or type(exc).__name__})") from None


def connect(address: str | None = None, **init_kwargs: Any) -> Any:
    """ray, initialised: a local instance when `address` is None, else the cluster there."""
    try:
        import ray
    except ModuleNotFoundError:
        raise RayUnavailable("Ray is not installed: pip install 'imagebash[ray]'") from None
    if ray.is_initialized():
        return ray
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, **init_kwargs}
    if address:
        _probe(address)
        kw["address"] = address
    else:  # a local instance runs this checkout
        env = kw.setdefault("runtime_env", {}).setdefault("env_vars", {})
        paths = (str(REPO_ROOT), os.environ.get("PYTHONPATH", ""))
        env.setdefault("PYTHONPATH", os.pathsep.join(p for p in paths if p))
        env.setdefault("OMP_NUM_THREADS", "1")
    try:
        ray.init(**kw)
    except Exception as exc:  # noqa: BLE001 - Ray's own errors are long: one line
        raise RayUnavailable(f"the Ray cluster at {address or 'this machine'} could not be joined "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    return ray


class _Actor:
    """Lives in a Ray worker: a LocalEngine kept across shards (its models stay loaded)."""

    def __init__(self) -> None:
        try:
            import cv2

            cv2.setNumThreads(1)
        except ImportError:
            pass
        from app.engine.client import LocalEngine

        self.engine = LocalEngine()

    def run(self, doc: dict[str, Any], plan_meta: dict[str, Any], shard: Shard, workdir: str) -> list[np.ndarray]:
        from app.engine.pool.runner import _Follow, run_on_engine
        from app.graph.io import graph_from_dict

        plan = SplitPlan(plan_meta["mode"], plan_meta["total"], [shard], graph_from_dict(doc),
                         plan_meta["targets"], [tuple(c) for c in plan_meta["cuts"]])
        follow = _Follow(self.engine)
        try:
            return run_on_engine(self.engine, follow, plan, Shard(shard.index, shard.lo, shard.hi, {}, shard.skip),
                                 __import__("pathlib").Path(workdir))
        finally:
            follow.unsubscribe()

    def ping(self) -> str:
        """Started, engine and node catalogue loaded: the first shard does not pay for them."""
        self.engine.engine  # noqa: B018 - built here on purpose
        self.engine.registry.all()
        return socket.gethostname()


class RayWorker:
    """A pool member: one Ray actor (its shard runs as a method call; a dead actor is EngineGone)."""

    def __init__(self, actor: Any, name: str) -> None:
        self.actor = actor
        self.name = name

    def run(self, plan: SplitPlan, shard: Shard, workdir: Any) -> list[np.ndarray]:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        from app.graph.io import graph_to_dict

        doc = graph_to_dict(shard_graph(plan, shard))
        meta = {"mode": plan.mode, "total": plan.total, "targets": plan.targets, "cuts": [list(c) for c in plan.cuts]}
        try:
            return ray.get(self.actor.run.remote(doc, meta, shard, str(workdir)))
        except RayActorError as exc:
            raise EngineGone(f"Ray actor {self.name} died ({type(exc).__name__})") from None
        except RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            if isinstance(cause, EngineGone):
                raise EngineGone(str(cause)) from None
            raise ShardFailed(str(cause).splitlines()[0] if str(cause) else type(cause).__name__) from None

    def kill(self) -> None:
        import ray

        ray.kill(self.actor)


def actors(ray: Any, count: int | None = None) -> list[RayWorker]:
    """One actor per GPU of the cluster (per CPU when it has none), or `count`."""
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    n = count or gpus or max(1, int(res.get("CPU", 1)))
    opts = {"num_gpus": 1} if gpus else {"num_cpus": 1}
    cls = ray.remote(**opts)(_Actor)
    made = [cls.remote() for _ in range(n)]
    ray.get([a.ping.remote() for a in made])  # started, engine imported: shards do not pay for it
    return [RayWorker(a, f"ray-actor-{k}") for k, a in enumerate(made)]


def shutdown() -> None:
    try:
        import ray
    except ModuleNotFoundError:
        return
    if ray.is_initialized():
        ray.shutdown()
