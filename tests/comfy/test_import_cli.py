"""`imagebash import-comfy` prints its summary and writes a workflow `imagebash validate` accepts;
`load()` (run, validate, the editor's Open) reads ComfyUI files as mapped graphs."""

from __future__ import annotations

import argparse
import json

import pytest
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

from app.cli import main
from app.comfy import cli as comfy_cli
from app.graph.io import load
from tests.comfy.test_mapping import txt2img


def api_json(wf) -> dict:
    """A ComfyUI API ("prompt") document for a ComfyWorkflow built in the tests."""
    from app.comfy.model import ComfyLink

    return {nid: {"class_type": n.class_type,
                  "inputs": {k: [v.node, v.slot] if isinstance(v, ComfyLink) else v for k, v in n.inputs.items()}}
            for nid, n in wf.nodes.items()}


def run_import(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    comfy_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_import_prints_summary_and_writes_a_valid_workflow(tmp_path, capsys):
    src = tmp_path / "fox.json"
    src.write_text(json.dumps(api_json(txt2img())))
    out = tmp_path / "fox.imagebash.json"
    assert run_import(["import-comfy", str(src), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == "10 nodes: 9 mapped, 1 placeholder (FaceRestoreX)"
    assert main(["validate", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert {n["id"]: n["type"] for n in doc["nodes"]}["n3"] == "imagebash.diffusion.sample"


def test_import_json_report(tmp_path, capsys):
    src = tmp_path / "fox.json"
    src.write_text(json.dumps(api_json(txt2img())))
    assert run_import(["import-comfy", str(src), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mapped"] == 9 and report["placeholders"] == 1
    assert report["per_node"]["6"] == {"class_type": "CLIPTextEncode", "status": "folded", "into": ["n3"],
                                       "pack": None, "notes": []}
    assert (tmp_path / "fox.imagebash.json").is_file()


def test_bad_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert run_import(["import-comfy", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imagebash: error: bad.json") and "\n" not in err


def test_load_reads_comfy_json_and_png(tmp_path):
    src = tmp_path / "fox.json"
    src.write_text(json.dumps(api_json(txt2img())))
    g = load(src)
    assert g.nodes["n3"].params["prompt"] == "a red fox in the snow"
    assert g.meta["import_note"].endswith("10 nodes: 9 mapped, 1 placeholder (FaceRestoreX)")
    png = tmp_path / "ComfyUI_00001_.png"
    info = PngInfo()
    info.add_text("prompt", json.dumps(api_json(txt2img(extra=False))))
    PILImage.new("RGB", (8, 8)).save(png, pnginfo=info)
    g = load(png)
    assert g.nodes["n9"].type == "imagebash.image.save" and g.base_dir == str(tmp_path.resolve())
    assert main(["validate", str(png)]) == 0


def test_own_files_still_load_as_before(tmp_path):
    from app.graph.io import WorkflowFormatError

    (tmp_path / "x.json").write_text(json.dumps({"nodes": []}))
    with pytest.raises(WorkflowFormatError, match="not an imagebash workflow"):
        load(tmp_path / "x.json")


def test_a_folder_or_a_missing_path_is_one_line(tmp_path, capsys):
    from app.cli import main

    assert main(["import-comfy", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().endswith(": a folder, not a workflow file")
    assert main(["validate", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().endswith(": a folder, not a workflow file")
    assert main(["import-comfy", str(tmp_path / "gone.json")]) == 2
    assert capsys.readouterr().err.strip().endswith("gone.json: no such file")
