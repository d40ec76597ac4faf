"""Load Image, Load Folder and Save Image on real files."""

from __future__ import annotations

import json
import os
import pathlib
import re

import numpy as np
import pytest
from PIL import Image as PILImage

from app.engine import Engine
from app.graph.io import PNG_WORKFLOW_KEY, load, workflow_from_png
from nodes.image.io import PROVENANCE_KEY, ImageFormat, SizeMismatch, load_folder, load_image, save_image
from nodes.registry import default_registry
from tests.image.helpers import make_graph


def _write(path: pathlib.Path, arr: np.ndarray, **kw) -> pathlib.Path:
    mode = {3: "RGB", 4: "RGBA"}.get(arr.shape[-1], "L") if arr.ndim == 3 else "L"
    PILImage.fromarray(arr, mode).save(path, **kw)
    return path


def _pattern(h: int = 20, w: int = 30) -> np.ndarray:
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None]
    a[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    a[..., 2] = 77
    return a


@pytest.mark.parametrize("ext", ["png", "tiff", "webp", "bmp"])
def test_load_lossless_formats_exact(tmp_path, ext):
    arr = _pattern()
    kw = {"lossless": True} if ext == "webp" else {}
    path = _write(tmp_path / f"a.{ext}", arr, **kw)
    img, mask = load_image(path)
    assert img.shape == (1, 20, 30, 3) and img.dtype == np.float32
    assert np.array_equal((img[0] * 255 + 0.5).astype(np.uint8), arr)
    assert mask.shape == (1, 20, 30) and np.all(mask == 1)


def test_load_jpeg_close(tmp_path):
    arr = _pattern()
    img, _ = load_image(_write(tmp_path / "a.jpg", arr, quality=98))
    assert np.abs(img[0] * 255 - arr).mean() < 3


def test_load_keeps_alpha_as_fourth_channel_and_mask(tmp_path):
    arr = np.zeros((8, 8, 4), np.uint8)
    arr[..., :3] = 200
    arr[:, :4, 3] = 255
    arr[:, 4:, 3] = 64
    img, mask = load_image(_write(tmp_path / "a.png", arr))
    assert img.shape == (1, 8, 8, 4)
    assert np.allclose(mask[0, :, :4], 1) and np.allclose(mask[0, :, 4:], 64 / 255)
    assert np.allclose(img[0, ..., :3], 200 / 255)


def test_load_gray_and_16bit(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    img, _ = load_image(_write(tmp_path / "g.png", gray))
    assert img.shape == (1, 8, 8, 3)
    assert np.allclose(img[0, ..., 0], gray / 255) and np.allclose(img[0, ..., 2], gray / 255)
    deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    PILImage.fromarray(deep).save(tmp_path / "d.png")
    img16, _ = load_image(tmp_path / "d.png")
    assert np.allclose(img16[0, ..., 1], deep / 65535, atol=1e-6)


def _png16(path: pathlib.Path, arr16: np.ndarray, orientation: int = 1) -> pathlib.Path:
    """A 16-bit RGB(A) PNG written by OpenCV, with an eXIf chunk when an orientation is given."""
    import zlib

    import cv2

    ok, data = cv2.imencode(".png", arr16[..., [2, 1, 0, 3][: arr16.shape[-1]]])
    assert ok
    data = data.tobytes()
    if orientation != 1:
        exif = PILImage.Exif()
        exif[0x0112] = orientation
        payload = exif.tobytes()
        payload = payload[6:] if payload.startswith(b"Exif\x00\x00") else payload
        chunk = len(payload).to_bytes(4, "big") + b"eXIf" + payload + \
            zlib.crc32(b"eXIf" + payload).to_bytes(4, "big")
        data = data[:33] + chunk + data[33:]  # right after the signature and IHDR
    path.write_bytes(data)
    return path


def test_load_keeps_16_bit_colour(tmp_path):
    rng = np.random.default_rng(3)
    deep = (rng.integers(0, 256, (6, 9, 4)) * 256 + rng.integers(0, 256, (6, 9, 4))).astype(np.uint16)
    deep[0, 0, :3] = (1000, 1001, 1002)  # one 8-bit step is 257: these three differ only in 16 bits
    img, _ = load_image(_png16(tmp_path / "rgb16.png", deep[..., :3]))
    assert img.shape == (1, 6, 9, 3) and img.dtype == np.float32
    np.testing.assert_allclose(img[0], deep[..., :3] / 65535, atol=1e-6)
    assert len(set(img[0, 0, 0].tolist())) == 3
    rgba, mask = load_image(_png16(tmp_path / "rgba16.png", deep))
    np.testing.assert_allclose(rgba[0], deep / 65535, atol=1e-6)
    np.testing.assert_allclose(mask[0], deep[..., 3] / 65535, atol=1e-6)


@pytest.mark.parametrize("orientation", range(2, 9))
def test_16_bit_files_get_the_exif_orientation_pillow_gives_8_bit_ones(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    small = rng.integers(0, 256, (5, 8, 3)).astype(np.uint8)
    deep = np.minimum(small.astype(np.int64) * 257 + rng.integers(0, 100, small.shape), 65535).astype(np.uint16)
    im = PILImage.fromarray(small)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(tmp_path / "eight.png", exif=exif.tobytes())
    want, _ = load_image(tmp_path / "eight.png")
    got, _ = load_image(_png16(tmp_path / "deep.png", deep, orientation))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=0.5 / 255)


def test_load_applies_exif_orientation(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:5, :5] = 255  # white mark in the top-left corner of the stored pixels
    im = PILImage.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "cam.jpg", exif=exif.tobytes(), quality=100)
    img, _ = load_image(tmp_path / "cam.jpg")
    assert img.shape == (1, 40, 20, 3)
    # after a clockwise quarter turn the stored top-left corner is at the top right
    assert img[0, :4, -4:].mean() > 0.9 and img[0, :4, :4].mean() < 0.1


def test_missing_file_names_path(tmp_path):
    missing = tmp_path / "nope" / "x.png"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_image(missing)


def test_not_an_image_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("hello")
    with pytest.raises(ValueError, match=r"bad\.png"):
        load_image(bad)


def test_load_folder_natural_order_and_resize(tmp_path, ctx):
    for i, v in ((10, 30), (2, 20), (1, 10)):
        _write(tmp_path / f"frame{i}.png", np.full((6, 8, 3), v, np.uint8))
    _write(tmp_path / "frame3.png", np.full((12, 16, 3), 40, np.uint8))  # different size
    (tmp_path / "notes.txt").write_text("ignored")
    img, mask = load_folder(tmp_path, ctx=ctx)
    assert img.shape == (4, 6, 8, 3) and mask.shape == (4, 6, 8)
    assert np.allclose(img[:, 0, 0, 0] * 255, [10, 20, 40, 30], atol=0.5)
    with pytest.raises(ValueError, match=r"frame3.png is 16x12, but frame1.png is 8x6"):
        load_folder(tmp_path, size_mismatch=SizeMismatch.ERROR)
    only = load_folder(tmp_path, pattern="frame1*", limit=1).image
    assert only.shape[0] == 1 and np.allclose(only[0, 0, 0, 0] * 255, 10, atol=0.5)


def test_load_folder_mixed_alpha_gets_alpha(tmp_path):
    _write(tmp_path / "a.png", np.full((4, 4, 3), 255, np.uint8))
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 128
    _write(tmp_path / "b.png", rgba)
    img, mask = load_folder(tmp_path)
    assert img.shape == (2, 4, 4, 4)
    assert np.allclose(mask[0], 1) and np.allclose(mask[1], 128 / 255)


def test_load_folder_empty_or_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no images"):
        load_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="folder not found"):
        load_folder(tmp_path / "missing")


def test_save_counter_never_overwrites(tmp_path, ctx, rng):
    img = rng.random((2, 8, 8, 3)).astype(np.float32)
    out = ctx.output_dir
    paths = save_image(img, "shot", ctx=ctx).splitlines()
    assert [pathlib.Path(p).name for p in paths] == ["shot_00001.png", "shot_00002.png"]
    before = pathlib.Path(paths[0]).read_bytes()
    (out / "shot_00007.png").write_bytes(b"user file")
    again = save_image(img[:1], "shot", ctx=ctx)
    assert pathlib.Path(again).name == "shot_00008.png"
    assert pathlib.Path(paths[0]).read_bytes() == before
    assert (out / "shot_00007.png").read_bytes() == b"user file"
    back, _ = load_image(pathlib.Path(paths[1]))
    assert np.abs(back[0] - img[1]).max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize("prefix", ["../../etc/x", "/etc/passwd", "..", "a/../../b", "c:\\win\\x", "sub/dir/name"])
def test_save_stays_inside_output_dir(tmp_path, ctx, prefix):
    path = pathlib.Path(save_image(np.zeros((1, 4, 4, 3), np.float32), prefix, ctx=ctx)).resolve()
    root = ctx.output_dir.resolve()
    assert root in path.parents
    assert path.is_file()
    assert not (tmp_path.parent / "etc").exists()


@pytest.mark.parametrize("fmt,ext", [(ImageFormat.JPEG, ".jpg"), (ImageFormat.WEBP, ".webp")])
def test_save_jpeg_webp_drop_or_keep_alpha(ctx, fmt, ext):
    img = np.zeros((1, 16, 16, 4), np.float32)
    img[..., 0] = 1.0
    img[..., 3] = 0.5
    path = pathlib.Path(save_image(img, "x", format=fmt, quality=90, ctx=ctx))
    assert path.suffix == ext
    with PILImage.open(path) as im:
        assert im.mode == ("RGB" if fmt is ImageFormat.JPEG else "RGBA")
        assert np.asarray(im.convert("RGB"))[..., 0].mean() > 240


def test_saved_png_embeds_workflow_and_provenance(tmp_path):
    src = tmp_path / "in.png"
    _write(src, _pattern())
    g = make_graph({"load": ("image.load", {"path": str(src)}), "inv": ("image.invert", {}),
                    "save": ("image.save", {"filename_prefix": "wf"})},
                   ["load.image -> inv.image", "inv.image -> save.image"])
    engine = Engine(default_registry())
    result = engine.run(g, output_dir=tmp_path / "out")
    assert result.ok, result.errors
    png = pathlib.Path(result.output("save"))
    doc = workflow_from_png(png)
    assert doc is not None and {n["id"] for n in doc["nodes"]} == {"load", "inv", "save"}
    reopened = load(png)
    assert reopened.nodes["inv"].type == "imagebash.image.invert" and len(reopened.links) == 2
    with PILImage.open(png) as im:
        assert PNG_WORKFLOW_KEY in im.text
    pixels, _ = load_image(png)
    assert np.abs(pixels[0] * 255 - (255 - _pattern().astype(np.float32))).max() <= 1


def test_saved_png_carries_ancestor_annotations(ctx):
    ctx.workflow = {"format": "imagebash/1", "nodes": [], "links": []}
    ctx.provenance = {"model": ["sd15:abc123"], "loras": [["style.safetensors", 0.8, "def456"]]}
    path = save_image(np.zeros((1, 4, 4, 3), np.float32), "p", ctx=ctx)
    with PILImage.open(path) as im:
        assert json.loads(im.text[PROVENANCE_KEY]) == ctx.provenance
        assert json.loads(im.text[PNG_WORKFLOW_KEY]) == ctx.workflow
    plain = save_image(np.zeros((1, 4, 4, 3), np.float32), "p", embed_workflow=False, ctx=ctx)
    with PILImage.open(plain) as im:
        assert PNG_WORKFLOW_KEY not in im.text and PROVENANCE_KEY not in im.text


def test_editing_the_file_invalidates_the_load_cache(tmp_path):
    src = tmp_path / "in.png"
    _write(src, np.full((4, 4, 3), 10, np.uint8))
    g = make_graph({"load": ("image.load", {"path": str(src)})}, [])
    engine = Engine(default_registry())
    first = engine.run(g, targets=["load"]).output("load", "image")
    _write(src, np.full((4, 4, 3), 200, np.uint8))
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second = engine.run(g, targets=["load"])
    assert second.status["load"] == "done"
    assert np.allclose(first[0, 0, 0, 0] * 255, 10)
    assert np.allclose(second.output("load", "image")[0, 0, 0, 0] * 255, 200)


def test_concurrent_saves_never_share_a_name(tmp_path):
    import threading

    from tests.image.helpers import FakeContext

    img = np.zeros((1, 4, 4, 3), np.float32)
    paths: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        p = save_image(img, "same", ctx=FakeContext(tmp_path / "out"))
        with lock:
            paths.append(p)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 6 and len(list((tmp_path / "out").iterdir())) == 6


def test_png_saved_from_a_workflow_file_reruns_from_the_output_folder(tmp_path):
    from app.graph.io import save

    (tmp_path / "project" / "pics").mkdir(parents=True)
    _write(tmp_path / "project" / "pics" / "in.png", _pattern())
    g = make_graph({"load": ("image.load", {"path": "pics/in.png"}), "save": ("image.save", {})},
                   ["load.image -> save.image"])
    save(g, tmp_path / "project" / "wf.json")
    engine = Engine(default_registry())
    png = engine.run(load(tmp_path / "project" / "wf.json"), output_dir=tmp_path / "out").output("save")
    again = engine.run(load(png), output_dir=tmp_path / "out2")
    assert again.ok, again.errors
    assert np.array_equal(_rgb8(pathlib.Path(again.output("save"))), _pattern())


def _rgb8(path: pathlib.Path) -> np.ndarray:
    with PILImage.open(path) as im:
        return np.asarray(im.convert("RGB"))
