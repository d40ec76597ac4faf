"""Guidance on a remote engine, through the real client against `imagebash serve` in a process:
Load Image (a PNG on the laptop) -> Canny -> ControlNet -> Text to Image gives the local pixels
and really steers, the control image goes up once by hash, and a ControlNet the server cannot
use is one line naming its node while the graph's other branch still finishes.

The tiny ControlNet is a diffusers folder (the only form a tiny net loads in: a single file is
read with the family's full-size config). It sits in the server's models folder under the name
the workflow uses, or, named by a local path the server lacks, goes up as a tree of blobs; a
single .safetensors ControlNet is uploaded and adopted by hash (tested with one the server then
cannot load).
"""

from __future__ import annotations

import hashlib
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageDraw

from app.engine import EngineSettings, events
from app.engine.client import LocalEngine
from app.graph.model import Graph
from tests.diffusion.conftest import make_graph
from tests.server.conftest import wait_for as wait_until

BASE = {"prompt": "a house", "width": 64, "height": 64, "steps": 2, "seed": 2, "scheduler": "euler"}
CHECKPOINT = "tiny-sd"
NET = "tiny-sd-canny"  # a ControlNet that fits the tiny SD 1.5 model
WIDE = "tiny-wide-canny"  # a ControlNet for a 64-wide text encoder (the tiny model's is 32)
FLAT = "tiny-sd-canny-flat.safetensors"  # NET's weights as one diffusers-layout file


@pytest.fixture(scope="module")
def nets(tmp_path_factory, tiny_sd_controlnet):
    """{name: path} of the tiny ControlNets: the shared one (random weights from the tiny U-Net's
    config), one for a 64-wide text encoder, and the first's weights as one diffusers-layout file."""
    from diffusers import ControlNetModel

    root = tmp_path_factory.mktemp("nets")
    shutil.copytree(tiny_sd_controlnet, root / NET)
    net_config = ControlNetModel.load_config(str(tiny_sd_controlnet))
    wide = ControlNetModel.from_config({**net_config, "cross_attention_dim": 64})
    wide.save_pretrained(str(root / WIDE), safe_serialization=True)
    shutil.copyfile(root / NET / "diffusion_pytorch_model.safetensors", root / FLAT)
    return {NET: root / NET, WIDE: root / WIDE, FLAT: root / FLAT}


def _run_locally(graph: Graph, output_dir: pathlib.Path) -> dict[str, np.ndarray]:
    local = LocalEngine(settings=EngineSettings(device="cpu"))
    try:
        _h, seen = _follow(local, graph, output_dir)
        assert not seen[-1].failed and not seen[-1].error
        return _outputs(local, seen)
    finally:
        local.shutdown()


def _shape_png(path: pathlib.Path) -> pathlib.Path:
    """A 64x64 PNG of a white rectangle and disc on black: Canny traces their outlines."""
    im = PILImage.new("RGB", (64, 64), "black")
    draw = ImageDraw.Draw(im)
    draw.rectangle((8, 10, 30, 50), fill="white")
    draw.ellipse((34, 20, 58, 44), fill=(200, 200, 200))
    im.save(path)
    return path


def _models_folder(root: pathlib.Path, tiny_sd_dir: pathlib.Path, *controlnets: pathlib.Path) -> pathlib.Path:
    """A models folder holding the tiny SD model (as `tiny-sd`) and these ControlNet folders."""
    shutil.copytree(tiny_sd_dir, root / "checkpoints" / CHECKPOINT)
    for net in controlnets:
        shutil.copytree(net, root / "controlnet" / net.name)
    return root


def _graph(png: pathlib.Path, branches: dict[str, dict]) -> Graph:
    """Load Image -> Canny shared by one ControlNet -> Text to Image branch per entry of
    `branches` (`cn_<b>` -> `gen_<b>`, with those ControlNet parameters), plus `plain`, the same
    Text to Image without a ControlNet."""
    nodes = {"load": ("load_model", {"checkpoint": CHECKPOINT}),
             "img": ("imagebash.image.load", {"path": str(png)}),
             "edges": ("imagebash.guidance.canny", {}),
             "plain": ("txt2img", BASE)}
    links = ["img.image>edges.image", "load.model>plain.model"]
    for b, params in branches.items():
        nodes[f"cn_{b}"] = ("imagebash.guidance.controlnet", params)
        nodes[f"gen_{b}"] = ("txt2img", BASE)
        links += [f"load.model>cn_{b}.model", f"edges.image>cn_{b}.image", f"cn_{b}.model>gen_{b}.model"]
    return make_graph(nodes, links)


def _follow(client, graph, output_dir, timeout=120.0):
    seen: list[events.Event] = []
    unsubscribe = client.subscribe(seen.append, throttle=False)
    handle = client.submit(graph, None, output_dir)
    assert wait_until(lambda: handle.done, timeout), "the run did not finish"
    unsubscribe()
    return handle, [e for e in seen if e.run_id == handle.run_id]


def _outputs(client, seen, port="image") -> dict[str, np.ndarray]:
    return {e.node_id: np.asarray(client.fetch(e.outputs[port].ref)) for e in seen
            if isinstance(e, events.NodeFinished) and port in e.outputs}


def _counting_uploads(client) -> list[str]:
    """The names of the files `client` sends from now on."""
    sent: list[str] = []
    real = client.upload

    def upload(path, sha, size, progress=None):
        sent.append(pathlib.Path(path).name)
        return real(path, sha, size, progress)

    client.upload = upload
    return sent


def _sha(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_canny_and_a_controlnet_remotely_give_the_local_pixels_and_the_image_goes_up_once(
        server, remote, tmp_path, monkeypatch, tiny_sd_dir, nets):
    _models_folder(tmp_path / "models", tiny_sd_dir, nets[NET])  # the server's models folder
    monkeypatch.setenv("IMAGEBASH_MODELS", str(_models_folder(tmp_path / "here", tiny_sd_dir, nets[NET])))
    png = _shape_png(tmp_path / "shape.png")
    graph = _graph(png, {"cn": {"controlnet": NET, "strength": 1.0}})

    here = _run_locally(graph, tmp_path / "local")

    client = remote()
    sent = _counting_uploads(client)
    _h, seen = _follow(client, graph, tmp_path / "remote")
    end = seen[-1]
    assert isinstance(end, events.RunFinished) and not end.failed and not end.error, \
        [e.message for e in seen if isinstance(e, events.NodeFailed)]
    there = _outputs(client, seen)
    assert set(there) >= {"img", "edges", "plain", "gen_cn"}
    assert there["edges"].max() == 1.0 and there["edges"].mean() < 0.2  # the shape's outlines, traced
    np.testing.assert_array_equal(there["edges"], here["edges"])  # OpenCV on the same PNG: exact
    for nid in ("plain", "gen_cn"):  # (equal on CPU too; the margin is for the server's torch threads)
        assert there[nid].shape == here[nid].shape == (1, 64, 64, 3)
        np.testing.assert_allclose(there[nid], here[nid], rtol=0, atol=1e-5, err_msg=nid)
    assert np.abs(there["gen_cn"] - there["plain"]).mean() > 1e-3  # the net really steered

    # the control image reached the server by upload, under its hash and its own name
    sha = _sha(png)
    assert sent == ["shape.png"]
    blob = server.data_dir / "blobs" / sha[:2] / sha
    assert blob.read_bytes() == png.read_bytes()
    assert (server.data_dir / "inputs" / sha / "shape.png").read_bytes() == png.read_bytes()

    # a new client (no memory of what it sent) and a changed strength: it runs again, uploads nothing
    again = remote()
    resent = _counting_uploads(again)
    graph.set_param("cn_cn", "strength", 0.5)
    _h, seen2 = _follow(again, graph, tmp_path / "remote2")
    assert not seen2[-1].failed and not seen2[-1].error
    assert resent == []
    weaker = _outputs(again, seen2)["gen_cn"]
    assert np.abs(weaker - there["gen_cn"]).mean() > 1e-5  # the new strength did run, on the server


def test_a_controlnet_the_server_cannot_use_is_one_line_naming_its_node(server, remote, tmp_path, monkeypatch,
                                                                      tiny_sd_dir, nets):
    """A single-file ControlNet goes up by hash and is adopted, but is in diffusers layout (the
    server cannot load it); one on the server is for another text width. Each fails its node
    in one line, and the branch without a ControlNet still finishes."""
    _models_folder(tmp_path / "models", tiny_sd_dir, nets[WIDE])
    monkeypatch.setenv("IMAGEBASH_MODELS", str(tmp_path / "here"))  # nothing here: names are the server's
    png = _shape_png(tmp_path / "shape.png")
    graph = _graph(png, {"flat": {"controlnet": str(nets[FLAT])}, "wide": {"controlnet": WIDE}})
    client = remote()
    sent = _counting_uploads(client)
    _h, seen = _follow(client, graph, tmp_path / "out")
    end = seen[-1]
    assert isinstance(end, events.RunFinished) and not end.error
    failed = {e.node_id: e for e in seen if isinstance(e, events.NodeFailed)}
    assert set(end.failed) >= {"cn_flat", "cn_wide"} and "plain" not in end.failed
    assert failed["cn_flat"].upstream is None and failed["cn_wide"].upstream is None
    assert failed["gen_flat"].upstream == "cn_flat" and failed["gen_wide"].upstream == "cn_wide"
    for nid, words in (("cn_flat", FLAT), ("cn_wide", "does not fit")):
        message = failed[nid].message
        assert words in message and "\n" not in message.strip(), (nid, message)
    assert "its text width is 64, the model's 32" in failed["cn_wide"].message
    finished = _outputs(client, seen)
    assert finished["plain"].shape == (1, 64, 64, 3)  # the other branch finished

    # the single file went up once, by hash, and is the server's ControlNet now
    assert sorted(sent) == sorted(["shape.png", FLAT])
    adopted = tmp_path / "models" / "controlnet" / FLAT
    assert _sha(adopted) == _sha(nets[FLAT])
    assert FLAT in client.models("controlnet")
    again = remote()
    resent = _counting_uploads(again)
    _h, seen2 = _follow(again, graph, tmp_path / "out2")
    assert resent == [] and {"cn_flat", "cn_wide"} <= set(seen2[-1].failed)


def test_a_controlnet_the_server_lacks_and_the_client_cannot_upload_stops_the_run_in_one_line(
        remote, tmp_path, monkeypatch, tiny_sd_dir, nets):
    _models_folder(tmp_path / "models", tiny_sd_dir)  # the server has the model, not the net
    monkeypatch.setenv("IMAGEBASH_MODELS", str(tmp_path / "here"))
    png = _shape_png(tmp_path / "shape.png")
    client = remote()
    handle, seen = _follow(client, _graph(png, {"cn": {"controlnet": "nowhere-canny.safetensors"}}), tmp_path / "out")
    (end,) = [e for e in seen if not isinstance(e, events.NodeProgress)]  # (uploading shape.png)
    # nothing ran: a missing model is found before anything is queued
    expected = "node 'cn_cn' port 'controlnet': controlnet 'nowhere-canny.safetensors' is missing on the server"
    assert isinstance(end, events.RunFinished) and expected in end.error, end.error
    assert "\n" not in end.error
    assert all(j["id"] != handle.run_id for j in client.jobs()["jobs"])


def test_a_local_controlnet_folder_the_server_lacks_goes_up_as_a_tree_once(remote, server, tmp_path, monkeypatch,
                                                                            tiny_sd_dir, nets):
    _models_folder(tmp_path / "models", tiny_sd_dir)  # the server has the model, not the net
    monkeypatch.setenv("IMAGEBASH_MODELS", str(_models_folder(tmp_path / "here", tiny_sd_dir)))
    png = _shape_png(tmp_path / "shape.png")
    graph = _graph(png, {"cn": {"controlnet": str(nets[NET]), "strength": 1.0}})
    here = _run_locally(graph, tmp_path / "local")
    client = remote()
    sent = _counting_uploads(client)
    _h, seen = _follow(client, graph, tmp_path / "remote")
    assert not seen[-1].failed and not seen[-1].error, [e.message for e in seen if isinstance(e, events.NodeFailed)]
    np.testing.assert_allclose(_outputs(client, seen)["gen_cn"], here["gen_cn"], rtol=0, atol=1e-5)
    files = sorted(p.name for p in nets[NET].rglob("*") if p.is_file())
    assert sorted(sent) == sorted(["shape.png", *files])  # the folder's files, each once
    trees = [p for p in (server.data_dir / "trees").iterdir() if p.is_dir()]
    assert any(sorted(q.name for q in t.rglob("*") if q.is_file()) == files for t in trees)
    again = remote()
    resent = _counting_uploads(again)
    _h, seen2 = _follow(again, graph, tmp_path / "remote2")
    assert not seen2[-1].failed and resent == []
