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


def _expert_outputs(entry, model):
    """Each expert's forward on fixed inputs with `model`'s LoRA stack active."""
    import torch

    from nodes.diffusion.sampling import apply_loras

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 2, 4, 4, generator=g)
    text = torch.randn(1, 7, 32, generator=g)
    apply_loras(entry, model)
    with torch.no_grad():
        return {name: getattr(entry.pipe, name)(x, torch.tensor([500.0]), text, return_dict=False)[0].numpy()
                for name in ("transformer", "transformer_2")}


def test_wan22_lora_expert_choice(ctx, tiny_video, shared_models, tmp_path):
    """A ComfyUI-form Wan LoRA (no expert in its keys) on a two-expert model: both experts by
    default, only the low-noise one (transformer_2) with expert=low_noise; every key maps."""
    from nodes.diffusion.model_nodes import lora
    from tests.tiny_video_models import write_wan_lora

    model = _load(ctx, tiny_video["wan22_dir"])
    entry = shared_models.entry(model)
    assert entry.pipe.transformer_2 is not entry.pipe.transformer
    path = write_wan_lora(entry.pipe.transformer, tmp_path / "wan22_comfy.safetensors", "comfyui")
    logs = []
    ctx.log = lambda text, level="info": logs.append((level, text))
    kw = {"steps": 4, "guidance": 4.0, "guidance_2": 3.0}
    base = _frames(_wan(ctx, model, **kw))
    plain = _expert_outputs(entry, model)

    both = lora(model, file=str(path), weight=1.0, ctx=ctx)
    low = lora(model, file=str(path), weight=1.0, expert="low_noise", ctx=ctx)
    assert not [t for level, t in logs if level == "warning"]  # no "keys matched nothing"
    for handle, modules in ((both, 2 * 2 * 10), (low, 2 * 10)):
        name = f"lora_{handle.loras[-1].hash}" + ("_low_noise" if handle is low else "")
        info = entry.state["adapters"][name]
        assert info.unmatched == [] and info.matched_modules == modules

    out_both, out_low = _expert_outputs(entry, both), _expert_outputs(entry, low)
    assert not np.allclose(out_both["transformer"], plain["transformer"], atol=1e-5)
    assert not np.allclose(out_both["transformer_2"], plain["transformer_2"], atol=1e-5)
    assert np.array_equal(out_low["transformer"], plain["transformer"])  # the high-noise expert untouched
    assert np.allclose(out_low["transformer_2"], out_both["transformer_2"], atol=1e-6)  # the same LoRA there

    clip_both, clip_low = _frames(_wan(ctx, both, **kw)), _frames(_wan(ctx, low, **kw))
    assert not np.allclose(clip_both, base, atol=1e-4) and not np.allclose(clip_low, base, atol=1e-4)
    assert not np.allclose(clip_both, clip_low, atol=1e-4)
    assert np.array_equal(base, _frames(_wan(ctx, model, **kw)))  # without the LoRA: the base again


def test_wan_lora_expert_on_a_one_expert_model(ctx, tiny_video, shared_models, tmp_path):
    """A one-expert file read as Wan 2.2 holds the same module as both experts: a LoRA goes in
    once (as on a plain one-expert model), and an expert choice is ignored with a note."""
    import torch
    from diffusers import WanPipeline

    from app.engine.models import Entry
    from nodes.diffusion.loras import activate, ensure_adapter
    from tests.tiny_video_models import write_wan_lora

    def entry_of(shared: bool) -> Entry:
        pipe = WanPipeline.from_pretrained(str(tiny_video["wan21_dir"]), local_files_only=True)
        if shared:
            pipe.register_modules(transformer_2=pipe.transformer)
            pipe.register_to_config(boundary_ratio=0.875)
        return Entry(f"wan-{shared}", str(tiny_video["wan21_dir"]), "wan", pipe, "cpu", 0, variant="t2v-1.3b")

    one, shared = entry_of(False), entry_of(True)
    path = write_wan_lora(one.pipe.transformer, tmp_path / "wan_comfy.safetensors", "comfyui")
    outs = []
    for entry, expert in ((one, ""), (shared, ""), (shared, "low_noise")):
        info = ensure_adapter(entry, path, "abc", expert=expert)
        assert info.name == "lora_abc" and info.unmatched == [] and info.matched_modules == 2 * 10
        activate(entry, [(info.name, 1.0)])
        g = torch.Generator().manual_seed(0)
        x, text = torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 7, 32, generator=g)
        with torch.no_grad():
            outs.append(entry.pipe.transformer(x, torch.tensor([500.0]), text, return_dict=False)[0].numpy())
    assert np.allclose(outs[0], outs[1], atol=1e-6) and np.array_equal(outs[1], outs[2])

    from nodes.diffusion.loras import expert_choice

    assert expert_choice(shared, "low_noise")[0] == "" and "ignored" in expert_choice(shared, "low_noise")[1]
    with pytest.raises(ValueError, match="unknown expert"):
        expert_choice(shared, "middle")


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


def _motion_unet(entry, adapter):
    from app.engine.fingerprint import fingerprint

    return entry.state["motion"][fingerprint(adapter)]["txt2video"].unet


def test_animatediff_motion_placement_follows_the_memory_plan():
    """Which placement the AnimateDiff pipeline gets for each of the SD entry's memory plans."""
    from app.engine.memory_modes import MemoryPlan
    from app.engine.models import Entry
    from nodes.diffusion.video_models import motion_placement

    def entry(mode, offload_encoders=False, device="cuda"):
        e = Entry("k", "src", "sd1", None, device, 0)
        e.state.update(memory=mode, plan=MemoryPlan(mode, "", 0, 0, offload_encoders, True))
        return e

    assert motion_placement(entry("full")) == "device"
    assert motion_placement(entry("full", offload_encoders=True)) == "model_offload"  # encoders leave the GPU
    assert motion_placement(entry("fp8")) == "fp8"
    for mode in ("model_offload", "sequential_offload", "group_offload"):
        assert motion_placement(entry(mode, offload_encoders=True)) == mode
    assert motion_placement(Entry("k", "src", "sd1", None, "cpu", 0)) == "device"  # no plan: on the device


def test_animatediff_motion_unet_on_the_entry_device_and_dtype(ctx, tiny_video, tiny_sd_dir, shared_models):
    from nodes.diffusion.model_nodes import MemoryMode

    model = _load(ctx, tiny_sd_dir)
    entry = shared_models.entry(model)
    _animate(ctx, model, tiny_video["motion_dir"])
    unet = _motion_unet(entry, tiny_video["motion_dir"])
    assert {p.device.type for p in unet.parameters()} == {entry.device}
    assert {p.dtype for p in unet.parameters()} == {shared_models.dtype}

    fp8 = _load(ctx, tiny_sd_dir, memory=MemoryMode.FP8)  # a forced mode: fp8 storage, compute in the dtype
    fp8_entry = shared_models.entry(fp8)
    assert fp8_entry.state["memory"] == "fp8"
    arr = _frames(_animate(ctx, fp8, tiny_video["motion_dir"]))
    _differ_over_time(arr)
    import torch

    layers = dict(_motion_unet(fp8_entry, tiny_video["motion_dir"]).named_modules())
    for name in ("down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q",  # a motion module
                 "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"):  # from the SD U-Net
        weight = layers[name].weight
        assert weight.dtype == torch.float8_e4m3fn and weight.device.type == fp8_entry.device


def _offloaded_sd(fresh_engine, tiny_sd_dir, mode):
    """An SD model placed in an offload mode: the hooks `ModelManager._place` puts on a GPU, here
    with the CPU as the execution device (the one device these tests have)."""
    from app.engine.memory_modes import MemoryPlan
    from tests.diffusion.conftest import direct_ctx

    ctx = direct_ctx(fresh_engine)
    model = _load(ctx, tiny_sd_dir)
    entry = fresh_engine.services.get("models").entry(model)
    return ctx, model, entry, lambda: (
        getattr(entry.pipe, f"enable_{'model' if mode == 'model_offload' else 'sequential'}_cpu_offload")(device="cpu"),
        entry.state.update(memory=mode, plan=MemoryPlan(mode, "test", 0, 0, True, True, forced=True)))


def test_animatediff_in_model_offload(tiny_video, tiny_sd_dir, fresh_engine, tiny_models):
    """The motion U-Net is hooked like the SD model's components, the clip is the one of the plain
    model (also after a LoRA is injected while hooked, and on the next call), and the SD model,
    whose VAE and text encoder the AnimateDiff pipeline shares, still samples as before."""
    from nodes.diffusion.generate import txt2img
    from nodes.types import LoraRef

    ctx, model, entry, offload = _offloaded_sd(fresh_engine, tiny_sd_dir, "model_offload")
    kw = {"prompt": PROMPT, "width": 64, "height": 64, "steps": 2, "seed": 1, "scheduler": "euler"}
    image = txt2img(model, ctx=ctx, **kw)
    plain = _frames(_animate(ctx, model, tiny_video["motion_dir"]))
    entry.state.pop("motion")  # built again below, over the offloaded SD model
    offload()
    lora_model = model.with_lora(LoraRef(str(tiny_models["lora_kohya"]), 0.0))  # weight 0: no change
    assert np.allclose(_frames(_animate(ctx, lora_model, tiny_video["motion_dir"])), plain, atol=1e-5)
    assert getattr(_motion_unet(entry, tiny_video["motion_dir"]), "_hf_hook", None) is not None
    assert np.allclose(txt2img(model, ctx=ctx, **kw), image, atol=1e-5)
    assert np.allclose(_frames(_animate(ctx, lora_model, tiny_video["motion_dir"])), plain, atol=1e-5)


def test_animatediff_motion_unet_over_a_sequentially_offloaded_sd_model(tiny_video, tiny_sd_dir, fresh_engine):
    """Under sequential offload the SD U-Net's weights live in its hooks: the motion U-Net is still
    built (from those weights, the same as from the plain model) and is hooked in turn. Sampling
    is not run: accelerate's sequential offload with the CPU as execution device fails inside
    the text encoder here for a plain diffusers pipeline too."""
    import torch
    from accelerate.utils.modeling import get_state_dict_offloaded_model

    from app.engine.models import animatediff_pipeline
    from nodes.diffusion.video_models import _place_motion, _readable_unet

    _ctx, _model, entry, offload = _offloaded_sd(fresh_engine, tiny_sd_dir, "sequential_offload")
    models = fresh_engine.services.get("models")
    adapter = tiny_video["motion_dir"]
    pipe, _holder = animatediff_pipeline(models, entry, adapter, "txt2video")
    want = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    entry.state.pop("motion")
    offload()
    sd_unet = entry.pipe.unet
    with entry.lock, _readable_unet(entry):
        pipe, _holder = animatediff_pipeline(models, entry, adapter, "txt2video")
    assert entry.pipe.unet is sd_unet  # the SD pipeline has its own U-Net back
    assert _place_motion(entry, pipe, models.dtype) == "sequential_offload"
    assert any(p.device.type == "meta" for p in pipe.unet.parameters())  # its weights went into hooks
    got = get_state_dict_offloaded_model(pipe.unet)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


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
