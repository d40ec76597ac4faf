"""ComfyUI workflows in every form, written here so tests need no downloaded files.

Each function returns the data (a dict, or bytes for images); `write` puts one on disk. The UI
graph is the SD 1.5 txt2img graph of the API one, plus the things only a UI file has: reroutes, a
primitive feeding two seeds, a converted widget, a muted and a bypassed node, a group and a note.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

CKPT = "v1-5-pruned-emaonly.safetensors"
POSITIVE = "a photo of a cat, best quality"
NEGATIVE = "blurry, watermark"


def sd15_api() -> dict[str, Any]:
    """ComfyUI's default SD 1.5 txt2img graph in API ("prompt") form."""
    return {
        "3": {"class_type": "KSampler", "_meta": {"title": "KSampler"},
              "inputs": {"seed": 156680208700286, "steps": 20, "cfg": 8.0, "sampler_name": "euler",
                         "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0],
                         "negative": ["7", 0], "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT},
              "_meta": {"title": "Load Checkpoint"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 768, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": POSITIVE, "clip": ["4", 1]},
              "_meta": {"title": "Positive"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }


def _inp(name: str, type_: str, link: int | None, widget: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "type": type_, "link": link}
    if widget:
        entry["widget"] = {"name": widget}
    return entry


def _out(name: str, type_: str, links: list[int]) -> dict[str, Any]:
    return {"name": name, "type": type_, "links": links}


def _node(id_: int, type_: str, pos: tuple[float, float], inputs: list[dict[str, Any]] | None = None,
          outputs: list[dict[str, Any]] | None = None, widgets: list[Any] | None = None,
          **extra: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"id": id_, "type": type_, "pos": list(pos), "size": [315, 100], "flags": {},
                            "order": id_, "mode": 0, "inputs": inputs or [], "outputs": outputs or [],
                            "properties": {"Node name for S&R": type_}}
    if widgets is not None:
        node["widgets_values"] = widgets
    node.update(extra)
    return node


def sd15_ui() -> dict[str, Any]:
    """The SD 1.5 graph in UI (litegraph) form with reroutes, a primitive, a group, a note and modes.

    Model goes 4 -> Reroute 10 -> Reroute 11 -> both KSamplers; VAE goes 4 -> Reroute 14 -> 8.
    PrimitiveNode 13 (value 42) feeds the converted `seed` of KSampler 3 and of KSampler 12 (bypassed).
    PreviewImage 15 is muted. The first KSampler's `steps` is converted too, but left unconnected.
    """
    nodes = [
        _node(4, "CheckpointLoaderSimple", (26, 474), [],
              [_out("MODEL", "MODEL", [20]), _out("CLIP", "CLIP", [3, 5]), _out("VAE", "VAE", [21])],
              [CKPT], title="Load Checkpoint"),
        _node(10, "Reroute", (400, 300), [_inp("", "*", 20)], [_out("", "MODEL", [22])]),
        _node(11, "Reroute", (450, 300), [_inp("", "*", 22)], [_out("", "MODEL", [1, 30])]),
        _node(6, "CLIPTextEncode", (415, 186), [_inp("clip", "CLIP", 3)],
              [_out("CONDITIONING", "CONDITIONING", [4, 31])], [POSITIVE], title="Positive",
              color="#232", bgcolor="#353"),
        _node(7, "CLIPTextEncode", (413, 389), [_inp("clip", "CLIP", 5)],
              [_out("CONDITIONING", "CONDITIONING", [6, 32])], [NEGATIVE]),
        _node(5, "EmptyLatentImage", (473, 609), [], [_out("LATENT", "LATENT", [2])], [512, 768, 1]),
        _node(3, "KSampler", (863, 186),
              [_inp("model", "MODEL", 1), _inp("positive", "CONDITIONING", 4), _inp("negative", "CONDITIONING", 6),
               _inp("latent_image", "LATENT", 2), _inp("seed", "INT", 40, widget="seed"),
               _inp("steps", "INT", None, widget="steps")],
              [_out("LATENT", "LATENT", [7, 33])], [156680208700286, "randomize", 20, 8, "euler", "normal", 1]),
        _node(12, "KSampler", (1200, 186),
              [_inp("model", "MODEL", 30), _inp("positive", "CONDITIONING", 31),
               _inp("negative", "CONDITIONING", 32), _inp("latent_image", "LATENT", 33),
               _inp("seed", "INT", 41, widget="seed")],
              [_out("LATENT", "LATENT", [])], [0, "fixed", 10, 7, "dpmpp_2m", "karras", 0.5],
              mode=4, title="Second pass"),
        _node(13, "PrimitiveNode", (600, 50), [],
              [{"name": "INT", "type": "INT", "links": [40, 41], "widget": {"name": "seed"}}], [42, "fixed"],
              title="Seed"),
        _node(14, "Reroute", (700, 500), [_inp("", "*", 21)], [_out("", "VAE", [23])]),
        _node(8, "VAEDecode", (1209, 188), [_inp("samples", "LATENT", 7), _inp("vae", "VAE", 23)],
              [_out("IMAGE", "IMAGE", [9, 34])]),
        _node(9, "SaveImage", (1451, 189), [_inp("images", "IMAGE", 9)], [], ["ComfyUI"]),
        _node(15, "PreviewImage", (1451, 500), [_inp("images", "IMAGE", 34)], [], mode=2),
        _node(16, "Note", (30, 30), [], [], ["Prompt goes in the green node."], title="Read me"),
    ]
    links = [
        [1, 11, 0, 3, 0, "MODEL"], [2, 5, 0, 3, 3, "LATENT"], [3, 4, 1, 6, 0, "CLIP"], [4, 6, 0, 3, 1, "CONDITIONING"],
        [5, 4, 1, 7, 0, "CLIP"], [6, 7, 0, 3, 2, "CONDITIONING"], [7, 3, 0, 8, 0, "LATENT"], [9, 8, 0, 9, 0, "IMAGE"],
        [20, 4, 0, 10, 0, "MODEL"], [21, 4, 2, 14, 0, "VAE"], [22, 10, 0, 11, 0, "MODEL"], [23, 14, 0, 8, 1, "VAE"],
        [30, 11, 0, 12, 0, "MODEL"], [31, 6, 0, 12, 1, "CONDITIONING"], [32, 7, 0, 12, 2, "CONDITIONING"],
        [33, 3, 0, 12, 3, "LATENT"], [34, 8, 0, 15, 0, "IMAGE"], [40, 13, 0, 3, 4, "INT"], [41, 13, 0, 12, 4, "INT"],
    ]
    return {"last_node_id": 16, "last_link_id": 41, "nodes": nodes, "links": links,
            "groups": [{"title": "Prompt", "bounding": [400, 100, 480, 420], "color": "#3f789e", "font_size": 24}],
            "config": {}, "extra": {"ds": {"scale": 1, "offset": [0, 0]}}, "version": 0.4}


def group_node_ui() -> dict[str, Any]:
    """A legacy group node "workflow>Encode" (checkpoint + text encode) feeding two outer nodes.

    Inside: 0 CheckpointLoaderSimple, 1 CLIPTextEncode fed by 0's CLIP. The instance's outputs are
    MODEL, VAE (from 0) and CONDITIONING (from 1): the CLIP output is only used inside, so hidden.
    """
    inner = [
        {"id": 1, "type": "CheckpointLoaderSimple", "pos": [0, 0], "size": [315, 98], "mode": 0, "inputs": [],
         "outputs": [_out("MODEL", "MODEL", []), _out("CLIP", "CLIP", [1]), _out("VAE", "VAE", [])],
         "widgets_values": ["saved.safetensors"]},
        {"id": 2, "type": "CLIPTextEncode", "pos": [400, 0], "size": [400, 200], "mode": 0,
         "inputs": [_inp("clip", "CLIP", None)], "outputs": [_out("CONDITIONING", "CONDITIONING", [])],
         "widgets_values": ["saved text"]},
    ]
    nodes = [
        _node(1, "workflow>Encode", (100, 100), [],
              [_out("MODEL", "MODEL", []), _out("VAE", "VAE", [2]), _out("CONDITIONING", "CONDITIONING", [1])],
              [CKPT, "a dog"]),
        _node(2, "ConditioningZeroOut", (600, 100), [_inp("conditioning", "CONDITIONING", 1)],
              [_out("CONDITIONING", "CONDITIONING", [])]),
        _node(3, "VAEDecode", (600, 300), [_inp("samples", "LATENT", 3), _inp("vae", "VAE", 2)],
              [_out("IMAGE", "IMAGE", [])]),
        _node(4, "EmptyLatentImage", (100, 400), [], [_out("LATENT", "LATENT", [3])], [512, 512, 1]),
    ]
    links = [[1, 1, 2, 2, 0, "CONDITIONING"], [2, 1, 1, 3, 1, "VAE"], [3, 4, 0, 3, 0, "LATENT"]]
    group = {"nodes": inner, "links": [[0, 1, 1, 0, 1, "CLIP"]], "external": []}
    return {"nodes": nodes, "links": links, "groups": [], "extra": {"groupNodes": {"Encode": group}}, "version": 0.4}


SUBGRAPH_ID = "5f3a8c1e-0000-4000-8000-00000000abcd"


def subgraph_ui() -> dict[str, Any]:
    """A subgraph "Encode text" (one CLIPTextEncode, its text promoted) used twice, fed by a checkpoint."""
    sub = {
        "id": SUBGRAPH_ID, "name": "Encode text", "version": 1,
        "inputs": [{"id": "in-0", "name": "clip", "type": "CLIP", "linkIds": [1]}],
        "outputs": [{"id": "out-0", "name": "CONDITIONING", "type": "CONDITIONING", "linkIds": [2]}],
        "nodes": [{"id": 1, "type": "CLIPTextEncode", "pos": [0, 0], "size": [400, 200], "mode": 0,
                   "inputs": [_inp("clip", "CLIP", 1)], "outputs": [_out("CONDITIONING", "CONDITIONING", [2])],
                   "widgets_values": ["inner default"]}],
        "links": [{"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "CLIP"},
                  {"id": 2, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0,
                   "type": "CONDITIONING"}],
        "groups": [], "widgets": [],
    }
    nodes = [
        _node(4, "CheckpointLoaderSimple", (0, 0), [], [_out("MODEL", "MODEL", []), _out("CLIP", "CLIP", [10, 12]),
                                                       _out("VAE", "VAE", [])], [CKPT]),
        _node(7, SUBGRAPH_ID, (400, 0), [_inp("clip", "CLIP", 10)], [_out("CONDITIONING", "CONDITIONING", [11])],
              ["promoted text"], properties={"proxyWidgets": [["1", "text"]]}),
        _node(9, SUBGRAPH_ID, (400, 300), [_inp("clip", "CLIP", 12)], [_out("CONDITIONING", "CONDITIONING", [13])],
              mode=2),
        _node(8, "ConditioningZeroOut", (800, 0), [_inp("conditioning", "CONDITIONING", 11)],
              [_out("CONDITIONING", "CONDITIONING", [])]),
        _node(10, "ConditioningZeroOut", (800, 300), [_inp("conditioning", "CONDITIONING", 13)],
              [_out("CONDITIONING", "CONDITIONING", [])]),
    ]
    links = [
        {"id": 10, "origin_id": 4, "origin_slot": 1, "target_id": 7, "target_slot": 0, "type": "CLIP"},
        {"id": 11, "origin_id": 7, "origin_slot": 0, "target_id": 8, "target_slot": 0, "type": "CONDITIONING"},
        {"id": 12, "origin_id": 4, "origin_slot": 1, "target_id": 9, "target_slot": 0, "type": "CLIP"},
        {"id": 13, "origin_id": 9, "origin_slot": 0, "target_id": 10, "target_slot": 0, "type": "CONDITIONING"},
    ]
    return {"nodes": nodes, "links": links, "groups": [], "definitions": {"subgraphs": [sub]}, "version": 0.4}


def big_ui(n: int = 500) -> dict[str, Any]:
    """A UI workflow of `n` nodes for the benchmark: one checkpoint, then chains of text encodes and combines."""
    nodes = [_node(1, "CheckpointLoaderSimple", (0, 0), [], [_out("MODEL", "MODEL", []),
                                                             _out("CLIP", "CLIP", []), _out("VAE", "VAE", [])], [CKPT])]
    links: list[list[Any]] = []
    prev: int | None = None
    for node_id in range(2, n + 1):
        link = len(links) + 1
        if node_id % 2 == 0:  # a text encode fed by the checkpoint's CLIP
            links.append([link, 1, 1, node_id, 0, "CLIP"])
            nodes.append(_node(node_id, "CLIPTextEncode", (node_id * 10.0, 0), [_inp("clip", "CLIP", link)],
                               [_out("CONDITIONING", "CONDITIONING", [])], [f"prompt {node_id}"]))
        else:  # combine the previous combine (or encode) with the encode just before
            links.append([link, node_id - 1, 0, node_id, 0, "CONDITIONING"])
            inputs = [_inp("conditioning_1", "CONDITIONING", link), _inp("conditioning_2", "CONDITIONING", None)]
            if prev is not None:
                links.append([link + 1, prev, 0, node_id, 1, "CONDITIONING"])
                inputs[1]["link"] = link + 1
            nodes.append(_node(node_id, "ConditioningCombine", (node_id * 10.0, 300), inputs,
                               [_out("CONDITIONING", "CONDITIONING", [])], []))
            prev = node_id
    return {"nodes": nodes, "links": links, "groups": [], "version": 0.4}


INFOTEXT = (
    "masterpiece, a castle on a hill <lora:add_detail:0.6>, sunset <lora:film_grain:0.8:0.4>\n"
    "Negative prompt: lowres, bad anatomy\n"
    'Steps: 24, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 1234567, Size: 512x768, '
    'Model hash: 6ce0161689, Model: dreamshaper_8, Denoising strength: 0.45, Clip skip: 2, '
    'Hires upscale: 2, Hires steps: 12, Hires upscaler: Latent, '
    'Lora hashes: "add_detail: 7c6bad76eb54, film_grain: 1b2c3d4e5f60", Version: v1.9.4'
)


def png_bytes(text_chunks: dict[str, str], compressed: bool = False, size: tuple[int, int] = (8, 8)) -> bytes:
    """A small PNG with the given text chunks (zTXt/iTXt when `compressed`), as ComfyUI and A1111 write."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in text_chunks.items():
        if compressed:
            info.add_itxt(key, value, zip=True)
        else:
            info.add_text(key, value)
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 100, 50)).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def comfy_png(workflow: dict[str, Any] | None = None, prompt: dict[str, Any] | None = None,
              compressed: bool = False) -> bytes:
    """A PNG as ComfyUI's SaveImage writes it: "prompt" (API) and "workflow" (UI) text chunks."""
    chunks = {}
    if prompt is not None:
        chunks["prompt"] = json.dumps(prompt)
    if workflow is not None:
        chunks["workflow"] = json.dumps(workflow)
    return png_bytes(chunks, compressed=compressed)


def a1111_png(parameters: str = INFOTEXT) -> bytes:
    """A PNG as A1111 / Forge write it: one "parameters" text chunk."""
    return png_bytes({"parameters": parameters})


def comfy_webp(workflow: dict[str, Any] | None = None, prompt: dict[str, Any] | None = None) -> bytes:
    """A WebP as ComfyUI's SaveAnimatedWEBP writes it: EXIF 0x0110 "prompt:{...}", 0x010F "workflow:{...}"."""
    from PIL import Image

    exif = Image.Exif()
    if prompt is not None:
        exif[0x0110] = "prompt:" + json.dumps(prompt)
    if workflow is not None:
        exif[0x010F] = "workflow:" + json.dumps(workflow)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, "WEBP", exif=exif, lossless=True)
    return buf.getvalue()


def write(path: Path, data: dict[str, Any] | bytes | str) -> Path:
    """Write a fixture (dict as JSON, text, or image bytes) to `path` and return it."""
    if isinstance(data, dict):
        path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    elif isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def ui_json(prompt: dict[str, Any]) -> dict[str, Any]:
    """Write an API prompt of core nodes as the UI file ComfyUI would save for it (widget order by INPUT_TYPES)."""
    from app.comfy.widgets import CONTROL, UI_ONLY, WIDGETS

    nodes: list[dict[str, Any]] = []
    links: list[list[Any]] = []
    outputs: dict[str, dict[int, list[int]]] = {}
    for x, (node_id, entry) in enumerate(prompt.items()):
        class_type, values = entry["class_type"], entry.get("inputs", {})
        names = WIDGETS[class_type]  # KeyError: only core nodes have a known widget order
        widgets = ["randomize" if n == CONTROL else "image" if n in UI_ONLY else values.get(n) for n in names]
        inputs = []
        for key, value in values.items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                link_id = len(links) + 1
                links.append([link_id, int(value[0]), value[1], int(node_id), len(inputs), "*"])
                outputs.setdefault(str(value[0]), {}).setdefault(value[1], []).append(link_id)
                entry_in: dict[str, Any] = {"name": key, "type": "*", "link": link_id}
                if key in names:
                    entry_in["widget"] = {"name": key}
                inputs.append(entry_in)
        title = (entry.get("_meta") or {}).get("title")
        node = _node(int(node_id), class_type, (x * 350.0, 100.0), inputs, [], widgets)
        if title:
            node["title"] = title
        nodes.append(node)
    for node in nodes:
        slots = outputs.get(str(node["id"]), {})
        node["outputs"] = [_out(f"out{s}", "*", slots.get(s, [])) for s in range(max(slots, default=-1) + 1)]
    return {"nodes": nodes, "links": links, "groups": [], "extra": {}, "version": 0.4}
