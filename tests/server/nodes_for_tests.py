"""The built-in node packs plus a few test nodes a server test needs and no real pack has: a
node that waits for a file to appear (a job that runs exactly as long as a test wants, and
notices cancel within 10 ms), one that reports progress with previews, one that writes a file.

`python -m tests.server.nodes_for_tests ARGS` starts `imagebash serve ARGS` on this registry, the
way a user starts it, so a test can kill that process mid-job.
"""

from __future__ import annotations

import pathlib
import sys
import time
from typing import Annotated

import numpy as np

from nodes.registry import Registry, node
from nodes.types import Context, Image, Range


def make_registry() -> Registry:
    reg = Registry()  # the built-in packs load on first use, next to these

    @node("test.gate", registry=reg, category="test", cacheable=False)
    def gate(path: str = "", x: float = 0.0, ctx: Context = None) -> float:
        """Wait until the file `path` exists, checking for cancel every 10 ms; gives x + 1."""
        ctx.progress(0.0, text="waiting")
        while not pathlib.Path(path).exists():
            ctx.check_cancelled()
            time.sleep(0.01)
        return x + 1

    @node("test.progress", registry=reg, category="test", cacheable=False)
    def progress(steps: Annotated[int, Range(1, 100_000)] = 10, size: int = 16, delay: float = 0.0,
                 ctx: Context = None) -> Image:
        """Report `steps` progress events, each with a preview and the wall time in its text."""
        img = np.zeros((1, size, size, 3), np.float32)
        for i in range(steps):
            img[..., 0] = i / steps
            ctx.progress((i + 1) / steps, preview=img[0], text=f"t={time.time():.6f}")
            if delay:
                time.sleep(delay)
        return img

    @node("test.write_text", registry=reg, category="test", output=True, cacheable=False)
    def write_text(text: str = "hello", name: str = "note.txt", after: float | None = None,
                   ctx: Context = None) -> None:
        """Write `text` to a file in the output folder and report it (once `after` is ready)."""
        out = pathlib.Path(ctx.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        p = out / name
        p.write_text(text)
        ctx.add_file(p, "text")

    return reg


if __name__ == "__main__":
    from app.server.cli import main

    sys.exit(main(sys.argv[1:], registry=make_registry()))
