"""Control-image preprocessors on real pixels, and Depth on a tiny random-weight Depth Anything."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from nodes.guidance import preprocess as pp
from nodes.guidance.preprocess import canny, depth, pose_image, scribble, thin, tile_blur
from nodes.image.util import to_uint8
from nodes.registry import Registry


def _shapes(h: int = 48, w: int = 64, n: int = 1) -> np.ndarray:
    """Flat colour fields with hard edges (a square and a disc), plus a little noise."""
    rng = np.random.default_rng(7)
    img = np.full((n, h, w, 3), 0.2, np.float32)
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        img[i, 8 + i:30 + i, 10:30] = (0.9, 0.3, 0.1)
        img[i, (yy - 30) ** 2 + (xx - 45) ** 2 < 100] = (0.1, 0.8, 0.9)
    return np.clip(img + rng.normal(0, 0.01, img.shape).astype(np.float32), 0, 1)


def _high_freq(img: np.ndarray) -> float:
    """Mean squared Laplacian: the energy in the finest detail."""
    g = img[..., :3].mean(axis=-1)
    lap = 4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]
    return float((lap ** 2).mean())


# Canny ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("l2", [False, True])
def test_canny_equals_opencv_on_the_8bit_grey_image(l2):
    import cv2

    img = _shapes(n=2)
    out = canny(img, low_threshold=50, high_threshold=150, l2_gradient=l2)
    assert out.shape == img.shape and out.dtype == np.float32
    assert set(np.unique(out)) <= {0.0, 1.0}
    for i in range(2):
        grey = cv2.cvtColor(to_uint8(img[i]), cv2.COLOR_RGB2GRAY)
        want = cv2.Canny(grey, 50, 150, L2gradient=l2)
        assert np.array_equal(out[i, ..., 0] * 255, want.astype(np.float32))  # pixel-exact
        assert np.array_equal(out[i, ..., 0], out[i, ..., 1]) and np.array_equal(out[i, ..., 0], out[i, ..., 2])
    assert 0.01 < out.mean() < 0.3  # thin white lines on a mostly black image
    assert not np.array_equal(out[0], out[1])  # each image of the batch traced on its own


def test_canny_drops_alpha_and_refuses_bad_thresholds():
    rgba = np.concatenate([_shapes(), np.ones((1, 48, 64, 1), np.float32)], axis=-1)
    assert canny(rgba).shape == (1, 48, 64, 3)
    with pytest.raises(ValueError, match=r"low threshold \(200\) must not be above"):
        canny(_shapes(), low_threshold=200, high_threshold=100)
    with pytest.raises(ValueError, match="negative"):
        canny(_shapes(), low_threshold=-1)


def test_canny_runs_through_an_engine_on_images_and_video(tmp_path):
    from app.engine import Engine, EngineSettings
    from app.graph.model import Graph, Link, NodeInstance
    from nodes.types import Video
    from tests.engine.conftest import make_registry

    reg = make_registry()  # its test.noise and test.clip sources, plus this module's nodes
    reg.add_module(pp)
    g = Graph()
    g.add_node(NodeInstance("src", "test.noise", params={"size": 32, "seed": 5}))
    g.add_node(NodeInstance("edges", "imagebash.guidance.canny", params={"low_threshold": 10,
                                                                        "high_threshold": 30}))
    g.connect(Link("src", "image", "edges", "image"))
    g.add_node(NodeInstance("clip", "test.clip", params={"frames": 3, "size": 16}))
    g.add_node(NodeInstance("clip_edges", "imagebash.guidance.canny"))
    g.connect(Link("clip", "video", "clip_edges", "image"))
    result = Engine(reg, EngineSettings(device="cpu")).run(g, targets=["edges", "clip_edges"], output_dir=tmp_path)
    assert result.ok, result.errors
    noise = np.random.default_rng(5).random((1, 32, 32, 3), dtype=np.float32)
    assert np.array_equal(result.output("edges"), canny(noise, low_threshold=10, high_threshold=30))
    frames = result.output("clip_edges")
    assert isinstance(frames, Video) and len(frames) == 3
    assert frames.frame(2).shape == (1, 16, 16, 3) and frames.frame(2).max() == 0  # flat frames: no edges


def test_canny_bad_thresholds_fail_the_node_in_an_engine(tmp_path):
    from app.engine import Engine, EngineSettings
    from app.graph.model import Graph, NodeInstance

    reg = Registry(load_packs=False)
    reg.add_module(pp)
    g = Graph()
    g.add_node(NodeInstance("e", "imagebash.guidance.canny", params={"low_threshold": 2000}))
    with pytest.raises(Exception, match="low_threshold"):
        Engine(reg, EngineSettings(device="cpu")).run(g, targets=["e"], output_dir=tmp_path)


# Tile / Blur ----------------------------------------------------------------------------------


def test_tile_blur_is_smoother_and_the_same_size():
    img = np.random.default_rng(3).random((2, 40, 56, 3), dtype=np.float32)
    for factor, radius in ((4.0, 0.0), (1.0, 3.0), (3.5, 2.0)):
        out = tile_blur(img, factor=factor, blur_radius=radius)
        assert out.shape == img.shape and 0.0 <= out.min() and out.max() <= 1.0
        assert _high_freq(out) < 0.2 * _high_freq(img)
        assert abs(out.mean() - img.mean()) < 0.02  # the layout (average colour) stays
    assert np.allclose(tile_blur(img, factor=1.0, blur_radius=0.0), img)


def test_tile_blur_refuses_a_factor_below_one():
    with pytest.raises(ValueError, match="at least 1"):
        tile_blur(_shapes(), factor=0.5)


# Scribble -------------------------------------------------------------------------------------


def _stroke_mask(n: int = 1) -> np.ndarray:
    m = np.zeros((n, 40, 40), np.float32)
    m[:, 19:22, 5:35] = 1.0  # a 3-px horizontal stroke
    return m


def test_scribble_draws_white_strokes_where_the_mask_is():
    m = _stroke_mask(2)
    out = scribble(m)
    assert out.shape == (2, 40, 40, 3)
    assert np.array_equal(out[..., 0], m) and np.array_equal(out[..., 2], m)


def test_scribble_thickening_widens_and_thinning_narrows():
    m = _stroke_mask()
    base = scribble(m)[0, ..., 0]
    wide = scribble(m, thickness=3)[0, ..., 0]
    assert wide.sum() > base.sum() and (wide >= base).all()
    assert wide[:, 20].sum() == base[:, 20].sum() + 6  # three pixels more on each side
    thin_out = scribble(m, thin_lines=True)[0, ..., 0]
    assert thin_out[:, 20].sum() == 1 and thin_out[20].sum() > 20  # a one-pixel line, still long
    even = scribble(m, thin_lines=True, thickness=2)[0, ..., 0]
    assert even[:, 20].sum() == 5


def test_thinning_keeps_a_disc_connected_and_small():
    yy, xx = np.mgrid[:41, :41]
    disc = (yy - 20) ** 2 + (xx - 20) ** 2 <= 100
    skel = thin(disc)
    assert 0 < skel.sum() < 10 and (skel <= disc).all()


def test_scribble_refuses_an_empty_mask():
    with pytest.raises(ValueError, match="the scribble mask covers nothing"):
        scribble(np.zeros((1, 16, 16), np.float32))
    with pytest.raises(ValueError, match="covers nothing"):
        scribble(np.full((1, 16, 16), 0.3, np.float32), threshold=0.5)


# Pose -----------------------------------------------------------------------------------------


def _skeleton(h: int = 60, w: int = 40) -> np.ndarray:
    img = np.zeros((1, h, w, 3), np.float32)
    img[0, 10:50, 19:21] = (1.0, 0.0, 0.0)  # spine
    img[0, 20:22, 8:32] = (0.0, 0.0, 1.0)  # arms
    return img


def test_pose_resize_pads_and_keeps_aspect_and_black():
    pose = _skeleton()  # 40 wide, 60 high: 2:3
    out = pose_image(pose, width=120, height=120)
    assert out.shape == (1, 120, 120, 3)
    cols = np.nonzero(out[0].max(axis=(0, 2)) > 0)[0]
    rows = np.nonzero(out[0].max(axis=(1, 2)) > 0)[0]
    # scaled by 2 (fits the height), centred: 20 px of black on each side of the 80-px-wide content
    assert out[0, :, :20].max() == 0 and out[0, :, 100:].max() == 0
    assert 0.9 < (np.ptp(rows) + 1) / (np.ptp(cols) + 1) / (40 / 24) < 1.1  # the bones keep their proportions
    assert (out[0].max(axis=-1) <= pp.POSE_DARK).mean() > 0.8
    assert out[0, 60, 60, 0] > 0.9 and out[0, 60, 60, 2] < 0.1  # the red spine in the middle stays red


def test_pose_one_side_scales_keeping_aspect_and_none_keeps_the_size():
    pose = _skeleton()
    assert pose_image(pose, width=80).shape == (1, 120, 80, 3)
    assert pose_image(pose, height=30).shape == (1, 30, 20, 3)
    assert np.array_equal(pose_image(pose), pose)


def test_pose_transparent_is_background_and_photos_are_refused():
    rgba = np.concatenate([np.ones((1, 60, 40, 3), np.float32), np.zeros((1, 60, 40, 1), np.float32)], -1)
    rgba[0, 10:50, 19:21, 3] = 1.0
    out = pose_image(rgba)
    assert out.shape == (1, 60, 40, 3) and out[0, 0, 0].max() == 0 and out[0, 30, 20].min() == 1
    with pytest.raises(ValueError, match="does not look like an OpenPose skeleton"):
        pose_image(np.full((1, 32, 32, 3), 0.6, np.float32))


# Depth ----------------------------------------------------------------------------------------


def _tiny_depth(folder: pathlib.Path) -> pathlib.Path:
    """A random-weight Depth Anything (Dinov2 hidden 32, 2 layers, patch 14) and its PIL processor."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    torch.manual_seed(0)
    backbone = Dinov2Config(image_size=56, patch_size=14, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64, out_indices=[1, 2],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, patch_size=14, reassemble_hidden_size=32,
                                 neck_hidden_sizes=[16, 32], reassemble_factors=[2, 1], fusion_hidden_size=16,
                                 head_hidden_size=8, initializer_range=0.2)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessorPil(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                         image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_depth_models(tmp_path_factory) -> pathlib.Path:
    models = tmp_path_factory.mktemp("models")
    _tiny_depth(models / "depth" / "tiny-depth")
    return models


@pytest.fixture
def loads(monkeypatch, tiny_depth_models) -> list[str]:
    """The depth models folder in place, an empty LRU, and a record of every real load."""
    monkeypatch.setenv("IMAGEBASH_MODELS", str(tiny_depth_models))
    pp.clear_depth_cache()
    seen: list[str] = []
    real = pp._load_depth

    def counting(source: str, device: str):
        seen.append(source)
        return real(source, device)

    monkeypatch.setattr(pp, "_load_depth", counting)
    yield seen
    pp.clear_depth_cache()


def test_depth_is_a_normalised_grey_image_of_the_input_size(loads):
    assert pp.list_depth_models() == ["tiny-depth"]
    img = _shapes(h=45, w=70, n=2)
    out = depth(img, model="tiny-depth")
    assert out.shape == (2, 45, 70, 3) and out.dtype == np.float32
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    for i in range(2):
        assert out[i].min() == 0.0 and out[i].max() == pytest.approx(1.0)
    assert len(loads) == 1
    again = depth(img[:1], model="tiny-depth", resolution=28)
    assert again.shape == (1, 45, 70, 3)
    assert len(loads) == 1  # the second run reuses the loaded model


def test_depth_lru_keeps_two_models(loads, tiny_depth_models, tmp_path):
    other = _tiny_depth(tmp_path / "second")
    img = _shapes(h=28, w=28)
    depth(img, model="tiny-depth")
    depth(img, model=str(other))
    depth(img, model="tiny-depth")
    assert len(loads) == 2 and len(pp._depth_cache) == 2


def test_depth_missing_model_is_one_clear_line(loads, tmp_path, monkeypatch):
    for name in ("", "not-here", "someone/missing-hub-model"):
        with pytest.raises(ValueError) as err:
            depth(_shapes(), model=name)
        msg = str(err.value)
        assert "Depth needs a Depth Anything V2 model: get it with `imagebash models download hf:" in msg
        assert "--kind depth" in msg and "\n" not in msg
        assert "Depth-Anything-V2-Small-hf --kind depth" in msg and msg.endswith("/depth/")
    monkeypatch.setenv("IMAGEBASH_MODELS", str(tmp_path / "empty"))
    assert pp.list_depth_models() == []
    assert pp._depth_key({"model": "tiny-depth"}) == "missing"


def test_depth_folder_of_another_model_is_one_line(loads, tmp_path):
    folder = tmp_path / "not-depth"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    with pytest.raises(ValueError, match=r"has no preprocessor_config\.json"):
        depth(_shapes(), model=str(folder))
    (folder / "preprocessor_config.json").write_text('{"image_processor_type": "DPTImageProcessor"}')
    with pytest.raises(ValueError, match="is not a Depth Anything model") as err:
        depth(_shapes(), model=str(folder))
    assert str(folder) in str(err.value) and "\n" not in str(err.value)


def test_depth_key_follows_the_folder(loads, tiny_depth_models):
    key = pp._depth_key({"model": "tiny-depth"})
    assert key.startswith("dir:")
    assert pp._depth_key({"model": "owner/name"}) == "hub:owner/name"


# Declarations ---------------------------------------------------------------------------------


def test_declarations_and_cheap_import():
    reg = Registry(load_packs=False)
    reg.add_module(pp)
    specs = {s.id: s for s in reg.all()}
    assert set(specs) == {f"imagebash.guidance.{n}" for n in ("canny", "tile_blur", "scribble",
                                                              "pose_image", "depth")}
    for spec in specs.values():
        assert spec.category == "guidance/preprocess" and spec.description
        assert all(p.help for p in spec.inputs), spec.id
    assert specs["imagebash.guidance.depth"].device == "gpu"
    code = ("import sys, nodes.guidance.preprocess; "
            "print(any(m in sys.modules for m in ('torch', 'cv2', 'transformers')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=pathlib.Path(__file__).resolve().parents[2])
    assert done.stdout.strip() == "False"
