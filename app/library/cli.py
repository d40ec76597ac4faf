"""`imagebash models list|info|verify|remove|download`: the model library from a terminal.

Why: a headless box (a GPU server, a CI runner) has no Library panel, and a user with a full disk
wants to see what is there, where it is used and what is safe to delete. Bad input (a name that
is not there, a file that is not a model) is one line and exit 2; a verify mismatch is one line
and exit 1; Ctrl-C during a download stops it, keeps the partial file (the next run resumes) and
exits 130. Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import sys
import threading
import time
from typing import Any

KIND_CHOICES = ("checkpoint", "diffusion_model", "text_encoder", "vae", "lora", "embedding", "controlnet",
                "ipadapter", "clip_vision", "unsafe", "unreadable")


def register(subparsers: Any) -> None:
    """Add the `models` subcommand (with its own subcommands) to the `imagebash` parser."""
    p = subparsers.add_parser("models", help="list, inspect, verify, remove and download models",
                              description="The model library: every model in the models folders (and the "
                                          "extra ComfyUI / A1111 roots from Settings or IMAGEBASH_EXTRA_MODELS).")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    ls = sub.add_parser("list", help="a table of the models: name, kind, family/variant, size, sha256")
    ls.add_argument("--kind", choices=KIND_CHOICES, help="only this kind")
    ls.add_argument("--family", help="only this family (sd1, sdxl, flux, ...)")
    ls.add_argument("--search", help="only names, titles, trigger words or tags containing this text")
    ls.add_argument("--json", action="store_true", help="print as JSON")
    ls.add_argument("--no-hash", action="store_true", help="do not hash new files (show only cached hashes)")
    ls.set_defaults(func=cmd_list)

    inf = sub.add_parser("info", help="everything about one model, and the workflows that use it")
    inf.add_argument("model", help="a name in the models folders, or a path")
    inf.add_argument("--workflows", action="append", type=pathlib.Path, metavar="DIR",
                     help="also look for uses in these workflow folders (repeatable)")
    inf.add_argument("--json", action="store_true", help="print as JSON")
    inf.set_defaults(func=cmd_info)

    ver = sub.add_parser("verify", help="read a model again and check its sha256")
    ver.add_argument("model", help="a name in the models folders, or a path")
    ver.add_argument("--sha256", metavar="HEX", help="the expected sha256 (default: the recorded one)")
    ver.set_defaults(func=cmd_verify)

    rm = sub.add_parser("remove", help="delete a model with its preview and sidecar files")
    rm.add_argument("model", help="a name in the models folders, or a path")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask")
    rm.set_defaults(func=cmd_remove)

    dl = sub.add_parser("download", help="download a model into the right models folder (resumable)")
    dl.add_argument("source", help="hf:owner/repo[/file], a Hugging Face or Civitai URL, civitai:VERSION, or a URL")
    dl.add_argument("--kind", choices=(*KIND_CHOICES[:9], "depth"),
                    help="which folder it goes to (default: from the file; depth: a Depth Anything repo)")
    dl.add_argument("--sha256", metavar="HEX", help="refuse the file unless it has this sha256")
    dl.add_argument("--token-from-keyring", action="store_true",
                    help="use the token stored in the OS keyring (default: only the environment's)")
    dl.set_defaults(func=cmd_download)


# helpers -----------------------------------------------------------------------------------------
def _error(exc: Exception) -> Exception:
    from app.cli import CliError

    return CliError(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


def _model(text: str) -> Any:
    from app.library.scan import LibraryError, info

    try:
        return info(text)
    except (LibraryError, OSError) as exc:
        raise _error(exc) from None


def human_size(n: int) -> str:
    """1.9 GB, 144 MB, 12 kB: sizes as a file manager shows them (powers of 1000)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit in ("B", "kB") or value >= 100 else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def _family(m: Any) -> str:
    if not m.family:
        return "-"
    return f"{m.family}/{m.variant}" if m.variant else m.family


def _matches(m: Any, text: str) -> bool:
    t = text.lower()
    hay = [m.name, m.title or "", *m.trigger_words, *(tag for tag, _ in m.tags)]
    return any(t in h.lower() for h in hay)


def workflow_dirs(extra: list[pathlib.Path] | None = None) -> list[pathlib.Path]:
    """Where `info` looks for uses: the example workflows, `<data dir>/workflows`, the folders of
    the editor's recent files, and any given."""
    from app import paths

    dirs = [paths.WORKFLOWS, paths.data_dir() / "workflows", *recent_files(), *(extra or [])]
    return [d for d in dict.fromkeys(dirs) if d.exists()]


def recent_files() -> list[pathlib.Path]:
    """The editor's recent workflows, read from its settings file without Qt (QSettings' ini
    format: `[ui]` `recent_files=a.json, "b, c.json"`)."""
    import configparser

    from app import paths

    ini = paths.config_dir() / "imagebash.ini"
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(ini, encoding="utf-8")
        raw = parser.get("ui", "recent_files", fallback="")
    except (configparser.Error, OSError, UnicodeDecodeError):
        return []
    items, cur, quoted, i = [], "", False, 0
    while i < len(raw):
        c = raw[i]
        if c == "\\" and i + 1 < len(raw):
            cur += raw[i + 1]
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == "," and not quoted:
            items.append(cur.strip())
            cur = ""
        else:
            cur += c
        i += 1
    items.append(cur.strip())
    return [pathlib.Path(s) for s in items if s and not s.startswith("@")]


# commands ----------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from app.library.scan import scan

    models = scan(kinds=[args.kind] if args.kind else None, hashes=not args.no_hash)
    if args.family:
        models = [m for m in models if (m.family or "").lower() == args.family.lower()]
    if args.search:
        models = [m for m in models if _matches(m, args.search)]
    if args.json:
        print(json.dumps([m.to_dict() for m in models], indent=2))
        return 0
    if not models:
        from app.paths import models_dirs

        print(f"no models found in {', '.join(str(d) for d in models_dirs())}", file=sys.stderr)
        return 0
    rows = [(m.name, m.kind, _family(m), human_size(m.size), (m.sha256 or "-")[:12]) for m in models]
    head = ("NAME", "KIND", "FAMILY", "SIZE", "SHA256")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    for r in [head, *rows]:
        print("  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].ljust(widths[2]),
                         r[3].rjust(widths[3]), r[4]]).rstrip())
    for m in models:
        if m.note:
            print(f"note: {m.note}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from app.library.scan import UNREADABLE, used_in

    m = _model(args.model)
    if m.kind == UNREADABLE:
        raise _error(ValueError(m.note))
    uses = used_in(m, workflow_dirs(args.workflows))
    if args.json:
        print(json.dumps({**m.to_dict(), "used_in": [str(u) for u in uses]}, indent=2))
        return 0
    lines = [("name", m.name), ("path", str(m.path)), ("kind", m.kind), ("family", _family(m)),
             ("format", m.format), ("size", f"{human_size(m.size)} ({m.size} bytes)"), ("sha256", m.sha256 or "-"),
             ("title", m.title or "-"), ("licence", m.licence or "-"),
             ("trigger words", ", ".join(m.trigger_words) or "-"),
             ("tags", ", ".join(f"{t} ({n})" for t, n in m.tags[:20]) or "-"),
             ("preview", str(m.preview) if m.preview else "-"), ("models folder", str(m.root) if m.root else "-")]
    if m.note:
        lines.append(("note", m.note))
    lines.append(("used in", ", ".join(str(u) for u in uses) or "no workflow found"))
    for key, value in lines:
        print(f"{key + ':':15s}{value}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from app.library.scan import LibraryError, check

    m = _model(args.model)
    try:
        v = check(m.path, args.sha256)
    except LibraryError as exc:
        raise _error(exc) from None
    if not v.ok:
        what = {"given": "the expected", "recorded": "the recorded",
                "embedded": "its embedded tensor-data"}.get(v.against, "the expected")
        print(f"imagebash: {m.path.name}: sha256 mismatch: {v.sha256} is not {what} {v.expected}; "
              "the file is damaged or not the one meant", file=sys.stderr)
        return 1
    note = {"given": "matches the given hash", "recorded": "matches the hash recorded when it was added",
            "embedded": "its tensor data matches its embedded hash",
            "none": "no hash to compare with; recorded now"}[v.against]
    print(f"{m.path.name}: ok, sha256 {v.sha256} ({note})")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from app.library.scan import LibraryError, remove, sidecars

    m = _model(args.model)
    extra = sidecars(m.path)
    if not args.yes:
        also = f" and {len(extra)} sidecar file(s)" if extra else ""
        if not sys.stdin.isatty():
            raise _error(ValueError(f"not removing {m.path} without --yes (no terminal to ask on)"))
        answer = input(f"remove {m.path} ({human_size(m.size)}){also}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return 0
    try:
        gone = remove(m.path)
    except (LibraryError, OSError) as exc:
        raise _error(exc) from None
    for p in gone:
        print(f"removed {p}")
    return 0


def _env_token(source: str) -> str:
    """The token the environment gives for this source ("" for none: the keyring is not asked)."""
    try:
        from app.library.sources import parse

        kind = parse(source).kind
    except Exception:  # noqa: BLE001 - download() says what is wrong with the source
        return ""
    hf = ("IMAGEBASH_HUGGINGFACE_TOKEN", "HF_TOKEN")
    names = {"hf-repo": hf, "hf-file": hf, "civitai": ("IMAGEBASH_CIVITAI_TOKEN", "CIVITAI_API_TOKEN")}.get(kind, ())
    return next((v.strip() for n in names if (v := os.environ.get(n, "")).strip()), "")


class ProgressLine:
    """Percent, MB/s and ETA: redrawn in place on a terminal, a line every 10% otherwise."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last_step = -1
        self.last_draw = 0.0

    def __call__(self, p: Any) -> None:
        total = getattr(p, "total", None)
        pct = f"{100 * p.done / total:5.1f}%" if total else "     ?"
        eta = "-" if p.eta is None else time.strftime("%H:%M:%S", time.gmtime(max(0, p.eta)))
        size = f"{p.done / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{p.done / 1e6:.1f} MB"
        text = f"{getattr(p, 'name', '') or 'download'}: {pct} {size} {p.speed / 1e6:.1f} MB/s ETA {eta}"
        if self.tty:
            now = time.monotonic()
            if now - self.last_draw >= 0.1 or (total and p.done >= total):
                self.stream.write("\r" + text.ljust(79))
                self.stream.flush()
                self.last_draw = now
            return
        step = int(10 * p.done / total) if total else int(p.done // (100 << 20))
        if step != self.last_step:
            self.last_step = step
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def cmd_download(args: argparse.Namespace) -> int:
    from app.library.download import DownloadError, download

    cancel = threading.Event()
    progress = ProgressLine()

    def on_sigint(signum: int, frame: Any) -> None:
        cancel.set()

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: the caller owns signals
        previous = None
    try:
        token = None if args.token_from_keyring else _env_token(args.source)
        path = download(args.source, kind=args.kind, expected_sha256=args.sha256, token=token,
                        progress=progress, cancel=cancel)
    except DownloadError as exc:
        progress.close()
        print(f"imagebash: error: {str(exc).splitlines()[0] if str(exc) else 'download failed'}", file=sys.stderr)
        return 130 if cancel.is_set() else 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    progress.close()
    print(f"saved {path}")
    return 0
