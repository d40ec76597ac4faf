"""A pooled run from the window (Run > Run on Pool): the engines Settings > Engines > Pool names
(and a Ray cluster when chosen there) take one workflow split into shards by `app.engine.pool`.

The UI computes nothing itself: it hands the graph to `preflight` and `run_pool` on a worker
thread (the same pattern as `app.ui.runner`: a plain thread, results back through queued Qt
signals, so every slot runs on the GUI thread and the event loop never waits). The run is shown
as a RunJob of the window's RunController (the queue panel lists it with its files, the log says
when it starts and ends), with the preflight lines in the log before it starts, the split's note
when it runs unsplit, and progress per engine and in total (the queue row's Outputs column, the
status bar's progress bar: "4/7 · local 3, gpu-box 1"). Cancel stops handing out shards and
cancels the shards in flight; an engine that fails takes no more shards; when every engine is
gone the run ends with one error line, and what finished is kept (its files listed).
"""

from __future__ import annotations

import logging
import pathlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QProgressBar

from app.engine import events as ev
from app.ui.engines import one_line
from app.ui.runner import RunJob
from app.ui.signals import emit_safely

log = logging.getLogger(__name__)

#: The engine key and name a pooled run's RunJob shows (the queue's Engine column).
POOL = "pool"


class _Tracked:
    """An engine client as a pool member sees it: records the shard runs it submits (so cancel
    can stop them) and the files they write (an unsplit run's Save nodes); refuses new shards
    once the run is cancelled."""

    def __init__(self, engine: Any, stop: threading.Event) -> None:
        self.inner = engine
        self.stop = stop
        self.runs: set[str] = set()
        self.files: list[str] = []
        self.lock = threading.Lock()
        self._unsubscribe = engine.subscribe(self._event)

    def _event(self, e: ev.Event) -> None:
        if isinstance(e, ev.NodeFile) and e.file is not None and e.run_id in self.runs:
            with self.lock:
                self.files.append(e.file.path)

    def submit(self, graph: Any, targets: Any = None, output_dir: Any = None, run_id: Any = None) -> Any:
        from app.engine.pool import EngineGone

        if self.stop.is_set():
            raise EngineGone("the run was cancelled")
        with self.lock:
            self.runs.add(run_id)
        ticket = self.inner.submit(graph, targets, output_dir, run_id)
        if self.stop.is_set():  # cancelled while it was being sent
            self.inner.cancel(run_id)
        return ticket

    def cancel_all(self) -> None:
        with self.lock:
            runs = list(self.runs)
        for run_id in runs:
            try:
                self.inner.cancel(run_id)
            except Exception as exc:  # noqa: BLE001 - an engine that went away has nothing running
                log.info("cancel %s: %s", run_id, one_line(exc))

    def close(self) -> None:
        self._unsubscribe()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _Stoppable:
    """A pool worker (EngineWorker, RayWorker) that takes no shard once the run is cancelled."""

    def __init__(self, inner: Any, stop: threading.Event, tracked: _Tracked | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.stop = stop
        self.tracked = tracked

    def run(self, plan: Any, shard: Any, workdir: pathlib.Path) -> Any:
        from app.engine.pool import EngineGone

        if self.stop.is_set():
            raise EngineGone("the run was cancelled")
        return self.inner.run(plan, shard, workdir)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close:
            close()
        if self.tracked is not None:
            self.tracked.close()


@dataclass(eq=False)
class PoolState:
    """A pooled run in flight: its job, its members, its cancel flag and the last progress."""

    job: RunJob
    stop: threading.Event = field(default_factory=threading.Event)
    tracked: list[_Tracked] = field(default_factory=list)
    progress: Any = None  # the latest app.engine.pool.Progress


def progress_text(p: Any) -> str:
    """'4/7 · local 3, gpu-box 1' (items done of all, then shards accepted per engine)."""
    each = ", ".join(f"{k} {v}" for k, v in p.per_engine.items())
    return f"{p.items_done}/{p.items_total}" + (f" · {each}" if each else "")


class PoolRunner(QObject):
    """Runs pooled jobs for a MainWindow; see the module docstring. `win.pool_engines()` gives the
    members as (key, name, client); `win.settings` the Ray choice."""

    started = Signal(object)  # RunJob
    progressed = Signal(object, object)  # RunJob, Progress
    finished = Signal(object)  # RunJob
    _line = Signal(object, str, str)  # job, level, text (from the worker thread)
    _progress = Signal(object, object)  # state, Progress
    _done = Signal(object, object, str)  # state, PoolResult or None, error

    def __init__(self, win: Any) -> None:
        super().__init__(win)
        self.win = win
        self.active: list[PoolState] = []
        self.bar = QProgressBar()
        self.bar.setObjectName("pool_progress")
        self.bar.setMaximumWidth(320)
        self.bar.setTextVisible(True)
        self.bar.hide()
        win.statusBar().addPermanentWidget(self.bar)
        self._line.connect(self._on_line, Qt.ConnectionType.QueuedConnection)
        self._progress.connect(self._on_progress, Qt.ConnectionType.QueuedConnection)
        self._done.connect(self._on_done, Qt.ConnectionType.QueuedConnection)

    @property
    def busy(self) -> bool:
        return bool(self.active)

    # starting ---------------------------------------------------------------------------------
    def start(self, document: Any, targets: list[str] | None = None, title: str = "") -> RunJob | None:
        """Run a snapshot of `document`'s graph on the pool; the RunJob shown for it."""
        win = self.win
        runner = win.runner
        members = list(win.pool_engines())
        settings = win.settings
        ray = settings.ray_target()
        lines: list[str] = []
        chosen: list[tuple[str, Any]] = []
        for key, name, client in members:
            missing = win.engines.missing_token(key) if key.startswith(("http://", "https://")) else None
            if missing is not None:
                lines.append(f"{name}: left out: {missing}")
            else:
                chosen.append((name, client))
        if not chosen and ray is None:
            win.error("No engine joins the pool: tick some in Settings > Engines > Pool")
            return None
        output_dir = pathlib.Path(settings.output_dir)
        job = RunJob(runner.new_job_number(), document, title or "workflow", document.graph.copy(),
                     list(targets) if targets else None, output_dir, engine_key=POOL, engine=POOL)
        job.status = "running"
        job.started_at = time.time()
        job.note = "checking the engines…"
        state = PoolState(job)
        self.active.append(state)
        runner.jobs.append(job)
        runner.jobQueued.emit(job)
        runner.jobStarted.emit(job)
        for line in lines:
            self._on_line(job, "warning", f"pool: {line}")
        self.bar.setRange(0, 0)  # busy until the split is known
        self.bar.setFormat("pool: checking engines")
        self.bar.show()
        self.started.emit(job)
        registry = win.engine.registry
        threading.Thread(target=self._work, args=(state, chosen, ray, registry, settings.pool_shards_per_engine),
                         name="imagebash-pool-run", daemon=True).start()
        return job

    def _work(self, state: PoolState, chosen: list[tuple[str, Any]], ray: str | None, registry: Any,
              per_engine: int) -> None:
        """On a worker thread: preflight, Ray, the split's note, run_pool; the result goes back queued."""
        from app.engine.pool import EngineWorker, plan_split, preflight, run_pool

        job = state.job
        ray_started = False
        try:
            names = {id(c): name for name, c in chosen}
            ok, pre = preflight([c for _n, c in chosen], job.graph)
            for line in pre:
                for name, c in chosen:  # the engine as Settings calls it, not only its URL
                    url = getattr(c, "url", None)
                    if url and line.startswith(f"{url}:"):
                        line = f"{name} ({url}){line[len(url):]}"
                        break
                emit_safely(self._line, job, "warning", f"pool: {line}")
            workers: list[Any] = []
            for c in ok:
                tracked = _Tracked(c, state.stop)
                state.tracked.append(tracked)
                workers.append(_Stoppable(EngineWorker(tracked, name=names[id(c)]), state.stop, tracked))
            if ray is not None and not state.stop.is_set():
                from app.engine.pool import ray_backend

                try:
                    r = ray_backend.connect(None if ray == "local" else ray)
                    ray_started = True
                    workers += [_Stoppable(w, state.stop) for w in ray_backend.actors(r)]
                except ray_backend.RayUnavailable as exc:
                    emit_safely(self._line, job, "warning", f"pool: {one_line(exc)}")
            if not workers:
                emit_safely(self._done, state, None, "no engine can take the run (see the lines above)")
                return
            plan = plan_split(job.graph, registry, job.targets, engines=len(workers), per_engine=per_engine)
            if plan.split:
                what = "frames" if plan.mode == "frames" else ("seeds" if plan.mode == "seeds" else "items")
                emit_safely(self._line, job, "info", f"pool: {plan.total} {what} in {len(plan.shards)} shard(s) "
                                                     f"on {', '.join(w.name for w in workers)}")
            else:
                emit_safely(self._line, job, "info", f"pool: runs unsplit on {workers[0].name}"
                                                     + (f": {plan.note}" if plan.note else ""))
            result = run_pool(job.graph, [], registry, job.targets, job.output_dir, per_engine=per_engine,
                              on_progress=lambda p: emit_safely(self._progress, state, p), workers=workers,
                              cancel=state.stop)
        except Exception as exc:  # whatever broke is the run's one error line
            log.exception("pooled run #%s", job.number)
            emit_safely(self._done, state, None, one_line(exc))
            return
        finally:
            if ray_started:
                from app.engine.pool import ray_backend

                ray_backend.shutdown()
        emit_safely(self._done, state, result, "")

    # on the GUI thread ------------------------------------------------------------------------
    def _on_line(self, job: RunJob, level: str, text: str) -> None:
        self.win.log.add(level, text)
        self.win.statusBar().showMessage(text, 6000)

    def _on_progress(self, state: PoolState, p: Any) -> None:
        job = state.job
        if job.finished:
            return
        state.progress = p
        job.ran = True
        job.note = progress_text(p)
        if p.message:
            self._on_line(job, "warning", f"pool: {p.message}")
        self.bar.setRange(0, max(1, p.items_total))
        self.bar.setValue(p.items_done)
        self.bar.setFormat(f"pool: {job.note}")
        self.win.queue.update_job(job)
        self.progressed.emit(job, p)

    def _on_done(self, state: PoolState, result: Any, error: str) -> None:
        job = state.job
        if state in self.active:
            self.active.remove(state)
        files: list[str] = []
        for t in state.tracked:
            with t.lock:
                files += t.files
        if result is not None:
            files += result.files
            error = error or (result.error or "")
        job.files = [pathlib.Path(f) for f in dict.fromkeys(files)]
        if state.stop.is_set():
            status = "cancelled"
            p = state.progress
            done = f"; {p.shards_done} of {p.shards_total} shards finished" if p is not None else ""
            kept = f", kept in {result.parts_dir}" if result is not None and result.parts_dir and p and p.shards_done \
                else ""
            job.message = f"cancelled{done}{kept}"
        elif error:
            status = "error"
            job.message = error
        else:
            status = "done"
            job.message = ""
        if result is not None and status == "done":
            each = ", ".join(f"{k} {v}" for k, v in result.per_engine.items())
            job.note = f"{result.plan.total}/{result.plan.total}" + (f" · {each}" if each else "")
            what = "frames" if result.plan.mode == "frames" else "items"
            self.win.log.add("info", f"pool: run #{job.number}: {result.plan.total} {what} in "
                                     f"{len(result.plan.shards)} shard(s) in {result.wall_s:.1f}s ({each})")
        job.status = status
        job.finished_at = time.time()
        if not self.active:
            self.bar.hide()
        self.win.runner.jobFinished.emit(job)
        if status == "cancelled":
            self.win.log.add("warning", f"pool: run #{job.number} {job.message}")
        self.finished.emit(job)

    # cancel, close ----------------------------------------------------------------------------
    def cancel(self) -> bool:
        """Cancel every pooled run: no more shards are handed out, the shards in flight are
        cancelled on their engines (off the GUI thread). False when none was running."""
        if not self.active:
            return False
        for state in self.active:
            state.stop.set()
            state.job.cancel_requested = True
            tracked = list(state.tracked)
            threading.Thread(target=lambda ts=tracked: [t.cancel_all() for t in ts], name="imagebash-pool-cancel",
                             daemon=True).start()
        return True

    def shutdown(self) -> None:
        """The window closes: stop the runs (their engines are shut down by the RunController)."""
        for state in self.active:
            state.stop.set()
            for t in state.tracked:
                t.cancel_all()
