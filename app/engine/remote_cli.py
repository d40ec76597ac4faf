"""The command line's side of remote engines: which engine and token a command uses, `imagebash
jobs`, and training on a server (`imagebash train-lora ... --engine URL`).

The engine comes from `--engine URL` or IMAGEBASH_ENGINE; its token from `--token-file F`, else
IMAGEBASH_TOKEN, else the OS keyring entry the editor's Settings > Engines stores ("engine:URL").
A token is never printed or logged (`app.secrets` blanks it in every log line).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import threading
from collections.abc import Callable
from typing import Any

ENGINE_ENV = "IMAGEBASH_ENGINE"
TOKEN_ENV = "IMAGEBASH_TOKEN"


def keyring_name(url: str) -> str:
    """The keyring entry of an engine's token (Settings > Engines writes the same one)."""
    return f"engine:{url.rstrip('/')}"


def add_engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", metavar="URL", default=argparse.SUPPRESS,
                   help=f"run on a remote engine (imagebash serve) at URL (or ${ENGINE_ENV})")
    p.add_argument("--token-file", type=pathlib.Path, default=argparse.SUPPRESS,
                   help=f"the engine's token, in a file (else ${TOKEN_ENV} or the OS keyring)")


def engine_url(args: argparse.Namespace) -> str | None:
    url = getattr(args, "engine", None) or os.environ.get(ENGINE_ENV, "").strip()
    if isinstance(url, list):  # `imagebash run` takes --engine more than once (a pool)
        url = url[0] if url else None
    return url.rstrip("/") if url else None


# an engine pool (imagebash run --engine A --engine B / --ray) ----------------------------------------
def add_pool_options(p: argparse.ArgumentParser) -> None:
    """`imagebash run`'s engine options: --engine repeatable (a pool), --no-local, --ray."""
    p.add_argument("--engine", metavar="URL", action="append", default=argparse.SUPPRESS,
                   help=f"run on a remote engine (imagebash serve) at URL (or ${ENGINE_ENV}); more than once: a pool "
                        "that splits a seed sweep, a batch or a video's frames over the engines (this machine joins "
                        "unless --no-local)")
    p.add_argument("--token-file", type=pathlib.Path, default=argparse.SUPPRESS,
                   help=f"the engines' token, in a file (else ${TOKEN_ENV} or the OS keyring, per engine)")
    p.add_argument("--local", dest="local", action="store_true", default=None,
                   help="this machine's engine joins the pool (the default with two or more --engine)")
    p.add_argument("--no-local", dest="local", action="store_false",
                   help="leave this machine's engine out of the pool")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run the split on a Ray cluster (ray://HEAD:10001; no address: a local Ray instance); "
                        "needs pip install 'imagebash[ray]'")
    p.add_argument("--shards-per-engine", type=int, default=4, metavar="N",
                   help="shards per engine (more: a slow engine gets less; default 4)")


def wants_pool(args: argparse.Namespace, graph: Any) -> bool:
    urls = getattr(args, "engine", None) or []
    return (len(urls) > 1 or getattr(args, "ray", None) is not None
            or (getattr(args, "local", None) is True and len(urls) >= 1)
            or any(n.type == "imagebash.seeds" for n in graph))


def run_pool_cli(args: argparse.Namespace, graph: Any, registry: Any, device: str = "auto") -> int:
    """`imagebash run` on a pool: the engines are checked first (one line each that cannot take
    part), progress prints per engine and in total, the output is one batch / sheet / video."""
    from app.cli import CliError
    from app.engine import EngineSettings
    from app.engine.client import LocalEngine
    from app.engine.pool import preflight, run_pool
    from app.engine.remote import EngineUnavailable, RemoteEngine

    urls = [u.rstrip("/") for u in (getattr(args, "engine", None) or [])]
    if not urls and os.environ.get(ENGINE_ENV, "").strip() and getattr(args, "ray", None) is None:
        urls = [os.environ[ENGINE_ENV].strip().rstrip("/")]
    ray_addr = getattr(args, "ray", None)
    local = getattr(args, "local", None)
    if local is None:
        local = ray_addr is None
    engines: list[Any] = []
    lines: list[str] = []
    for url in urls:
        try:
            token = engine_token(url, getattr(args, "token_file", None))
        except CliError as exc:
            lines.append(f"{url}: left out: {exc}")
            continue
        engines.append(RemoteEngine(url, token, registry))
    if local:
        engines.insert(0, LocalEngine(registry, EngineSettings(device=device)))
    workers = None
    try:
        if ray_addr is not None:
            from app.engine.pool import ray_backend

            try:
                ray = ray_backend.connect(None if ray_addr == "local" else ray_addr)
                workers = ray_backend.actors(ray)
            except ray_backend.RayUnavailable as exc:
                raise CliError(str(exc)) from None
        engines, lines2 = preflight(engines, graph)
        for line in lines + lines2:
            print(f"imagebash: {line}", file=sys.stderr)
        if workers is not None:
            from app.engine.pool.runner import EngineWorker

            workers = [*(EngineWorker(e) for e in engines), *workers]
        elif not engines:
            raise CliError("no engine can take the run (see above)")
        quiet = getattr(args, "quiet", False)

        def progress(p: Any) -> None:
            if p.message:
                print(f"imagebash: {p.message}", file=sys.stderr)
            elif not quiet:
                each = ", ".join(f"{k} {v}" for k, v in p.per_engine.items())
                print(f"[pool] {p.items_done}/{p.items_total} ({p.shards_done}/{p.shards_total} shards; {each})",
                      file=sys.stderr)

        cancel = threading.Event()
        result = _until_interrupted(lambda: run_pool(
            graph, engines, registry, args.targets, args.output_dir, per_engine=max(1, args.shards_per_engine),
            on_progress=progress, workers=workers, part_dtype="uint8", cancel=cancel), cancel)
    except EngineUnavailable as exc:
        raise CliError(str(exc)) from None
    finally:
        for e in engines:
            e.shutdown()
        if ray_addr is not None:
            from app.engine.pool import ray_backend

            ray_backend.shutdown()
    if result.plan.note:
        print(f"imagebash: {result.plan.note}", file=sys.stderr)
    if result.error:
        for f in result.files:
            print(f)
        print(f"imagebash: error: {args.workflow}: {result.error}", file=sys.stderr)
        return 130 if result.cancelled else 1
    for f in result.files:
        print(f)
    each = ", ".join(f"{k}: {v}" for k, v in result.per_engine.items())
    print(f"{result.plan.total} {'frames' if result.plan.mode == 'frames' else 'items'} in "
          f"{len(result.plan.shards)} shard(s) in {result.wall_s:.2f}s ({each}); outputs in {args.output_dir}",
          file=sys.stderr)
    return 0


def _until_interrupted(run: Callable[[], Any], cancel: threading.Event) -> Any:
    """`run()` on a thread; Ctrl+C sets `cancel` (the pool hands out no more shards, cancels those
    in flight and keeps what finished) and waits for it to wind down; a second Ctrl+C quits."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            box["result"] = run()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread
            box["error"] = exc

    t = threading.Thread(target=body, name="imagebash-pool-run", daemon=True)
    t.start()
    while t.is_alive():
        try:
            t.join(0.2)
        except KeyboardInterrupt:
            if cancel.is_set():
                raise
            cancel.set()
            print("imagebash: cancelling the pooled run (Ctrl+C again to quit now); what finished is kept",
                  file=sys.stderr)
    if "error" in box:
        raise box["error"]
    return box["result"]


def engine_token(url: str, token_file: pathlib.Path | None = None) -> str:
    """The token for `url` (see the module docstring); CliError when there is none."""
    from app import secrets
    from app.cli import CliError

    if token_file is not None:
        try:
            token = pathlib.Path(token_file).expanduser().read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read the token file {token_file}: {exc.strerror or exc}") from None
        if not token:
            raise CliError(f"the token file {token_file} is empty")
        return secrets.remember(token) or token
    token = os.environ.get(TOKEN_ENV, "").strip() or secrets.get_token(keyring_name(url)) or ""
    if not token:
        raise CliError(f"no token for the engine at {url}: pass --token-file, set {TOKEN_ENV}, or store it in "
                       "the editor's Settings > Engines")
    return secrets.remember(token) or token


def remote_engine(args: argparse.Namespace, registry: Any = None) -> Any:
    """The RemoteEngine a command's options name, checked to answer (CliError when it does not)."""
    from app.cli import CliError
    from app.engine.remote import EngineUnavailable, RemoteEngine

    url = engine_url(args)
    if url is None:
        raise CliError(f"no engine given: pass --engine URL or set {ENGINE_ENV}")
    engine = RemoteEngine(url, engine_token(url, getattr(args, "token_file", None)), registry)
    try:
        engine.info()
    except EngineUnavailable as exc:
        engine.shutdown()
        raise CliError(str(exc)) from None
    return engine


# imagebash jobs -------------------------------------------------------------------------------------
def register(subparsers: Any) -> None:
    """Add `imagebash jobs [list|cancel ID|rerun ID]`."""
    p = subparsers.add_parser("jobs", help="list, cancel or re-run the jobs of a remote engine",
                              description="The jobs of a remote engine (imagebash serve): list them, cancel one "
                                          "(queued or running), or run an interrupted/failed one again.")
    p.add_argument("action", nargs="?", choices=("list", "cancel", "rerun"), default="list")
    p.add_argument("job_id", nargs="?", help="the job (for cancel and rerun)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.add_argument("--limit", type=int, default=50, help="how many jobs to list (newest first)")
    add_engine_options(p)
    p.set_defaults(func=cmd_jobs)


def cmd_jobs(args: argparse.Namespace) -> int:
    from app.cli import CliError
    from app.engine.remote import EngineUnavailable
    from app.engine.remote_inputs import RemoteInputError

    if args.action != "list" and not args.job_id:
        raise CliError(f"imagebash jobs {args.action} needs a job id")
    engine = remote_engine(args)
    try:
        if args.action == "cancel":
            out = [engine.job(args.job_id)] if engine.cancel(args.job_id) else []
            if not out:
                raise CliError(f"no job '{args.job_id}' to cancel on {engine.url}")
        elif args.action == "rerun":
            out = [engine.rerun(args.job_id)]
        else:
            out = engine.jobs(limit=args.limit).get("jobs", [])
    except LookupError as exc:
        raise CliError(str(exc).strip("'\"")) from None
    except (EngineUnavailable, RemoteInputError) as exc:
        raise CliError(str(exc)) from None
    finally:
        engine.shutdown()
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for job in out:
        took = ""
        if job.get("started") and job.get("finished"):
            took = f" {job['finished'] - job['started']:.1f}s"
        error = f"  {job['error']}" if job.get("error") else ""
        print(f"{job.get('id')}  {job.get('status')}{took}{error}")
    return 0


# training on a server ---------------------------------------------------------------------------------
def train_remote(args: argparse.Namespace, cfg: Any) -> int:
    """Train `cfg` on the engine `args` names: upload the dataset, stream steps and loss, keep the
    checkpoints there (`--resume` continues from them), bring the LoRA back to `cfg.out` (default:
    the local models folder's loras/)."""
    from app.cli import CliError
    from app.engine import events as ev
    from app.engine.remote import wait_for
    from app.training.cli import _ProgressPrinter
    from app.training.config import lora_out_path
    from app.training.loop import Progress
    from app.training.workflow import training_graph

    out = lora_out_path(cfg)
    graph = training_graph(cfg.replace(out=str(out)), getattr(args, "preset", "") or "",
                           getattr(args, "resume", False))
    engine = remote_engine(args)
    bar = _ProgressPrinter(quiet=getattr(args, "quiet", False), tty=sys.stderr.isatty())
    failures: list[str] = []

    def listen(e: ev.Event) -> None:
        if isinstance(e, ev.NodeProgress) and e.node_id is None and e.text:
            bar.log(e.text)  # an upload
        elif isinstance(e, ev.NodeProgress) and e.metric("total"):
            bar(Progress(int(e.metric("step", 0)), int(e.metric("total")), e.metric("loss") or float("nan"),
                         e.metric("loss") or float("nan"), e.metric("lr") or 0.0, e.metric("elapsed") or 0.0,
                         e.metric("eta") if e.metric("eta") is not None else float("nan"),
                         phase=str(e.metric("phase") or "train")))
        elif isinstance(e, ev.NodeLog):
            bar.log(e.message)
        elif isinstance(e, ev.NodeFailed):
            failures.append(e.message)
        elif isinstance(e, ev.EngineStatus) and e.message:
            bar.log(e.message)

    engine.subscribe(listen)
    run = engine.submit(graph, ["train"], out.parent)
    try:
        finished = wait_for(engine, run)
    except KeyboardInterrupt:
        run.cancel()
        bar.log("stopping after this step; the checkpoint stays on the server (continue with --resume)")
        finished = wait_for(engine, run)
    except Exception:
        bar.close()
        raise
    finally:
        bar.close()
        engine.shutdown()
    if finished is None:
        raise CliError(f"the engine at {engine.url} went away; the job {run.run_id} stays on the server: "
                       f"`imagebash jobs rerun {run.run_id} --engine {engine.url}` once it is back")
    if finished.error:
        raise CliError(finished.error)
    if finished.cancelled:
        print(f"imagebash: training stopped; continue with --resume --engine {engine.url}", file=sys.stderr)
        return 130
    if failures or finished.failed:
        raise CliError(failures[0] if failures else "training failed on the server")
    loras = [f.path for f in run.files if f.kind == "lora"]
    print("\n".join(loras))
    return 0
