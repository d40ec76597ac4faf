"""imagebash graphs export to ComfyUI API JSON that ComfyUI would run: the right classes, widget values
and links, readable by our own ComfyUI reader, and re-importing to the graph we started from."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from app.comfy import cli as comfy_cli
from app.comfy.export import to_api
from app.comfy.formats import read_json
from app.comfy.mapping import to_graph
from app.graph.io import load
from app.graph.model import Graph, Link, NodeInstance, NodeMode
from nodes.registry import default_registry
from tests.comfy import fixtures as F
from tests.comfy.test_mapping import txt2img

ROOT = Path(__file__).resolve().parents[2]
D, IMG = "imagebash.diffusion.", "imagebash.image."
#: how many outputs each ComfyUI class has (every other class used here has one)
OUTPUTS = {"CheckpointLoaderSimple": 3, "LoraLoader": 2, "LoadImage": 2, "ControlNetApplyAdvanced": 2}


@pytest.fixture(scope="module")
def registry():
    return default_registry()


def check_links(api: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    """Every link points at an existing node and an output that class has; returns (dst, input, src, slot)."""
    found = []
    for nid, node in api.items():
        assert set(node) == {"class_type", "inputs", "_meta"} and node["_meta"]["title"]
        for name, v in node["inputs"].items():
            if isinstance(v, list):
                src, slot = v
                assert src in api, f"{nid}.{name} links to missing node {src}"
                assert 0 <= slot < OUTPUTS.get(api[src]["class_type"], 1), f"{nid}.{name}: bad slot {slot}"
                found.append((nid, name, src, slot))
    return found


def of_class(api: dict[str, Any], class_type: str) -> list[str]:
    return [k for k, v in api.items() if v["class_type"] == class_type]


def two_loras() -> Graph:
    """txt2img_two_loras as Sample-based nodes, with the params the importer writes."""
    g = Graph()
    for n in [
        NodeInstance("model", D + "load_model", {"checkpoint": F.CKPT}),
        NodeInstance("style", D + "lora", {"file": "watercolor_style.safetensors", "weight": 0.8}),
        NodeInstance("detail", D + "lora", {"file": "ink_detail.safetensors", "weight": 0.45}),
        NodeInstance("latent", D + "empty_latent", {"width": 512, "height": 768, "batch_size": 2}),
        NodeInstance("sample", D + "sample", {"steps": 25, "guidance": 7.0, "scheduler": "dpmpp_2m_karras",
                                              "denoise": 1.0, "seed": 1234, "prompt": "a lighthouse, watercolor",
                                              "negative_prompt": "blurry"}),
        NodeInstance("decode", D + "decode", {}),
        NodeInstance("save", IMG + "save", {"filename_prefix": "lighthouse"}),
    ]:
        g.add_node(n)
    for src, sp, dst, dp in [("model", "model", "style", "model"), ("style", "model", "detail", "model"),
                             ("model", "model", "latent", "model"), ("detail", "model", "sample", "model"),
                             ("latent", "latent", "sample", "latent"), ("model", "model", "decode", "model"),
                             ("sample", "latent", "decode", "latent"), ("decode", "image", "save", "image")]:
        g.connect(Link(src, sp, dst, dp))
    return g


def shape(g: Graph, rename: dict[str, str] | None = None) -> tuple[dict, set]:
    """What a user sees of a graph: node types and params by id, and links (ids renamed by `rename`)."""
    r = rename or {}
    nodes = {r.get(k, k): (n.type, n.params) for k, n in g.nodes.items()}
    links = {(r.get(ln.src, ln.src), ln.src_port, r.get(ln.dst, ln.dst), ln.dst_port) for ln in g.links}
    return nodes, links


def test_two_lora_graph_exports_what_comfyui_expects(registry):
    api, report = to_api(two_loras(), registry)
    assert Counter(v["class_type"] for v in api.values()) == Counter(
        {"CheckpointLoaderSimple": 1, "LoraLoader": 2, "CLIPTextEncode": 2, "EmptyLatentImage": 1, "KSampler": 1,
         "VAEDecode": 1, "SaveImage": 1})
    check_links(api)
    p = {k: r.primary for k, r in report.nodes.items()}
    ck, style, detail, ks = p["model"], p["style"], p["detail"], p["sample"]
    assert api[ck]["inputs"] == {"ckpt_name": F.CKPT}
    assert api[style]["inputs"] == {"lora_name": "watercolor_style.safetensors", "strength_model": 0.8,
                                    "strength_clip": 0.8, "model": [ck, 0], "clip": [ck, 1]}
    assert api[detail]["inputs"] == {"lora_name": "ink_detail.safetensors", "strength_model": 0.45,
                                     "strength_clip": 0.45, "model": [style, 0], "clip": [style, 1]}
    k = api[ks]["inputs"]
    assert {n: k[n] for n in ("seed", "steps", "cfg", "sampler_name", "scheduler", "denoise")} == {
        "seed": 1234, "steps": 25, "cfg": 7.0, "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 1.0}
    assert k["model"] == [detail, 0] and k["latent_image"] == [p["latent"], 0]
    pos, neg = api[k["positive"][0]], api[k["negative"][0]]
    assert (pos["class_type"], pos["inputs"]) == ("CLIPTextEncode", {"text": "a lighthouse, watercolor",
                                                                     "clip": [detail, 1]})
    assert neg["inputs"] == {"text": "blurry", "clip": [detail, 1]}
    assert api[p["latent"]]["inputs"] == {"width": 512, "height": 768, "batch_size": 2}
    assert api[p["decode"]]["inputs"] == {"samples": [ks, 0], "vae": [ck, 2]}
    assert api[p["save"]]["inputs"] == {"filename_prefix": "lighthouse", "images": [p["decode"], 0]}
    assert report.summary() == "7 nodes: 7 exported as 9 ComfyUI nodes" and report.warnings == []

    # our own ComfyUI reader takes it, and importing it gives back the graph we exported
    wf = read_json(json.loads(json.dumps(api)))
    assert wf.source == "api"
    back, _ = to_graph(wf, registry)
    exact = {k: back.nodes[f"n{p['sample']}"].params.pop(k) for k in ("sampler", "schedule", "noise")}
    assert exact == {"sampler": "dpmpp_2m", "schedule": "karras", "noise": "comfyui"}  # ComfyUI's own terms
    assert shape(back) == shape(two_loras(), {k: f"n{v}" for k, v in p.items()})


def test_text_to_image_workflow_becomes_the_whole_chain(registry):
    api, report = to_api(load(ROOT / "workflows" / "txt2img_two_loras.json"), registry)
    check_links(api)
    gen = report.nodes["gen"]
    assert sorted(api[c]["class_type"] for c in gen.comfy) == [
        "CLIPTextEncode", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode"]
    assert api[gen.primary]["class_type"] == "KSampler" and api[gen.primary]["inputs"]["seed"] == 1234
    latent = api[api[gen.primary]["inputs"]["latent_image"][0]]
    assert latent["inputs"] == {"width": 512, "height": 512, "batch_size": 2}
    back, _ = to_graph(read_json(api), registry)
    sample = next(n for n in back.nodes.values() if n.type == D + "sample")
    assert sample.params["prompt"] == "a lighthouse on a cliff at sunset, watercolor, ink outlines"
    assert (sample.params["scheduler"], sample.params["steps"], sample.params["seed"]) == ("dpmpp_2m_karras", 25, 1234)
    assert [n.params["weight"] for n in back.nodes.values() if n.type == D + "lora"] == [0.8, 0.45]


@pytest.mark.parametrize("fixture", [F.sd15_api, F.sd15_ui])
def test_import_export_import_keeps_the_graph(registry, fixture):
    first, _ = to_graph(read_json(fixture()), registry)
    api, report = to_api(first, registry)
    check_links(api)
    second, _ = to_graph(read_json(api), registry)
    # ComfyUI's API has no modes: muted nodes are left out, bypassed ones pass through (named in the report)
    gone = {k for k, n in first.nodes.items() if n.mode is not NodeMode.NORMAL}
    for k in gone:
        first.remove_node(k)
    assert shape(second) == shape(first)
    assert {"3", "4", "5", "8", "9"} <= set(api)  # ComfyUI node 3 -> our n3 -> ComfyUI node 3
    if fixture is F.sd15_ui:
        assert gone == {"n12", "n15"}
        assert report.nodes["n15"].status == "muted" and report.nodes["n12"].status == "bypassed"
        assert "muted, left out (ComfyUI's API has no node modes): node 'n15' (Save Image)" in report.warnings


def test_placeholder_round_trips_its_class_and_inputs(registry):
    wf = txt2img()
    g, _ = to_graph(wf, registry)
    api, _ = to_api(g, registry)
    check_links(api)
    assert api["11"]["class_type"] == "FaceRestoreX"
    assert api["11"]["inputs"] == {"image": ["8", 0], "fidelity": 0.5}
    assert api["12"]["inputs"] == {"filename_prefix": "restored", "images": ["11", 0]}
    back, report = to_graph(read_json(api), registry)
    assert json.loads(back.nodes["n11"].params["inputs"]) == json.loads(g.nodes["n11"].params["inputs"])
    assert report.summary() == "10 nodes: 9 mapped, 1 placeholder (FaceRestoreX)"


def test_placeholder_fed_by_folded_conditioning_gets_its_text_encode_back(registry):
    prompt = F.sd15_api()
    prompt["20"] = {"class_type": "CondBooster", "inputs": {"conditioning": ["6", 0], "amount": 2}}
    g, _ = to_graph(read_json(prompt), registry)
    api, _ = to_api(g, registry)
    check_links(api)
    enc = api[api["20"]["inputs"]["conditioning"][0]]
    assert enc["class_type"] == "CLIPTextEncode" and enc["inputs"]["text"] == F.POSITIVE
    assert api["20"]["inputs"]["amount"] == 2


def test_node_without_counterpart_is_named_once_and_left_out_with_what_needs_it(registry):
    g = Graph()
    for n in [NodeInstance("photo", IMG + "load", {"path": "cat.png"}),
              NodeInstance("sheet", IMG + "grid", {}, title="Deflicker"),
              NodeInstance("save_sheet", IMG + "save", {"filename_prefix": "sheet"}),
              NodeInstance("inv", IMG + "invert", {}),
              NodeInstance("save_inv", IMG + "save", {"filename_prefix": "inv"})]:
        g.add_node(n)
    for src, dst in [("photo", "sheet"), ("sheet", "save_sheet"), ("photo", "inv"), ("inv", "save_inv")]:
        g.connect(Link(src, "image", dst, "image"))
    api, report = to_api(g, registry)
    assert sorted(v["class_type"] for v in api.values()) == ["ImageInvert", "LoadImage", "SaveImage"]
    check_links(api)
    lines = [w for w in report.warnings if "sheet" in w]
    assert lines == ["no ComfyUI counterpart for: node 'sheet' (Deflicker); "
                     "left out with what needs them: node 'save_sheet' (Save Image)"]
    assert report.summary().startswith("5 nodes: 3 exported as 3 ComfyUI nodes; 2 left out")


def test_guidance_nodes_become_conditioning_in_front_of_the_sampler(registry):
    api, report = to_api(load(ROOT / "workflows" / "guided_canny_regions.json"), registry)
    check_links(api)
    p = {k: r.primary for k, r in report.nodes.items()}
    assert api[p["edges"]]["inputs"] == {"image": [p["photo"], 0], "low_threshold": round(80 / 255, 4),
                                         "high_threshold": round(180 / 255, 4)}
    apply = api[p["net"]]
    assert apply["class_type"] == "ControlNetApplyAdvanced"
    assert api[apply["inputs"]["control_net"][0]]["class_type"] == "ControlNetLoader"
    assert apply["inputs"]["image"] == [p["edges"], 0]
    ks = api[p["gen"]]["inputs"]
    assert ks["positive"] == [p["net"], 0] and ks["negative"] == [p["net"], 1]
    area = api[p["sky"]]
    assert area["class_type"] == "ConditioningSetArea"
    assert {k: area["inputs"][k] for k in ("x", "y", "width", "height", "strength")} == {
        "x": 0, "y": 0, "width": 512, "height": 128, "strength": 1.5}
    combine = api[apply["inputs"]["positive"][0]]
    assert combine["class_type"] == "ConditioningCombine" and combine["inputs"]["conditioning_2"] == [p["sky"], 0]
    back, _ = to_graph(read_json(api), registry)
    types = Counter(n.type for n in back.nodes.values())
    assert types["imagebash.guidance.controlnet"] == 1 and types["imagebash.guidance.regional_prompt"] == 1
    canny = next(n for n in back.nodes.values() if n.type == "imagebash.guidance.canny")
    assert (canny.params["low_threshold"], canny.params["high_threshold"]) == (80, 180)


def test_auto_scheduler_and_default_steps_become_the_family_default_with_a_note(registry):
    g = two_loras()
    g.nodes["sample"].params.update(scheduler="auto", steps=0)
    api, report = to_api(g, registry)
    k = api[report.nodes["sample"].primary]["inputs"]
    assert (k["sampler_name"], k["scheduler"], k["steps"]) == ("euler_ancestral", "normal", 20)
    assert any("scheduler auto" in n for n in report.nodes["sample"].notes)


def test_load_image_mask_keeps_comfyui_convention(registry):
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
              "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
              "3": {"class_type": "CustomMaskUser", "inputs": {"image": ["2", 0], "mask": ["1", 1]}}}
    g, _ = to_graph(read_json(prompt), registry)
    api, _ = to_api(g, registry)
    assert api["3"]["inputs"] == {"image": ["2", 0], "mask": ["1", 1]}  # no InvertMask pair added
    assert sorted(api) == ["1", "2", "3"]


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    comfy_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_the_api_json_and_prints_the_summary(tmp_path, capsys):
    out = tmp_path / "api.json"
    src = ROOT / "workflows" / "txt2img_two_loras.json"
    assert run_cli(["export-comfy", str(src), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == "5 nodes: 5 exported as 9 ComfyUI nodes"
    api = json.loads(out.read_text())
    assert read_json(api).source == "api" and len(api) == 9
    assert run_cli(["export-comfy", str(src), "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["comfy_nodes"] == 9 and report["per_node"]["gen"]["status"] == "exported"


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert run_cli(["export-comfy", str(bad), "-o", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imagebash: error: ") and "bad.json" in err and "\n" not in err
    assert run_cli(["export-comfy", str(tmp_path / "missing.json")]) == 2
    assert capsys.readouterr().err.strip().endswith("missing.json: no such file")
