"""Canvas speed: open a 500-node workflow, frame times while panning and zooming, app start-up.

Run from the repository root: `python tests/benchmarks/bench_canvas.py`. Prints JSON lines:
  open_500_s       load the workflow file, build the canvas, paint the first frame (aim < 1.5 s)
  frame_ms_median  median time of one repaint while panning and zooming it (aim < 16 ms); two thirds
                   of the steps pan, a third zoom (frame_ms_median_zooming: those alone)
  frame_ratio_vs_plain_rects  the same frames over a baseline scene of 500 plain rectangles
  startup_s        `python -m app` to the window's first paint with the default workflow (aim < 2 s)
Offscreen (QT_QPA_PLATFORM=offscreen), so figures are CPU raster painting, like a software GL.
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QEvent, QObject, QRectF  # noqa: E402
from PySide6.QtWidgets import QApplication, QGraphicsScene, QGraphicsView  # noqa: E402

from app.graph import Graph, Link, NodeInstance, io  # noqa: E402

COLS, ROWS = 25, 20
KINDS = ("imagebash.image.solid_color", "imagebash.image.blend", "imagebash.image.color_adjust",
         "imagebash.image.blur")


def emit(**kv) -> None:
    print(json.dumps(kv), flush=True)


def workflow_500(path: pathlib.Path) -> None:
    """A 25 x 20 grid of real image nodes; each row is a chain, blends also take the row above."""
    from nodes.registry import default_registry

    g = Graph()
    for r in range(ROWS):
        for c in range(COLS):
            kind = KINDS[0] if c == 0 else KINDS[1 + (c + r) % 3]
            g.nodes[f"n{r}_{c}"] = NodeInstance(f"n{r}_{c}", kind, position=(c * 300.0, r * 260.0))
    for r in range(ROWS):
        for c in range(1, COLS):
            dst = g.nodes[f"n{r}_{c}"]
            spec = default_registry().get(dst.type)
            images = [p.name for p in spec.inputs if p.kind == "Image"]
            g.links.append(Link(f"n{r}_{c - 1}", "image", dst.id, images[0]))
            if len(images) > 1 and r > 0:
                g.links.append(Link(f"n{r - 1}_{c}", "image", dst.id, images[1]))
    io.save(g, path)


class PaintWatch(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.painted = False

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.Paint:
            self.painted = True
        return False


def frame_times(view: QGraphicsView, frames: int = 120) -> list[float]:
    """Repaint after each pan / zoom step (as the wheel and a middle drag do), zooming out from the
    starting view and back."""
    pan = getattr(view, "pan_by", None) or (lambda dx, dy: (
        view.horizontalScrollBar().setValue(view.horizontalScrollBar().value() - dx),
        view.verticalScrollBar().setValue(view.verticalScrollBar().value() - dy)))
    zoom = getattr(view, "zoom_by", None) or (lambda f: view.scale(f, f))
    times = []
    vp = view.viewport()
    for i in range(frames):
        phase = (i // 20) % 3
        if phase == 0:
            pan(-15, 0)
        elif phase == 1:
            zoom(0.93 if (i // 60) % 2 == 0 else 1 / 0.93)
        else:
            pan(0, 12)
        t = time.perf_counter()
        vp.repaint()
        times.append((time.perf_counter() - t) * 1000)
    return times


def baseline_frames(rect: QRectF, transform, size) -> list[float]:
    """The same steps over 500 plain filled rectangles: what the paint engine costs by itself."""
    scene = QGraphicsScene()
    for r in range(ROWS):
        for c in range(COLS):
            scene.addRect(QRectF(c * 300.0, r * 260.0, 220, 180))
    view = QGraphicsView(scene)
    view.resize(size)
    view.show()
    view.setTransform(transform)
    view.centerOn(rect.center())
    QApplication.processEvents()
    return frame_times(view)


def measure_startup() -> float | None:
    env = dict(os.environ, IMAGEBASH_EXIT_AFTER_FIRST_PAINT="1", QT_QPA_PLATFORM="offscreen")
    with tempfile.TemporaryDirectory() as tmp:
        for key in ("DATA", "CONFIG", "CACHE"):
            env[f"IMAGEBASH_{key}_DIR"] = str(pathlib.Path(tmp) / key.lower())
        try:
            out = subprocess.run([sys.executable, "-m", "app"], cwd=ROOT, env=env, capture_output=True,
                                 text=True, timeout=120)
        except subprocess.TimeoutExpired:
            return None
    for line in out.stdout.splitlines():
        if line.startswith("first_paint_s="):
            return float(line.split("=", 1)[1])
    sys.stderr.write(f"python -m app printed no first_paint_s line (exit {out.returncode}):\n{out.stderr[-2000:]}\n")
    return None


def main() -> None:
    app = QApplication.instance() or QApplication([])
    from nodes.registry import default_registry

    default_registry().ensure_loaded()  # node packs load at start-up, not per document
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "big.json"
        workflow_500(path)
        from app.ui.canvas.view import CanvasView
        from app.ui.document import WorkflowDocument

        t0 = time.perf_counter()
        doc = WorkflowDocument.load(path)
        view = CanvasView(doc)
        view.resize(1600, 1000)
        watch = PaintWatch()
        view.viewport().installEventFilter(watch)
        view.show()
        view.frame_all()
        while not watch.painted:
            app.processEvents()
        open_s = time.perf_counter() - t0
        emit(open_500_s=round(open_s, 3), nodes=len(doc.graph.nodes), links=len(doc.graph.links))

        view.resetTransform()
        view.centerOn(view.canvas.nodes["n5_5"].sceneBoundingRect().center())
        close = frame_times(view)
        view.frame_all()
        far = frame_times(view)
        all_frames = close + far
        base = baseline_frames(view.mapToScene(view.viewport().rect()).boundingRect(), view.transform(), view.size())
        zooms = [t for i, t in enumerate(all_frames) if (i % 120 // 20) % 3 == 1]
        emit(frame_ms_median=round(statistics.median(all_frames), 2),
             frame_ms_median_zooming=round(statistics.median(zooms), 2),
             frame_ms_p90=round(sorted(all_frames)[int(len(all_frames) * 0.9)], 2),
             frame_ms_median_1to1=round(statistics.median(close), 2),
             frame_ms_median_all_visible=round(statistics.median(far), 2),
             frame_ratio_vs_plain_rects=round(statistics.median(all_frames) / max(1e-6, statistics.median(base)), 2))
        view.close()
    startup = measure_startup()
    emit(startup_s=None if startup is None else round(startup, 3))


if __name__ == "__main__":
    main()
