"""Ports derived from a model's OpenAPI schema, its disk cache, and validation against it."""

from __future__ import annotations

import pytest

from app.graph.model import Graph, NodeInstance
from app.graph.validate import validate
from nodes.registry import default_registry
from nodes.replicate import schema

RUN = "imagebash.replicate.run"


def ports(params: dict) -> dict:
    return {p.name: p for p in default_registry().get(RUN).inputs_for(params)}


def test_ports_follow_the_schema(fake):
    p = ports({"model": "fake/txt2img"})
    assert list(p) == ["model", "prompt", "width", "height", "num_outputs", "guidance", "output_format", "seed",
                       "go_fast", "in_model"]
    assert p["prompt"].kind == "str" and p["prompt"].required and p["prompt"].multiline
    assert p["prompt"].help == "What to draw"
    assert p["width"].kind == "int" and p["width"].default == 32
    assert (p["width"].range.min, p["width"].range.max) == (16, 256)
    assert p["guidance"].kind == "float" and p["guidance"].default == 3.5 and p["guidance"].range.max == 10
    fmt = p["output_format"]
    assert [m.value for m in fmt.enum] == ["png", "webp"] and fmt.default.value == "png"
    assert fmt.describe()["choices"] == ["png", "webp"]
    assert p["seed"].kind == "Seed" and p["seed"].optional and not p["seed"].required
    assert p["go_fast"].kind == "bool" and p["go_fast"].default is True
    # the model's own 'model' input must not clash with the node's model reference
    assert [m.value for m in p["in_model"].enum] == ["dev", "schnell"]
    assert schema.api_name("in_model") == "model"


def test_uri_inputs_become_image_ports(fake):
    p = ports({"model": "fake/invert"})
    assert p["image"].kind == "Image" and p["image"].required and not p["image"].is_param
    assert p["strength"].kind == "float"


def test_schema_is_fetched_once_and_cached_on_disk(fake):
    ports({"model": "fake/txt2img"})
    ports({"model": "fake/txt2img"})
    assert len(fake.calls("GET", r"^/v1/models/fake/txt2img$")) == 1
    schema._memory.clear()  # as after a restart: the disk copy serves, no request
    fake.stop()
    again = ports({"model": "fake/txt2img"})
    assert "output_format" in again
    files = list((schema._cache_file("fake/txt2img", fake.url)).parent.glob("*.json"))
    assert files and "fake_txt2img" in files[0].name


def test_a_pinned_version_reads_the_version_schema(fake):
    version = fake.models["fake/invert"].version
    p = ports({"model": f"fake/invert:{version}"})
    assert p["image"].kind == "Image"
    assert fake.calls("GET", rf"/versions/{version}$")


def test_out_of_range_and_unknown_choices_are_rejected_before_any_call(fake):
    g = Graph()
    g.add_node(NodeInstance("gen", RUN, {"model": "fake/txt2img", "prompt": "a", "width": 999,
                                         "output_format": "tiff"}))
    problems = {p.port: p.message for p in validate(g, default_registry())}
    assert "out of range [16, 256]" in problems["width"]
    assert "png, webp" in problems["output_format"]
    g2 = Graph()
    g2.add_node(NodeInstance("gen", RUN, {"model": "fake/txt2img"}))
    problems = {p.port: p.message for p in validate(g2, default_registry())}
    assert "required input 'prompt'" in problems["prompt"]
    assert not fake.calls("POST", r"predictions")


def test_without_a_token_the_saved_values_still_load(fake, monkeypatch, make_engine):
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    g = Graph()
    g.add_node(NodeInstance("gen", RUN, {"model": "fake/txt2img", "prompt": "a fox", "width": 64}))
    assert validate(g, default_registry()) == []
    result = make_engine().run(g, ["gen"])
    assert result.status["gen"] == "failed"
    assert "no Replicate API token" in result.errors["gen"] and "REPLICATE_API_TOKEN" in result.errors["gen"]


def test_a_malformed_reference_is_named(fake, make_engine):
    g = Graph()
    g.add_node(NodeInstance("gen", RUN, {"model": "just-a-name"}))
    result = make_engine().run(g, ["gen"])
    assert "'just-a-name' is not a Replicate model reference" in result.errors["gen"]


def test_preset_nodes_have_their_ports_offline(monkeypatch):
    monkeypatch.setenv("REPLICATE_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    spec = default_registry().get("imagebash.replicate.upscale_esrgan")
    p = {x.name: x for x in spec.inputs_for({})}
    assert p["image"].kind == "Image" and p["scale"].default == 4.0
    assert "online/replicate" == spec.category and spec.io
    assert {o.name for o in spec.outputs} == {"image", "video", "text"}


@pytest.mark.parametrize("bad", ["owner", "owner/name/extra", "owner/name:"])
def test_parse_ref_rejects(bad):
    from nodes.replicate.client import ReplicateNodeError, parse_ref

    with pytest.raises(ReplicateNodeError, match="owner/name"):
        parse_ref(bad)
