"""The shipped offline config folders: every one expands, every component builds at its published
size (on the meta device: no weights, a few seconds in all), and the shipped tokenizers give the
reference ids of the hub tokenizers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.engine.model_configs import complete_tokenizer, qwen2_vocab, shipped_config, shipped_families
from app.paths import resource

NEW_FAMILIES = ["flux-dev", "flux-schnell", "flux-fill", "flux-kontext", "sd35-medium", "sd35-large",
                "sd35-large-turbo", "qwen-image", "qwen-image-edit",
                "wan21-t2v-1.3b", "wan21-t2v-14b", "wan21-i2v-14b", "wan22-t2v-a14b", "wan22-i2v-a14b"]

CLIP_L, CLIP_L_PROJ, CLIP_G, T5XXL = 123.06e6, 123.65e6, 694.66e6, 4.762e9
SD_VAE, KL16_VAE = 83.65e6, 83.82e6
FLUX = {"transformer": 11.90e9, "vae": KL16_VAE, "text_encoder": CLIP_L, "text_encoder_2": T5XXL}
SD35 = {"vae": KL16_VAE, "text_encoder": CLIP_L_PROJ, "text_encoder_2": CLIP_G, "text_encoder_3": T5XXL}
QWEN = {"transformer": 20.43e9, "vae": 126.9e6, "text_encoder": 8.292e9}
#: Wan: the 1.3B/14B DiTs (the I2V 14B adds image cross-attention: 16.4B), UMT5-XXL's encoder,
#: the Wan VAE, and for 2.1 I2V the CLIP ViT-H/14 vision tower; 2.2 A14B has two 14B experts.
UMT5, WAN_VAE, WAN_14B = 5.681e9, 126.9e6, 14.288e9
WAN = {"vae": WAN_VAE, "text_encoder": UMT5}
#: Published sizes (diffusers/transformers model cards, BF16 file sizes / 2). SD 3.5 Medium's
#: MMDiT-X computes to 2.243e9 here; Stability's "2.5B" counts more than the transformer.
PUBLISHED = {
    "sd1": {"unet": 859.5e6, "vae": SD_VAE, "text_encoder": CLIP_L},
    "sd2": {"unet": 865.9e6, "vae": SD_VAE, "text_encoder": 340.4e6},
    "sdxl": {"unet": 2.567e9, "vae": SD_VAE, "text_encoder": CLIP_L, "text_encoder_2": CLIP_G},
    "flux-dev": FLUX, "flux-kontext": FLUX, "flux-fill": FLUX,
    "flux-schnell": dict(FLUX, transformer=11.89e9),
    "sd35-medium": dict(SD35, transformer=2.243e9),
    "sd35-large": dict(SD35, transformer=8.06e9), "sd35-large-turbo": dict(SD35, transformer=8.06e9),
    "qwen-image": QWEN, "qwen-image-edit": QWEN,
    "wan21-t2v-1.3b": dict(WAN, transformer=1.419e9), "wan21-t2v-14b": dict(WAN, transformer=WAN_14B),
    "wan21-i2v-14b": dict(WAN, transformer=16.395e9, image_encoder=0.631e9),
    "wan22-t2v-a14b": dict(WAN, transformer=WAN_14B, transformer_2=WAN_14B),
    "wan22-i2v-a14b": dict(WAN, transformer=WAN_14B, transformer_2=WAN_14B),
}
NOT_MODELS = ("scheduler", "processor", "image_processor", "tokenizer", "tokenizer_2", "tokenizer_3")


def _build_on_meta(folder: Path, library: str, class_name: str):
    import diffusers
    import torch
    import transformers

    cls = getattr(diffusers if library == "diffusers" else transformers, class_name)
    with torch.device("meta"):
        if library == "diffusers":
            return cls.from_config(cls.load_config(str(folder)))
        return cls(transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True))


def test_every_family_folder_is_listed():
    assert set(shipped_families()) == set(NEW_FAMILIES) | {"sd1", "sd2", "sdxl"} == set(PUBLISHED)


@pytest.mark.parametrize("family", sorted(PUBLISHED))
def test_family_expands_and_builds_at_its_published_size(family):
    import diffusers

    folder = shipped_config(family)
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    pipeline = getattr(diffusers, index["_class_name"])
    components = {k: v for k, v in index.items() if isinstance(v, list) and v[0] is not None}
    # every component the pipeline needs is named, with its folder
    expected = set(pipeline._get_signature_keys(pipeline)[0]) - set(pipeline._optional_components)
    assert expected <= set(components), expected - set(components)
    for name in components:
        assert (folder / name).is_dir(), name
    sizes = {}
    for name, (library, class_name) in components.items():
        if name in NOT_MODELS:
            continue
        model = _build_on_meta(folder / name, library, class_name)
        assert next(model.parameters()).device.type == "meta"
        sizes[name] = sum(p.numel() for p in model.parameters())
    assert set(sizes) == set(PUBLISHED[family])
    for name, n in sizes.items():
        assert n == pytest.approx(PUBLISHED[family][name], rel=0.02), (name, n)


@pytest.mark.parametrize("family, shift, dynamic, guidance, in_channels", [
    ("flux-dev", 3.0, True, True, 64), ("flux-schnell", 1.0, False, False, 64),
    ("flux-fill", 3.0, True, True, 384), ("flux-kontext", 3.0, True, True, 64)])
def test_flux_variants(family, shift, dynamic, guidance, in_channels):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    folder = shipped_config(family)
    sched = FlowMatchEulerDiscreteScheduler.from_pretrained(str(folder), subfolder="scheduler")
    assert (sched.config.shift, sched.config.use_dynamic_shifting) == (shift, dynamic)
    cfg = FluxTransformer2DModel.load_config(str(folder / "transformer"))
    assert (cfg["guidance_embeds"], cfg["in_channels"]) == (guidance, in_channels)
    assert cfg.get("out_channels") in (None, 64)
    vae = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
    assert (vae["latent_channels"], vae["scaling_factor"], vae["shift_factor"]) == (16, 0.3611, 0.1159)


def test_qwen_scheduler_and_vae():
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler

    folder = shipped_config("qwen-image")
    sched = FlowMatchEulerDiscreteScheduler.from_pretrained(str(folder), subfolder="scheduler")
    c = sched.config
    assert (c.use_dynamic_shifting, c.max_shift, c.max_image_seq_len, c.shift_terminal, c.time_shift_type) == (
        True, 0.9, 8192, 0.02, "exponential")
    vae = AutoencoderKLQwenImage.load_config(str(folder / "vae"))
    assert len(vae["latents_mean"]) == len(vae["latents_std"]) == 16


@pytest.mark.parametrize("family, folders", [
    ("flux-dev", ["tokenizer_2"]), ("sd35-large", ["tokenizer_3"])])
def test_t5_tokenizer_gives_the_reference_ids(family, folders):
    from transformers import AutoTokenizer, T5TokenizerFast

    folder = shipped_config(family)
    for sub in folders:
        for tok in (AutoTokenizer.from_pretrained(str(folder / sub), local_files_only=True),
                    T5TokenizerFast.from_pretrained(str(folder), subfolder=sub, local_files_only=True)):
            assert tok("Hello world").input_ids == [8774, 296, 1]
            assert len(tok) == 32100 and tok.model_max_length == 512
            assert (tok.pad_token_id, tok.eos_token_id, tok.convert_tokens_to_ids("<extra_id_0>")) == (0, 1, 32099)


@pytest.mark.parametrize("family", ["flux-schnell", "sd35-medium"])
def test_clip_tokenizers_of_the_new_families(family):
    from transformers import CLIPTokenizer

    folder = shipped_config(family)
    for sub in sorted(p.name for p in folder.glob("tokenizer*")):
        cfg = json.loads((folder / sub / "tokenizer_config.json").read_text(encoding="utf-8"))
        if cfg["tokenizer_class"] != "CLIPTokenizer":
            continue
        tok = CLIPTokenizer.from_pretrained(str(folder), subfolder=sub, local_files_only=True)
        assert tok("a photograph of an astronaut riding a horse").input_ids == [
            49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]


@pytest.mark.parametrize("sub", ["tokenizer", "processor"])
def test_qwen2_tokenizer_gives_the_reference_ids(sub):
    from transformers import AutoTokenizer, Qwen2Tokenizer

    folder = shipped_config("qwen-image-edit")
    for tok in (AutoTokenizer.from_pretrained(str(folder / sub), local_files_only=True),
                Qwen2Tokenizer.from_pretrained(str(folder), subfolder=sub, local_files_only=True)):
        assert tok("Hello world").input_ids == [9707, 1879]
        assert tok("<|im_start|>").input_ids == [151644]
        assert len(tok) == 151665
        assert (tok.eos_token, tok.pad_token_id) == ("<|im_end|>", 151643)
        assert tok.convert_tokens_to_ids(["<|image_pad|>", "<|vision_start|>", "<|file_sep|>"]) == [
            151655, 151652, 151664]
        text = "<|im_start|>user\nA café, 2 cats 🐱<|im_end|>\n"
        assert tok.decode(tok(text).input_ids) == text


def test_qwen2_vocabulary_is_the_merge_ranks():
    vocab, merges = qwen2_vocab(resource("model_configs", "qwen25_merges.gz"))
    assert len(vocab) == 151643 and len(merges) == 151387
    assert (vocab["!"], vocab["Ġ"], vocab["ĠĠ"], vocab["Hello"], vocab["Ġworld"]) == (0, 220, 256, 9707, 1879)


def test_qwen_edit_processor_folder():
    from transformers import AutoImageProcessor

    folder = shipped_config("qwen-image-edit")
    ip = AutoImageProcessor.from_pretrained(str(folder), subfolder="processor", local_files_only=True)
    assert (ip.patch_size, ip.merge_size, ip.temporal_patch_size) == (14, 2, 2)
    assert (ip.size["shortest_edge"], ip.size["longest_edge"]) == (3136, 12845056)
    assert list(ip.image_mean) == [0.48145466, 0.4578275, 0.40821073]
    # the engine's loader (transformers' own Qwen2VLProcessor.from_pretrained needs torchvision for
    # the video processor, which imagebash keeps out of its dependencies)
    from app.engine.families.qwen_image import load_processor

    proc = load_processor(folder / "processor")
    assert proc.tokenizer("Hello world").input_ids == [9707, 1879]
    assert proc.image_processor.patch_size == 14


def test_umt5_vocabulary_for_a_300_sentinel_t5_folder(tmp_path):
    from transformers import AutoTokenizer

    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "T5TokenizerFast", "extra_ids": 300, "model_max_length": 512,
        "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}), encoding="utf-8")
    complete_tokenizer(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert len(tok) == 256300
    assert (tok.pad_token_id, tok.eos_token_id) == (0, 1)
    assert tok("Hello world").input_ids[-1] == 1


def test_unknown_tokenizer_class_is_refused(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "LlamaTokenizer"}', encoding="utf-8")
    with pytest.raises(ValueError, match="LlamaTokenizer"):
        complete_tokenizer(tmp_path)


def test_cached_copy_is_reused_then_rebuilt_when_stale():
    folder = shipped_config("flux-schnell")
    vocab = folder / "tokenizer_2" / "tokenizer.json"
    mtime = vocab.stat().st_mtime_ns
    assert shipped_config("flux-schnell") == folder and vocab.stat().st_mtime_ns == mtime
    (folder / ".stamp").write_text("stale")
    vocab.unlink()
    assert shipped_config("flux-schnell") == folder
    assert vocab.is_file() and (folder / ".stamp").read_text() != "stale"
    assert not [p for p in folder.parent.iterdir() if ".tmp" in p.name]
