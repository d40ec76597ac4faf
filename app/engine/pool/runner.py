"""Running a split plan on several engines: a work-stealing queue of shards, failover, one output.

Each engine has a worker thread that takes the next shard (engines that already hold the run's
models are started first, so they get the first shards; the others load them once: what an
engine holds is what it reports, `loaded_models`, and what it ran before in this process), runs it,
fetches the cut outputs, and hands them to the PartStore, which keeps the first result of each
shard and drops any later one: nothing is computed twice into the output. An engine that drops
out (its connection fails, its process dies) puts its shard back for the others and leaves the
pool. When every shard is in, the finishing graph (Save nodes, a contact sheet) runs here on the
joined items. When every engine is gone, the run fails and what finished stays in the output
folder (`pool_parts/`, named in the error line).
"""

from __future__ import annotations

import logging
import pathlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.engine import events as ev
from app.engine.pool.joined import PartStore, finish_registry, publish, withdraw
from app.engine.pool.split import Shard, SplitPlan, shard_graph
from app.engine.wire import OutputRef
from app.graph.model import Graph

log = logging.getLogger(__name__)


class EngineGone(ConnectionError):
    """The engine left the pool (its shard goes back to the queue)."""


class ShardFailed(RuntimeError):
    """A node failed in a shard: it would fail on any engine, so the run stops."""


@dataclass
class Progress:
    """One line of progress: an engine's shard finished (or it left), with the totals."""

    engine: str
    shard: int | None
    items_done: int
    items_total: int
    shards_done: int
    shards_total: int
    message: str = ""
    per_engine: dict[str, int] = field(default_factory=dict)


@dataclass
class PoolResult:
    plan: SplitPlan
    files: list[str]
    per_engine: dict[str, int]  # shards accepted per engine
    wall_s: float
    error: str | None = None
    parts_dir: pathlib.Path | None = None
    gone: list[str] = field(default_factory=list)
    dropped: int = 0  # late duplicate results dropped
    store: PartStore | None = None
    #: per accepted shard: index, engine, items, total_s (taken to kept: run, fetch, part write),
    #: and where the engine says, run_s (submit to finished) and fetch_s (the outputs fetched)
    timings: list[dict[str, Any]] = field(default_factory=list)
    cancelled: bool = False  # the run was cancelled (`error` says how far it got)

    def joined(self, cut: int = 0) -> np.ndarray:
        """The joined items of cut `cut` (N, H, W, C) float32, in order."""
        assert self.store is not None
        return self.store.batch(cut)


#: Engine name -> the model names it ran before (engines that hold them get work first).
WARM: dict[str, set[str]] = {}


def needed_models(graph: Graph) -> set[str]:
    return {str(n.params.get("checkpoint")) for n in graph
            if n.type == "imagebash.diffusion.load_model" and n.params.get("checkpoint")}


def loaded_models(engine: Any) -> set[str] | None:
    """The models an engine says it holds (paths, file names, hub ids); None when it cannot say
    (an older server, or one that does not answer)."""
    ask = getattr(engine, "loaded_models", None)
    if ask is None:
        return None
    try:
        return set(ask())
    except Exception as exc:  # noqa: BLE001 - an engine that cannot say is not warm by its word
        log.info("%s does not say which models it holds: %s", engine_name(engine), exc)
        return None


def holds(names: set[str], model: str) -> bool:
    """Whether a model name, path or hub id is among `names` (what `loaded_models` gave)."""
    return model in names or pathlib.Path(model).name in names or str(pathlib.Path(model).expanduser()) in names


def warm_first(workers: list[Any], models: set[str]) -> list[Any]:
    """`workers` with those that hold most of `models` first (said by the engine, `.loaded()`,
    or remembered from earlier runs here, `WARM`); stable otherwise."""
    if not models:
        return list(workers)

    def held(w: Any) -> int:
        said: set[str] | None = None
        ask = getattr(w, "loaded", None)
        if ask is not None:
            try:
                said = ask()
            except Exception:  # noqa: BLE001 - an engine that cannot say is not warm by its word
                said = None
        remembered = WARM.get(w.name, set())
        return sum(1 for m in models if m in remembered or (said is not None and holds(said, m)))

    return sorted(workers, key=lambda w: -held(w))


def engine_name(engine: Any) -> str:
    return str(getattr(engine, "name", None) or getattr(engine, "url", None) or "local")


# one shard on an EngineClient --------------------------------------------------------------------
class _Follow:
    """The RunFinished and node failures of runs on one engine, by run id."""

    def __init__(self, engine: Any) -> None:
        self.done: dict[str, ev.RunFinished] = {}
        self.failures: dict[str, str] = {}
        self.cond = threading.Condition()
        self.unsubscribe = engine.subscribe(self, throttle=False) if _takes_throttle(engine) else engine.subscribe(self)

    def __call__(self, e: ev.Event) -> None:
        if isinstance(e, ev.NodeFailed) and e.upstream is None:
            with self.cond:
                self.failures.setdefault(e.run_id, f"node '{e.node_id}' failed: {e.message}")
        elif isinstance(e, ev.RunFinished):
            with self.cond:
                self.done[e.run_id] = e
                self.cond.notify_all()


def _takes_throttle(engine: Any) -> bool:
    import inspect

    try:
        return "throttle" in inspect.signature(engine.subscribe).parameters
    except (TypeError, ValueError):
        return False


def fetch_items(engine: Any, ref: OutputRef) -> np.ndarray:
    """A cut output as (N, H, W, C) float32: the whole value, or frame by frame when it is long."""
    from nodes.types import Video

    try:
        value = engine.fetch(ref)
    except Exception as exc:
        if _gone(exc):
            raise
        value = None
    if isinstance(value, Video):
        return np.concatenate([value.frame(i) for i in range(len(value))]).astype(np.float32, copy=False)
    if isinstance(value, np.ndarray) and value.ndim in (3, 4):
        return (value[..., None] if value.ndim == 3 else value).astype(np.float32, copy=False)
    frames = []
    i = 0
    while True:
        try:
            frames.append(engine.fetch_frame(ref, i)[None])
        except LookupError:
            break
        i += 1
    if not frames:
        raise ShardFailed(f"{ref.node_id}.{ref.port} gave no pictures")
    return np.concatenate(frames)


def _gone(exc: BaseException) -> bool:
    from app.engine.remote import EngineUnavailable

    return isinstance(exc, (EngineUnavailable, ConnectionError, EngineGone))


def run_on_engine(engine: Any, follow: _Follow, plan: SplitPlan, shard: Shard, workdir: pathlib.Path,
                  give_up_s: float = 10.0, times: dict[str, float] | None = None,
                  run_id: str | None = None) -> list[np.ndarray]:
    """Run one shard on an EngineClient; the cut outputs, margins dropped. EngineGone when the
    engine left (or the shard was cancelled), ShardFailed when a node failed. `times` gets run_s
    and fetch_s."""
    t0 = time.monotonic()
    graph = shard_graph(plan, shard)
    run_id = run_id or shard_run_id(shard)
    try:
        engine.submit(graph, plan.targets, workdir, run_id)
    except Exception as exc:
        if _gone(exc):
            raise EngineGone(str(exc)) from None
        raise
    gone_since: float | None = None
    with follow.cond:
        while run_id not in follow.done:
            follow.cond.wait(0.2)
            if getattr(engine, "connected", True) or not hasattr(engine, "url"):
                gone_since = None
            elif gone_since is None:
                gone_since = time.monotonic()
            elif time.monotonic() - gone_since > give_up_s:
                raise EngineGone(f"the engine at {engine.url} went away")
        finished = follow.done.pop(run_id)
        failure = follow.failures.pop(run_id, None)
    if finished.error or finished.problems:
        still_there = True
        if hasattr(engine, "info"):
            try:
                engine.info()
            except Exception:  # noqa: BLE001
                still_there = False
        if not still_there or "cannot be reached" in (finished.error or "") or "went away" in (finished.error or ""):
            raise EngineGone(finished.error or "the engine went away")
        raise ShardFailed(finished.error or "; ".join(p[2] for p in finished.problems))
    if finished.cancelled:
        raise EngineGone("the shard was cancelled on the engine")
    if failure or finished.failed:
        raise ShardFailed(failure or f"nodes failed: {', '.join(finished.failed)}")
    t1 = time.monotonic()
    try:
        out = [fetch_items(engine, OutputRef(run_id, nid, port)) for nid, port in plan.cuts]
    except Exception as exc:
        if _gone(exc):
            raise EngineGone(str(exc)) from None
        raise
    finally:
        try:
            engine.release(run_id)
        except Exception:  # noqa: BLE001 - releasing is housekeeping
            pass
    if times is not None:
        times.update(run_s=t1 - t0, fetch_s=time.monotonic() - t1)
    return [trim(plan, shard, a) for a in out]


def shard_run_id(shard: Shard) -> str:
    return f"pool-{uuid.uuid4().hex[:12]}-{shard.index}"


def trim(plan: SplitPlan, shard: Shard, a: np.ndarray) -> np.ndarray:
    if plan.mode == "frames":
        if a.shape[0] < shard.skip + shard.size:
            raise ShardFailed(f"shard {shard.index} gave {a.shape[0]} frames, {shard.skip + shard.size} expected")
        return a[shard.skip:shard.skip + shard.size]
    if plan.mode == "batch" and a.shape[0] != shard.size:
        raise ShardFailed(f"shard {shard.index} gave {a.shape[0]} images, {shard.size} expected")
    return a


class EngineWorker:
    """A pool member backed by an EngineClient (LocalEngine or RemoteEngine)."""

    def __init__(self, engine: Any, name: str | None = None, give_up_s: float = 10.0) -> None:
        self.engine = engine
        self.name = name or engine_name(engine)
        self.give_up_s = give_up_s
        self._follow: _Follow | None = None
        self.last_times: dict[str, float] = {}  # run_s and fetch_s of the last shard
        self._current: str | None = None  # the run id of the shard in flight
        self._cancelled = False

    def run(self, plan: SplitPlan, shard: Shard, workdir: pathlib.Path) -> list[np.ndarray]:
        if self._cancelled:
            raise EngineGone("the run was cancelled")
        if self._follow is None:
            self._follow = _Follow(self.engine)
        self.last_times = {}
        self._current = shard_run_id(shard)
        try:
            return run_on_engine(self.engine, self._follow, plan, shard, workdir, self.give_up_s, self.last_times,
                                 self._current)
        finally:
            self._current = None

    def cancel(self) -> None:
        """Take no more shards and cancel the one in flight on its engine."""
        self._cancelled = True
        run_id = self._current
        if run_id is not None:
            try:
                self.engine.cancel(run_id)
            except Exception as exc:  # noqa: BLE001 - an engine that went away has nothing running
                log.info("cancel %s on %s: %s", run_id, self.name, exc)

    def loaded(self) -> set[str] | None:
        return loaded_models(self.engine)

    def close(self) -> None:
        if self._follow is not None:
            self._follow.unsubscribe()
            self._follow = None


# the queue ----------------------------------------------------------------------------------------
class _Queue:
    def __init__(self, shards: list[Shard]) -> None:
        self.pending = list(shards)
        self.inflight: dict[int, str] = {}
        self.cond = threading.Condition()
        self.stop = False

    def take(self, who: str) -> Shard | None:
        with self.cond:
            while not self.stop:
                if self.pending:
                    s = self.pending.pop(0)
                    self.inflight[s.index] = who
                    return s
                if not self.inflight:
                    return None
                self.cond.wait(0.2)
            return None

    def finish(self, shard: Shard) -> None:
        with self.cond:
            self.inflight.pop(shard.index, None)
            self.cond.notify_all()

    def give_back(self, shard: Shard) -> None:
        with self.cond:
            self.inflight.pop(shard.index, None)
            self.pending.insert(0, shard)
            self.cond.notify_all()


def run_plan(plan: SplitPlan, workers: list[Any], output_dir: str | pathlib.Path = "output",
             on_progress: Callable[[Progress], None] | None = None, part_dtype: str = "float32",
             models: set[str] | None = None, finish_settings: Any = None,
             cancel: threading.Event | None = None) -> PoolResult:
    """Run `plan`'s shards on `workers` (EngineWorker, RayWorker: `.name`, `.run(plan, shard,
    dir)`, optionally `.cancel()`), join them, run the finishing graph here; see the module
    docstring. Setting `cancel` hands out no more shards and cancels those in flight; what
    finished is kept (and joined into a partial output), and the result says `cancelled`."""
    t0 = time.monotonic()
    output_dir = pathlib.Path(output_dir)
    run_key = uuid.uuid4().hex[:10]
    parts_dir = output_dir / "pool_parts" / run_key
    store = PartStore(parts_dir, plan.shards, len(plan.cuts), plan.fps, part_dtype, plan.audio)
    models = models or set()
    workers = warm_first(workers, models)
    queue = _Queue(plan.shards)
    per_engine = {w.name: 0 for w in workers}
    gone: list[str] = []
    errors: list[str] = []
    dropped = [0]
    timings: list[dict[str, Any]] = []
    lock = threading.Lock()
    items_total = sum(s.size for s in plan.shards)

    def report(name: str, shard: int | None, message: str = "") -> None:
        if on_progress is None:
            return
        done = [s for s in plan.shards if s.index in store.done]
        on_progress(Progress(name, shard, sum(s.size for s in done), items_total, len(done), len(plan.shards),
                             message, dict(per_engine)))

    def work(w: Any) -> None:
        while True:
            shard = queue.take(w.name)
            if shard is None:
                return
            runs_dir = output_dir / "pool_runs" / w.name.replace("/", "_").replace(":", "_")
            taken = time.monotonic()
            try:
                if getattr(w, "takes_parts", False):
                    arrays = w.run(plan, shard, runs_dir, part=store.incoming, dtype=part_dtype)
                else:
                    arrays = w.run(plan, shard, runs_dir)
            except EngineGone as exc:
                queue.give_back(shard)
                with lock:
                    gone.append(w.name)
                why = str(exc).splitlines()[0] if str(exc) else "gone"
                report(w.name, shard.index,
                       f"{w.name} left the pool ({why}); its shard {shard.index} goes to the others")
                return
            except Exception as exc:  # noqa: BLE001 - a node failure fails on every engine: stop
                with lock:
                    errors.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                with queue.cond:
                    queue.stop = True
                    queue.cond.notify_all()
                queue.finish(shard)
                return
            if store.accept(shard.index, arrays, w.name):
                with lock:
                    per_engine[w.name] += 1
                    timings.append({"index": shard.index, "engine": w.name, "items": shard.size,
                                    "total_s": time.monotonic() - taken, **dict(getattr(w, "last_times", {}) or {})})
                WARM.setdefault(w.name, set()).update(models)
            else:
                with lock:
                    dropped[0] += 1
            queue.finish(shard)
            report(w.name, shard.index)

    threads = [threading.Thread(target=work, args=(w,), name=f"imagebash-pool-{w.name}", daemon=True) for w in workers]
    for t in threads:
        t.start()
        time.sleep(0.01)  # warm engines (first in the list) take the first shards
    if cancel is not None:
        threading.Thread(target=_cancel_when, args=(cancel, queue, workers, threads), daemon=True,
                         name="imagebash-pool-cancel").start()
    for t in threads:
        t.join()
    for w in workers:
        close = getattr(w, "close", None)
        if close:
            close()
    result = PoolResult(plan, [], per_engine, 0.0, None, parts_dir, gone, dropped[0], store,
                        sorted(timings, key=lambda t: t["index"]))
    if cancel is not None and cancel.is_set() and not store.complete:
        result.cancelled = True
        done = len(store.done)
        result.error = f"cancelled; {done} of {len(plan.shards)} shards finished" + (
            f", kept in {parts_dir}" if done else "")
        if done and plan.finish is not None:
            result.files = _finish(plan, store, output_dir, run_key, finish_settings, partial=True)
    elif errors:
        result.error = errors[0]
    elif not store.complete:
        done = len(store.done)
        result.error = (f"every engine left the pool ({', '.join(gone) or 'none'}); {done} of {len(plan.shards)} "
                        f"shards finished, kept in {parts_dir}")
        if done and plan.finish is not None:
            result.files = _finish(plan, store, output_dir, run_key, finish_settings, partial=True)
    else:
        if plan.finish is not None:
            try:
                result.files = _finish(plan, store, output_dir, run_key, finish_settings)
            except ShardFailed as exc:
                result.error = str(exc)
    result.wall_s = time.monotonic() - t0
    return result


def _cancel_when(cancel: threading.Event, queue: _Queue, workers: list[Any], threads: list[threading.Thread]) -> None:
    """Wait for `cancel` (or the run's end); then stop the queue and cancel the shards in flight."""
    while not cancel.wait(0.1):
        if not any(t.is_alive() for t in threads):
            return
    with queue.cond:
        queue.stop = True
        queue.cond.notify_all()
    for w in workers:
        stop = getattr(w, "cancel", None)
        if stop is not None:
            stop()


def _finish(plan: SplitPlan, store: PartStore, output_dir: pathlib.Path, run_key: str, settings: Any,
            partial: bool = False) -> list[str]:
    """Run the finishing graph here on the joined items; the files it wrote."""
    from app.engine.client import LocalEngine

    g = plan.finish.copy()
    keys = []
    for k, cut in enumerate(plan.cuts):
        key = f"{run_key}-{k}"
        publish(key, store, k)
        keys.append(key)
        g.set_param(plan.joined[cut], "key", key)
    files: list[str] = []
    failures: list[str] = []
    engine = LocalEngine(finish_registry(), settings)

    def listen(e: ev.Event) -> None:
        if isinstance(e, ev.NodeFile) and e.file is not None:
            files.append(e.file.path)
        elif isinstance(e, ev.NodeFailed) and e.upstream is None:
            failures.append(f"node '{e.node_id}' failed: {e.message}")

    engine.subscribe(listen, throttle=False)
    try:
        handle = engine.submit(g, None, output_dir)
        handle.wait()
    finally:
        engine.shutdown()
        for key in keys:
            withdraw(key)
    if failures and not partial:
        raise ShardFailed(failures[0])
    return files
