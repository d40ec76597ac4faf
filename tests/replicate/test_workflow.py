"""The example workflow (a local photo blended with an online result) and the token's absence
from everything a run writes: images, their metadata, the workflow file, caches and logs."""

from __future__ import annotations

import json
import logging
import os
import pathlib

import numpy as np
from PIL import Image as PILImage

from app.engine import NodeFailed, NodeLog, NodeProgress
from app.graph import io as graph_io
from app.paths import WORKFLOWS
from tests.replicate.fake_server import TOKEN

WORKFLOW = WORKFLOWS / "replicate_blend.json"


def run_workflow(engine, out: pathlib.Path):
    graph = graph_io.load(WORKFLOW)
    return graph, engine.run(graph, ["save", "blend", "photo", "online"], output_dir=out)


def test_local_photo_blended_with_an_online_result(fake, make_engine, tmp_path):
    _, result = run_workflow(make_engine(), tmp_path / "out")
    assert result.ok, result.errors
    photo = result.output("photo", "image")
    online = result.output("online", "image")
    blended = result.output("blend", "image")
    assert online.shape == (1, 36, 48, 3)  # 4:3 from the fake FLUX schnell
    assert blended.shape == photo.shape
    # screen never darkens, and the online image visibly lifts the photo
    assert (blended >= photo[..., :3] - 1e-5).all() and blended.mean() > photo.mean() + 0.05
    (saved,) = (tmp_path / "out").glob("replicate_blend_*.png")
    with PILImage.open(saved) as im:
        pixels = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        embedded = json.loads(im.text[graph_io.PNG_WORKFLOW_KEY])
    np.testing.assert_allclose(pixels, blended[0, ..., :3], atol=1 / 255 + 1e-6)
    assert any(n["type"] == "imagebash.replicate.run" for n in embedded["nodes"])
    sent = json.loads(fake.calls("POST", r"flux-schnell/predictions$")[0].body)["input"]
    assert sent["seed"] == 1234 and sent["aspect_ratio"] == "4:3"


def test_the_token_is_in_no_file_and_no_log_line(fake, make_engine, tmp_path, caplog):
    events = []
    engine = make_engine()
    engine.events.subscribe(events.append)
    out = tmp_path / "out"
    with caplog.at_level(logging.DEBUG):
        graph, result = run_workflow(engine, out)
        assert result.ok, result.errors
        graph_io.save(graph, tmp_path / "saved_workflow.json")
        # a failing call too: the fake server echoes the rejected token in its answer
        os.environ["REPLICATE_API_TOKEN"] = TOKEN + "Wrong"
        try:
            graph.set_param("online", "seed", 99)
            failed = engine.run(graph, ["save"], output_dir=out)
        finally:
            os.environ["REPLICATE_API_TOKEN"] = TOKEN
    assert failed.status["online"] == "failed" and "401" in failed.errors["online"]
    secret = TOKEN.encode()
    roots = [tmp_path] + [pathlib.Path(os.environ[k]) for k in
                          ("IMAGEBASH_CACHE_DIR", "IMAGEBASH_CONFIG_DIR", "IMAGEBASH_DATA_DIR")]
    written = [p for root in roots for p in root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".png" for p in written) and any(p.name == "saved_workflow.json" for p in written)
    assert any("schemas" in p.parts for p in written)  # the schema cache was written, and checked
    for path in written:
        assert secret not in path.read_bytes(), path
        if path.suffix == ".png":
            with PILImage.open(path) as im:
                assert all(TOKEN not in str(v) for v in getattr(im, "text", {}).values()), path
    assert caplog.records and TOKEN not in caplog.text
    texts = [getattr(e, "message", "") or getattr(e, "text", "") or "" for e in events
             if isinstance(e, (NodeLog, NodeFailed, NodeProgress))]
    assert texts and all(TOKEN not in t for t in texts)
    assert all(TOKEN not in str(e) for e in events if isinstance(e, NodeFailed))
