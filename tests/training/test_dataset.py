"""Scanning a training folder: nested and repeat folders, captions, trigger word, bad files."""

from __future__ import annotations

import pytest

from app.training.config import TrainConfig
from app.training.dataset import DatasetError, scan
from tests.training.conftest import write_image


def cfg(**kw) -> TrainConfig:
    return TrainConfig().replace(**{"resolution": 64, **kw})


def test_nested_repeat_folders_captions_and_trigger(tmp_path):
    root = tmp_path / "set"
    write_image(root / "10_mystyle" / "a.png", 0, caption="a red house")
    write_image(root / "10_mystyle" / "deeper" / "b.jpg", 1, caption="a blue  car\n", caption_ext=".caption")
    write_image(root / "loose" / "c.webp", 2)  # no caption, no repeat folder
    write_image(root / "3_other" / "d.png", 3, caption="zzstyle, already triggered")
    ds = scan(root, cfg(trigger="zzstyle"))
    by_name = {it.path.name: it for it in ds.items}
    assert set(by_name) == {"a.png", "b.jpg", "c.webp", "d.png"}
    assert by_name["a.png"].caption == "zzstyle, a red house"
    assert by_name["a.png"].repeats == 10
    assert by_name["b.jpg"].caption == "zzstyle, a blue car"  # .caption read, whitespace folded
    assert by_name["b.jpg"].repeats == 10  # the nearest N_name folder above counts
    assert by_name["c.webp"].caption == "zzstyle" and by_name["c.webp"].repeats == 1
    assert by_name["d.png"].caption == "zzstyle, already triggered"  # trigger not doubled
    assert ds.num_images_with_repeats == 10 + 10 + 1 + 3
    lines = ds.warnings()
    assert lines[0] == "3 of 4 images have a caption"
    assert any("no caption" in line and "c.webp" in line for line in lines)
    freq = ds.tag_frequency()
    assert freq["10_mystyle"] == {"zzstyle": 2, "a red house": 1, "a blue car": 1}
    assert freq["loose"] == {"zzstyle": 1}


def test_txt_wins_over_caption_and_default_caption(tmp_path):
    root = tmp_path / "set"
    write_image(root / "a.png", 0, caption="from txt")
    (root / "a.caption").write_text("from caption")
    write_image(root / "b.png", 1)
    ds = scan(root, cfg(default_caption="a painting"))
    caps = {it.path.name: it.caption for it in ds.items}
    assert caps == {"a.png": "from txt", "b.png": "a painting"}


def test_uncaptioned_image_in_repeat_folder_uses_the_concept_name(tmp_path):
    write_image(tmp_path / "5_oil_paint" / "a.png", 0)
    (item,) = scan(tmp_path, cfg()).items
    assert item.caption == "oil paint" and item.repeats == 5


def test_unreadable_and_tiny_images_are_skipped_and_reported(tmp_path):
    write_image(tmp_path / "good.png", 0, caption="ok")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    write_image(tmp_path / "tiny.png", 1, size=(32, 80))
    ds = scan(tmp_path, cfg())
    assert [it.path.name for it in ds.items] == ["good.png"]
    reasons = {p.name: why for p, why in ds.skipped}
    assert "unreadable" in reasons["broken.png"]
    assert "too small (32x80" in reasons["tiny.png"]
    assert any("skipped broken.png" in line for line in ds.warnings())


def test_images_smaller_than_their_bucket_are_reported(tmp_path):
    write_image(tmp_path / "small.png", 0, size=(100, 100))
    write_image(tmp_path / "big.png", 1, size=(300, 300))
    lines = scan(tmp_path, cfg(resolution=256)).warnings()
    assert any("1 images are smaller than their bucket" in line and "small.png, 100x100 for 256x256" in line
               for line in lines), lines


def test_truncated_image_is_skipped(tmp_path):
    good = write_image(tmp_path / "good.png", 0)
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    ds = scan(tmp_path, cfg())
    assert [p.name for p, _ in ds.skipped] == ["cut.png"]


def test_empty_missing_and_all_bad_folders_are_one_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError, match=r"no images in .*empty"):
        scan(empty, cfg())
    with pytest.raises(DatasetError, match="training folder not found"):
        scan(tmp_path / "nope", cfg())
    bad = tmp_path / "bad"
    write_image(bad / "tiny.png", 0, size=(16, 16))
    with pytest.raises(DatasetError, match=r"no usable image in .*bad: all 1 were skipped \(tiny.png: too small"):
        scan(bad, cfg())


def test_pixels_are_cropped_into_the_bucket_not_stretched(tmp_path):
    import numpy as np

    from app.training.dataset import load_pixels

    p = write_image(tmp_path / "wide.png", 0, size=(200, 100))
    (item,) = scan(tmp_path, cfg(resolution=128)).items
    assert item.bucket == (192, 64)  # of the 128-px buckets, 3:1 is nearest to 2:1 in log space
    px = load_pixels(item)
    assert tuple(px.shape) == (3, item.bucket[1], item.bucket[0])
    assert -1.0 <= float(px.min()) and float(px.max()) <= 1.0
    assert p.exists() and np.isfinite(px.numpy()).all()
