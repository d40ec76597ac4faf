"""Data-parallel training over N processes (`imagebash train-lora --gpus N`, `gpus = N` in a config).

`train(cfg)` re-launches the same training as N processes with accelerate's launcher
(`python -m accelerate.commands.launch --multi_gpu --num_processes N ... -m app.training.distributed
CONFIG.json`, which starts them through torch's elastic agent), one per GPU. On a machine without
a GPU the N processes run on the CPU with the gloo backend: slower than one process, meant for
testing (the test suite does exactly that). Asking for more GPUs than the machine has is an error
before anything starts.

In the processes (`main`), accelerate's `PartialState` sets up the process group and the device;
the `Trainer` gets a `ProcessGroup` and then: the data order is planned in global batches of
batch_size x N, rank r takes positions r, r+N, ... of every batch, each item draws the noise it
would draw in one process (`objectives.rows`), the adapter's gradients (and the loss) are summed
over the processes before clipping and the optimizer step, so every process keeps the same weights
(there is no DDP wrapper: only the adapter's parameters travel, in one flat buffer). Rank 0 alone
encodes the latent cache first (the others wait at a barrier, then read it from disk), writes
checkpoints, samples, logs and the LoRA, and reports: its progress, log lines and result come back
to this process as JSON lines on its stdout, so the caller sees the callbacks of a one-process
`Trainer`. Resuming works as in one process (rank 0's checkpoint holds the step, optimizer and RNG
states every process restores); a stop (`stop` set, Ctrl-C) sends SIGTERM to the launcher, which
passes it on: the processes agree on the step, rank 0 saves a checkpoint, and all exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from app.training.config import ConfigError, TrainConfig

#: the prefix of rank 0's event lines on its stdout
MARK = "@@imagebash-train@@ "
_ERRORS = ("DatasetError", "BaseModelError", "CheckpointError", "ConfigError")


# the launching side ------------------------------------------------------------------------------
def plan_devices(cfg: TrainConfig) -> tuple[bool, str]:
    """(run on the CPU, a note for the log) for `cfg.gpus` processes; ConfigError when they cannot run."""
    n = cfg.gpus
    dev = cfg.device
    if dev == "mps":
        raise ConfigError(f"gpus = {n} needs CUDA GPUs (or the CPU, for testing); device mps trains in one process")
    if dev == "cpu":
        return True, f"{n} processes on the CPU (gloo): for testing, slower than one"
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        if dev.startswith("cuda"):
            raise ConfigError(f"--gpus {n} with device {dev}: this machine has no CUDA GPU")
        return True, f"no GPU here: the {n} processes run on the CPU (gloo), for testing, slower than one"
    if n > count:
        raise ConfigError(f"--gpus {n}: this machine has {count} GPU{'s' if count != 1 else ''} "
                          f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
                          f"use --gpus {count} or fewer")
    note = f"{n} processes on GPUs 0-{n - 1} (nccl)"
    if dev.startswith("cuda:"):
        note += f"; device {dev} is ignored, each process takes its own GPU"
    return False, note


def launch_command(config_file: pathlib.Path, n: int, *, cpu: bool, port: int, resume: bool) -> list[str]:
    """The accelerate command line that starts the `n` training processes."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
           "--num_machines", "1", "--machine_rank", "0", "--main_process_ip", "127.0.0.1",
           "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
           "--module", "app.training.distributed", str(config_file)]
    if cpu:
        cmd.append("--cpu")
    if resume:
        cmd.append("--resume")
    return cmd


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(cfg: TrainConfig, *, resume: bool = False, progress: Callable[[Any], None] | None = None,
          log: Callable[[str], None] | None = None, stop: threading.Event | None = None,
          on_samples: Callable[[list[pathlib.Path]], None] | None = None,
          extra_metadata: dict[str, str] | None = None) -> Any:
    """Train `cfg` in `cfg.gpus` processes and return rank 0's TrainResult; raises TrainingStopped
    after a stop (with rank 0's checkpoint) and the trainer's own errors (DatasetError, ...)."""
    from app.training.loop import Progress, TrainingStopped

    cfg = cfg.validate()
    progress = progress or (lambda p: None)
    log = log or (lambda msg: None)
    stop = stop or threading.Event()
    cpu, note = plan_devices(cfg)
    log(f"data-parallel: {note}; global batch {cfg.batch_size * cfg.gpus} "
        f"(batch_size {cfg.batch_size} x {cfg.gpus})")
    with tempfile.TemporaryDirectory(prefix="imagebash-train-") as tmp:
        config_file = pathlib.Path(tmp) / "config.json"
        d = cfg.to_dict()
        d.pop("extra", None)
        config_file.write_text(json.dumps({"config": d, "extra_metadata": extra_metadata or {}}), encoding="utf-8")
        env = dict(os.environ)
        root = str(pathlib.Path(__file__).resolve().parents[2])  # the folder that holds `app`
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("OMP_NUM_THREADS", "1")
        cmd = launch_command(config_file, cfg.gpus, cpu=cpu, port=_free_port(), resume=resume)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)  # Ctrl-C reaches this process only: it stops them
        events: dict[str, Any] = {}
        pids: set[int] = set()
        tail: deque[str] = deque(maxlen=40)

        def read_stdout() -> None:
            for line in proc.stdout:
                if not line.startswith(MARK):
                    if line.strip():
                        log(line.rstrip())
                    continue
                try:
                    e = json.loads(line[len(MARK):])
                except ValueError:
                    continue
                kind = e.get("kind")
                if kind == "pid":
                    pids.add(int(e["pid"]))
                elif kind == "progress":
                    progress(Progress(**e["progress"]))
                elif kind == "log":
                    log(e["message"])
                elif kind == "samples" and on_samples is not None:
                    on_samples([pathlib.Path(p) for p in e["paths"]])
                else:
                    events[kind] = e

        def read_stderr() -> None:
            for line in proc.stderr:
                tail.append(line.rstrip())

        readers = [threading.Thread(target=f, daemon=True) for f in (read_stdout, read_stderr)]
        for t in readers:
            t.start()
        signalled = False
        try:
            while proc.poll() is None:
                if stop.is_set() and not signalled:
                    signalled = True
                    proc.send_signal(signal.SIGTERM)  # the agent passes it on; rank 0 saves a checkpoint
                time.sleep(0.05)
            for t in readers:
                t.join(timeout=10)
        finally:
            _end(proc, pids)
    if "result" in events:
        return _result(events["result"]["result"])
    if "stopped" in events:
        raise TrainingStopped(_result(events["stopped"]["result"]))
    if "error" in events:
        raise _error(events["error"])
    lines = [x for x in tail if x.strip()]
    raise RuntimeError(f"data-parallel training failed (launcher exit status {proc.returncode}): "
                       + (" | ".join(lines[-6:]) or "no output"))


def _end(proc: subprocess.Popen, pids: set[int]) -> None:
    """Make sure the launcher and every training process it started have ended."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)  # the agent gives its processes 30 s after passing SIGTERM on
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in pids:  # the processes run in sessions of their own: end any the agent left behind
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _result(d: dict[str, Any]) -> Any:
    from app.training.loop import TrainResult

    paths = {k: pathlib.Path(d[k]) if d.get(k) else None for k in ("lora", "peft", "checkpoint")}
    return TrainResult(paths["lora"], paths["peft"], d["steps"], d["total_steps"], list(d.get("losses", [])),
                       paths["checkpoint"], list(d.get("epoch_times", [])),
                       [pathlib.Path(p) for p in d.get("samples", [])], list(d.get("step_times", [])))


def _error(e: dict[str, Any]) -> Exception:
    kind, message = e.get("type", ""), e.get("message", "training failed")
    if kind == "DatasetError":
        from app.training.dataset import DatasetError as cls
    elif kind == "BaseModelError":
        from app.training.base import BaseModelError as cls
    elif kind == "CheckpointError":
        from app.training.checkpoint import CheckpointError as cls
    elif kind == "ConfigError":
        cls = ConfigError
    elif kind == "ValueError":
        cls = ValueError
    else:
        cls = RuntimeError
    return cls(message)


# the training processes ---------------------------------------------------------------------------
class ProcessGroup:
    """What the Trainer needs of the process group: rank, world, barrier, sums and a broadcast."""

    def __init__(self, rank: int, world: int) -> None:
        self.rank = rank
        self.world = world

    def barrier(self) -> None:
        import torch.distributed as td

        td.barrier()

    def any(self, flag: bool) -> bool:
        """True on every process if `flag` is true on any (a stop is agreed on at one step)."""
        import torch
        import torch.distributed as td

        t = torch.tensor([1.0 if flag else 0.0], device=self._device())
        td.all_reduce(t, op=td.ReduceOp.MAX)
        return bool(t.item() > 0)

    def all_reduce_grads(self, params: list[Any], loss: float) -> float:
        """Sum the gradients of `params` (None counts as 0) and `loss` over the processes, in one buffer."""
        import torch
        import torch.distributed as td

        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
                          for p in params] + [torch.tensor([loss], device=params[0].device)])
        td.all_reduce(flat, op=td.ReduceOp.SUM)
        at = 0
        for p in params:
            n = p.numel()
            p.grad = flat[at:at + n].view_as(p).to(p.dtype)
            at += n
        return float(flat[at])

    def broadcast(self, params: list[Any]) -> None:
        """Every process takes rank 0's values of `params`."""
        import torch
        import torch.distributed as td

        if not params:
            return
        flat = torch.cat([p.detach().reshape(-1).float() for p in params])
        td.broadcast(flat, src=0)
        at = 0
        with torch.no_grad():
            for p in params:
                n = p.numel()
                p.copy_(flat[at:at + n].view_as(p))
                at += n

    def _device(self) -> str:
        import torch.distributed as td

        return "cuda" if td.get_backend() == "nccl" else "cpu"


def _emit(kind: str, **fields: Any) -> None:
    line = MARK + json.dumps({"kind": kind, **fields}) + "\n"
    os.write(sys.stdout.fileno(), line.encode())  # one write: lines of two processes never interleave


def _result_dict(r: Any) -> dict[str, Any]:
    d = dataclasses.asdict(r)
    for k in ("lora", "peft", "checkpoint"):
        d[k] = str(d[k]) if d[k] is not None else None
    d["samples"] = [str(p) for p in d["samples"]]
    return d


def main(argv: list[str] | None = None) -> int:
    """One training process, as the launcher starts it: `CONFIG.json [--cpu] [--resume]`."""
    import argparse

    p = argparse.ArgumentParser(prog="app.training.distributed")
    p.add_argument("config", type=pathlib.Path)
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    from accelerate import PartialState

    state = PartialState(cpu=args.cpu)
    rank, world = state.process_index, state.num_processes
    _emit("pid", pid=os.getpid(), rank=rank)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()  # finish the step; rank 0 saves a checkpoint

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    main_rank = rank == 0
    try:
        from app.training.config import apply
        from app.training.loop import Trainer, TrainingStopped

        spec = json.loads(args.config.read_text(encoding="utf-8"))
        cfg = apply(TrainConfig(), spec["config"], source=str(args.config))
        if world != cfg.gpus:
            raise ConfigError(f"gpus = {cfg.gpus} but {world} processes were started")
        device = "cpu" if args.cpu else f"cuda:{state.local_process_index}"
        cfg = cfg.replace(device=device).validate()
        trainer = Trainer(cfg, progress=(lambda pr: _emit("progress", progress=dataclasses.asdict(pr)))
                          if main_rank else None,
                          log=(lambda msg: _emit("log", message=msg)) if main_rank else None,
                          stop=stop, dist=ProcessGroup(rank, world))
        trainer.extra_metadata = dict(spec.get("extra_metadata", {}))
        if main_rank:
            trainer.on_samples = lambda paths: _emit("samples", paths=[str(x) for x in paths])
        try:
            result = trainer.run(resume=args.resume)
        except TrainingStopped as exc:
            if main_rank:
                _emit("stopped", result=_result_dict(exc.result))
            return 0  # not a failure: the agent would end the others at once
        if main_rank:
            _emit("result", result=_result_dict(result))
        return 0
    except Exception as exc:
        if main_rank:
            kind = type(exc).__name__
            known = kind in (*_ERRORS, "ValueError", "RuntimeError")
            _emit("error", type=kind if known else "RuntimeError", message=str(exc) if known else f"{kind}: {exc}")
        raise
    finally:
        import torch.distributed as td

        if td.is_initialized():
            with contextlib.suppress(Exception):
                td.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
