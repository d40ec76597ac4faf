"""Frame Interpolate: frame counts, the flow midframe beats a blend, no interpolation across cuts,
and the RIFE architecture loads real-layout weights strictly and only as plain tensors."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
import torch

from app.engine import Engine
from app.graph import io
from nodes.registry import Registry, node
from nodes.types import Video
from nodes.video import interpolate as interp
from nodes.video.audio import AudioSegment, AudioTrack


def moving_square(n: int = 9, size: int = 64, fps: float = 12.0, sound: bool = False) -> Video:
    """A blurred random-texture square moving 3 px right and 1 px down per frame over a smooth background."""
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.random((20, 20, 3)).astype(np.float32), (0, 0), 1.0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bg = np.stack([0.3 + 0.2 * np.sin(xx / 9), 0.3 + 0.2 * np.cos(yy / 11),
                   0.4 + 0.1 * np.sin((xx + yy) / 13)], -1).astype(np.float32)

    def frame(i: int) -> np.ndarray:
        f = bg.copy()
        x, y = 8 + 3 * i, 20 + i
        f[y:y + 20, x:x + 20] = tex
        return f[None]

    audio = AudioTrack((AudioSegment("nowhere.wav", duration=n / fps),)) if sound else None
    return Video(n, fps, (size, size), frame, audio=audio)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def test_flow_midframe_is_closer_to_the_real_frame_than_a_blend():
    v = moving_square()
    a, truth, b = v.frame(0), v.frame(1), v.frame(2)
    mid = interp.flow_midframe(a, b, 0.5)
    assert mid.shape == a.shape and mid.dtype == np.float32
    assert psnr(mid, truth) > psnr((a + b) / 2, truth) + 6.0


@pytest.mark.parametrize("m", [2, 3])
def test_frame_count_fps_and_source_frames_kept(m):
    src = moving_square(n=7, sound=True)
    out = interp.interpolate(src, multiplier=m)
    assert len(out) == (7 - 1) * m + 1 and out.fps == pytest.approx(12.0 * m)
    for i in range(7):
        np.testing.assert_array_equal(out.frame(i * m), src.frame(i))
    assert out.audio.duration == pytest.approx(len(out) / out.fps)
    assert out.audio.segments[0].start == 0 and out.audio.segments[0].speed == 1.0


def test_in_betweens_are_made_on_demand():
    pulled: list[int] = []
    src = moving_square(n=20)
    clip = Video(20, 12.0, (64, 64), lambda i: pulled.append(i) or src.frame(i))
    out = interp.interpolate(clip, multiplier=4)
    assert pulled == []
    out.frame(4 * 7 + 1)
    out.frame(4 * 7 + 2)
    assert sorted(pulled) == [7, 8]  # one pair, read once for its in-betweens


def test_no_interpolation_across_a_scene_cut():
    shot = moving_square(n=3)
    other = np.full((1, 64, 64, 3), 0.95, np.float32)
    clip = Video(5, 12.0, (64, 64), lambda i: shot.frame(i) if i < 3 else other)
    out = interp.interpolate(clip, multiplier=4)
    for k in (9, 10, 11):  # between source frames 2 and 3: the cut
        np.testing.assert_array_equal(out.frame(k), clip.frame(2))
    assert not np.array_equal(out.frame(5), clip.frame(1))  # inside the shot: a real in-between
    never = interp.interpolate(clip, multiplier=2, scene_threshold=1.0)
    assert not np.array_equal(never.frame(5), clip.frame(2))


def test_bad_inputs_say_which_port():
    with pytest.raises(ValueError, match="Frame Interpolate: 'multiplier' must be an integer from 2 to 8"):
        interp.interpolate(moving_square(), multiplier=9)
    with pytest.raises(ValueError, match="Frame Interpolate: the clip on 'video' has no frames"):
        interp.interpolate(Video(0, 12.0, (8, 8), lambda i: None))
    with pytest.raises(ValueError, match="Frame Interpolate: the clip on 'video' has a frame rate of 0 fps"):
        interp.interpolate(Video(2, 0.0, (8, 8), lambda i: np.zeros((1, 8, 8, 3), np.float32)))
    with pytest.raises(ValueError, match=r"method 'rife' needs a RIFE 4\.25/4\.26 weights file on 'weights'"):
        interp.interpolate(moving_square(), method="rife")


# --- RIFE ------------------------------------------------------------------------------------------
class _Evil:
    """Unpickling this (plain pickle) would create a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.fixture(scope="module")
def rife_files(tmp_path_factory):
    from safetensors.torch import save_file

    from nodes.video import rife

    torch.manual_seed(0)
    net = rife.IFNet(head_channels=4)
    sd = {k: v.contiguous() for k, v in net.state_dict().items()}
    d = tmp_path_factory.mktemp("rife")
    save_file(sd, str(d / "rife425.safetensors"))
    torch.save({"module." + k: v for k, v in sd.items()}, str(d / "flownet.pkl"))  # as DDP training saves it
    torch.save({k: v for k, v in sd.items() if not k.startswith("block4.")}, str(d / "partial.pkl"))
    torch.save(net, str(d / "whole_module.pkl"))  # a pickled object, not a state dict
    torch.save([torch.zeros(2)], str(d / "list.pkl"))
    (d / "evil.pkl").write_bytes(pickle.dumps(_Evil(str(d / "pwned")), protocol=2))
    return d, sd


def test_rife_arch_has_practical_rife_names():
    from nodes.video import rife

    sd = rife.IFNet(4).state_dict()
    assert tuple(sd["block0.conv0.0.0.weight"].shape) == (96, 15, 3, 3)  # 4.25: 7 + 2 * 4 inputs
    assert tuple(sd["block1.conv0.0.0.weight"].shape) == (64, 28, 3, 3)
    assert tuple(sd["block4.lastconv.0.weight"].shape) == (32, 52, 4, 4)
    assert "block2.convblock.7.beta" in sd and "encode.cnn3.weight" in sd
    sd26 = rife.IFNet(16).state_dict()
    assert tuple(sd26["block0.conv0.0.0.weight"].shape) == (96, 39, 3, 3)  # 4.26: 7 + 2 * 16
    assert tuple(sd26["block3.conv0.0.0.weight"].shape) == (32, 52, 3, 3)
    assert rife.build(sd26).head_channels == 16  # the head width is read from the weights


@pytest.mark.parametrize("name", ["rife425.safetensors", "flownet.pkl"])
def test_rife_weights_load_strictly_and_interpolate(rife_files, name):
    from nodes.video import rife

    d, sd = rife_files
    loaded = rife.read_state_dict(d / name)
    assert set(loaded) == set(sd)
    net = rife.build(loaded, name)
    for k, v in net.state_dict().items():
        assert torch.equal(v, sd[k]), k
    clip = moving_square(n=3)
    out = interp.interpolate(clip, multiplier=2, method="rife", weights=d / name)
    assert len(out) == 5 and out.fps == pytest.approx(24.0)
    mid = out.frame(1)
    assert mid.shape == (1, 64, 64, 3) and mid.dtype == np.float32 and np.isfinite(mid).all()
    assert 0.0 <= mid.min() and mid.max() <= 1.0
    np.testing.assert_array_equal(out.frame(2), clip.frame(1))


def test_rife_pads_odd_sizes_and_crops_back(rife_files):
    from nodes.video import rife

    d, _ = rife_files
    net = rife.load(d / "rife425.safetensors")
    a = np.random.default_rng(1).random((1, 40, 70, 3), dtype=np.float32)
    out = rife.interpolate(net, a, a, 0.5)
    assert out.shape == (1, 40, 70, 3)


@pytest.mark.parametrize("name, message", [
    ("partial.pkl",
     r"^Frame Interpolate: 'weights': partial\.pkl: not RIFE 4\.25/4\.26 IFNet weights: 30 missing \(block4\."),
    ("whole_module.pkl", r"^Frame Interpolate: 'weights': whole_module\.pkl: cannot read it as a RIFE state dict"),
    ("list.pkl", r"^Frame Interpolate: 'weights': list\.pkl: not a state dict of tensors \(got list\)$"),
    ("evil.pkl", r"^Frame Interpolate: 'weights': evil\.pkl: cannot read it as a RIFE state dict"),
    ("nothing_here.pkl", r"^Frame Interpolate: 'weights': RIFE weights file not found: .*nothing_here\.pkl$"),
])
def test_bad_rife_weights_give_one_line_naming_the_file(rife_files, name, message):
    d, _ = rife_files
    with pytest.raises((ValueError, FileNotFoundError), match=message) as err:
        interp.interpolate(moving_square(n=2), method="rife", weights=d / name)
    assert "\n" not in str(err.value)
    assert not (d / "pwned").exists()  # nothing was unpickled beyond plain tensors


# --- through the engine -----------------------------------------------------------------------------
def test_interpolate_runs_through_the_engine():
    reg = Registry(load_packs=False)

    @node("test.square_clip", registry=reg, category="test")
    def square_clip(frames: int = 5) -> Video:
        """A moving textured square."""
        return moving_square(n=frames, sound=True)

    reg.add_module(interp)
    doc = {"format": "imagebash/1", "nodes": [
        {"id": "clip", "type": "test.square_clip", "params": {"frames": 4}},
        {"id": "x3", "type": "imagebash.video.interpolate", "params": {"multiplier": 3, "method": "flow"}},
        {"id": "rife", "type": "imagebash.video.interpolate", "params": {"method": "rife", "weights": "/no/such.pkl"}},
    ], "links": [{"from": ["clip", "video"], "to": ["x3", "video"]},
                 {"from": ["clip", "video"], "to": ["rife", "video"]}]}
    result = Engine(reg).run(io.graph_from_dict(doc), ["x3", "rife"])
    out = result.output("x3")
    assert isinstance(out, Video) and len(out) == 10 and out.fps == pytest.approx(36.0)
    assert out.audio.duration == pytest.approx(10 / 36.0)
    assert out.frame(4).shape == (1, 64, 64, 3)
    assert result.errors["rife"] == "Frame Interpolate: 'weights': RIFE weights file not found: /no/such.pkl"
