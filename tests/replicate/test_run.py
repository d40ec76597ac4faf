"""Running Replicate nodes in the engine against the fake server, through the real client."""

from __future__ import annotations

import base64
import io
import json
import time

import numpy as np
from PIL import Image as PILImage

from app.engine import NodeProgress
from app.graph.model import Graph, Link, NodeInstance
from nodes.replicate import download
from nodes.types import Video
from tests.image.helpers import open_handles

RUN = "imagebash.replicate.run"


def one_node(params: dict, node_id: str = "gen") -> Graph:
    g = Graph()
    g.add_node(NodeInstance(node_id, RUN, params))
    return g


def with_image(tmp_path, params: dict, size=(24, 16), seed=0) -> tuple[Graph, np.ndarray]:
    """Load Image (a random PNG on disk) feeding a Replicate node's 'image' input."""
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path = tmp_path / "local.png"
    PILImage.fromarray(arr).save(path)
    g = Graph()
    g.add_node(NodeInstance("load", "imagebash.image.load", {"path": str(path)}))
    g.add_node(NodeInstance("gen", RUN, params))
    g.connect(Link("load", "image", "gen", "image"))
    return g, arr.astype(np.float32) / 255.0


def test_text_to_image_returns_a_batch_of_the_requested_size(fake, make_engine):
    g = one_node({"model": "fake/txt2img", "prompt": "a fox", "width": 40, "height": 24, "num_outputs": 3,
                  "seed": 7})
    result = make_engine().run(g, ["gen"])
    assert result.ok, result.errors
    image = result.output("gen", "image")
    assert image.shape == (3, 24, 40, 3) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert isinstance(result.output("gen", "video"), Video) and len(result.output("gen", "video")) == 3
    assert result.output("gen", "text").count("http://127.0.0.1") == 3
    sent = json.loads(fake.calls("POST", r"^/v1/models/fake/txt2img/predictions$")[0].body)["input"]
    assert sent["seed"] == 7 and sent["output_format"] == "png" and sent["model"] == "dev"


def test_a_seed_makes_the_call_reproducible_and_a_rerun_is_free(fake, make_engine):
    params = {"model": "fake/txt2img", "prompt": "a fox", "seed": 42}
    engine = make_engine()
    first = engine.run(one_node(params), ["gen"]).output("gen", "image")
    again = engine.run(one_node(params), ["gen"])
    assert again.status["gen"] == "cached"
    assert len(fake.calls("POST", r"predictions$")) == 1  # the unchanged node did not call the API
    fresh = make_engine().run(one_node(params), ["gen"]).output("gen", "image")
    np.testing.assert_array_equal(first, fresh)
    other = make_engine().run(one_node({**params, "seed": 43}), ["gen"]).output("gen", "image")
    assert np.abs(other - first).mean() > 0.1


def test_small_graph_image_goes_inline_and_comes_back_inverted(fake, make_engine, tmp_path):
    g, local = with_image(tmp_path, {"model": "fake/invert"})
    result = make_engine().run(g, ["gen"])
    assert result.ok, result.errors
    np.testing.assert_allclose(result.output("gen", "image")[0], 1.0 - local, atol=1 / 255 + 1e-6)
    assert not fake.calls("POST", r"^/v1/files$")
    assert b"data:image/png;base64," in fake.calls("POST", r"^/v1/predictions$")[0].body


def test_big_graph_image_is_uploaded_through_the_files_api(fake, make_engine, tmp_path):
    g, local = with_image(tmp_path, {"model": "fake/invert"}, size=(64, 48), seed=1)
    result = make_engine(data_uri_bytes=0).run(g, ["gen"])
    assert result.ok, result.errors
    uploads = fake.calls("POST", r"^/v1/files$")
    assert len(uploads) == 1 and b"image/png" in uploads[0].body
    stored, ctype = next(iter(fake.files.values()))
    assert ctype == "image/png"
    with PILImage.open(io.BytesIO(stored)) as im:
        np.testing.assert_array_equal(np.asarray(im), np.round(local * 255).astype(np.uint8))
    create = fake.calls("POST", r"^/v1/predictions$")[0].body
    assert b"/v1/files/" in create and b"data:" not in create
    np.testing.assert_allclose(result.output("gen", "image")[0], 1.0 - local, atol=1 / 255 + 1e-6)


def test_community_model_without_version_runs_its_latest_version(fake, make_engine, tmp_path):
    g, _ = with_image(tmp_path, {"model": "fake/invert"})
    assert make_engine().run(g, ["gen"]).ok
    assert fake.calls("POST", r"^/v1/models/fake/invert/predictions$")[0].status == 404
    version = fake.models["fake/invert"].version
    assert json.loads(fake.calls("POST", r"^/v1/predictions$")[0].body)["version"] == version
    pinned, _ = with_image(tmp_path, {"model": f"fake/invert:{version}"})
    assert make_engine().run(pinned, ["gen"]).ok
    again, _ = with_image(tmp_path, {"model": "fake/invert", "strength": 0.5})
    assert make_engine().run(again, ["gen"]).ok
    # the pinned call and the next unpinned one go straight to the version: one 404 in all
    assert len(fake.calls("POST", r"^/v1/models/fake/invert/predictions$")) == 1
    assert len(fake.calls("POST", r"^/v1/predictions$")) == 3


def test_video_output_is_a_lazy_video(fake, make_engine, tmp_path):
    g, _ = with_image(tmp_path, {"model": "fake/video", "num_frames": 5})
    result = make_engine().run(g, ["gen"])
    assert result.ok, result.errors
    video = result.output("gen", "video")
    assert isinstance(video, Video) and len(video) == 5 and video.size == (32, 24)
    first, last = video.frame(0), video.frame(4)
    assert first.shape == (1, 24, 32, 3)
    assert first.mean() < 0.1 and last.mean() > 0.9  # the fake fades black to white
    assert result.output("gen", "image") is video  # image ports fed a Video map over its frames
    (path,) = download.output_dir().glob("*.mp4")
    assert video.to_batch().shape == (5, 24, 32, 3)
    assert open_handles(path) == 0  # the capture is released after the last frame


def test_results_of_different_sizes_join_one_batch():
    small = np.full((1, 4, 6, 3), 0.25, np.float32)
    big = np.full((2, 9, 13, 4), 0.75, np.float32)
    batch = download.image_batch([small, big])
    assert batch.shape == (3, 4, 6, 4) and batch.dtype == np.float32
    assert np.allclose(batch[0], [0.25, 0.25, 0.25, 1.0], atol=1e-6)
    assert np.allclose(batch[1:], 0.75, atol=1e-5)


def test_text_output_is_joined(fake, make_engine):
    result = make_engine().run(one_node({"model": "fake/text", "prompt": "story"}), ["gen"])
    assert result.output("gen", "text") == "A fox in the fog."
    assert result.output("gen", "image") is None


def test_a_url_in_a_text_answer_stays_text():
    text_schema = {"type": "array", "items": {"type": "string"}, "x-cog-array-type": "iterator"}
    assert download.is_text_output(text_schema) and download.is_text_output({"type": "string"})
    assert not download.is_text_output({"type": "string", "format": "uri"})
    assert not download.is_text_output({"type": "array", "items": {"type": "string", "format": "uri"}})
    outs = download.collect(["see ", "http://127.0.0.1:9/x.png"], None, model="m",
                            limits=download.Limits(), api_base="http://127.0.0.1:9", text_only=True)
    assert outs.texts == ["see ", "http://127.0.0.1:9/x.png"] and not outs.images


def test_progress_shows_status_and_model_logs(fake, make_engine):
    fake.polls_to_finish = 4  # 0/4, 1/4 and 2/4 on the first three polls, the result on the fourth
    engine = make_engine()
    seen: list[NodeProgress] = []
    engine.events.subscribe(lambda e: seen.append(e) if isinstance(e, NodeProgress) else None)
    assert engine.run(one_node({"model": "fake/txt2img", "prompt": "x"}), ["gen"]).ok
    texts = [e.text for e in seen]
    assert "processing" in texts and "succeeded" in texts
    assert "Loading model" in texts and any("4/4" in (t or "") for t in texts)
    fractions = [e.fraction for e in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and 0 < fractions[len(fractions) // 2] < 1


def test_two_replicate_nodes_overlap(fake, make_engine):
    fake.delay = 1.0
    g = Graph()
    for nid in ("a", "b"):
        g.add_node(NodeInstance(nid, RUN, {"model": "fake/txt2img", "prompt": nid, "seed": 1}))
    result = make_engine().run(g, ["a", "b"])
    assert result.ok, result.errors
    preds = list(fake.predictions.values())
    assert len(preds) == 2
    created = [p["created_mono"] for p in preds]
    finished = [p["completed_mono"] for p in preds]
    assert max(created) < min(finished)  # both were running on the server at the same time


def test_cancel_reaches_the_server(fake, make_engine):
    fake.delay = 30.0
    handle = make_engine().start(one_node({"model": "fake/txt2img", "prompt": "slow"}), ["gen"])
    deadline = time.monotonic() + 10
    while not fake.predictions and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    handle.cancel()
    result = handle.wait(timeout=10)
    assert result is not None and result.cancelled and result.status["gen"] == "cancelled"
    (pid,) = fake.predictions
    assert fake.cancelled == [pid] and fake.predictions[pid]["status"] == "canceled"


def test_a_prediction_past_its_deadline_is_cancelled(fake, make_engine):
    fake.delay = 30.0
    result = make_engine(prediction_seconds=0.3).run(one_node({"model": "fake/txt2img", "prompt": "x"}), ["gen"])
    assert "fake/txt2img: no result after 0.3 s; the prediction was cancelled" in result.errors["gen"]
    assert len(fake.cancelled) == 1


def test_array_inputs_take_a_whole_batch_and_a_list_of_numbers(fake, make_engine):
    g = Graph()
    g.add_node(NodeInstance("ramp", "imagebash.image.gradient", {"width": 8, "height": 8}))
    g.add_node(NodeInstance("flat", "imagebash.image.solid_color", {"width": 8, "height": 8, "color": "#c08040"}))
    g.add_node(NodeInstance("batch", "imagebash.image.join_batch", {}))
    g.add_node(NodeInstance("gen", RUN, {"model": "fake/stack", "gains": "1, 0.5"}))
    g.connect(Link("ramp", "image", "batch", "first"))
    g.connect(Link("flat", "image", "batch", "second"))
    g.connect(Link("batch", "image", "gen", "images"))
    result = make_engine().run(g, ["gen", "batch"])
    assert result.ok, result.errors
    sent = json.loads(fake.calls("POST", r"fake/stack/predictions$")[0].body)["input"]
    assert sent["gains"] == [1.0, 0.5] and len(sent["images"]) == 2
    src = result.output("batch", "image")
    out = result.output("gen", "image")
    assert out.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(out[0], src[0], atol=1 / 255 + 1e-6)
    np.testing.assert_allclose(out[1], src[1] * 0.5, atol=2 / 255)


def test_outputs_as_plain_urls_and_as_file_outputs(fake, tmp_path):
    from replicate.helpers import FileOutput

    from nodes.replicate.client import Limits, get_client
    from tests.replicate.fake_server import png

    client = get_client()
    red = np.zeros((4, 6, 3))
    red[..., 0] = 1.0
    http_url = fake.serve_bytes(png(red), "image/png", "png")
    data_url = "data:image/png;base64," + base64.b64encode(png(1 - red)).decode()
    outs = download.collect([http_url, FileOutput(data_url, client), "caption"], client, model="m",
                            limits=Limits(), api_base=fake.url)
    assert [im.shape for im in outs.images] == [(1, 4, 6, 3), (1, 4, 6, 3)]
    assert outs.images[0][0, 0, 0].tolist() == [1.0, 0.0, 0.0] and outs.images[1][0, 0, 0].tolist() == [0.0, 1.0, 1.0]
    assert outs.texts == ["caption"]


def test_16_bit_outputs_keep_their_precision(fake):
    import cv2

    from nodes.replicate.client import Limits, get_client

    deep = np.random.default_rng(5).integers(0, 65536, (4, 6, 3)).astype(np.uint16)
    deep[0, 0] = (1000, 1001, 1002)  # equal in 8 bits
    urls = [fake.serve_bytes(cv2.imencode(".png", deep[..., ::-1])[1].tobytes(), "image/png", "png"),
            fake.serve_bytes(cv2.imencode(".png", deep[..., 0])[1].tobytes(), "image/png", "png")]
    outs = download.collect(urls, get_client(), model="m", limits=Limits(), api_base=fake.url)
    rgb, grey = outs.images
    assert rgb.shape == (1, 4, 6, 3) and grey.shape == (1, 4, 6, 3)
    np.testing.assert_allclose(rgb[0], deep / 65535, atol=1e-6)
    np.testing.assert_allclose(grey[0], np.repeat(deep[..., :1], 3, -1) / 65535, atol=1e-6)


def test_a_graph_video_is_sent_as_an_mp4(fake, make_engine):
    from app.paths import RESOURCES

    g = Graph()
    g.add_node(NodeInstance("clip", "imagebash.video.load",
                            {"path": str(RESOURCES / "samples" / "clip.mp4"), "max_frames": 6}))
    g.add_node(NodeInstance("gen", RUN, {"model": "fake/vidcount"}))
    g.connect(Link("clip", "video", "gen", "video"))
    from nodes.registry import default_registry

    assert default_registry().get(RUN).input("video", {"model": "fake/vidcount"}).kind == "Video"
    result = make_engine().run(g, ["gen"])
    assert result.ok, result.errors
    assert result.output("gen", "text") == "6 frames 128x96"
    assert len(fake.predictions) == 1  # one call with the whole clip, not one per frame
