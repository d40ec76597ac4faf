"""Every workflow in workflows/ runs through the real engine into a temporary folder.

Workflows made only of image and video nodes run as shipped; others run with the overrides in
`tests/workflow_sets.py` (a tiny model, a fake server); a workflow that needs them and has no
entry there fails, naming what to add. The shipped examples also get checks on the pixels and files they produce.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage

from app.cli import apply_sets
from app.engine import Engine, EngineSettings, RunResult
from app.graph.io import load, workflow_from_png
from app.graph.validate import validate
from app.paths import RESOURCES, WORKFLOWS
from nodes.registry import default_registry
from tests.workflow_sets import WORKFLOW_SETS

FILES = sorted(WORKFLOWS.glob("*.json"))
SELF_CONTAINED = ("imagebash.image.", "imagebash.video.")
SAMPLES = RESOURCES / "samples"


def _rgb(path: pathlib.Path) -> np.ndarray:
    with PILImage.open(path) as im:
        return np.asarray(im.convert("RGB"), np.float32) / 255.0


def _check_blend_and_grade(files: list[pathlib.Path], result: RunResult, wf: pathlib.Path) -> None:
    (png,) = files
    out, sky = _rgb(png), _rgb(SAMPLES / "sky.png")
    assert out.shape == sky.shape == (384, 512, 3)
    assert np.abs(out - sky).mean() > 0.03  # blended and graded, not a copy
    centre, corner = out[150:230, 220:290].mean(), out[:40, :40].mean()
    assert centre > corner + 0.05  # the vignette darkens the edges
    doc = workflow_from_png(png)
    assert doc is not None and {n["id"] for n in doc["nodes"]} == set(load(wf).nodes)


def _check_masked_composite(files: list[pathlib.Path], result: RunResult, wf: pathlib.Path) -> None:
    (png,) = files
    out, sky = _rgb(png), _rgb(SAMPLES / "sky.png")
    assert out.shape == sky.shape
    assert np.abs(out[:40, -60:] - sky[:40, -60:]).max() < 2 / 255  # far from the figure: untouched
    place = load(wf).nodes["place"].params
    face = out[place["y"] + 95, place["x"] + 150]
    assert face[0] > face[2] + 0.2  # warm skin where the figure was placed, over a blue sky
    outside = out[place["y"] + 40, place["x"] + 70]  # inside the layer's box, outside the figure's alpha
    assert np.abs(outside - sky[place["y"] + 40, place["x"] + 70]).max() < 0.02


def _check_contact_sheet(files: list[pathlib.Path], result: RunResult, wf: pathlib.Path) -> None:
    (jpg,) = files
    out = _rgb(jpg)
    tiles = sorted((SAMPLES / "tiles").glob("*.png"))
    th, tw = _rgb(tiles[0]).shape[:2]
    assert len(tiles) == 6 and out.shape == (2 * th + 3 * 8, 3 * tw + 4 * 8, 3)
    assert np.allclose(out[2, 2], np.array([0x1B, 0x1B, 0x1F]) / 255, atol=4 / 255)
    first, last = out[8:8 + th, 8:8 + tw], out[16 + th:16 + 2 * th, 24 + 2 * tw:24 + 3 * tw]
    assert first.std() > 0.02 and first.mean() > last.mean() + 0.05  # real tiles, darkening through the day


def _check_video_grade(files: list[pathlib.Path], result: RunResult, wf: pathlib.Path) -> None:
    mp4, sidecar = sorted(files, key=lambda f: f.suffix != ".mp4")
    assert sidecar == mp4.with_suffix(".json")  # the workflow beside the video
    cap = cv2.VideoCapture(str(mp4))
    n, shapes = 0, set()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n += 1
        shapes.add(frame.shape)
    cap.release()
    assert n == 24 and shapes == {(96, 128, 3)}


def _saturation(frame: np.ndarray) -> float:
    hi, lo = frame.max(-1), frame.min(-1)
    return float(((hi - lo) / (hi + 1e-6)).mean())


def _check_video_timelapse_deflicker(files: list[pathlib.Path], result: RunResult, wf: pathlib.Path) -> None:
    from nodes.video import open_video
    from nodes.video.metrics import mean_luma_jump

    (mp4,) = [f for f in files if f.suffix == ".mp4"]
    out, src = open_video(mp4), open_video(SAMPLES / "timelapse.mp4")
    assert len(out) == len(src) == 48 and out.fps == 12.0 and out.size == (160, 96)
    assert out.audio is not None and abs(out.audio.duration - 4.0) < 0.03  # the sound came along, trimmed
    assert mean_luma_jump(out) < 0.25 * mean_luma_jump(src)  # the exposure pumping is gone
    assert _saturation(out.frame(47)[0]) > _saturation(out.frame(0)[0]) + 0.1  # the keyframed grade ramps up
    assert load(mp4).nodes.keys() == load(wf).nodes.keys()  # the video reopens its workflow


def _check_video_pingpong_loop(files: list[pathlib.Path], result: RunResult, wf: pathlib.Path) -> None:
    from nodes.video import open_video

    (webp,) = [f for f in files if f.suffix == ".webp"]
    out, src = open_video(webp), open_video(SAMPLES / "clip.mp4")
    assert len(out) == (2 * len(src) - 2) * 2 + 1 and out.fps == 2 * src.fps  # forward, back, doubled
    with PILImage.open(webp) as im:
        assert im.info.get("loop") == 0 and im.n_frames == len(out)  # loops forever
    first, turn, last = out.frame(0)[0], out.frame(len(out) // 2)[0], out.frame(len(out) - 1)[0]
    assert np.abs(first - last).mean() < 0.03 < np.abs(first - turn).mean()  # seamless: ends where it starts


def _check_flux_comfy_layout_outpaint(files: list[pathlib.Path], result: RunResult, wf: pathlib.Path) -> None:
    (png,) = files
    out = _rgb(png)
    assert out.shape == (64, 96, 3)  # the 64x64 Flux picture widened by 32 px
    assert out[:, 64:].std() > 0.005 and np.abs(out[:, 70:] - out[:, 63:64]).mean() > 0.01  # painted, not edge pixels


def _check_guided_canny_regions(files: list[pathlib.Path], result: RunResult, wf: pathlib.Path) -> None:
    gen, edges = sorted(files, key=lambda p: "edges" in p.name)
    out, edge = _rgb(gen), _rgb(edges)
    expected = cv2.Canny(cv2.imread(str(SAMPLES / "shapes.png"), cv2.IMREAD_GRAYSCALE), 80, 180)
    assert edge.shape[:2] == expected.shape and np.array_equal(edge[..., 0] > 0.5, expected > 0)  # OpenCV's edges
    assert out.shape == (64, 64, 3) and out.std() > 0.01


CHECKS: dict[str, Callable[[list[pathlib.Path], RunResult, pathlib.Path], None]] = {
    "flux_comfy_layout_outpaint": _check_flux_comfy_layout_outpaint,
    "guided_canny_regions": _check_guided_canny_regions,
    "blend_and_grade": _check_blend_and_grade,
    "masked_composite": _check_masked_composite,
    "contact_sheet": _check_contact_sheet,
    "video_grade": _check_video_grade,
    "video_timelapse_deflicker": _check_video_timelapse_deflicker,
    "video_pingpong_loop": _check_video_pingpong_loop,
}


def test_the_shipped_examples_exist():
    names = {p.stem for p in FILES}
    assert {"blend_and_grade", "masked_composite", "contact_sheet"} <= names


def _check_file(path: pathlib.Path) -> None:
    assert path.stat().st_size > 0
    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff"):
        with PILImage.open(path) as im:
            im.load()
    elif path.suffix.lower() in (".mp4", ".avi", ".webm", ".mov", ".mkv"):
        cap = cv2.VideoCapture(str(path))
        ok, _ = cap.read()
        cap.release()
        assert ok, f"{path.name}: no readable frame"


@pytest.mark.parametrize("wf", FILES, ids=[p.name for p in FILES])
def test_workflow_runs(wf, tmp_path, request):
    graph = load(wf)
    problems = validate(graph, default_registry())
    assert not problems, "; ".join(map(str, problems))
    positions = [tuple(n.position) for n in graph]
    assert len(set(positions)) == len(positions), "two nodes share a canvas position"
    sets = WORKFLOW_SETS.get(wf.name)
    if sets is None and not all(n.type.startswith(SELF_CONTAINED) for n in graph):
        pytest.fail(f"{wf.name} uses nodes that need a model or the network but has no entry in "
                    f"tests/workflow_sets.py: add WORKFLOW_SETS[{wf.name!r}] = lambda request: [...] with the "
                    "--set overrides (a tiny model fixture, the fake Replicate server) that let it run here")
    if sets is not None:
        apply_sets(graph, default_registry(), sets(request))
    engine = Engine(default_registry(), EngineSettings(device="cpu"))
    try:
        result = engine.run(graph, output_dir=tmp_path / "out")
    finally:
        engine.shutdown()
    assert result.ok, result.errors
    files = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert files, "the workflow wrote no files"
    for f in files:
        _check_file(f)
    check = CHECKS.get(wf.stem)
    if check is not None:
        check(files, result, wf)
