"""Reading ComfyUI workflows in every form: what a user loading their file would see come out."""

from __future__ import annotations

import copy
import json
import time

import pytest

from app.comfy import formats
from app.comfy.formats import ComfyFormatError, read, read_text
from app.comfy.infotext import sampler_and_scheduler
from app.comfy.model import MODE_BYPASS, MODE_MUTED, MODE_NORMAL, ComfyLink
from tests.comfy import fixtures as F


def _ui(data: dict) -> formats.ComfyWorkflow:
    return read_text(json.dumps(data), name="graph.json")


def _one_line(exc: pytest.ExceptionInfo[ComfyFormatError], name: str) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"{name}: ")
    return message


# --------------------------------------------------------------------------- API form


def test_api_prompt_becomes_nodes_and_links():
    wf = read_text(json.dumps(F.sd15_api()))
    assert wf.source == "api"
    assert {n.class_type for n in wf.nodes.values()} >= {"KSampler", "CheckpointLoaderSimple", "SaveImage"}
    ks = wf.nodes["3"]
    assert ks.inputs["seed"] == 156680208700286 and ks.inputs["sampler_name"] == "euler"
    assert ks.inputs["model"] == ComfyLink("4", 0) and ks.inputs["latent_image"] == ComfyLink("5", 0)
    assert wf.nodes["6"].title == "Positive"


def test_api_prompt_wrapped_as_a_prompt_request_body():
    wf = read_text(json.dumps({"prompt": F.sd15_api(), "client_id": "abc"}))
    assert wf.source == "api" and len(wf.nodes) == 7


def test_api_and_ui_forms_of_one_graph_agree_on_values_and_links():
    api, ui = read_text(json.dumps(F.sd15_api())), _ui(F.sd15_ui())
    for node_id in ("4", "5", "6", "7", "8", "9"):
        assert api.nodes[node_id].class_type == ui.nodes[node_id].class_type
        assert api.nodes[node_id].inputs == ui.nodes[node_id].inputs
    api_ks, ui_ks = api.nodes["3"].inputs, ui.nodes["3"].inputs
    for key in ("steps", "cfg", "sampler_name", "scheduler", "denoise", "model", "positive", "negative"):
        assert api_ks[key] == ui_ks[key]


# --------------------------------------------------------------------------- UI form rules


def test_ui_widgets_follow_input_types_order_with_the_seed_control_value():
    ks = _ui(F.sd15_ui()).nodes["12"].inputs
    assert (ks["steps"], ks["cfg"], ks["sampler_name"], ks["scheduler"], ks["denoise"]) == (
        10, 7, "dpmpp_2m", "karras", 0.5)
    assert ks["control_after_generate"] == "fixed"


@pytest.mark.parametrize("values", [
    [7, 20, 8, "euler", "normal", 1],  # before control_after_generate existed
    [7, True, 20, 8, "euler", "normal", 1],  # early 2023: a boolean
])
def test_old_ui_files_without_or_with_boolean_seed_control(values):
    data = F.sd15_ui()
    node = next(n for n in data["nodes"] if n["id"] == 3)
    node["widgets_values"] = values
    node["inputs"] = [i for i in node["inputs"] if i["name"] != "seed"]
    ks = _ui(data).nodes["3"].inputs
    assert ks["seed"] == 7 and ks["steps"] == 20 and ks["sampler_name"] == "euler" and ks["denoise"] == 1


def test_ksampler_advanced_widget_order():
    node = F._node(1, "KSamplerAdvanced", (0, 0), [], [],
                   ["enable", 99, "increment", 30, 6.5, "euler", "karras", 0, 15, "enable"])
    inputs = _ui({"nodes": [node], "links": []}).nodes["1"].inputs
    assert inputs["add_noise"] == "enable" and inputs["noise_seed"] == 99
    assert (inputs["steps"], inputs["start_at_step"], inputs["end_at_step"]) == (30, 0, 15)
    assert inputs["return_with_leftover_noise"] == "enable"


def test_converted_widget_takes_its_link_and_keeps_its_slot():
    data = F.sd15_ui()
    # seed of KSampler 3 is converted and linked from a plain INT node instead of the primitive
    data["nodes"].append(F._node(20, "PrimitiveInt", (0, 0), [], [F._out("INT", "INT", [50])], [5]))
    data["links"].append([50, 20, 0, 3, 4, "INT"])
    next(i for n in data["nodes"] if n["id"] == 3 for i in n["inputs"] if i["name"] == "seed")["link"] = 50
    ks = _ui(data).nodes["3"].inputs
    assert ks["seed"] == ComfyLink("20", 0)
    assert ks["steps"] == 20 and ks["cfg"] == 8  # values after the converted slot did not shift


def test_reroutes_dissolve_into_direct_links_even_in_chains():
    wf = _ui(F.sd15_ui())
    assert not any(n.class_type == "Reroute" for n in wf.nodes.values())
    assert wf.nodes["3"].inputs["model"] == ComfyLink("4", 0)  # through two reroutes
    assert wf.nodes["12"].inputs["model"] == ComfyLink("4", 0)  # the same chain feeds a second target
    assert wf.nodes["8"].inputs["vae"] == ComfyLink("4", 2)


def test_reroute_with_nothing_behind_it_leaves_the_input_unconnected():
    data = F.sd15_ui()
    next(n for n in data["nodes"] if n["id"] == 14)["inputs"][0]["link"] = None
    assert "vae" not in _ui(data).nodes["8"].inputs


def test_primitive_value_goes_into_every_widget_it_feeds():
    wf = _ui(F.sd15_ui())
    assert wf.nodes["3"].inputs["seed"] == 42 and wf.nodes["12"].inputs["seed"] == 42
    assert not any(n.class_type == "PrimitiveNode" for n in wf.nodes.values())


def test_titles_colours_positions_modes_groups_and_notes_are_kept():
    wf = _ui(F.sd15_ui())
    pos = wf.nodes["6"]
    assert (pos.title, pos.color, pos.bgcolor) == ("Positive", "#232", "#353")
    assert (pos.pos, pos.size) == ((415, 186), (315, 100))
    assert wf.nodes["4"].outputs == [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]
    assert wf.nodes["15"].mode == MODE_MUTED and wf.nodes["12"].mode == MODE_BYPASS
    assert wf.nodes["3"].mode == MODE_NORMAL
    assert [(g.title, g.bounding, g.color) for g in wf.groups] == [("Prompt", (400, 100, 480, 420), "#3f789e")]
    assert [(n.text, n.title, n.pos) for n in wf.notes] == [("Prompt goes in the green node.", "Read me", (30, 30))]
    assert "16" not in wf.nodes


def test_markdown_note_and_old_dict_positions():
    node = F._node(1, "MarkdownNote", (0, 0), [], [], ["# Title"])
    node["pos"], node["size"] = {"0": 5, "1": 6}, {"0": 100, "1": 50}
    wf = _ui({"nodes": [node], "links": []})
    assert wf.notes[0].text == "# Title" and wf.notes[0].pos == (5, 6) and wf.notes[0].size == (100, 50)


def test_dict_links_of_newer_files():
    data = F.sd15_ui()
    data["links"] = [dict(zip(("id", "origin_id", "origin_slot", "target_id", "target_slot", "type"), lk,
                              strict=True)) for lk in data["links"]]
    assert _ui(data).nodes["3"].inputs["model"] == ComfyLink("4", 0)


def test_group_node_expands_into_inner_nodes_with_links_rewired():
    wf = _ui(F.group_node_ui())
    assert "1" not in wf.nodes
    assert wf.nodes["1:0"].class_type == "CheckpointLoaderSimple" and wf.nodes["1:1"].class_type == "CLIPTextEncode"
    assert wf.nodes["1:1"].inputs["clip"] == ComfyLink("1:0", 1)  # the link inside the group
    assert wf.nodes["2"].inputs["conditioning"] == ComfyLink("1:1", 0)  # instance output 2
    assert wf.nodes["3"].inputs["vae"] == ComfyLink("1:0", 2)  # instance output 1 (CLIP is hidden)
    assert wf.nodes["1:0"].inputs["ckpt_name"] == F.CKPT and wf.nodes["1:1"].inputs["text"] == "a dog"


def test_subgraph_expands_per_instance_with_promoted_widgets_and_modes():
    wf = _ui(F.subgraph_ui())
    assert F.SUBGRAPH_ID not in {n.class_type for n in wf.nodes.values()}
    assert wf.nodes["7:1"].inputs == {"text": "promoted text", "clip": ComfyLink("4", 1)}
    assert wf.nodes["9:1"].inputs["text"] == "inner default"
    assert wf.nodes["8"].inputs["conditioning"] == ComfyLink("7:1", 0)
    assert wf.nodes["10"].inputs["conditioning"] == ComfyLink("9:1", 0)
    assert wf.nodes["9:1"].mode == MODE_MUTED and wf.nodes["7:1"].mode == MODE_NORMAL


def test_unknown_node_keeps_widgets_by_input_names_or_by_position():
    named = F._node(1, "FancyUpscale", (0, 0), [F._inp("image", "IMAGE", None),
                                                F._inp("factor", "FLOAT", None, widget="factor"),
                                                F._inp("seed", "INT", None, widget="seed")],
                    [], [1.5, 3, "randomize"], properties={"cnr_id": "fancy-pack"})
    bare = F._node(2, "MysteryNode", (0, 0), [], [], ["a", 2])
    wf = _ui({"nodes": [named, bare], "links": []})
    assert wf.nodes["1"].inputs == {"factor": 1.5, "seed": 3, "control_after_generate": "randomize"}
    assert wf.nodes["1"].pack == "fancy-pack"
    assert wf.nodes["2"].inputs == {"widget_0": "a", "widget_1": 2}
    assert any("MysteryNode" in w for w in wf.warnings)


def test_load_image_upload_widget_is_dropped_and_older_node_versions_align():
    nodes = [F._node(1, "LoadImage", (0, 0), [], [], ["cat.png", "image"]),
             F._node(2, "VAEDecodeTiled", (0, 0), [], [], [512]),
             F._node(3, "UNETLoader", (0, 0), [], [], ["flux1-dev.safetensors", "fp8_e4m3fn"])]
    wf = _ui({"nodes": nodes, "links": []})
    assert wf.nodes["1"].inputs == {"image": "cat.png"}
    assert wf.nodes["2"].inputs == {"tile_size": 512} and not wf.warnings
    assert wf.nodes["3"].inputs == {"unet_name": "flux1-dev.safetensors", "weight_dtype": "fp8_e4m3fn"}


def test_widget_list_too_long_is_a_warning_and_too_short_names_the_node():
    long = F._node(1, "EmptyLatentImage", (0, 0), [], [], [512, 512, 1, "extra"])
    wf = _ui({"nodes": [long], "links": []})
    assert wf.nodes["1"].inputs["batch_size"] == 1 and any("node 1 (EmptyLatentImage)" in w for w in wf.warnings)
    short = F._node(5, "KSampler", (0, 0), [], [], [1, "fixed", 20])
    with pytest.raises(ComfyFormatError) as exc:
        _ui({"nodes": [short], "links": []})
    assert "node 5 (KSampler)" in _one_line(exc, "graph.json")


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("compressed", [False, True])
def test_png_prefers_the_ui_workflow_chunk(tmp_path, compressed):
    path = F.write(tmp_path / "out.png", F.comfy_png(F.sd15_ui(), F.sd15_api(), compressed=compressed))
    wf = read(path)
    assert wf.source == "png:ui" and wf.nodes["6"].pos == (415, 186) and wf.groups


def test_png_with_only_a_prompt_chunk_reads_the_api_form():
    wf = read(F.comfy_png(prompt=F.sd15_api()), name="api.png")
    assert wf.source == "png:api" and wf.nodes["3"].inputs["seed"] == 156680208700286


def test_webp_exif_workflow_and_prompt():
    assert read(F.comfy_webp(F.sd15_ui(), F.sd15_api())).source == "webp:ui"
    assert read(F.comfy_webp(prompt=F.sd15_api())).nodes["9"].class_type == "SaveImage"


def test_png_whose_chunk_is_not_json_is_one_line():
    with pytest.raises(ComfyFormatError) as exc:
        read(F.png_bytes({"prompt": "{not json"}), name="bad.png")
    assert "'prompt'" in _one_line(exc, "bad.png")


def test_png_without_any_workflow_is_one_line():
    with pytest.raises(ComfyFormatError) as exc:
        read(F.png_bytes({"Software": "GIMP"}), name="plain.png")
    assert "no ComfyUI workflow" in _one_line(exc, "plain.png")


# --------------------------------------------------------------------------- A1111 infotext


def test_a1111_png_becomes_a_txt2img_graph_with_loras_clip_skip_and_hires():
    wf = read(F.a1111_png(), name="a1111.png")
    assert wf.source == "png:a1111"
    by_type: dict[str, list] = {}
    for node in wf.nodes.values():
        by_type.setdefault(node.class_type, []).append(node)
    ckpt = by_type["CheckpointLoaderSimple"][0]
    assert ckpt.inputs == {"ckpt_name": "dreamshaper_8.safetensors", "_model_hash": "6ce0161689"}
    loras = by_type["LoraLoader"]
    assert [(n.inputs["lora_name"], n.inputs["strength_model"], n.inputs["strength_clip"]) for n in loras] == [
        ("add_detail.safetensors", 0.6, 0.6), ("film_grain.safetensors", 0.4, 0.8)]
    assert loras[1].inputs["model"] == ComfyLink(loras[0].id, 0)
    assert by_type["CLIPSetLastLayer"][0].inputs["stop_at_clip_layer"] == -2
    pos, neg = by_type["CLIPTextEncode"]
    assert pos.inputs["text"] == "masterpiece, a castle on a hill, sunset"
    assert neg.inputs["text"] == "lowres, bad anatomy"
    latent = by_type["EmptyLatentImage"][0].inputs
    assert (latent["width"], latent["height"]) == (512, 768)
    first, hires = by_type["KSampler"]
    assert (first.inputs["seed"], first.inputs["steps"], first.inputs["cfg"]) == (1234567, 24, 6.5)
    assert (first.inputs["sampler_name"], first.inputs["scheduler"]) == ("dpmpp_2m", "karras")
    assert first.inputs["denoise"] == 1.0
    up = by_type["LatentUpscaleBy"][0]
    assert up.inputs["scale_by"] == 2.0 and up.inputs["upscale_method"] == "nearest-exact"
    assert hires.inputs["latent_image"] == ComfyLink(up.id, 0)
    assert (hires.inputs["denoise"], hires.inputs["steps"]) == (0.45, 12)
    assert by_type["SaveImage"] and by_type["VAEDecode"][0].inputs["samples"] == ComfyLink(hires.id, 0)


@pytest.mark.parametrize(("name", "schedule", "expected"), [
    ("DPM++ 2M Karras", None, ("dpmpp_2m", "karras")),
    ("Euler a", None, ("euler_ancestral", "normal")),
    ("DPM++ SDE Karras", None, ("dpmpp_sde", "karras")),
    ("DDIM", None, ("ddim", "ddim_uniform")),
    ("UniPC", None, ("uni_pc", "normal")),
    ("LCM", None, ("lcm", "normal")),
    ("DPM++ 2M SDE Karras", None, ("dpmpp_2m_sde", "karras")),
    ("Heun", None, ("heun", "normal")),
    ("DPM2", None, ("dpm_2", "normal")),
    ("DPM++ 2M", "Karras", ("dpmpp_2m", "karras")),  # A1111 1.6+: Schedule type apart
    ("Euler", "SGM Uniform", ("euler", "sgm_uniform")),
])
def test_a1111_sampler_names(name, schedule, expected):
    assert sampler_and_scheduler(name, schedule, []) == expected


def test_infotext_text_file_quoted_values_and_plain_run():
    text = 'a cat\nSteps: 10, Sampler: Euler a, CFG scale: 5, Seed: 9, Size: 640x384, Model: "my, model"'
    wf = read_text(text, name="params.txt")
    types = [n.class_type for n in wf.nodes.values()]
    assert "LatentUpscaleBy" not in types and "LoraLoader" not in types and "CLIPSetLastLayer" not in types
    assert wf.nodes["1"].inputs["ckpt_name"] == "my, model.safetensors"
    assert types.count("KSampler") == 1 and wf.source == "a1111"


# --------------------------------------------------------------------------- bad input, one line each


@pytest.mark.parametrize(("text", "fragment"), [
    ('{"3": {"class_type": "KSampler", "inputs": {', "truncated JSON"),
    ("[1, 2, 3]", "not a list"),
    ('"just a string"', "JSON object"),
    ('{"foo": 1, "bar": [1]}', "unknown format"),
    ("{}", "empty"),
    ("", "empty"),
    ("hello there, not a workflow", "invalid JSON"),
    ("[" * 100_000 + "]" * 100_000, "nested"),
])
def test_bad_text_is_one_clear_line(text, fragment):
    with pytest.raises(ComfyFormatError) as exc:
        read_text(text, name="bad.json")
    assert fragment in _one_line(exc, "bad.json")


def test_link_to_a_missing_node_names_it():
    api = F.sd15_api()
    api["8"]["inputs"]["vae"] = ["99", 2]
    with pytest.raises(ComfyFormatError) as exc:
        read_text(json.dumps(api), name="api.json")
    assert "missing node 99" in _one_line(exc, "api.json") and "node 8 (VAEDecode)" in str(exc.value)
    ui = F.sd15_ui()
    ui["links"] = [[*lk[:1], 77, *lk[2:]] if lk[0] == 9 else lk for lk in ui["links"]]
    with pytest.raises(ComfyFormatError) as exc:
        _ui(ui)
    assert "missing node 77" in _one_line(exc, "graph.json")


def test_cycle_names_its_nodes():
    api = F.sd15_api()
    api["4"]["inputs"]["ckpt_name"] = ["8", 0]  # the decoder feeds the loader: 4 -> 3 -> 8 -> 4
    with pytest.raises(ComfyFormatError) as exc:
        read_text(json.dumps(api), name="cycle.json")
    message = _one_line(exc, "cycle.json")
    assert "cycle" in message and "4 (CheckpointLoaderSimple)" in message and "8 (VAEDecode)" in message


def test_oversized_file_is_refused_before_parsing(tmp_path, monkeypatch):
    path = tmp_path / "huge.json"
    with path.open("wb") as fh:  # sparse: 100 MB on paper, nothing on disk
        fh.truncate(100 * 1024 * 1024)
    monkeypatch.setattr(formats.Path, "read_bytes", lambda self: pytest.fail("read a file over the limit"))
    with pytest.raises(ComfyFormatError) as exc:
        read(path)
    assert "limit" in _one_line(exc, "huge.json")


def test_unreadable_image_and_binary_garbage_are_one_line(tmp_path):
    with pytest.raises(ComfyFormatError) as exc:
        read(F.comfy_png(prompt=F.sd15_api())[:60], name="cut.png")
    assert "truncated PNG" in _one_line(exc, "cut.png")
    with pytest.raises(ComfyFormatError) as exc:
        read(b"\x00\xff\xfe garbage \x80", name="blob.bin")
    assert "not a ComfyUI workflow" in _one_line(exc, "blob.bin")
    with pytest.raises(ComfyFormatError) as exc:
        read(tmp_path / "absent.json")
    _one_line(exc, "absent.json")


def test_reading_is_pure_data_and_does_not_touch_the_input():
    data = F.subgraph_ui()
    before = copy.deepcopy(data)
    _ui(data)
    formats.read_json(data)
    assert data == before


# --------------------------------------------------------------------------- size


def test_a_500_node_workflow_reads_quickly():
    text = json.dumps(F.big_ui(500))
    start = time.perf_counter()
    wf = read_text(text, name="big.json")
    elapsed = time.perf_counter() - start
    assert len(wf.nodes) == 500 and not wf.warnings
    assert wf.nodes["499"].inputs["conditioning_2"] == ComfyLink("497", 0)
    assert elapsed < 1.0, f"500 nodes took {elapsed:.2f}s"


def test_ui_writer_round_trips_the_api_graph():
    api = read_text(json.dumps(F.sd15_api()))
    ui = _ui(F.ui_json(F.sd15_api()))
    for node_id, node in api.nodes.items():
        got = {k: v for k, v in ui.nodes[node_id].inputs.items() if k != "control_after_generate"}
        assert got == node.inputs and ui.nodes[node_id].title == node.title
