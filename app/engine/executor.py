"""The executor: runs a plan, caches results, overlaps independent work, reports every node.

Scheduling: one scheduler loop per run. A node whose inputs are ready runs inline when it is the
only thing to do (a long chain pays no thread hand-off), and on the pool when other work is ready
or in flight, so independent branches overlap. io nodes always go to the pool; gpu nodes hold the
engine's device lock while they run. A node's values are dropped from the run once its last
consumer has them, unless it is a target.
"""

from __future__ import annotations

import itertools
import logging
import pathlib
import queue
import threading
import time
import traceback
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from app.engine import events as ev
from app.engine import wire
from app.engine.cache import OutputCache
from app.engine.plan import Plan, PlanNode, compute_signatures, make_plan
from app.engine.services import Services
from app.engine.store import OutputStore
from app.engine.video_map import at_frame, map_over_video, map_windowed, scheduled
from app.graph.model import Graph, NodeMode
from app.graph.validate import ValidationError
from nodes.registry import REQUIRED, Registry, default_registry
from nodes.types import Cancelled, Video

log = logging.getLogger(__name__)

@dataclass
class EngineSettings:
    """What the user sets once for all runs (the GUI's settings dialog edits these)."""

    device: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "auto"  # auto | fp32 | fp16 | bf16
    attention_slicing: str = "auto"  # off | auto | max
    vae_tiling: str = "auto"  # off | auto | on
    cpu_offload: bool = False
    #: auto (planned from free memory) | full | fp8 | nf4 | model_offload | group_offload | sequential_offload
    memory_mode: str = "auto"
    compile_denoiser: bool = False  # torch.compile the denoiser on CUDA (cached for repeated shapes)
    cache_budget_bytes: int = 4 << 30
    #: Outputs kept for clients to fetch by reference after a run (0: keep none, as the CLI does).
    output_store_bytes: int = 2 << 30
    model_budget_bytes: int | None = None
    max_workers: int = 8
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    """What a run produced: outputs of the targets, and a status per planned node."""

    run_id: str
    outputs: dict[str, dict[str, Any]]
    status: dict[str, str]  # done | cached | failed | skipped | muted | cancelled
    errors: dict[str, str]
    durations: dict[str, float]
    cancelled: bool = False
    duration: float = 0.0
    files: list[wire.FileArtifact] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.cancelled

    def output(self, node_id: str, port: str | None = None) -> Any:
        outs = self.outputs[node_id]
        return outs[port] if port is not None else next(iter(outs.values()))


class _Run:
    """Mutable state of one run (shared by the scheduler and node contexts)."""

    def __init__(self, run_id: str, graph: Graph, plan: Plan, output_dir: pathlib.Path,
                 cancel: threading.Event) -> None:
        self.id = run_id
        self.graph = graph
        self.plan = plan
        self.output_dir = output_dir
        self.cancel = cancel
        self.annotations: dict[str, dict[str, Any]] = {}
        self.files: list[wire.FileArtifact] = []
        self._workflow: dict | None = None

    @property
    def workflow(self) -> dict:
        if self._workflow is None:
            from app.graph.io import graph_to_dict

            doc = graph_to_dict(self.graph)
            for n in doc["nodes"]:  # resolved file paths, so a saved PNG re-runs from any folder
                pn = self.plan.nodes.get(n["id"])
                for p in pn.ports if pn is not None else ():
                    if p.kind == "Path" and p.name in n["params"] and pn.params.get(p.name) is not None:
                        n["params"][p.name] = str(pn.params[p.name])
            self._workflow = doc
        return self._workflow


class NodeContext:
    """What a running node sees of the engine (see nodes.types.Context)."""

    def __init__(self, engine: Engine, run: _Run, node_id: str) -> None:
        self._engine = engine
        self._run = run
        self.node_id = node_id
        self.output_dir = run.output_dir
        self.device = engine.settings.device
        self.settings = engine.settings

    def progress(self, fraction: float, preview: Any = None, text: str | None = None,
                 metrics: dict[str, Any] | None = None) -> None:
        """Report progress; a preview image travels as a small PNG, `metrics` as JSON scalars."""
        bus = self._engine.events
        if not bus.active:
            return
        png = wire.encode_png(preview) if preview is not None else None
        bus.emit(ev.NodeProgress(self._run.id, self.node_id, float(fraction), text, png,
                                 tuple((metrics or {}).items())))

    def add_file(self, path: Any, kind: str = "file", frame: int | None = None) -> None:
        """Report a file this node wrote, as an artefact a client can list and fetch."""
        p = pathlib.Path(path)
        try:
            size = p.stat().st_size
        except OSError:
            size = 0
        art = wire.FileArtifact(self._run.id, self.node_id, str(p), kind, size, frame)
        self._run.files.append(art)
        self._engine.events.emit(ev.NodeFile(self._run.id, self.node_id, art))

    def log(self, message: str, level: str = "info") -> None:
        log.log(logging.WARNING if level == "warning" else logging.INFO, "%s: %s", self.node_id, message)
        self._engine.events.emit(ev.NodeLog(self._run.id, self.node_id, message, level))

    def check_cancelled(self) -> None:
        if self._run.cancel.is_set():
            raise Cancelled("cancelled")

    @property
    def cancelled(self) -> bool:
        return self._run.cancel.is_set()

    @property
    def cancel_event(self) -> threading.Event:
        return self._run.cancel

    def service(self, name: str) -> Any:
        return self._engine.services.get(name)

    def device_lock(self) -> threading.RLock:
        """The engine's device lock, for a node that does io first and device work after (Load
        Model downloads without it, then loads under it); gpu nodes already run holding it."""
        return self._engine.gpu_lock

    def annotate(self, key: str, value: Any) -> None:
        """Record provenance (a model hash, a LoRA) that Save nodes downstream embed in files."""
        self._run.annotations.setdefault(self.node_id, {})[key] = value

    @property
    def workflow(self) -> dict:
        return self._run.workflow

    @property
    def provenance(self) -> dict:
        """Annotations of this node's ancestors, merged (keys hold lists when several set them)."""
        plan = self._run.plan
        seen: set[str] = set()
        stack = [self.node_id]
        merged: dict[str, Any] = {}
        while stack:
            nid = stack.pop()
            if nid in seen or nid not in plan.nodes:
                continue
            seen.add(nid)
            for k, v in self._run.annotations.get(nid, {}).items():
                merged.setdefault(k, [])
                if v not in merged[k]:
                    merged[k].append(v)
            stack.extend(src for src, _ in plan.nodes[nid].links.values())
        return merged


class RunHandle:
    """A run in the background: its id, cancel it, wait for it, read its result."""

    def __init__(self, run_id: str, cancel: threading.Event) -> None:
        self.run_id = run_id
        self._cancel = cancel
        self._done = threading.Event()
        self.result: RunResult | None = None
        self.error: BaseException | None = None

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> RunResult | None:
        self._done.wait(timeout)
        if self.error is not None:
            raise self.error
        return self.result

    @property
    def done(self) -> bool:
        return self._done.is_set()


class Engine:
    """Runs graphs. One engine per app: it owns the cache, the pool, the device lock, services.

    Every run, from `run` or `start`, emits RunStarted (once planned), the node events, and
    exactly one RunFinished, also when the graph could not be planned (with its problems), so
    a client can follow a run from events alone. Node outputs are kept in `outputs` for clients
    to fetch by `OutputRef` (`fetch`, `fetch_frame`) while someone listens to the events.
    """

    def __init__(self, registry: Registry | None = None, settings: EngineSettings | None = None) -> None:
        self.registry = registry if registry is not None else default_registry()
        self.settings = settings or EngineSettings()
        self.cache = OutputCache(self.settings.cache_budget_bytes)
        self.outputs = OutputStore(self.settings.output_store_bytes)
        self.events = ev.EventBus()
        self.gpu_lock = threading.RLock()
        self.registry.ensure_loaded()
        self.services = Services(self, self.registry.services)
        self._pool = ThreadPoolExecutor(self.settings.max_workers, thread_name_prefix="imagebash-node")
        self._run_ids = itertools.count(1)
        self._nonce = f"{id(self)}:{time.time_ns()}"

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # public API ----------------------------------------------------------------------------------
    def plan(self, graph: Graph, targets: list[str] | None = None) -> Plan:
        return make_plan(graph, self.registry, targets)

    def new_run_id(self) -> str:
        return f"r{next(self._run_ids)}"

    def start(self, graph: Graph, targets: list[str] | None = None,
              output_dir: str | pathlib.Path | None = None, run_id: str | None = None) -> RunHandle:
        """Run a snapshot of `graph` in a background thread; returns at once."""
        cancel = threading.Event()
        handle = RunHandle(run_id or self.new_run_id(), cancel)
        snapshot = graph.copy()

        def work() -> None:
            try:
                handle.result = self.run(snapshot, targets, output_dir, cancel, handle.run_id)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                handle.error = exc
            finally:
                handle._done.set()

        threading.Thread(target=work, name="imagebash-run", daemon=True).start()
        return handle

    def run(self, graph: Graph, targets: list[str] | None = None,
            output_dir: str | pathlib.Path | None = None,
            cancel: threading.Event | None = None, run_id: str | None = None) -> RunResult:
        """Run what `targets` (default: the output nodes) need; raise ValidationError on bad graphs."""
        run_id = run_id or self.new_run_id()
        try:
            plan = make_plan(graph, self.registry, targets)
        except ValidationError as exc:
            problems = tuple((p.node_id, p.port, p.message) for p in exc.problems)
            self.events.emit(ev.RunFinished(run_id, None, error=str(exc), problems=problems))
            raise
        except Exception as exc:
            self.events.emit(ev.RunFinished(run_id, None, error=str(exc) or type(exc).__name__))
            raise
        compute_signatures(plan, nonce=f"{self._nonce}:{run_id}:{time.time_ns()}")
        run = _Run(run_id, graph, plan, pathlib.Path(output_dir or "output"), cancel or threading.Event())
        self.events.emit(ev.RunStarted(run_id, None, tuple(plan.order)))
        return _Scheduler(self, run).go()

    def fetch(self, ref: wire.OutputRef) -> Any:
        """The value behind an output reference (raises OutputGone when it is no longer kept)."""
        return self.outputs.get(ref)

    def fetch_frame(self, ref: wire.OutputRef, index: int = 0) -> Any:
        """Frame `index` of an Image/Mask batch or a Video output, as (H, W, C) float32.

        Pulling a lazy Video's frame runs the node code that makes it, here in the engine, not
        in the client that asked.
        """
        import numpy as np

        value = self.fetch(ref)
        if isinstance(value, Video):
            return value.frame(min(max(index, 0), len(value) - 1))[0]
        if isinstance(value, np.ndarray) and value.ndim in (3, 4) and value.shape[0]:
            frame = value[min(max(index, 0), value.shape[0] - 1)]
            return frame[..., None] if frame.ndim == 2 else frame
        raise TypeError(f"{ref.node_id}.{ref.port} is not a picture")

    # node execution ----------------------------------------------------------------------------
    def execute_node(self, run: _Run, pn: PlanNode, inputs: dict[str, Any]) -> dict[str, Any]:
        """Call a node's function (mapping it over Video frames where an Image port gets a Video)."""
        spec = pn.spec
        kwargs = dict(inputs)
        if spec.wants_ctx:
            kwargs["ctx"] = NodeContext(self, run, pn.id)
        if spec.window is not None:
            return map_windowed(lambda kw: self._call(pn, kw), spec, kwargs, run.cancel)
        video_ports = [p.name for p in pn.ports
                       if p.kind in ("Image", "Mask") and isinstance(kwargs.get(p.name), Video)]
        if video_ports:
            kinds = {p.name: p.kind for p in pn.ports}
            return map_over_video(lambda kw: self._call(pn, kw), spec, kinds, kwargs, video_ports, run.cancel)
        schedules = {} if spec.schedules else scheduled(kwargs)
        if schedules:
            # Nothing here runs per frame, so a schedule means its first keyframe's value.
            self.events.emit(ev.NodeLog(run.id, pn.id, f"{', '.join(schedules)}: a schedule on a node that does "
                                        "not run over a video's frames takes its value at frame 0", "warning"))
            kwargs = at_frame(kwargs, schedules, 0)
        return self._call(pn, kwargs)

    def _call(self, pn: PlanNode, kwargs: dict[str, Any]) -> dict[str, Any]:
        spec = pn.spec
        if spec.device == "gpu":
            with self.gpu_lock:
                result = spec.fn(**kwargs)
        else:
            result = spec.fn(**kwargs)
        if spec.multi_output:
            return dict(zip((p.name for p in spec.outputs), result, strict=True))
        if spec.outputs:
            return {spec.outputs[0].name: result}
        return {}


class _Skip(Exception):
    """This node cannot run because an input comes from a muted, skipped or failed node."""

    def __init__(self, reason: str, failed_upstream: str | None = None) -> None:
        super().__init__(reason)
        self.failed_upstream = failed_upstream


def _coerce_linked(kind: str, value: Any) -> Any:
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == "Video" and not isinstance(value, Video) and hasattr(value, "shape"):
        return Video.from_batch(value)
    if kind == "Path" and isinstance(value, str):
        return pathlib.Path(value)
    return value


class _Scheduler:
    """The loop that runs one plan."""

    def __init__(self, engine: Engine, run: _Run) -> None:
        self.engine = engine
        self.run = run
        self.plan = run.plan
        self.emit = engine.events.emit
        self.values: dict[str, dict[str, Any]] = {}
        self.status: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self.durations: dict[str, float] = {}
        self.failed_root: dict[str, str] = {}  # node -> the node whose failure it inherits
        self.targets = set(self.plan.targets)
        self.remaining_consumers = {nid: len(pn.consumers) for nid, pn in self.plan.nodes.items()}
        self.pending_deps = {nid: len({s for s, _ in pn.links.values()}) for nid, pn in self.plan.nodes.items()}
        self.done_q: queue.SimpleQueue = queue.SimpleQueue()

    def go(self) -> RunResult:
        t0 = time.perf_counter()
        ready = deque(nid for nid in self.plan.order if self.pending_deps[nid] == 0)
        inflight = 0
        cancelled = False
        while ready or inflight:
            while ready:
                nid = ready.popleft()
                if self.run.cancel.is_set():
                    cancelled = True
                    self.status[nid] = "cancelled"
                    continue
                pn = self.plan.nodes[nid]
                job = self._prepare(pn)
                if job is None:
                    ready.extend(self._complete(nid))
                    continue
                if pn.spec.io or ready or inflight:
                    inflight += 1
                    self.engine._pool.submit(self._execute_to_queue, pn, job)
                else:
                    self._execute(pn, job)
                    ready.extend(self._complete(nid))
            if inflight:
                nid = self.done_q.get()
                inflight -= 1
                ready.extend(self._complete(nid))
        if self.run.cancel.is_set():
            cancelled = True
            for nid in self.plan.order:
                self.status.setdefault(nid, "cancelled")
        duration = time.perf_counter() - t0
        outputs = {nid: self.values[nid] for nid in self.plan.targets if nid in self.values}
        self.emit(ev.RunFinished(self.run.id, None, duration, cancelled, tuple(self.errors)))
        return RunResult(self.run.id, outputs, self.status, self.errors, self.durations, cancelled, duration,
                         list(self.run.files))

    def _finished(self, pn: PlanNode, outputs: dict[str, Any], duration: float, cached: bool) -> None:
        """Keep the outputs for clients and tell the listeners, with a summary per port."""
        if not self.engine.events.active:
            return
        kinds = pn.spec.output_kinds
        self.engine.outputs.put(self.run.id, pn.id, outputs, kinds)
        summaries = {port: wire.summarize(wire.OutputRef(self.run.id, pn.id, port), kinds.get(port, "Any"), v)
                     for port, v in outputs.items()}
        self.emit(ev.NodeFinished(self.run.id, pn.id, duration, cached, summaries))

    def _prepare(self, pn: PlanNode) -> dict[str, Any] | None:
        """Resolve inputs and try the cache; None when the node is already settled."""
        nid = pn.id
        if pn.mode is NodeMode.MUTED:
            self.status[nid] = "muted"
            self.emit(ev.NodeSkipped(self.run.id, nid, "muted"))
            return None
        try:
            inputs = self._inputs(pn)
        except _Skip as skip:
            if skip.failed_upstream is not None:
                self.status[nid] = "failed"
                self.failed_root[nid] = skip.failed_upstream
                self.errors[nid] = str(skip)
                self.emit(ev.NodeFailed(self.run.id, nid, str(skip), "", skip.failed_upstream))
            else:
                self.status[nid] = "skipped"
                self.emit(ev.NodeSkipped(self.run.id, nid, str(skip)))
            return None
        if pn.mode is NodeMode.BYPASSED:
            self.values[nid] = self._bypass(pn, inputs)
            self.status[nid] = "bypassed"
            self._finished(pn, self.values[nid], 0.0, False)
            return None
        hit = self.engine.cache.get(pn.signature) if pn.spec.cacheable else None
        if hit is not None:
            self.values[nid] = hit.outputs
            self.status[nid] = "cached"
            self.durations[nid] = 0.0
            if hit.annotations:
                self.run.annotations[nid] = dict(hit.annotations)
            self._finished(pn, hit.outputs, 0.0, True)
            return None
        return inputs

    def _inputs(self, pn: PlanNode) -> dict[str, Any]:
        inputs: dict[str, Any] = {}
        for p in pn.ports:
            link = pn.links.get(p.name)
            if link is not None:
                src, src_port = link
                if src in self.failed_root:
                    root = self.failed_root[src]
                    raise _Skip(f"not run: upstream node '{root}' failed", root)
                if self.status.get(src) == "failed":
                    raise _Skip(f"not run: upstream node '{src}' failed", src)
                outs = self.values.get(src)
                if outs is not None and outs.get(src_port) is not None:
                    inputs[p.name] = _coerce_linked(p.kind, outs[src_port])
                    continue
                if p.required:
                    raise _Skip(f"input '{p.name}' comes from '{src}', which did not run ({self.status.get(src)})")
            if p.name in pn.params:
                inputs[p.name] = pn.params[p.name]
            elif p.default is not REQUIRED:
                inputs[p.name] = p.default
            elif p.optional:
                inputs[p.name] = None
        return inputs

    def _bypass(self, pn: PlanNode, inputs: dict[str, Any]) -> dict[str, Any]:
        """Each output takes the first linked input of a compatible kind."""
        from nodes.registry import compatible

        out: dict[str, Any] = {}
        for o in pn.spec.outputs:
            for p in pn.ports:
                if p.name in pn.links and p.name in inputs and compatible(p.kind, o.kind):
                    out[o.name] = inputs[p.name]
                    break
        return out

    def _execute_to_queue(self, pn: PlanNode, inputs: dict[str, Any]) -> None:
        try:
            self._execute(pn, inputs)
        finally:
            self.done_q.put(pn.id)

    def _execute(self, pn: PlanNode, inputs: dict[str, Any]) -> None:
        nid = pn.id
        bus_active = self.engine.events.active
        if bus_active:
            self.emit(ev.NodeStarted(self.run.id, nid, pn.instance.title or pn.spec.title))
        t0 = time.perf_counter()
        try:
            outputs = self.engine.execute_node(self.run, pn, inputs)
            wire.check_outputs(pn.spec.id, pn.spec.outputs, outputs)
        except Cancelled:
            self.status[nid] = "cancelled"
            self.run.cancel.set()
            return
        except Exception as exc:  # the engine's central catch: a node's failure fails only its descendants
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.status[nid] = "failed"
            self.errors[nid] = msg
            self.durations[nid] = time.perf_counter() - t0
            log.debug("node %s failed", nid, exc_info=True)
            self.emit(ev.NodeFailed(self.run.id, nid, msg, traceback.format_exc()))
            return
        dt = time.perf_counter() - t0
        self.values[nid] = outputs
        self.status[nid] = "done"
        self.durations[nid] = dt
        if pn.spec.cacheable:
            self.engine.cache.put(pn.signature, outputs, pn.spec.output_kinds, self.run.annotations.get(nid))
        if bus_active:
            self._finished(pn, outputs, dt, False)

    def _complete(self, nid: str) -> list[str]:
        """Release inputs no longer needed and return the consumers that became ready."""
        pn = self.plan.nodes[nid]
        for src in {s for s, _ in pn.links.values()}:
            self.remaining_consumers[src] -= 1
            if self.remaining_consumers[src] <= 0 and src not in self.targets:
                self.values.pop(src, None)
        ready = []
        for c in dict.fromkeys(pn.consumers):
            self.pending_deps[c] -= 1
            if self.pending_deps[c] == 0:
                ready.append(c)
        return ready
