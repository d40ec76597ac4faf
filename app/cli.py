"""The `imagebash` command: the editor by default; run / validate / nodes / train-lora subcommands.

Bad input exits 2 with one line naming the problem; a run where a node failed exits 1; Ctrl-C
cancels the run and exits 130. Nothing here imports torch or Qt at module level, so `--help` and
`nodes` answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import pathlib
import sys
import threading
from collections.abc import Sequence
from typing import Any

#: Modules that add subcommands: each has `register(subparsers)` and imports heavy things lazily.
EXTRA_COMMANDS = ("app.training.cli", "app.server.cli", "app.engine.remote_cli", "app.library.cli", "app.comfy.cli",
                  "app.video.cli")


class CliError(Exception):
    """Bad input from the command line; printed as one line, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imagebash",
        description="Node-graph imagebashing: chain local diffusion models, LoRAs and online APIs, "
                    "blend the results, export images and video. With no command, opens the editor.")
    p.add_argument("--version", action="version", version=f"imagebash {_version()}")
    p.add_argument("--self-test", action="store_true",
                   help="run the default workflow headless, check its output and exit (0: all good)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run a workflow headless")
    r.add_argument("workflow", type=pathlib.Path, help="workflow .json (or a PNG saved by imagebash)")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE.PARAM=VALUE",
                   help="override a parameter (repeatable); VALUE is JSON or plain text")
    r.add_argument("--output-dir", type=pathlib.Path, default=pathlib.Path("output"),
                   help="where Save nodes write (default: ./output)")
    r.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    r.add_argument("--node", dest="targets", action="append", metavar="NODE_ID",
                   help="run only this node and what it needs (repeatable)")
    r.add_argument("--quiet", "-q", action="store_true", help="print only errors and the summary")
    r.add_argument("--comfy-models", action="append", default=[], metavar="DIR", type=pathlib.Path,
                   help="an existing ComfyUI (or A1111) models folder to use as is (repeatable; the setting "
                        "Settings > Folders keeps one)")
    r.add_argument("--job-id", default=None, help="the run's id on a remote engine (the same id again "
                                                  "re-attaches to that job instead of starting another)")
    from app.engine.remote_cli import add_pool_options

    add_pool_options(r)
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("validate", help="check a workflow without running it")
    v.add_argument("workflow", type=pathlib.Path)
    v.set_defaults(func=cmd_validate)

    n = sub.add_parser("nodes", help="list every node type with its ports")
    n.add_argument("--json", action="store_true", help="print as JSON")
    n.add_argument("filter", nargs="?", default="", help="only ids or categories containing this")
    n.set_defaults(func=cmd_nodes)

    g = sub.add_parser("gui", help="open the editor (the default)")
    g.add_argument("workflow", nargs="?", type=pathlib.Path)
    g.set_defaults(func=cmd_gui)

    for mod in EXTRA_COMMANDS:
        try:
            importlib.import_module(mod).register(sub)
        except ModuleNotFoundError as exc:
            if not exc.name or not (mod == exc.name or mod.startswith(exc.name + ".")):
                raise  # a command module that is present but broken must not pass silently
    return p


def _version() -> str:
    from app import __version__

    return __version__


def main(argv: Sequence[str] | None = None, registry: Any = None) -> int:
    """Run the command line; `registry` replaces the app's node registry (tests, embedding)."""
    from app.secrets import install_log_redaction

    install_log_redaction()  # API tokens never reach a log line, whichever command runs
    parser = _parser()
    args = parser.parse_args(argv)
    args.registry = registry
    if args.self_test:
        from app.selftest import run_self_test

        return run_self_test()
    if args.command is None:
        args.workflow = None
        args.func = cmd_gui
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"imagebash: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `imagebash nodes | head`: the reader left; stop quietly like other tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


# commands ----------------------------------------------------------------------------------------
def _registry(args: argparse.Namespace) -> Any:
    from nodes.registry import default_registry

    return getattr(args, "registry", None) or default_registry()


def _load_graph(path: pathlib.Path, registry: Any):
    """Read a workflow and upgrade it once (old node ids and versions), saying so on stderr."""
    from app.graph.io import WorkflowFormatError, load, shown_path
    from app.graph.validate import upgrade

    try:
        graph, notes = upgrade(load(path), registry)
    except WorkflowFormatError as exc:
        raise CliError(str(exc)) from None
    imported = graph.meta.get("import_note") if isinstance(graph.meta, dict) else None
    if imported:
        print(f"imagebash: note: {shown_path(path)} {imported}", file=sys.stderr)
    if notes:
        print(f"imagebash: note: {shown_path(path)} was upgraded (save it from the editor to keep this): "
              + "; ".join(notes), file=sys.stderr)
    return graph


def _quoted(text: str, limit: int = 80) -> str:
    """`text` as a short repr for a one-line message (a --set value may be megabytes long)."""
    r = repr(text)
    return r if len(r) <= limit else r[: limit - 4] + "...'"


def _json_value(raw: str) -> tuple[bool, Any]:
    """(True, value) when `raw` is JSON a workflow may hold; else (False, None) and it is text.

    Not JSON here: NaN and Infinity (`--set p.text=NaN` is the word), numbers beyond a float
    (1e400, 400-digit integers), integers over Python's digit limit, and nesting deeper than a
    workflow file allows (json itself raises RecursionError or a bare ValueError for those).
    """
    from app.graph.io import WorkflowFormatError, check_value

    def no_constant(name: str) -> Any:
        raise ValueError(name)

    try:
        value = json.loads(raw, parse_constant=no_constant)
        check_value(value, "the value")
    except (ValueError, RecursionError, WorkflowFormatError):  # JSONDecodeError is a ValueError
        return False, None
    return True, value


def parse_set(item: str) -> tuple[str, str, Any]:
    """'node.param=value' -> (node, param, value); the value is JSON when it parses as JSON."""
    key, eq, raw = item.partition("=")
    node_id, dot, param = key.rpartition(".")
    if not eq or not dot or not node_id or not param:
        raise CliError(f"--set {_quoted(item)}: expected NODE.PARAM=VALUE")
    is_json, value = _json_value(raw)
    return node_id, param, value if is_json else raw


def apply_sets(graph, registry, sets: Sequence[str]) -> None:
    for item in sets:
        node_id, param, value = parse_set(item)
        where = f"--set {_quoted(item)}"
        node = graph.nodes.get(node_id)
        if node is None:
            ids = list(graph.nodes)
            listed = ", ".join(ids[:20]) + (f", ... ({len(ids)} in all)" if len(ids) > 20 else "")
            raise CliError(f"{where}: no node {_quoted(node_id)} in the workflow (nodes: {listed})")
        spec = registry.get(node.type)
        port = spec.input(param, {**node.params, param: value}) if spec else None
        if spec is not None and port is None:
            from app.graph.validate import ports_unavailable

            reason = ports_unavailable(spec, node.params)
            if reason:
                raise CliError(f"{where}: node '{node_id}': {reason}")
            names = ", ".join(p.name for p in spec.inputs_for(node.params))
            raise CliError(f"{where}: node '{node_id}' ({spec.id}) has no parameter {_quoted(param)} (has: {names})")
        if port is not None:
            try:
                coerced = port.coerce(value)
            except ValueError as exc:  # its message repeats the value: keep the line readable
                message = str(exc) if len(str(exc)) <= 200 else str(exc)[:196] + " ..."
                raise CliError(f"{where}: {message}") from None
            # PortSpec.coerce lets float('nan') and float('inf') through (a range check is False for NaN)
            if isinstance(coerced, float) and not math.isfinite(coerced):
                raise CliError(f"{where}: '{param}' needs a finite number, got {coerced}")
            value = port.to_json(coerced)
        graph.set_param(node_id, param, value)


def cmd_validate(args: argparse.Namespace) -> int:
    from app.graph.io import shown_path
    from app.graph.validate import validate

    registry = _registry(args)
    graph = _load_graph(args.workflow, registry)
    problems = validate(graph, registry)
    where = shown_path(args.workflow)
    if problems:
        for pr in problems:
            print(f"{where}: {pr}", file=sys.stderr)
        return 2
    print(f"{where}: ok ({len(graph)} nodes, {len(graph.links)} links)")
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    registry = _registry(args)
    specs = [s for s in registry.all() if args.filter in s.id or args.filter in s.category]
    if args.json:
        print(json.dumps([s.describe() for s in specs], indent=2))
        return 0
    for s in specs:
        flags = "".join(f" [{f}]" for f, on in (("gpu", s.device == "gpu"), ("io", s.io), ("output", s.output)) if on)
        print(f"{s.id}  v{s.version}  {s.title}  ({s.category}){flags}")
        print(f"    {s.description.splitlines()[0]}")
        for p in s.inputs:
            d = p.describe()
            extra = []
            if "default" in d:
                extra.append(f"= {d['default']!r}")
            if "range" in d:
                extra.append(f"range {d['range'].get('min', '')}..{d['range'].get('max', '')}")
            if "choices" in d:
                extra.append("{" + ", ".join(map(str, d["choices"])) + "}")
            if p.optional:
                extra.append("optional")
            print(f"    in  {p.name}: {p.kind_name} {' '.join(extra)}".rstrip())
        if s.dynamic_inputs is not None:
            print("    in  (more inputs derived from the node's parameters)")
        for p in s.outputs:
            print(f"    out {p.name}: {p.kind_name}")
    for title, why in sorted(registry.left_out.items()):
        if not args.filter or args.filter.lower() in title.lower():
            print(f"(not included) {title}: {why}")
    for err in registry.load_errors:
        print(f"warning: node pack failed to load: {err}", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run a workflow here, or on the engine `--engine` names (the same output either way)."""
    from app.engine import EngineSettings
    from app.engine.client import LocalEngine
    from app.engine.remote_cli import engine_url, remote_engine, run_pool_cli, wants_pool

    registry = _registry(args)
    for folder in args.comfy_models:
        if not folder.is_dir():
            raise CliError(f"--comfy-models {folder}: no such folder")
    if args.comfy_models:
        extra = [os.environ.get("IMAGEBASH_EXTRA_MODELS", ""), *(str(f.resolve()) for f in args.comfy_models)]
        os.environ["IMAGEBASH_EXTRA_MODELS"] = os.pathsep.join(e for e in extra if e)
    graph = _load_graph(args.workflow, registry)
    apply_sets(graph, registry, args.sets)
    for t in args.targets or ():
        if t not in graph.nodes:
            raise CliError(f"--node {t!r}: no such node in the workflow (nodes: {', '.join(graph.nodes)})")
    if wants_pool(args, graph) and not args.job_id:
        return run_pool_cli(args, graph, registry, args.device)
    if engine_url(args):
        client: Any = remote_engine(args, registry)
        where = f" on {client.url}"
    else:  # nothing fetches outputs after a local run here: keep none beyond what the run needs
        client = LocalEngine(registry, EngineSettings(device=args.device, output_store_bytes=0))
        where = ""
    reporter = _Reporter(quiet=args.quiet, tty=sys.stderr.isatty())
    client.subscribe(reporter)
    handle = client.submit(graph, args.targets, args.output_dir, run_id=args.job_id)
    try:
        finished = _wait(client, handle, reporter)
    except KeyboardInterrupt:
        handle.cancel()
        print("\nimagebash: cancelling...", file=sys.stderr)
        finished = _wait(client, handle, reporter)
    finally:
        reporter.close()
        client.shutdown()
    if finished is None:
        print(f"imagebash: error: the engine at {client.url} went away during the run; the job "
              f"{handle.run_id} stays on the server (`imagebash jobs --engine {client.url}`; once it is back, "
              f"`imagebash jobs rerun {handle.run_id}` if it was interrupted)", file=sys.stderr)
        return 1
    if finished.problems:
        for node_id, port, message in finished.problems:
            from app.graph.validate import Problem

            print(f"imagebash: error: {args.workflow}: {Problem(node_id, port, message)}", file=sys.stderr)
        return 2
    if finished.error:
        print(f"imagebash: error: {args.workflow}: {finished.error}", file=sys.stderr)
        return 2
    if finished.cancelled:
        print("imagebash: run cancelled", file=sys.stderr)
        return 130
    for nid, msg in reporter.errors.items():
        print(f"imagebash: node '{nid}' failed: {msg}", file=sys.stderr)
    failed = set(finished.failed) | set(reporter.errors)
    print(f"{reporter.done} nodes ran ({reporter.cached} cached), {len(failed)} failed in "
          f"{finished.duration:.2f}s{where}; outputs in {args.output_dir}", file=sys.stderr)
    return 1 if failed else 0


def _wait(client: Any, handle: Any, reporter: _Reporter) -> Any:
    """The run's RunFinished; None when a remote engine stayed unreachable (it went away)."""
    from app.engine.remote import RemoteEngine, wait_for

    if isinstance(client, RemoteEngine):
        return wait_for(client, handle)
    while not handle.done:
        try:
            handle.wait(0.1)
        except Exception:  # noqa: BLE001 - a run that cannot start ends with a RunFinished saying why
            break
    return reporter.finished.get(handle.run_id)


class _Reporter:
    """Per-node progress (a tqdm bar on a terminal, plain lines otherwise), and the tally of a run
    from its events alone (the same for a local and a remote engine): nodes done and cached, the
    failures, the RunFinished."""

    def __init__(self, quiet: bool, tty: bool) -> None:
        self.quiet = quiet
        self.tty = tty
        self.bars: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.last_pct: dict[str | None, int] = {}
        self.done = 0
        self.cached = 0
        self.errors: dict[str, str] = {}
        self.finished: dict[str, Any] = {}

    def __call__(self, e: Any) -> None:
        from app.engine import events as ev

        with self.lock:
            if isinstance(e, ev.RunFinished):
                self.finished[e.run_id] = e
                return
            if isinstance(e, ev.NodeFailed):
                self._close(e.node_id)
                self.errors[e.node_id] = e.message
                if e.upstream is None:
                    print(f"[{e.node_id}] failed: {e.message}", file=sys.stderr)
                return
            if isinstance(e, ev.NodeFinished):
                self.done += 1
                self.cached += int(e.cached)
            if isinstance(e, ev.EngineStatus):
                if e.message:
                    print(f"imagebash: {e.message}", file=sys.stderr)
                return
            if self.quiet:
                return
            if isinstance(e, ev.NodeStarted):
                if self.tty:
                    from tqdm import tqdm

                    self.bars[e.node_id] = tqdm(total=100, desc=f"{e.node_id} ({e.title})", leave=False,
                                                unit="%", file=sys.stderr, bar_format="{desc} {bar} {percentage:3.0f}%")
                else:
                    print(f"[{e.node_id}] started ({e.title})", file=sys.stderr)
            elif isinstance(e, ev.NodeProgress):
                pct = int(e.fraction * 100)
                bar = self.bars.get(e.node_id) if e.node_id else None
                if bar is not None:
                    bar.n = pct
                    if e.text:
                        bar.set_postfix_str(e.text, refresh=False)
                    bar.refresh()
                elif (not self.tty or e.node_id is None) and pct // 10 != self.last_pct.get(e.node_id, -1) // 10:
                    self.last_pct[e.node_id] = pct
                    print(f"[{e.node_id or 'upload'}] {pct}%{' ' + e.text if e.text else ''}", file=sys.stderr)
            elif isinstance(e, ev.NodeFinished):
                self._close(e.node_id)
                how = "cached" if e.cached else f"{e.duration:.2f}s"
                print(f"[{e.node_id}] done ({how})", file=sys.stderr)
            elif isinstance(e, ev.NodeSkipped):
                print(f"[{e.node_id}] skipped: {e.reason}", file=sys.stderr)
            elif isinstance(e, ev.NodeLog):
                print(f"[{e.node_id}] {e.message}", file=sys.stderr)

    def _close(self, node_id: str | None) -> None:
        bar = self.bars.pop(node_id, None) if node_id else None
        if bar is not None:
            bar.close()

    def close(self) -> None:
        with self.lock:
            for nid in list(self.bars):
                self._close(nid)


def cmd_gui(args: argparse.Namespace) -> int:
    try:
        from app.ui.main import run_gui
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("app.ui"):
            _parser().print_help()
            return 0
        raise
    return run_gui(getattr(args, "workflow", None))


if __name__ == "__main__":
    sys.exit(main())
