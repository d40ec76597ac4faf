"""The flicker metrics (warping error, luma jump), the Flicker Metrics node and `imagebash video-metrics`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nodes.types import Video
from nodes.video.metrics import flicker_stats, mean_luma_jump, warping_error
from tests.benchmarks.flicker_rows import add_flicker, moving_clip, run_node, texture


def _still(frames: int = 6, size: int = 64) -> np.ndarray:
    return np.repeat(texture(size, size, seed=4)[None], frames, axis=0)


def test_still_clip_has_no_warping_error_and_flicker_adds_some():
    still = Video.from_batch(_still())
    assert warping_error(still) < 1e-9
    flicker = Video.from_batch(add_flicker(_still()))
    assert warping_error(flicker) > 1e-4
    assert warping_error(flicker, still) > 1e-4


def test_moving_clip_error_is_near_its_floor_and_flicker_is_far_above():
    clean = Video.from_batch(moving_clip(8, 96))
    flick = Video.from_batch(add_flicker(clean.to_batch()))
    stats = flicker_stats(flick, clean)
    assert stats.floor is not None and stats.floor < 2e-4
    assert stats.ratio is not None and stats.ratio > 10
    assert warping_error(clean) == pytest.approx(stats.floor, rel=1e-6)
    assert stats.frames == 8 and stats.luma_jump > 0.01


def test_one_frame_clip_and_large_frames():
    assert warping_error(Video.from_batch(_still(1))) == 0.0
    big = Video.from_batch(np.repeat(texture(600, 1200, seed=1)[None], 2, 0))  # measured at <= 540p
    assert warping_error(big) < 1e-8


def test_mean_luma_jump_is_the_mean_change_of_mean_luma():
    levels = [0.2, 0.4, 0.2, 0.3]
    clip = Video.from_batch(np.stack([np.full((8, 8, 3), v, np.float32) for v in levels]))
    assert mean_luma_jump(clip) == pytest.approx((0.2 + 0.2 + 0.1) / 3, abs=1e-5)
    assert flicker_stats(clip).luma_jump == pytest.approx(mean_luma_jump(clip), abs=1e-6)


def test_flicker_metrics_node_in_the_engine():
    clean = Video.from_batch(moving_clip(6, 64))
    flick = Video.from_batch(add_flicker(clean.to_batch()))
    err = run_node("imagebash.video.flicker_metrics", {}, {"video": flick, "reference": clean}, port="warp_error")
    assert err == pytest.approx(warping_error(flick, clean), rel=1e-6)
    report = run_node("imagebash.video.flicker_metrics", {}, {"video": flick, "reference": clean}, port="report")
    assert "warp_error" in report and "floor" in report and "ratio" in report and "frames 6" in report
    jump = run_node("imagebash.video.flicker_metrics", {}, {"video": flick}, port="luma_jump")
    assert jump == pytest.approx(mean_luma_jump(flick), abs=1e-6)


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    from nodes.video import write_video

    d = tmp_path_factory.mktemp("clips")
    clean = moving_clip(10, 64)
    write_video(Video.from_batch(clean, 12.0), d / "clean.mp4")
    write_video(Video.from_batch(add_flicker(clean), 12.0), d / "flicker.mp4")
    return d / "flicker.mp4", d / "clean.mp4"


def test_cli_prints_one_line_and_json(clip_files, capsys):
    from app.cli import main

    flick, clean = clip_files
    assert main(["video-metrics", str(flick), "--reference", str(clean)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("warp_error=") and "frames=10" in out[0]
    ratio = float(out[0].split("ratio=")[1].split()[0])
    assert ratio > 2  # the flicker is far above the clean clip's floor
    assert main(["video-metrics", str(flick), "--reference", str(clean), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["frames"] == 10 and d["ratio"] == pytest.approx(d["warp_error"] / d["floor"])
    assert d["luma_jump"] > 0
    assert main(["video-metrics", str(clean), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["floor"] is None and d["ratio"] is None and d["warp_error"] < 1e-3


def test_cli_missing_or_unreadable_file_is_one_line_and_exit_2(tmp_path, capsys, clip_files):
    from app.cli import main

    assert main(["video-metrics", str(tmp_path / "nope.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.mp4" in err[0] and "no such file" in err[0]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    assert main(["video-metrics", str(clip_files[0]), "--reference", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.mp4" in err[0]
