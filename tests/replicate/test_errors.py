"""Retries for 429/5xx, and one-line errors naming the model and the cause for everything else."""

from __future__ import annotations

import pytest

from app.graph.model import Graph, Link, NodeInstance
from tests.replicate.fake_server import TOKEN

RUN = "imagebash.replicate.run"


def run_one(engine, params: dict, node_type: str = RUN):
    g = Graph()
    g.add_node(NodeInstance("gen", node_type, params))
    return engine.run(g, ["gen"])


def error_of(result) -> str:
    assert result.status["gen"] == "failed"
    msg = result.errors["gen"]
    assert "\n" not in msg and TOKEN not in msg
    return msg


def test_429_and_500_on_create_are_retried_then_succeed(fake, make_engine):
    fake.fail("POST", r"/predictions$", [429, 500])
    fake.fail("GET", r"^/v1/predictions/", [503])
    result = run_one(make_engine(), {"model": "fake/txt2img", "prompt": "x"})
    assert result.ok, result.errors
    creates = fake.calls("POST", r"^/v1/models/fake/txt2img/predictions$")
    assert [r.status for r in creates] == [429, 500, 201]
    assert len(fake.predictions) == 1  # retrying never made a second prediction
    assert result.output("gen", "image").shape == (1, 32, 32, 3)


def test_retry_after_is_honoured_on_a_post(fake, make_engine):
    fake.retry_after = 1
    fake.fail("POST", r"/predictions$", [429])
    assert run_one(make_engine(), {"model": "fake/txt2img", "prompt": "x"}).ok
    first, second = fake.calls("POST", r"/predictions$")
    assert second.start - first.end >= 0.95  # waited the asked second, not the 0.25 s backoff


def test_each_failure_is_retried_once_within_the_limit(fake, make_engine):
    fake.fail("POST", r"/predictions$", [500, 502, 503])
    result = run_one(make_engine(retry_seconds=10), {"model": "fake/txt2img", "prompt": "x"})
    assert result.ok, result.errors
    assert [r.status for r in fake.calls("POST", r"/predictions$")] == [500, 502, 503, 201]


def test_retries_stop_at_the_time_limit(fake, make_engine):
    # The server asks for 2 s between tries; a 4 s limit leaves room for one retry, not two.
    fake.retry_after = 2
    fake.fail("POST", r"/predictions$", [503] * 50)
    result = run_one(make_engine(retry_seconds=4), {"model": "fake/txt2img", "prompt": "x"})
    assert error_of(result).startswith("Replicate fake/txt2img (create): Replicate answered 503")
    assert len(fake.calls("POST", r"/predictions$")) == 2


def test_rejected_token(fake, make_engine, monkeypatch):
    bad = "r8_WrongTokenWrongToken0123456789"
    monkeypatch.setenv("REPLICATE_API_TOKEN", bad)
    msg = error_of(run_one(make_engine(), {"model": "fake/txt2img", "prompt": "x"}))
    assert "Replicate fake/txt2img" in msg and "token was rejected (401)" in msg
    assert bad not in msg  # the server echoes the token it got; the message must not


def test_no_credit(fake, make_engine):
    fake.fail("POST", r"/predictions$", [402])
    msg = error_of(run_one(make_engine(), {"model": "fake/txt2img", "prompt": "x"}))
    assert msg == ("Replicate fake/txt2img (create): the Replicate account has no credit left (402); "
                   "add billing at replicate.com")


def test_no_such_model(fake, make_engine):
    msg = error_of(run_one(make_engine(), {"model": "nobody/nothing", "prompt": "x"}))
    assert "Replicate nobody/nothing" in msg and "no such model or version on Replicate (404)" in msg


def test_invalid_input_names_the_input(fake, make_engine):
    # The preset's aspect_ratio is free text; the model accepts only some ratios.
    result = run_one(make_engine(), {"prompt": "x", "aspect_ratio": "7:3"}, "imagebash.replicate.flux_schnell")
    msg = error_of(result)
    assert msg.startswith("Replicate black-forest-labs/flux-schnell (create): invalid input 'aspect_ratio': ")
    assert '"16:9"' in msg and msg.endswith("(422)")


def test_preset_node_runs_with_its_preset_inputs(fake, make_engine):
    result = run_one(make_engine(), {"prompt": "a lighthouse", "aspect_ratio": "16:9", "seed": 5},
                     "imagebash.replicate.flux_schnell")
    assert result.ok, result.errors
    assert result.output("gen", "image").shape == (1, 27, 48, 3)
    import json

    sent = json.loads(fake.calls("POST", r"flux-schnell/predictions$")[0].body)["input"]
    assert sent["output_format"] == "png" and sent["num_outputs"] == 1 and sent["seed"] == 5


@pytest.mark.parametrize(("model", "expected"), [
    ("fake/broken", "Replicate fake/broken: the prediction failed: CUDA out of memory on the fake GPU"),
    ("fake/aborts", "Replicate fake/aborts: the prediction was aborted: no error message"),
    ("fake/notmedia", "Replicate fake/notmedia: the output 'http://127.0.0.1:"),
])
def test_failed_and_aborted_predictions_and_non_media_outputs(fake, make_engine, model, expected):
    msg = error_of(run_one(make_engine(), {"model": model, "prompt": "x"}))
    assert msg.startswith(expected)
    if model == "fake/notmedia":
        assert msg.endswith("is not an image or a video")


def test_download_size_limit(fake, make_engine):
    msg = error_of(run_one(make_engine(max_download_bytes=200), {"model": "fake/txt2img", "prompt": "x"}))
    assert msg == "Replicate fake/txt2img: an output is larger than the 200 byte download limit"
    from nodes.replicate.download import output_dir

    assert not [p for p in output_dir().iterdir() if p.suffix == ".png"]  # nothing half-written kept


def test_a_batch_into_a_single_image_input_is_an_error_not_a_silent_first_image(fake, make_engine):
    g = Graph()
    g.add_node(NodeInstance("ramp", "imagebash.image.gradient", {"width": 8, "height": 8}))
    g.add_node(NodeInstance("flat", "imagebash.image.solid_color", {"width": 8, "height": 8}))
    g.add_node(NodeInstance("batch", "imagebash.image.join_batch", {}))
    g.add_node(NodeInstance("gen", RUN, {"model": "fake/invert"}))
    g.connect(Link("ramp", "image", "batch", "first"))
    g.connect(Link("flat", "image", "batch", "second"))
    g.connect(Link("batch", "image", "gen", "image"))
    msg = error_of(make_engine().run(g, ["gen"]))
    assert msg.endswith("Replicate fake/invert: input 'image' takes one image, got a batch of 2; "
                        "use Select from Batch")
    assert not fake.predictions  # nothing was sent

