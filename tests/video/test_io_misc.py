"""Image sequences, the workflow inside saved videos, and one clear line for each bad input."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from app.engine import Engine
from app.graph import io as graph_io
from nodes.registry import default_registry
from nodes.types import Video
from nodes.video import images_to_video, load_sequence, load_video, open_video, save_sequence, save_video
from nodes.video.sequence import natural_key
from tests.image.helpers import FakeContext, make_graph
from tests.video.conftest import make_clip


def _png(path: pathlib.Path, value: float) -> None:
    from PIL import Image as PILImage

    PILImage.fromarray(np.full((8, 8, 3), int(value * 255), np.uint8)).save(path)


def test_natural_sort_and_gap_report(tmp_path):
    for n in (1, 2, 3, 5, 10, 11):
        _png(tmp_path / f"frame{n}.png", n / 20)
    assert sorted(["frame10", "frame2", "frame1"], key=natural_key) == ["frame1", "frame2", "frame10"]
    ctx = FakeContext(tmp_path / "o")
    v = load_sequence(tmp_path, fps=12, ctx=ctx)
    assert len(v) == 6 and v.fps == 12
    assert [round(float(v.frame(i).mean()) * 20) for i in range(6)] == [1, 2, 3, 5, 10, 11]
    assert any("missing" in m and "4, 6, 7, 8, 9" in m for m in ctx.logs)
    glob_v = load_sequence(pathlib.Path(str(tmp_path / "frame1*.png")))
    assert len(glob_v) == 3


def test_load_sequence_empty_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="no image files"):
        load_sequence(tmp_path)


@pytest.mark.parametrize("fmt,ext,tol", [("png", "png", 1 / 255), ("png16", "png", 1 / 65535), ("jpeg", "jpg", 0.05),
                                         ("webp", "webp", 0.05), ("exr", "exr", 1e-3)])
def test_save_sequence_formats(tmp_path, fmt, ext, tol):
    frames = np.random.default_rng(0).random((3, 8, 10, 3), dtype=np.float32)
    frames = np.round(frames * 64) / 64  # smooth enough for jpeg/webp in the mean
    if fmt == "exr":
        frames = frames * np.float32(4.0) - np.float32(0.5)  # float: over 1.0 and below 0.0 are kept
    ctx = FakeContext(tmp_path)
    folder = pathlib.Path(save_sequence(images_to_video(frames), "shot", format=fmt, ctx=ctx))
    assert folder.parent == tmp_path.resolve()
    assert sorted(p.name for p in folder.iterdir()) == [f"shot_{i:05d}.{ext}" for i in (1, 2, 3)]
    back = load_sequence(folder)
    assert abs(float(back.frame(1).mean()) - float(frames[1].mean())) <= tol
    if fmt in ("png16", "exr"):
        assert np.abs(back.frame(2)[0] - frames[2]).max() <= tol
    if fmt == "exr":
        assert float(back.frame(0).max()) > 1.0 and float(back.frame(0).min()) < 0.0
        _check_exr_header(folder / "shot_00001.exr", ["B", "G", "R"])
    again = pathlib.Path(save_sequence(images_to_video(frames), "shot", format=fmt, ctx=ctx))
    assert again != folder  # never overwrites


def _check_exr_header(path: pathlib.Path, channels: list[str]) -> None:
    """What an OpenEXR reader checks first: the magic (bytes 76 2f 31 01, i.e. 20000630 little-endian),
    version 2, the required header attributes and a 32-bit float channel list."""
    import struct

    data = path.read_bytes()
    assert data[:4] == bytes.fromhex("762f3101")
    magic, version = struct.unpack_from("<II", data, 0)
    assert magic == 20000630 and version & 0xFF == 2
    attrs, at = {}, 8
    while data[at] != 0:
        name_end = data.index(b"\0", at)
        type_end = data.index(b"\0", name_end + 1)
        (size,) = struct.unpack_from("<i", data, type_end + 1)
        attrs[data[at:name_end].decode()] = data[type_end + 5: type_end + 5 + size]
        at = type_end + 5 + size
    for required in ("channels", "compression", "dataWindow", "displayWindow", "lineOrder",
                     "pixelAspectRatio", "screenWindowCenter", "screenWindowWidth"):
        assert required in attrs, required
    chl, names, k = attrs["channels"], [], 0
    while chl[k] != 0:
        end = chl.index(b"\0", k)
        names.append(chl[k:end].decode())
        (pixel_type,) = struct.unpack_from("<i", chl, end + 1)
        assert pixel_type == 2  # FLOAT (32-bit)
        k = end + 1 + 16
    assert names == channels


def test_exr_alpha_and_grey_round_trip(tmp_path):
    from nodes.video.sequence import encode_exr, read_exr

    rng = np.random.default_rng(1)
    for c, names in ((4, ["A", "B", "G", "R"]), (1, ["Y"])):
        a = (rng.random((37, 7, c), dtype=np.float32) * 8 - 2).astype(np.float32)  # 3 ZIP chunks
        p = tmp_path / f"c{c}.exr"
        p.write_bytes(encode_exr(a))
        _check_exr_header(p, names)
        assert np.array_equal(read_exr(p), a)  # 32-bit float, lossless ZIP
    seq = pathlib.Path(save_sequence(images_to_video(np.full((2, 4, 4, 4), 0.25, np.float32)), "rgba",
                                     format="exr", ctx=FakeContext(tmp_path)))
    back = load_sequence(seq)
    assert back.channels == 4 and np.allclose(back.frame(1), 0.25)
    bad = tmp_path / "bad.exr"
    bad.write_bytes(b"\x76\x2f\x31\x01" + b"\0" * 40)
    with pytest.raises(ValueError) as e:
        read_exr(bad)
    _one_line(e.value, str(bad), "EXR")


def test_workflow_round_trip_metadata_then_sidecar(tmp_path):
    src = make_clip(tmp_path / "src.mp4", n=6)
    g = make_graph({"clip": ("video.load", {"path": str(src)}),
                    "inv": ("image.invert", {}),
                    "save": ("video.save", {"filename_prefix": "wf"})},
                   ["clip.video -> inv.image", "inv.image -> save.video"])
    result = Engine(default_registry()).run(g, output_dir=tmp_path / "out")
    assert result.ok, result.errors
    out = pathlib.Path(result.output("save"))
    assert graph_io.carries_workflow(out)
    back = graph_io.load(out)
    assert set(back.nodes) == set(g.nodes)
    side = out.with_suffix(".json")
    assert json.loads(side.read_text())["nodes"]
    # a copy of the video without metadata still opens through the sidecar
    bare = out.with_name("bare.mp4")
    save_video(load_video(out).video, "x", embed_workflow=False, ctx=FakeContext(tmp_path / "b"))
    bare.write_bytes(next((tmp_path / "b").glob("x_*.mp4")).read_bytes())
    with pytest.raises(graph_io.WorkflowFormatError, match="carries no imagebash workflow"):
        graph_io.load(bare)
    side.rename(bare.with_suffix(".json"))
    assert set(graph_io.load(bare).nodes) == set(g.nodes)


@pytest.mark.parametrize("codec", ["gif", "webp"])
def test_workflow_round_trip_gif_and_webp(tmp_path, codec):
    src = make_clip(tmp_path / "src.mp4", n=4)
    g = make_graph({"clip": ("video.load", {"path": str(src)}),
                    "inv": ("image.invert", {}),
                    "save": ("video.save", {"filename_prefix": "anim", "codec": codec,
                                            "lossless": True})},  # lossy WebP merges near-equal frames
                   ["clip.video -> inv.image", "inv.image -> save.video"])
    result = Engine(default_registry()).run(g, output_dir=tmp_path / "out")
    assert result.ok, result.errors
    out = pathlib.Path(result.output("save"))
    assert out.suffix == f".{codec}"
    out.with_suffix(".json").unlink()  # from the file itself, not the sidecar
    assert graph_io.carries_workflow(out)
    back = graph_io.load(out)
    assert set(back.nodes) == set(g.nodes) and "import_note" not in back.meta
    assert back.nodes["save"].params["codec"] == codec
    clip = open_video(out)
    # frames untouched by the metadata (GIF delays are centiseconds: 24 fps is stored as 4 cs = 25 fps)
    assert len(clip) == 4 and clip.fps == pytest.approx(24, rel=0.01 if codec == "webp" else 0.05)
    from PIL import Image as PILImage

    with PILImage.open(out) as im:
        assert im.n_frames == 4
        if codec == "gif":
            assert json.loads(im.info["comment"])["format"].startswith("imagebash/")
        else:
            assert im.getexif()[0x010E].startswith("imagebash:{")


def test_comfy_webp_still_imports_and_ours_wins(tmp_path):
    from PIL import Image as PILImage

    from tests.comfy import fixtures as F

    comfy = F.write(tmp_path / "comfy.webp", F.comfy_webp(F.sd15_ui(), F.sd15_api()))
    assert graph_io.carries_workflow(comfy)
    g = graph_io.load(comfy)
    assert "imported from ComfyUI" in g.meta["import_note"]
    ours = make_graph({"inv": ("image.invert", {})}, [])
    exif = PILImage.Exif()
    exif[0x0110] = "prompt:" + json.dumps(F.sd15_api())
    exif[0x010F] = "workflow:" + json.dumps(F.sd15_ui())
    exif[0x010E] = "imagebash:" + json.dumps(graph_io.graph_to_dict(ours))
    both = tmp_path / "both.webp"
    PILImage.new("RGB", (8, 8)).save(both, "WEBP", exif=exif, lossless=True)
    back = graph_io.load(both)
    assert set(back.nodes) == {"inv"} and "import_note" not in back.meta
    plain = tmp_path / "plain.webp"
    PILImage.new("RGB", (8, 8)).save(plain, "WEBP")
    assert not graph_io.carries_workflow(plain)


def test_old_workflow_with_legacy_codec_runs(tmp_path):
    src = make_clip(tmp_path / "src.mp4", n=5)
    for codec in ("mp4v", "mjpg", "vp8"):
        g = make_graph({"clip": ("video.load", {"path": str(src)}),
                        "save": ("video.save", {"filename_prefix": codec, "codec": codec, "crf": 18})},
                       ["clip.video -> save.video"])
        result = Engine(default_registry()).run(g, output_dir=tmp_path / "out")
        assert result.ok, result.errors
        assert len(open_video(pathlib.Path(result.output("save")))) == 5


def _one_line(exc: BaseException, *parts: str) -> None:
    msg = str(exc)
    assert msg and "\n" not in msg
    for p in parts:
        assert p in msg, msg


def test_bad_inputs_give_one_line(tmp_path, monkeypatch):
    ctx = FakeContext(tmp_path / "o")
    with pytest.raises(ValueError) as e:
        save_video(Video(0, 24, (8, 8), lambda i: None), "x", ctx=ctx)
    _one_line(e.value, "Save Video", "no frames")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 50)
    with pytest.raises(ValueError) as e:
        load_video(bad)
    _one_line(e.value, str(bad))
    good = make_clip(tmp_path / "good.mp4", n=30)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(ValueError) as e:
        v = load_video(cut).video
        for i in range(len(v)):
            v.frame(i)
    _one_line(e.value, str(cut))
    clip = images_to_video(np.zeros((2, 8, 8, 3), np.float32))
    for fps in (0.0001, 5000):
        with pytest.raises(ValueError) as e:
            save_video(clip, "x", fps=fps if fps > 1 else 0, ctx=ctx) if fps > 1 else save_video(
                Video(2, 0, (8, 8), clip.frame), "x", fps=-1, ctx=ctx)
        _one_line(e.value, "Save Video", "fps")
    import av

    monkeypatch.setattr(av, "codecs_available", set(av.codecs_available) - {"libsvtav1"})
    with pytest.raises(ValueError) as e:
        save_video(clip, "x", codec="av1", ctx=ctx)
    _one_line(e.value, "Save Video", "av1", "missing from this")
    assert not list((tmp_path / "o").glob("x_*"))  # nothing left behind


def test_load_image_reads_an_exr_from_save_image_sequence(tmp_path):
    from nodes.image.io import read_image

    frames = np.linspace(-0.25, 2.5, 2 * 6 * 5 * 3, dtype=np.float32).reshape(2, 6, 5, 3)
    folder = pathlib.Path(save_sequence(images_to_video(frames), "hdr", format="exr", ctx=FakeContext(tmp_path)))
    img = read_image(sorted(folder.glob("*.exr"))[1])
    assert img.shape == (6, 5, 3) and np.abs(img - frames[1]).max() < 1e-3 and img.max() > 2.0
