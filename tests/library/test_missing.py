"""Missing models of a workflow, and relinking one to a file the user picks."""

from __future__ import annotations

import json

import pytest

from app.graph.io import load
from app.library.missing import MissingModel, missing_models, png_provenance, relink_params
from app.paths import WORKFLOWS
from nodes.registry import default_registry
from tests.library import sd1_checkpoint, sd1_lora, use_models

TWO_LORAS = WORKFLOWS / "txt2img_two_loras.json"


@pytest.fixture
def models(tmp_path, monkeypatch):
    root = tmp_path / "models"
    use_models(monkeypatch, root)
    return root


def _found(missing: list[MissingModel]) -> list[tuple[str, str, str, str]]:
    return [(m.node_id, m.port, m.kind, m.name) for m in missing]


def test_the_example_workflow_misses_its_checkpoint_and_both_loras(models):
    missing = missing_models(load(TWO_LORAS), default_registry())
    assert _found(missing) == [
        ("model", "checkpoint", "checkpoint", "v1-5-pruned-emaonly.safetensors"),
        ("style", "file", "lora", "watercolor_style.safetensors"),
        ("detail", "file", "lora", "ink_detail.safetensors"),
    ]
    assert missing[1].title == "Style LoRA"


def test_files_that_are_there_and_hub_ids_are_not_missing(models, tmp_path):
    sd1_lora(models / "loras" / "watercolor_style.safetensors")
    graph = load(TWO_LORAS)
    graph.set_param("model", "checkpoint", "runwayml/stable-diffusion-v1-5")  # downloaded at run time
    graph.set_param("detail", "file", str(tmp_path / "elsewhere" / "ink.safetensors"))
    assert _found(missing_models(graph, default_registry())) == [
        ("detail", "file", "lora", str(tmp_path / "elsewhere" / "ink.safetensors"))]
    sd1_lora(tmp_path / "elsewhere" / "ink.safetensors")
    assert missing_models(graph, default_registry()) == []


def test_a_path_relative_to_the_workflow_folder_is_found(models, tmp_path):
    doc = json.loads(TWO_LORAS.read_text())
    doc["nodes"][1]["params"]["file"] = "mine/style.safetensors"
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "w.json").write_text(json.dumps(doc))
    sd1_lora(tmp_path / "wf" / "mine" / "style.safetensors")
    names = [m.name for m in missing_models(load(tmp_path / "wf" / "w.json"), default_registry())]
    assert names == ["v1-5-pruned-emaonly.safetensors", "ink_detail.safetensors"]


def test_provenance_hashes_are_given_as_hints(models, tmp_path):
    from nodes.image.io import png_info

    png = tmp_path / "made.png"
    from PIL import Image

    prov = {"model": [{"name": "v1-5-pruned-emaonly.safetensors", "hash": "0123456789", "family": "sd1"}],
            "lora": [{"name": "ink_detail.safetensors", "hash": "abcdefabcd", "weight": 0.45}]}
    Image.new("RGB", (4, 4)).save(png, "PNG", pnginfo=png_info(json.loads(TWO_LORAS.read_text()), prov))
    read = png_provenance(png)
    assert read == prov
    missing = {m.name: m for m in missing_models(load(png), default_registry(), provenance=read)}
    assert missing["v1-5-pruned-emaonly.safetensors"].short_hash == "0123456789"
    assert missing["ink_detail.safetensors"].short_hash == "abcdefabcd"
    assert missing["watercolor_style.safetensors"].short_hash is None
    assert png_provenance(tmp_path / "nothing.png") is None


def test_relink_to_a_file_in_the_models_folder_gives_its_name(models, tmp_path):
    graph = load(TWO_LORAS)
    graph.set_param("detail", "file", "watercolor_style.safetensors")  # the same LoRA twice
    missing = missing_models(graph, default_registry())
    style = next(m for m in missing if m.node_id == "style")
    picked = sd1_lora(models / "loras" / "watercolours" / "wc.safetensors")
    changes = relink_params(graph, style, picked, registry=default_registry())
    assert changes == {("style", "file"): "watercolours/wc.safetensors",
                       ("detail", "file"): "watercolours/wc.safetensors"}
    for (node_id, port), value in changes.items():
        graph.set_param(node_id, port, value)
    assert _found(missing_models(graph, default_registry())) == [
        ("model", "checkpoint", "checkpoint", "v1-5-pruned-emaonly.safetensors")]


def test_relink_to_a_file_elsewhere_gives_its_absolute_path(models, tmp_path):
    graph = load(TWO_LORAS)
    ckpt = next(m for m in missing_models(graph, default_registry()) if m.kind == "checkpoint")
    picked = sd1_checkpoint(tmp_path / "downloads" / "sd15.safetensors")
    assert relink_params(graph, ckpt, picked) == {("model", "checkpoint"): str(picked.resolve())}


def test_relink_refuses_the_wrong_kind_or_no_file(models, tmp_path):
    graph = load(TWO_LORAS)
    missing = missing_models(graph, default_registry())
    lora = sd1_lora(tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match=r"x\.safetensors is a LoRA; node 'model' needs a checkpoint"):
        relink_params(graph, missing[0], lora)
    with pytest.raises(ValueError, match="no such file"):
        relink_params(graph, missing[1], tmp_path / "gone.safetensors")



def test_a_run_with_a_missing_model_says_where_to_get_it(tmp_path, monkeypatch, capsys):
    """The one line a failed Load Model gives names the download command when it is a starter."""
    from app.cli import main

    monkeypatch.setenv("IMAGEBASH_MODELS", str(tmp_path / "models"))
    code = main(["run", str(WORKFLOWS / "txt2img_two_loras.json"), "-q", "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert ("node 'model' failed: model file not found: v1-5-pruned-emaonly.safetensors (download it with "
            "`imagebash models download hf:stable-diffusion-v1-5/stable-diffusion-v1-5/") in err, err
