"""Video models on tiny random-weight Wan 2.1 / 2.2 and AnimateDiff models (CPU, seconds each):
Load Model reads Wan folders and single files, Generate Video makes 4k+1-frame clips from text,
a first frame or a source clip, both Wan 2.2 experts run, Wan LoRAs in ComfyUI and musubi form
map every key, and AnimateDiff animates SD 1.5 with a motion adapter (folder or .safetensors)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.diffusion.conftest import direct_ctx

SIZE = 32
PROMPT = "a red house"


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory, tiny_sd_dir):
    from tests.tiny_video_models import build_all

    return build_all(tmp_path_factory.mktemp("tiny-video"), tiny_sd_dir)


@pytest.fixture
def ctx(engine):
    return direct_ctx(engine)


def _load(ctx, source, **kw):
    from nodes.diffusion.model_nodes import load_model

    return load_model(checkpoint=str(source), ctx=ctx, **kw)


def _wan(ctx, model, **kw):
    from nodes.diffusion.video_models import generate_video

    kw = {"num_frames": 5, "prompt": PROMPT, "steps": 2, "seed": 3, **kw}
    return generate_video(model, width=SIZE, height=SIZE, ctx=ctx, **kw)


def _frames(video) -> np.ndarray:
    arr = video.to_batch()
    assert arr.dtype == np.float32 and np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1
    return arr


def _differ_over_time(arr: np.ndarray) -> None:
    assert any(not np.allclose(arr[0], arr[i], atol=1e-4) for i in range(1, len(arr)))


def test_wan_folder_text_to_video(ctx, tiny_video):
    model = _load(ctx, tiny_video["wan21_dir"])
    assert model.family == "wan"
    clip = _wan(ctx, model)
    arr = _frames(clip)
    assert arr.shape == (5, SIZE, SIZE, 3) and clip.fps == 16
    _differ_over_time(arr)
    assert np.array_equal(arr, _frames(_wan(ctx, model)))  # the seed reproduces
    assert not np.array_equal(arr, _frames(_wan(ctx, model, seed=4)))


def test_frames_round_to_4k_plus_1_with_a_note(ctx, tiny_video, engine):
    from app.engine.families.wan import round_frames

    assert [round_frames(n) for n in (1, 2, 4, 5, 6, 7, 16, 80, 81)] == [1, 1, 5, 5, 5, 9, 17, 81, 81]
    logs = []
    ctx.log = lambda text, level="info": logs.append(text)
    clip = _wan(ctx, _load(ctx, tiny_video["wan21_dir"]), num_frames=6)
    assert len(clip) == 5
    assert any("rounded to 5" in t and "4k+1" in t for t in logs)


def test_wan_video_to_video(ctx, tiny_video):
    from nodes.types import Video

    model = _load(ctx, tiny_video["wan21_dir"])
    src = Video.from_batch(np.random.default_rng(0).random((7, SIZE, SIZE, 3)).astype(np.float32), 16)
    a = _frames(_wan(ctx, model, video=src, strength=0.6))
    assert a.shape == (5, SIZE, SIZE, 3)  # 4k+1 frames of the 7-frame source
    assert not np.array_equal(a, _frames(_wan(ctx, model, video=src, strength=1.0)))


def test_wan22_uses_both_experts(ctx, tiny_video, shared_models):
    model = _load(ctx, tiny_video["wan22_dir"])
    entry = shared_models.entry(model)
    assert entry.variant == "t2v-a14b" and entry.pipe.transformer_2 is not None
    calls = {"transformer": 0, "transformer_2": 0}
    hooks = [getattr(entry.pipe, name).register_forward_hook(lambda *a, n=name: calls.__setitem__(n, calls[n] + 1))
             for name in calls]
    try:
        a = _frames(_wan(ctx, model, steps=4, guidance=4.0, guidance_2=3.0))
    finally:
        for h in hooks:
            h.remove()
    assert calls["transformer"] > 0 and calls["transformer_2"] > 0
    # guidance_2 only reaches the low-noise expert: changing it changes the clip
    assert not np.array_equal(a, _frames(_wan(ctx, model, steps=4, guidance=4.0, guidance_2=1.5)))


def test_wan22_image_to_video(ctx, tiny_video):
    model = _load(ctx, tiny_video["wan22_i2v_dir"])
    first = np.random.default_rng(1).random((1, SIZE, SIZE, 3)).astype(np.float32)
    a = _frames(_wan(ctx, model, image=first, steps=4))
    assert a.shape == (5, SIZE, SIZE, 3)
    other = np.random.default_rng(2).random((1, SIZE, SIZE, 3)).astype(np.float32)
    assert not np.array_equal(a, _frames(_wan(ctx, model, image=other, steps=4)))


def test_wan_single_file_is_detected_and_loads_like_the_folder(ctx, tiny_video, shared_models):
    from app.engine.models import identify
    from app.engine.probe import probe

    fam, variant = identify(tiny_video["wan21_file"])
    assert (fam.name, variant) == ("wan", "t2v-14b")  # 16 input channels, not the 1.3B's 1536 width
    assert fam.detect(probe(tiny_video["wan21_file"])) == "t2v-14b"
    file_model = _load(ctx, tiny_video["wan21_file"], config=tiny_video["wan21_config"])
    folder_model = _load(ctx, tiny_video["wan21_dir"])
    a = shared_models.entry(file_model).pipe.transformer.state_dict()
    b = shared_models.entry(folder_model).pipe.transformer.state_dict()
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert shared_models.entry(file_model).pipe.vae.dtype.is_floating_point
    assert np.allclose(_frames(_wan(ctx, file_model)), _frames(_wan(ctx, folder_model)), atol=1e-5)


def test_real_size_wan_keys_name_their_variants(tmp_path):
    """The released geometries, from key names and shapes only (header-only files)."""
    from app.engine.models import identify
    from tests.tiny_families import write_header_only

    def keys(dim: int, channels: int, image: bool, prefix: str = "model.diffusion_model.") -> dict:
        out = {"patch_embedding.weight": [dim, channels, 1, 2, 2], "head.modulation": [1, 2, dim],
               "blocks.0.self_attn.q.weight": [dim, dim]}
        if image:
            out["img_emb.proj.1.weight"] = [dim, 1280]
        return {prefix + k: v for k, v in out.items()}

    cases = {"t2v-1.3b": keys(1536, 16, False), "t2v-14b": keys(5120, 16, False, ""),
             "i2v-14b": keys(5120, 36, True), "i2v-a14b": keys(5120, 36, False, "diffusion_model.")}
    for variant, shapes in cases.items():
        path = write_header_only(shapes, tmp_path / f"{variant}.safetensors")
        fam, found = identify(path)
        assert (fam.name, found) == ("wan", variant)


@pytest.mark.parametrize("style", ["comfyui", "musubi"])
def test_wan_lora_forms_map_every_key(ctx, tiny_video, shared_models, tmp_path, style):
    from nodes.diffusion.model_nodes import lora
    from tests.tiny_video_models import write_wan_lora

    model = _load(ctx, tiny_video["wan21_dir"])
    entry = shared_models.entry(model)
    path = write_wan_lora(entry.pipe.transformer, tmp_path / f"wan_{style}.safetensors", style)
    base = _frames(_wan(ctx, model))
    with_lora = lora(model, file=str(path), weight=1.0, ctx=ctx)
    info = entry.state["adapters"][f"lora_{with_lora.loras[-1].hash}"]
    assert info.unmatched == [] and info.matched_modules == 2 * 10
    assert not np.allclose(base, _frames(_wan(ctx, with_lora)), atol=1e-4)
    assert np.array_equal(base, _frames(_wan(ctx, model)))  # the model without the LoRA is the base again


def test_wan_lora_is_claimed_by_the_wan_family(tiny_video, shared_models, tmp_path):
    from app.engine.families import lora_family
    from app.engine.probe import probe
    from tests.tiny_video_models import make_wan_transformer, write_wan_lora

    for style in ("comfyui", "musubi"):
        path = write_wan_lora(make_wan_transformer(), tmp_path / f"{style}.safetensors", style)
        assert lora_family(probe(path)) == "wan", style


def _animate(ctx, model, adapter, **kw):
    from nodes.diffusion.video_models import animatediff

    kw = {"frames": 4, "prompt": PROMPT, "steps": 2, "seed": 1, **kw}
    return animatediff(model, motion_adapter=adapter, width=64, height=64, ctx=ctx, **kw)


def test_animatediff_frames_differ_and_the_pipeline_is_kept(ctx, tiny_video, tiny_sd_dir, shared_models):
    model = _load(ctx, tiny_sd_dir)
    clip = _animate(ctx, model, tiny_video["motion_dir"])
    arr = _frames(clip)
    assert arr.shape == (4, 64, 64, 3) and clip.fps == 8
    _differ_over_time(arr)
    builds = shared_models.motion_builds
    assert np.array_equal(arr, _frames(_animate(ctx, model, tiny_video["motion_dir"], steps=2)))
    assert shared_models.motion_builds == builds  # cached per adapter file
    from_file = _frames(_animate(ctx, model, tiny_video["motion_file"]))  # the same adapter as one file
    assert np.allclose(arr, from_file, atol=1e-5)


def test_animatediff_video_to_video_and_prompt_travel(ctx, tiny_video, tiny_sd_dir):
    from nodes.types import Video

    model = _load(ctx, tiny_sd_dir)
    src = Video.from_batch(np.random.default_rng(0).random((4, 64, 64, 3)).astype(np.float32), 8)
    v2v = _frames(_animate(ctx, model, tiny_video["motion_dir"], video=src, strength=0.5))
    assert v2v.shape == (4, 64, 64, 3)

    class Travel(str):  # a schedule as nodes.schedule hands it over (duck-typed)
        keyframes = [(0, "a red house"), (2, "a blue cat")]

        def at(self, frame):
            return "a red house" if frame < 2 else "a blue cat"

    plain = _frames(_animate(ctx, model, tiny_video["motion_dir"]))
    travel = _frames(_animate(ctx, model, tiny_video["motion_dir"], prompt=Travel("a red house")))
    assert travel.shape == plain.shape and not np.allclose(travel, plain, atol=1e-4)


def test_a_pickle_motion_adapter_is_refused_in_one_line(ctx, tiny_sd_dir, tmp_path):
    from app.engine.models import ModelError

    bad = tmp_path / "mm_sd_v15_v2.ckpt"
    bad.write_bytes(b"not read")
    with pytest.raises(ModelError) as err:
        _animate(ctx, _load(ctx, tiny_sd_dir), bad)
    text = str(err.value)
    assert "\n" not in text and "mm_sd_v15_v2.ckpt" in text and ".safetensors" in text


def test_generate_video_refuses_a_non_wan_model(ctx, tiny_sd_dir):
    with pytest.raises(ValueError, match="needs a Wan model"):
        _wan(ctx, _load(ctx, tiny_sd_dir))


def test_nodes_are_registered():
    from nodes.registry import default_registry, load_node_packs

    reg = default_registry()
    load_node_packs(reg)
    assert reg.get("imagebash.diffusion.generate_video") is not None
    assert reg.get("imagebash.diffusion.animatediff") is not None
