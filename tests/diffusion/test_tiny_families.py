"""The tiny Flux / SD 3.5 / Qwen-Image fixtures themselves: each folder loads with its diffusers
pipeline offline and renders 64x64 in 2 steps, the same seed giving the same pixels; the split
layout's files load strictly into freshly built components; the real-size key sets agree with
diffusers' own converters and detectors and make valid header-only files."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from tests import tiny_families as tf

PROMPT = "a red house"


def _load(cls_name: str, folder, **kw):
    import diffusers

    pipe = getattr(diffusers, cls_name).from_pretrained(folder, local_files_only=True, **kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _render(pipe, seed: int = 3, **kw) -> np.ndarray:
    import torch

    kw.setdefault("prompt", PROMPT)
    out = pipe(num_inference_steps=2, height=64, width=64, generator=torch.Generator("cpu").manual_seed(seed),
               output_type="np", **kw).images
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()
    return out


def _image(seed: int = 0):
    from PIL import Image

    return Image.fromarray((np.random.default_rng(seed).random((64, 64, 3)) * 255).astype("uint8"))


def _same_seed_same_pixels(pipe, **kw) -> np.ndarray:
    a = _render(pipe, **kw)
    assert np.array_equal(a, _render(pipe, **kw))
    assert not np.array_equal(a, _render(pipe, seed=4, **kw))
    return a


# ---------------------------------------------------------------------------------- Flux


def test_flux_dev_and_schnell(tiny_flux_dev_dir, tiny_flux_schnell_dir):
    dev = _load("FluxPipeline", tiny_flux_dev_dir)
    assert dev.transformer.config.guidance_embeds and dev.transformer.config.in_channels == 64
    assert dev.vae.config.latent_channels == 16 and dev.vae_scale_factor == 8
    assert dev.scheduler.config.use_dynamic_shifting
    a = _same_seed_same_pixels(dev, guidance_scale=3.5, max_sequence_length=32)
    assert not np.array_equal(a, _render(dev, guidance_scale=1.0, max_sequence_length=32))  # guidance is embedded
    schnell = _load("FluxPipeline", tiny_flux_schnell_dir)
    assert not schnell.transformer.config.guidance_embeds and not schnell.scheduler.config.use_dynamic_shifting
    b = _same_seed_same_pixels(schnell, guidance_scale=0.0, max_sequence_length=32)
    assert np.array_equal(b, _render(schnell, guidance_scale=7.0, max_sequence_length=32))  # no guidance input


def test_flux_fill(tiny_flux_fill_dir):
    from PIL import Image

    pipe = _load("FluxFillPipeline", tiny_flux_fill_dir)
    assert (pipe.transformer.config.in_channels, pipe.transformer.config.out_channels) == (384, 64)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    _same_seed_same_pixels(pipe, image=_image(), mask_image=mask, guidance_scale=30.0, max_sequence_length=32)


def test_flux_kontext(tiny_flux_kontext_dir, tiny_flux_dev_dir):
    from safetensors.torch import load_file

    name = "transformer/diffusion_pytorch_model.safetensors"
    a, b = load_file(tiny_flux_kontext_dir / name), load_file(tiny_flux_dev_dir / name)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)  # Kontext = dev's weights
    pipe = _load("FluxKontextPipeline", tiny_flux_kontext_dir)
    # max_area / _auto_resize keep Kontext at 64x64 (by default it moves to ~1 MP sizes)
    kw = dict(guidance_scale=2.5, max_sequence_length=32, max_area=64 * 64, _auto_resize=False)
    out = _same_seed_same_pixels(pipe, image=_image(), **kw)
    assert not np.array_equal(out, _render(pipe, image=_image(1), **kw))  # the input image counts


# ----------------------------------------------------------------------------------- SD3


def test_sd3_large_and_medium(tiny_sd3_dir, tiny_sd3_medium_dir):
    large = _load("StableDiffusion3Pipeline", tiny_sd3_dir)
    assert large.transformer.config.qk_norm == "rms_norm" and not large.transformer.config.dual_attention_layers
    _same_seed_same_pixels(large, guidance_scale=5.0, max_sequence_length=32)
    medium = _load("StableDiffusion3Pipeline", tiny_sd3_medium_dir)
    assert tuple(medium.transformer.config.dual_attention_layers) == (0,)
    assert medium.transformer.transformer_blocks[0].attn2 is not None
    _same_seed_same_pixels(medium, guidance_scale=5.0, max_sequence_length=32)


def test_sd3_without_t5(tiny_sd3_no_t5_dir, tiny_sd3_dir):
    index = json.loads((tiny_sd3_no_t5_dir / "model_index.json").read_text())
    assert index["text_encoder_3"] == [None, None] and index["tokenizer_3"] == [None, None]
    assert not (tiny_sd3_no_t5_dir / "text_encoder_3").exists()
    with pytest.raises(ValueError, match="expected"):  # diffusers 0.42 wants them passed explicitly
        _load("StableDiffusion3Pipeline", tiny_sd3_no_t5_dir)
    drop = dict(text_encoder_3=None, tokenizer_3=None)
    no_t5 = _load("StableDiffusion3Pipeline", tiny_sd3_no_t5_dir, **drop)
    assert no_t5.text_encoder_3 is None
    a = _same_seed_same_pixels(no_t5, guidance_scale=5.0)
    # the same weights (T5 dropped at load time from the full folder) give the same pixels
    assert np.array_equal(a, _render(_load("StableDiffusion3Pipeline", tiny_sd3_dir, **drop), guidance_scale=5.0))


# ----------------------------------------------------------------------------- Qwen-Image


def test_qwen_image(tiny_qwen_dir):
    pipe = _load("QwenImagePipeline", tiny_qwen_dir)
    assert pipe.vae_scale_factor == 8 and pipe.transformer.config.in_channels == 64
    assert pipe.scheduler.config.time_shift_type == "exponential"
    a = _same_seed_same_pixels(pipe, true_cfg_scale=1.0, max_sequence_length=32)
    b = _render(pipe, true_cfg_scale=4.0, negative_prompt="blue", max_sequence_length=32)
    assert not np.array_equal(a, b)


def test_qwen_prompt_template_drop(tiny_qwen_dir, tiny_qwen_edit_dir):
    """The tiny tokenizer splits the templates' system parts into exactly as many tokens as the
    real one does, so the pipelines' drop_idx (34, 64) cuts right before the user's text."""
    from transformers import Qwen2Tokenizer

    tok = Qwen2Tokenizer.from_pretrained(tiny_qwen_dir / "tokenizer")
    t2i, edit = tf._qwen_templates()
    ids = tok(t2i.format(PROMPT)).input_ids
    assert tok.decode(ids[34:]).startswith(PROMPT)
    ids = tok(edit.format(PROMPT)).input_ids
    assert tok.decode(ids[64:]).startswith("<|vision_start|><|image_pad|><|vision_end|>" + PROMPT)
    assert Qwen2Tokenizer.from_pretrained(tiny_qwen_edit_dir / "processor")(PROMPT).input_ids == tok(PROMPT).input_ids


def test_qwen_image_edit(tiny_qwen_edit_dir):
    index = json.loads((tiny_qwen_edit_dir / "model_index.json").read_text())
    assert index["_class_name"] == "QwenImageEditPipeline"
    assert index["processor"] == ["transformers", "Qwen2VLProcessor"]
    if importlib.util.find_spec("torchvision") is None:
        with pytest.raises(ImportError, match=r"[Tt]orchvision"):  # transformers 5's video processor
            _load("QwenImageEditPipeline", tiny_qwen_edit_dir)
    proc = tf.load_qwen_processor(tiny_qwen_edit_dir / "processor")
    pipe = _load("QwenImageEditPipeline", tiny_qwen_edit_dir, processor=proc)
    # The pipeline resizes any input to ~1 MP for the VAE (calculate_dimensions(1024 * 1024, ...)),
    # so each call encodes 1024x1024 (~2 s here, the slow part); the processor caps the vision
    # tower's copy at 56x56 (4 tokens). Two calls: the same seed and image give the same pixels.
    a = _render(pipe, image=_image(), true_cfg_scale=1.0, max_sequence_length=32)
    assert np.array_equal(a, _render(pipe, image=_image(), true_cfg_scale=1.0, max_sequence_length=32))


# --------------------------------------------------------------------- single files / split


def test_single_files(tiny_flux_dev_file, tiny_sd3_file, tiny_flux_dev_dir, tiny_sd3_dir):
    from safetensors import safe_open
    from safetensors.torch import load_file

    for path, folder in ((tiny_flux_dev_file, tiny_flux_dev_dir), (tiny_sd3_file, tiny_sd3_dir)):
        with safe_open(str(path), "pt") as f:
            assert f.metadata() == {"format": "pt"}
        a, b = load_file(path), load_file(folder / "transformer" / "diffusion_pytorch_model.safetensors")
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_split_layout_loads_strict(tiny_families):
    import diffusers
    import transformers
    from safetensors.torch import load_file

    comfy = tiny_families["comfy_dir"]
    assert {p.name for p in comfy.iterdir()} == {"diffusion_models", "text_encoders", "vae", "config"}
    for key, folder in (("flux_dev", tiny_families["flux_dev_dir"]), ("sd3", tiny_families["sd3_dir"])):
        cfg = tiny_families[f"comfy_{key}_config"]
        assert (cfg / "model_index.json").is_file()
        assert not [p for p in cfg.rglob("*") if p.suffix in (".safetensors", ".bin")]
        index = json.loads((cfg / "model_index.json").read_text())
        for part, file in (("transformer", "denoiser"), ("vae", "vae")):
            cls = getattr(diffusers, index[part][1])
            model = cls.from_config(cls.load_config(cfg / part))
            sd = load_file(tiny_families[f"comfy_{key}_{file}"])
            model.load_state_dict(sd, strict=True)
            ref = load_file(folder / part / "diffusion_pytorch_model.safetensors")
            assert all(sd[k].equal(ref[k]) for k in ref)

    sd3_cfg, flux_cfg = tiny_families["comfy_sd3_config"], tiny_families["comfy_flux_dev_config"]
    clip_l, clip_g = load_file(tiny_families["comfy_clip_l"]), load_file(tiny_families["comfy_clip_g"])
    assert "text_projection.weight" in clip_l and all(
        k.startswith("text_model.") for k in clip_l if k != "text_projection.weight")
    for sd, sub in ((clip_l, "text_encoder"), (clip_g, "text_encoder_2")):
        cfg = transformers.CLIPTextConfig.from_pretrained(sd3_cfg / sub)
        transformers.CLIPTextModelWithProjection(cfg).load_state_dict(sd, strict=True)
    # Flux's CLIP-L is the same file without the projection (transformers 5 drops `text_model.`)
    flux_clip = transformers.CLIPTextModel(transformers.CLIPTextConfig.from_pretrained(flux_cfg / "text_encoder"))
    flux_clip.load_state_dict({k.removeprefix("text_model."): v for k, v in clip_l.items()
                               if k != "text_projection.weight"}, strict=True)
    ref = load_file(tiny_families["flux_dev_dir"] / "text_encoder" / "model.safetensors")
    assert all(flux_clip.state_dict()[k].equal(ref[k]) for k in ref)
    t5_sd = load_file(tiny_families["comfy_t5"])
    assert "shared.weight" in t5_sd and "encoder.embed_tokens.weight" not in t5_sd  # as t5xxl files
    for cfg in (sd3_cfg / "text_encoder_3", flux_cfg / "text_encoder_2"):
        t5 = transformers.T5EncoderModel(transformers.T5Config.from_pretrained(cfg))
        missing, unexpected = t5.load_state_dict(t5_sd, strict=False)
        assert not unexpected and set(missing) <= {"encoder.embed_tokens.weight"}
        t5.tie_weights()
        assert t5.encoder.embed_tokens.weight.equal(t5_sd["shared.weight"])


def test_save_original_hook(tmp_path):
    from safetensors import safe_open

    sd = tf.make_flux_transformer("dev").state_dict()
    path = tf.save_original(sd, tmp_path / "orig.safetensors",
                            lambda d: {"model.diffusion_model." + k: v for k, v in d.items()})
    with safe_open(str(path), "pt") as f:
        assert set(f.keys()) == {"model.diffusion_model." + k for k in sd} and f.metadata() == {"format": "pt"}


# ------------------------------------------------------------------------ real-size key sets


def _meta(keys: dict) -> dict:
    import torch

    return {k: torch.empty(v, device="meta") for k, v in keys.items()}


def test_key_sets_are_what_the_generators_write():
    for name in ("flux-dev", "flux-schnell", "flux-fill", "flux-kontext"):
        assert tf.family_keys(name)["keys"] == tf.flux_bfl_keys(name)
    for name in ("sd35-large", "sd35-medium"):
        assert tf.family_keys(name)["keys"] == tf.sd3_sai_keys(name)
    assert tf.family_keys("flux-kontext")["keys"] == tf.family_keys("flux-dev")["keys"]
    assert "cannot be told from dev" in tf.family_keys("flux-kontext")["notes"]
    assert len(tf.family_keys("flux-dev")["keys"]) == 780 and len(tf.family_keys("flux-schnell")["keys"]) == 776


@pytest.mark.parametrize(("name", "model_type"), [
    ("flux-dev", "flux-dev"), ("flux-schnell", "flux-schnell"), ("flux-fill", "flux-fill"),
    ("flux-kontext", "flux-dev"), ("flux-dev-comfy-aio", "flux-dev"), ("sd35-large", "sd35_large"),
    ("sd35-medium", "sd35_medium"), ("sd15", "v1"), ("sdxl", "xl_base")])
def test_key_sets_detected_by_diffusers(name, model_type):
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    d = tf.family_keys(name)
    full = {d["prefix"] + k: v for k, v in d["keys"].items()} | d["extra_keys"]
    assert infer_diffusers_model_type(_meta(full)) == model_type
    assert d["count"] == len(full)


@pytest.mark.parametrize("name", ["flux-dev", "flux-schnell", "flux-fill", "sd35-large", "sd35-medium"])
def test_original_keys_convert_to_the_real_diffusers_model(name):
    """diffusers' own converter turns every stored original key into exactly the state dict of the
    diffusers model built (on the meta device) from the released config."""
    from diffusers.loaders import single_file_utils as sfu

    d = tf.family_keys(name)
    ckpt = _meta(d["keys"])
    if name.startswith("flux"):
        conv, cls = sfu.convert_flux_transformer_checkpoint_to_diffusers(ckpt), "FluxTransformer2DModel"
    else:
        conv, cls = sfu.convert_sd3_transformer_checkpoint_to_diffusers(ckpt), "SD3Transformer2DModel"
    assert not ckpt  # the converter consumed every key
    assert {k: list(v.shape) for k, v in conv.items()} == tf.diffusers_keys(cls, d["config"])
    if name == "flux-dev":
        assert tf.family_keys("flux-dev-diffusers")["keys"] == tf.diffusers_keys(cls, d["config"])


def test_qwen_key_set():
    d = tf.family_keys("qwen-image")
    assert d["keys"] == tf.diffusers_keys("QwenImageTransformer2DModel", d["config"])
    assert d["keys"]["img_in.weight"] == [3072, 64] and d["keys"]["txt_in.weight"] == [3072, 3584]
    assert "transformer_blocks.59.attn.to_q.weight" in d["keys"]
    assert "transformer_blocks.60.attn.to_q.weight" not in d["keys"]


def test_header_only_files(family_key_files, family_key_file, tmp_path):
    import os
    import sys

    from safetensors import safe_open

    from app.engine.probe import probe

    for name, path in family_key_files.items():
        d = tf.family_keys(name)
        p = probe(path)
        expected = {d["prefix"] + k: tuple(v) for k, v in d["keys"].items()}
        expected |= {k: tuple(v) for k, v in d["extra_keys"].items()}
        assert {k: p.shape(k) for k in p.keys} == expected
        assert path.stat().st_size < 1_000_000
    bare = probe(family_key_file("sd35-medium", prefix="", extras=False))
    assert bare.shape("pos_embed") == (1, 147456, 1536) and not bare.has_prefix("model.", "first_stage_model.")
    # sparse=True (real offsets, a hole for the data) on a few real-size tensors (~0.3 GB apparent;
    # a whole Flux file would be 24 GB, fine on Linux filesystems, not everywhere)
    keys = {k: v for k, v in tf.family_keys("flux-dev")["keys"].items()
            if k.startswith(("single_blocks.0.", "img_in.", "double_blocks.0.img_attn.qkv."))}
    sparse = tf.write_header_only(keys, tmp_path / "sparse.safetensors", sparse=True)
    assert sparse.stat().st_size > 250e6
    if sys.platform == "linux":
        assert sparse.stat().st_blocks * 512 < 1_000_000  # a hole, no data written
    with safe_open(str(sparse), "pt") as f:  # valid for safetensors itself (offsets are real)
        assert f.get_slice("double_blocks.0.img_attn.qkv.weight").get_shape() == [9216, 3072]
        assert f.get_slice("single_blocks.0.linear1.weight").get_shape() == [21504, 3072]
    assert probe(sparse).shape("img_in.weight") == (3072, 64)
    os.remove(sparse)
