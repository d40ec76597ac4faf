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



# A schema that cannot be read: the user hears why (model and status), not "has no input" --------

BAD_TOKEN = "r8_RefusedTokenRefusedToken0123456789"
SCHEMA_REFUSALS = [
    (401, "the API token was rejected (401); check it in Settings or REPLICATE_API_TOKEN"),
    (402, "the Replicate account has no credit left (402); add billing at replicate.com"),
    (403, "this token may not use this model (403)"),
    (404, "no such model or version on Replicate (404); check the model reference"),
]
#: The validation side needs `missing_input` in app/graph/validate.py (used by app/engine/plan.py).
def refuse_schema(fake, monkeypatch, status: int, model: str = "fake/invert") -> str:
    """Make reading `model`'s schema answer `status`; return the token the client presents."""
    if status == 401:
        monkeypatch.setenv("REPLICATE_API_TOKEN", BAD_TOKEN)  # the fake echoes it in its 401 answer
        return BAD_TOKEN
    fake.fail("GET", rf"^/v1/models/{model}$", [status])
    return TOKEN


def assert_names_model_and_cause(msg: str | None, token: str, cause: str, model: str = "fake/invert") -> None:
    assert msg is not None
    assert msg == f"Replicate {model} (read schema): {cause}"
    assert "\n" not in msg and token not in msg and TOKEN not in msg


def into_invert() -> Graph:
    """A gradient linked into fake/invert's schema port 'image'."""
    g = Graph()
    g.add_node(NodeInstance("ramp", "imagebash.image.gradient", {"width": 8, "height": 8}))
    g.add_node(NodeInstance("gen", RUN, {"model": "fake/invert", "strength": 0.5}))
    g.connect(Link("ramp", "image", "gen", "image"))
    return g


@pytest.mark.parametrize(("status", "cause"), SCHEMA_REFUSALS)
def test_a_refused_schema_is_named_and_a_run_fails_with_that_line(fake, make_engine, monkeypatch, status, cause):
    from nodes.registry import default_registry

    token = refuse_schema(fake, monkeypatch, status)
    params = {"model": "fake/invert", "strength": 0.5}
    reason = default_registry().get(RUN).dynamic_inputs.unavailable(params)
    assert_names_model_and_cause(reason, token, cause)
    assert error_of(run_one(make_engine(), params)) == reason
    assert len(fake.calls("GET", r"^/v1/models/fake/invert$")) == 1  # the failure is remembered, not re-asked


@pytest.mark.parametrize(("status", "cause"), SCHEMA_REFUSALS)
def test_a_link_into_a_port_of_a_refused_schema_gets_the_refusal(fake, make_engine, monkeypatch, status, cause):
    from app.graph.validate import ValidationError, validate
    from nodes.registry import default_registry

    token = refuse_schema(fake, monkeypatch, status)
    g = into_invert()
    (problem,) = validate(g, default_registry())
    assert (problem.node_id, problem.port) == ("gen", "image")
    assert_names_model_and_cause(problem.message, token, cause)
    with pytest.raises(ValidationError) as planned:
        make_engine().run(g, ["gen"])
    assert [p.message for p in planned.value.problems] == [problem.message]
    assert not fake.predictions


def test_a_preset_names_its_own_model_when_its_schema_is_refused(fake, monkeypatch):
    from nodes.registry import default_registry

    model = "black-forest-labs/flux-schnell"
    token = refuse_schema(fake, monkeypatch, 403, model)
    reason = default_registry().get("imagebash.replicate.flux_schnell").dynamic_inputs.unavailable({})
    assert_names_model_and_cause(reason, token, "this token may not use this model (403)", model)


def test_without_a_token_the_reason_names_the_model_as_the_run_does(fake, make_engine, monkeypatch):
    from nodes.registry import default_registry

    monkeypatch.delenv("REPLICATE_API_TOKEN")
    params = {"model": "fake/invert", "strength": 0.5}
    reason = default_registry().get(RUN).dynamic_inputs.unavailable(params)
    assert reason is not None and reason.startswith("Replicate fake/invert: no Replicate API token")
    assert error_of(run_one(make_engine(), params)) == reason


def test_a_readable_schema_has_no_excuse_for_a_port_it_lacks(fake):
    from app.graph.validate import validate
    from nodes.registry import default_registry

    assert default_registry().get(RUN).dynamic_inputs.unavailable({"model": "fake/invert"}) is None
    g = into_invert()
    g.connect(Link("ramp", "image", "gen", "mask"))
    (problem,) = validate(g, default_registry())
    assert problem.port == "mask" and "has no input 'mask'" in problem.message


def test_cli_run_with_a_refused_token_prints_one_line(fake, monkeypatch, tmp_path, capsys):
    from app.cli import main
    from app.graph import io as graph_io

    monkeypatch.setenv("REPLICATE_API_TOKEN", BAD_TOKEN)
    wf = tmp_path / "invert.json"
    graph_io.save(into_invert(), wf)
    assert main(["run", str(wf), "--quiet", "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and BAD_TOKEN not in err
    (line,) = err.strip().splitlines()
    assert line == (f"imagebash: error: {wf}: node 'gen' port 'image': Replicate fake/invert (read schema): "
                    "the API token was rejected (401); check it in Settings or REPLICATE_API_TOKEN")


def test_cli_run_of_the_example_workflow_with_a_refused_token(fake, monkeypatch, tmp_path, capsys):
    from app.cli import main
    from app.paths import WORKFLOWS

    monkeypatch.setenv("REPLICATE_API_TOKEN", BAD_TOKEN)
    assert main(["run", str(WORKFLOWS / "replicate_blend.json"), "--quiet", "--output-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and BAD_TOKEN not in err
    assert ("imagebash: node 'online' failed: Replicate black-forest-labs/flux-schnell (read schema): "
            "the API token was rejected (401); check it in Settings or REPLICATE_API_TOKEN") in err.splitlines()
