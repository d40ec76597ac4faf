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

#: Threads of the native libraries an actor uses: one actor per CPU uses one thread of each.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS")


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


#: Whether the instance this process joined is a local one it started (actors may be pinned to cores).
_LOCAL = [False]


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
        for var in THREAD_VARS:
            env.setdefault(var, "1")
    try:
        ray.init(**kw)
        _LOCAL[0] = not address
    except Exception as exc:  # noqa: BLE001 - Ray's own errors are long: one line
        raise RayUnavailable(f"the Ray cluster at {address or 'this machine'} could not be joined "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    return ray


def _pin_process(cores: set[int]) -> None:
    """Every thread of this process on `cores` (threads started later inherit it), as taskset -a."""
    for tid in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else [0]:
        try:
            os.sched_setaffinity(int(tid), cores)
        except OSError:  # a thread that just ended
            pass


class _Actor:
    """Lives in a Ray worker: a LocalEngine kept across shards (its models stay loaded). A threaded
    actor (`max_concurrency`), so `cancel` and `running` answer while a shard runs."""

    def __init__(self, threads: int = 0) -> None:
        try:
            import cv2

            if threads:
                cv2.setNumThreads(threads)
        except ImportError:
            pass
        if threads and "torch" in __import__("sys").modules:
            __import__("torch").set_num_threads(threads)
        self.threads = threads
        self.cores: set[int] = set()
        self._running: set[str] = set()
        from app.engine.client import LocalEngine

        self.engine = LocalEngine()

    def run(self, doc: dict[str, Any], plan_meta: dict[str, Any], shard: Shard, workdir: str,
            part: str | None = None, dtype: str = "float32") -> list[np.ndarray] | list[str]:
        """The shard's cut outputs; with `part` (a folder the caller reads too: same machine) they
        are written there as .npy files in `dtype` and only their paths come back."""
        from app.engine.pool.joined import as_part, write_part
        from app.engine.pool.runner import _Follow, run_on_engine, shard_run_id
        from app.graph.io import graph_from_dict

        if self.cores:  # threads started since (Ray's, the engine's) stay on the actor's core too
            _pin_process(self.cores)
        plan = SplitPlan(plan_meta["mode"], plan_meta["total"], [shard], graph_from_dict(doc),
                         plan_meta["targets"], [tuple(c) for c in plan_meta["cuts"]])
        follow = _Follow(self.engine)
        run_id = shard_run_id(shard)
        self._running.add(run_id)
        try:
            out = run_on_engine(self.engine, follow, plan, Shard(shard.index, shard.lo, shard.hi, {}, shard.skip),
                                __import__("pathlib").Path(workdir), run_id=run_id)
        finally:
            self._running.discard(run_id)
            follow.unsubscribe()
        if part is None:
            return [as_part(a, dtype) for a in out]
        tag = f"{shard.index:05d}-{os.getpid()}-{__import__('uuid').uuid4().hex[:6]}"
        return [str(write_part(__import__("pathlib").Path(part) / f"shard_{cut}_{tag}.npy", a, dtype))
                for cut, a in enumerate(out)]

    def ping(self, cores: list[int] | None = None) -> dict[str, Any]:
        """Started, engine and node catalogue loaded (the first shard does not pay for them),
        pinned to `cores` when given; where it runs."""
        if cores:
            self.cores = set(cores)
            _pin_process(self.cores)
        if self.threads and "torch" in __import__("sys").modules:
            __import__("torch").set_num_threads(self.threads)
        self.engine.engine  # noqa: B018 - built here on purpose
        self.engine.registry.all()
        import ray

        return {"host": socket.gethostname(), "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "cores": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []}

    def cancel(self) -> None:
        """Cancel the shards running here (their calls end in EngineGone: nothing is kept)."""
        for run_id in list(self._running):
            self.engine.cancel(run_id)

    def running(self) -> list[str]:
        """The run ids of the shards running here."""
        return sorted(self._running)

    def loaded(self) -> list[str]:
        """The models its engine holds (see runner.loaded_models)."""
        from app.engine.pool.runner import loaded_models

        return sorted(loaded_models(self.engine) or ())


class RayWorker:
    takes_parts = True  # run() takes the part folder and dtype
    """A pool member: one Ray actor (its shard runs as a method call; a dead actor is EngineGone).

    On this machine (`same_node`) the actor writes the shard's result as a part file the driver
    adopts (no arrays through the object store); elsewhere the arrays come back as the call's
    result, uint8 when the run keeps 8-bit parts."""

    def __init__(self, actor: Any, name: str, same_node: bool = False) -> None:
        self.actor = actor
        self.name = name
        self.same_node = same_node
        self._cancelled = False

    def cancel(self) -> None:
        """Take no more shards and cancel the one running in the actor."""
        self._cancelled = True
        try:
            self.actor.cancel.remote()
        except Exception:  # noqa: BLE001 - a dead actor runs nothing
            pass

    def run(self, plan: SplitPlan, shard: Shard, workdir: Any, part: Any = None,
            dtype: str = "float32") -> list[np.ndarray] | list[str]:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        from app.graph.io import graph_to_dict

        if self._cancelled:
            raise EngineGone("the run was cancelled")
        doc = graph_to_dict(shard_graph(plan, shard))
        meta = {"mode": plan.mode, "total": plan.total, "targets": plan.targets, "cuts": [list(c) for c in plan.cuts]}
        folder = str(part) if part is not None and self.same_node else None
        try:
            out = ray.get(self.actor.run.remote(doc, meta, shard, str(workdir), folder, dtype))
        except RayActorError as exc:
            raise EngineGone(f"Ray actor {self.name} died ({type(exc).__name__})") from None
        except RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            if isinstance(cause, EngineGone):
                raise EngineGone(str(cause)) from None
            raise ShardFailed(str(cause).splitlines()[0] if str(cause) else type(cause).__name__) from None
        return [__import__("pathlib").Path(p) for p in out] if folder is not None else out

    def loaded(self) -> set[str]:
        import ray

        try:
            return set(ray.get(self.actor.loaded.remote(), timeout=10))
        except Exception:  # noqa: BLE001 - a dead actor reports nothing
            return set()

    def kill(self) -> None:
        import ray

        ray.kill(self.actor)


def actors(ray: Any, count: int | None = None, pin: bool | None = None, threads: int | None = None
           ) -> list[RayWorker]:
    """One actor per GPU of the cluster (per CPU when it has none), or `count`, started and warm
    (engine and node catalogue loaded) before this returns. On a CPU-only cluster each actor is
    `num_cpus=1` with one thread per native library (`threads`, default 1); with `pin` (default:
    on this machine's local instance, when the actors fit its cores) actor k runs on core k only."""
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    n = count or gpus or max(1, int(res.get("CPU", 1)))
    if gpus:
        opts: dict[str, Any] = {"num_gpus": 1}
        threads = threads or 0
    else:
        threads = 1 if threads is None else threads
        opts = {"num_cpus": 1}
        if threads:
            opts["runtime_env"] = {"env_vars": {v: str(threads) for v in THREAD_VARS}}
    here = ray.get_runtime_context().get_node_id()
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if pin is None:
        pin = not gpus and _LOCAL[0] and n <= len(cores)
    cls = ray.remote(max_concurrency=4, **opts)(_Actor)  # cancel / running / loaded answer during a shard
    made = [cls.remote(threads) for _ in range(n)]
    where = ray.get([a.ping.remote([cores[k % len(cores)]] if pin else None) for k, a in enumerate(made)])
    return [RayWorker(a, f"ray-actor-{k}", same_node=w["node"] == here)
            for k, (a, w) in enumerate(zip(made, where, strict=True))]


def shutdown() -> None:
    try:
        import ray
    except ModuleNotFoundError:
        return
    if ray.is_initialized():
        ray.shutdown()
    _LOCAL[0] = False
