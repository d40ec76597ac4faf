"""Image nodes stop between the images of a batch when the run is cancelled."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image as PILImage

from app.engine import Engine, NodeProgress
from nodes.image.blend import blend
from nodes.image.color import color_adjust
from nodes.image.filters import blur
from nodes.image.io import save_image
from nodes.image.transform import resize_image
from nodes.registry import default_registry
from nodes.types import Cancelled
from tests.image.helpers import FakeContext, make_graph

BATCH = np.zeros((10, 8, 8, 3), np.float32)


@pytest.mark.parametrize("call", [
    lambda ctx: blur(BATCH, radius=2, ctx=ctx),
    lambda ctx: color_adjust(BATCH, hue=30, ctx=ctx),
    lambda ctx: resize_image(BATCH, 4, 4, ctx=ctx),
    lambda ctx: blend(BATCH, BATCH[:1], ctx=ctx),
    lambda ctx: save_image(BATCH, "x", ctx=ctx),
], ids=["blur", "color_adjust", "resize", "blend", "save"])
def test_nodes_check_between_images(tmp_path, call):
    ctx = FakeContext(tmp_path / "out", cancel_after=3)
    with pytest.raises(Cancelled):
        call(ctx)
    assert ctx.checks == 4  # stopped at the fourth image, not after the tenth
    saved = list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else []
    assert len(saved) <= 3


def test_engine_cancels_a_long_batch_promptly(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(40):
        PILImage.fromarray(np.full((96, 96, 3), i * 6, np.uint8)).save(frames / f"f{i:03d}.png")
    g = make_graph({
        "load": ("image.load_folder", {"folder": str(frames)}),
        "blur": ("image.blur", {"radius": 20, "kind": "median"}),
        "save": ("image.save", {"filename_prefix": "never"}),
    }, ["load.image -> blur.image", "blur.image -> save.image"])
    engine = Engine(default_registry())
    progress: list[float] = []
    cancel = threading.Event()

    def listener(e):
        if isinstance(e, NodeProgress) and e.node_id == "blur":
            progress.append(e.fraction)
            cancel.set()

    engine.events.subscribe(listener)
    result = engine.run(g, output_dir=tmp_path / "out", cancel=cancel)
    assert result.cancelled and result.status["blur"] == "cancelled"
    assert len(progress) == 1  # the node saw the cancel before its second image
    assert result.status["save"] == "cancelled" and not (tmp_path / "out").exists()
