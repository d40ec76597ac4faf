"""`imagebash import-comfy FILE [-o OUT.json] [--json]`: map a ComfyUI workflow onto ours.

Prints one summary line ("12 nodes: 10 mapped, 2 placeholders (...)"), or the whole report with
--json, and writes the imagebash workflow (default: FILE's name with `.imagebash.json`).

`imagebash export-comfy WORKFLOW [-o API.json] [--json]` writes the reverse: ComfyUI's API
("prompt") JSON of a workflow (default: WORKFLOW's name with `.comfy-api.json`).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any


def register(subparsers: Any) -> None:
    """Add the `import-comfy` subcommand to the `imagebash` parser."""
    p = subparsers.add_parser(
        "import-comfy", help="turn a ComfyUI workflow (JSON, PNG, WebP, A1111 PNG) into an imagebash workflow",
        description="Map a ComfyUI workflow onto imagebash nodes; nodes without an equivalent become "
                    "visible placeholders that keep their inputs and links.")
    p.add_argument("file", type=pathlib.Path, help="ComfyUI API or UI JSON, or a PNG/WebP that carries one")
    p.add_argument("-o", "--output", type=pathlib.Path,
                   help="imagebash workflow to write (default: FILE.imagebash.json next to FILE)")
    p.add_argument("--json", action="store_true", help="print the full import report as JSON")
    p.add_argument("--input-dir", action="append", default=[], type=pathlib.Path,
                   help="a ComfyUI input/ folder to find Load Image files in (repeatable)")
    p.set_defaults(func=cmd_import_comfy)
    e = subparsers.add_parser(
        "export-comfy", help="write a workflow as ComfyUI API JSON (what ComfyUI's /prompt runs)",
        description="Write an imagebash workflow as ComfyUI API (\"prompt\") JSON; nodes without a ComfyUI "
                    "counterpart are left out and named.")
    e.add_argument("workflow", type=pathlib.Path, help="imagebash workflow (or any file `imagebash run` opens)")
    e.add_argument("-o", "--output", type=pathlib.Path,
                   help="API JSON to write (default: WORKFLOW.comfy-api.json next to WORKFLOW)")
    e.add_argument("--json", action="store_true", help="print the full export report as JSON")
    e.set_defaults(func=cmd_export_comfy)


def cmd_import_comfy(args: argparse.Namespace) -> int:
    """Read, map, write; bad input is one line on stderr and exit status 2."""
    from app.comfy.formats import ComfyFormatError, read
    from app.comfy.mapping import to_graph
    from app.graph.io import save, shown_path
    from nodes.registry import default_registry

    src: pathlib.Path = args.file
    if not src.is_file():
        what = "a folder, not a workflow file" if src.is_dir() else "no such file"
        print(f"imagebash: error: {shown_path(src)}: {what}", file=sys.stderr)
        return 2
    try:
        wf = read(src)
    except ComfyFormatError as exc:
        print(f"imagebash: error: {exc}", file=sys.stderr)
        return 2
    registry = getattr(args, "registry", None) or default_registry()
    graph, report = to_graph(wf, registry, base_dir=src.resolve().parent, input_dirs=args.input_dir)
    out = args.output or src.with_name(src.stem + ".imagebash.json")
    try:
        save(graph, out)
    except OSError as exc:
        print(f"imagebash: error: cannot write {shown_path(out)}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**report.to_dict(), "output": str(out)}, indent=2))
    else:
        print(report.summary())
    return 0


def cmd_export_comfy(args: argparse.Namespace) -> int:
    """Load, export, write; bad input is one line on stderr and exit status 2."""
    from app.comfy.export import to_api
    from app.graph.io import WorkflowFormatError, load, shown_path
    from nodes.registry import default_registry

    src: pathlib.Path = args.workflow
    try:
        graph = load(src)
    except WorkflowFormatError as exc:
        print(f"imagebash: error: {exc}", file=sys.stderr)
        return 2
    api, report = to_api(graph, getattr(args, "registry", None) or default_registry())
    if not api:
        print(f"imagebash: error: {shown_path(src)}: nothing to export ({report.summary()})", file=sys.stderr)
        return 2
    out = args.output or src.with_name(src.stem + ".comfy-api.json")
    try:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(api, indent=2), encoding="utf-8")
        tmp.replace(out)
    except OSError as exc:
        print(f"imagebash: error: cannot write {shown_path(out)}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**report.to_dict(), "output": str(out)}, indent=2))
    else:
        print(report.summary())
        for line in report.warnings:  # what a user must fix or know, on stderr: stdout stays one line
            print(f"imagebash: warning: {line}", file=sys.stderr)
    return 0
