"""Aspect-ratio buckets: odd-sized images land in the bucket that crops least, never stretched."""

from __future__ import annotations

import math

import pytest

from app.training.buckets import fit, kept_fraction, make_buckets, pick_bucket


def test_buckets_for_512_are_multiples_of_64_near_the_area():
    buckets = make_buckets(512)
    assert (512, 512) in buckets and (640, 384) in buckets and (384, 640) in buckets
    for w, h in buckets:
        assert w % 64 == 0 and h % 64 == 0
        assert w * h <= 512 * 512
        assert w * h >= 0.75 * 512 * 512 or max(w, h) == 1024  # area stays near the target
    assert make_buckets(64) == [(64, 64)]


@pytest.mark.parametrize(("size", "bucket"), [
    ((1000, 1000), (512, 512)),
    ((1920, 1080), (640, 384)),   # 16:9 -> 1.667
    ((1080, 1920), (384, 640)),
    ((513, 511), (512, 512)),
    ((800, 600), (576, 448)),     # 4:3 -> 1.286
    ((600, 800), (448, 576)),
    ((4000, 1000), (1024, 256)),  # 4:1
    ((3000, 1000), (832, 256)),   # 3:1 -> 3.25 is nearer in log space than 768x320 (2.4)
    ((333, 777), (320, 768)),     # 0.4286 -> 0.4167 (320x704, 0.4545, crops more)
])
def test_odd_sizes_go_to_the_expected_bucket(size, bucket):
    assert pick_bucket(*size, make_buckets(512)) == bucket


def test_the_chosen_bucket_crops_least():
    buckets = make_buckets(512)
    for size in [(1000, 1000), (1920, 1080), (333, 777), (123, 456), (2048, 1000), (999, 998)]:
        chosen = pick_bucket(*size, buckets)
        best = max(kept_fraction(*size, b) for b in buckets)
        assert math.isclose(kept_fraction(*size, chosen), best)


def test_fit_scales_uniformly_then_crops():
    for size in [(1920, 1080), (333, 777), (64, 64), (513, 511), (100, 300)]:
        b = pick_bucket(*size, make_buckets(512))
        f = fit(*size, b)
        rw, rh = f.resized
        assert rw >= b[0] and rh >= b[1]
        assert abs(rw / rh - size[0] / size[1]) < 0.02 * size[0] / size[1] + 1 / min(rw, rh)  # aspect kept
        assert min(rw - b[0], rh - b[1]) <= 1  # covers tightly on one side
        assert 0 <= f.left <= rw - b[0] and 0 <= f.top <= rh - b[1]


def test_zero_size_is_an_error():
    with pytest.raises(ValueError, match="positive"):
        pick_bucket(0, 10, make_buckets(512))
