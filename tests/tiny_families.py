"""Tiny random-weight Flux.1, SD 3.5 and Qwen-Image models, in the on-disk layouts users have.

Every model keeps the real latent geometry (16-channel latents, VAE scale factor 8, 2x2 packing,
so Flux's `in_channels` is 64 and Fill's 384) with tiny widths, and is seeded: the same bytes on
every build. Each is saved as a diffusers folder (`model_index.json`) that loads with
`<Pipeline>.from_pretrained(folder, local_files_only=True)`. Flux dev and SD3 are also written as
a denoiser-only `.safetensors` in diffusers keys and as a ComfyUI split layout
(`diffusion_models/`, `text_encoders/`, `vae/`, plus `config/`: the diffusers folder without
weights, for `config=` loading).

Original-key files (BFL Flux, SAI SD3) are left to the converter: `save_original(sd, path, rename)`
takes its rename callable. `write_header_only` writes real-size key sets (from
`tests/fixtures/family_keys/*.json`) as valid safetensors files with no real data.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.tiny_models import _text_config, make_tokenizer

if TYPE_CHECKING:  # the heavy imports stay inside the builders
    from diffusers import (
        AutoencoderKL,
        AutoencoderKLQwenImage,
        DiffusionPipeline,
        FlowMatchEulerDiscreteScheduler,
        FluxTransformer2DModel,
        QwenImageEditPipeline,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import (
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2Tokenizer,
        Qwen2VLProcessor,
        T5EncoderModel,
        T5Tokenizer,
    )

SEED = 2024
#: The T5 stand-in's width; Flux's `joint_attention_dim` and SD3's are sized to it.
T5_DIM = 32
KEYS_DIR = Path(__file__).parent / "fixtures" / "family_keys"

#: Words the offline T5 and Qwen tokenizers know whole (anything else falls back to characters).
WORDS = "a red house blue cat dog painting of the on in with and sky tree car photo".split()

# ------------------------------------------------------------------------------ shared parts
# Flux and SD3 share one CLIP-L and one T5 (as the released clip_l / t5xxl files serve both), so
# the split layout has a single text_encoders/ folder; every builder seeds itself, so the bytes
# do not depend on what was built before.


def make_t5_tokenizer() -> T5Tokenizer:
    """An offline T5 (Unigram) tokenizer: a few whole words plus single-character fallback."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + w, -3.0) for w in WORDS]
    pieces += [(c, -8.0) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-"]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def make_t5(vocab_size: int) -> T5EncoderModel:
    """The 2-layer T5 encoder (d_model 32, the shape of diffusers' hub tiny-random-t5), eval mode."""
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(SEED + 3)
    cfg = T5Config(d_model=T5_DIM, d_ff=37, d_kv=8, num_heads=4, num_layers=2, num_decoder_layers=2,
                   relative_attention_num_buckets=8, vocab_size=vocab_size, is_encoder_decoder=False)
    return T5EncoderModel(cfg).eval()


def make_clip_l(tmp: Path) -> tuple[CLIPTextModelWithProjection, CLIPTokenizer]:
    """CLIP-L stand-in (hidden 32, quick_gelu) with its projection, and its tokenizer."""
    import torch
    from transformers import CLIPTextModelWithProjection

    tok = make_tokenizer(tmp / "_clip_tok")
    torch.manual_seed(SEED + 1)
    return CLIPTextModelWithProjection(_text_config(len(tok))).eval(), tok


def make_clip_g(tmp: Path) -> tuple[CLIPTextModelWithProjection, CLIPTokenizer]:
    """CLIP-G stand-in for SD3 (hidden 32, gelu, projection 32), and its tokenizer."""
    import torch
    from transformers import CLIPTextModelWithProjection

    tok = make_tokenizer(tmp / "_clip_tok")
    torch.manual_seed(SEED + 2)
    return CLIPTextModelWithProjection(_text_config(len(tok), projection=True)).eval(), tok


def clip_without_projection(clip: CLIPTextModelWithProjection) -> CLIPTextModel:
    """A CLIPTextModel holding `clip`'s text-model weights (Flux uses CLIP-L without projection)."""
    from transformers import CLIPTextModel

    model = CLIPTextModel(clip.config).eval()
    model.load_state_dict(clip_text_state(clip, projection=False, prefix=False))
    return model


def clip_text_state(clip: CLIPTextModelWithProjection, projection: bool = True, prefix: bool = True) -> dict:
    """A CLIP text model's tensors named as the released clip_l / clip_g files name them
    (`text_model.` level, plus `text_projection.weight` when the model has one and `projection`);
    `prefix=False` gives the names transformers 5's CLIPTextModel uses (no `text_model.`)."""
    out = {}
    for k, v in clip.state_dict().items():
        k = k.removeprefix("text_model.")
        if k.startswith("text_projection."):
            if projection:
                out[k] = v
            continue
        out[("text_model." if prefix else "") + k] = v
    return out


def t5_state(t5: T5EncoderModel) -> dict:
    """T5 encoder tensors as t5xxl files hold them: `shared.weight`, no tied embed_tokens copy."""
    return {k: v for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"}


def make_vae16(scaling_factor: float, shift_factor: float, seed: int) -> AutoencoderKL:
    """A 4-block AutoencoderKL with 16 latent channels and no quant convs (Flux / SD3 layout)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1,
        block_out_channels=(8, 16, 16, 16), norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=64, use_quant_conv=False, use_post_quant_conv=False,
        scaling_factor=scaling_factor, shift_factor=shift_factor)


# -------------------------------------------------------------------------------------- Flux

#: Per-variant transformer settings, pipeline class and weight seed (Kontext = dev's weights).
FLUX_VARIANTS: dict[str, dict[str, Any]] = {
    "dev": {"guidance_embeds": True, "in_channels": 64, "out_channels": None, "pipeline": "FluxPipeline",
            "seed": 10},
    "schnell": {"guidance_embeds": False, "in_channels": 64, "out_channels": None, "pipeline": "FluxPipeline",
                "seed": 11},
    # Fill: packed latents (16*4) + packed masked-image latents (16*4) + packed 8x8 mask (64*4).
    "fill": {"guidance_embeds": True, "in_channels": 384, "out_channels": 64, "pipeline": "FluxFillPipeline",
             "seed": 12},
    "kontext": {"guidance_embeds": True, "in_channels": 64, "out_channels": None,
                "pipeline": "FluxKontextPipeline", "seed": 10},
}


def make_flux_transformer(variant: str = "dev") -> FluxTransformer2DModel:
    """A 1+1-block FluxTransformer2DModel (2 heads x 16, rope axes 4+4+8) for `variant`."""
    import torch
    from diffusers import FluxTransformer2DModel

    v = FLUX_VARIANTS[variant]
    torch.manual_seed(SEED + v["seed"])
    return FluxTransformer2DModel(
        patch_size=1, in_channels=v["in_channels"], out_channels=v["out_channels"], num_layers=1,
        num_single_layers=1, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=T5_DIM,
        pooled_projection_dim=32, axes_dims_rope=[4, 4, 8], guidance_embeds=v["guidance_embeds"])


def make_flux_scheduler(variant: str = "dev") -> FlowMatchEulerDiscreteScheduler:
    """Flux's FlowMatchEuler settings: dev-like variants shift dynamically, schnell does not."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if variant == "schnell":
        return FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                           max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)


def make_flux_pipeline(tmp: Path, variant: str = "dev") -> DiffusionPipeline:
    """A tiny Flux pipeline of `variant` (dev, schnell, fill, kontext)."""
    import diffusers

    clip, tok = make_clip_l(tmp)
    t5_tok = make_t5_tokenizer()
    comps = dict(transformer=make_flux_transformer(variant), vae=make_vae16(0.3611, 0.1159, SEED + 5),
                 text_encoder=clip_without_projection(clip), tokenizer=tok, text_encoder_2=make_t5(len(t5_tok)),
                 tokenizer_2=t5_tok, scheduler=make_flux_scheduler(variant))
    cls = getattr(diffusers, FLUX_VARIANTS[variant]["pipeline"])
    if cls.__name__ != "FluxFillPipeline":
        comps.update(image_encoder=None, feature_extractor=None)
    return cls(**comps)


# --------------------------------------------------------------------------------------- SD3


def make_sd3_transformer(medium: bool = False) -> SD3Transformer2DModel:
    """A 2-block SD3Transformer2DModel (4 heads x 8, rms qk-norm); `medium` adds MMDiT-X attn2 to
    block 0 (SD 3.5 medium's `dual_attention_layers`)."""
    import torch
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(SEED + 20 + int(medium))
    return SD3Transformer2DModel(
        sample_size=32, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
        joint_attention_dim=T5_DIM, pooled_projection_dim=64, pos_embed_max_size=64,
        qk_norm="rms_norm", dual_attention_layers=(0,) if medium else ())


def make_sd3_pipeline(tmp: Path, medium: bool = False, with_t5: bool = True) -> StableDiffusion3Pipeline:
    """A tiny StableDiffusion3Pipeline: CLIP-L and CLIP-G with projections (pooled 32 + 32 = 64),
    T5 unless `with_t5` is False (then text_encoder_3 / tokenizer_3 are None)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    te, tok = make_clip_l(tmp)
    te2, tok2 = make_clip_g(tmp)
    t5_tok = make_t5_tokenizer()
    return StableDiffusion3Pipeline(
        transformer=make_sd3_transformer(medium), vae=make_vae16(1.5305, 0.0609, SEED + 6),
        text_encoder=te, tokenizer=tok, text_encoder_2=te2, tokenizer_2=tok2,
        text_encoder_3=make_t5(len(t5_tok)) if with_t5 else None, tokenizer_3=t5_tok if with_t5 else None,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), image_encoder=None, feature_extractor=None)


# -------------------------------------------------------------------------------- Qwen-Image

QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
QWEN_DIM = 16


def _qwen_templates() -> list[str]:
    """The prompt templates QwenImagePipeline and QwenImageEditPipeline set in __init__ (read off
    the installed source, so the tokenizer follows diffusers if the templates change)."""
    import inspect

    from diffusers import QwenImageEditPipeline, QwenImagePipeline

    out = []
    for cls in (QwenImagePipeline, QwenImageEditPipeline):
        m = re.search(r'self\.prompt_template_encode = "(.*)"\n', inspect.getsource(cls.__init__))
        if m is None:
            raise RuntimeError(f"no prompt_template_encode in {cls.__name__}.__init__")
        out.append(m.group(1).encode().decode("unicode_escape"))
    return out


def write_qwen_tokenizer_files(folder: Path) -> Path:
    """A byte-level BPE vocab.json + merges.txt (Qwen2's pre-tokenizer) in which every word of the
    two prompt templates and of WORDS is one token, so the template's system part is exactly as
    many tokens as with the real tokenizer (34 for Qwen-Image) and `drop_idx` cuts where it should."""
    from tokenizers import pre_tokenizers
    from tokenizers.models import BPE
    from transformers import Qwen2Tokenizer

    from app.engine.model_configs import byte_chars

    folder.mkdir(parents=True, exist_ok=True)
    chars = byte_chars()
    vocab: dict[str, int] = {c: i for i, c in enumerate(chars)}
    merges: list[tuple[str, str]] = []
    special = "|".join(re.escape(t) for t in QWEN_SPECIAL)
    chunks = re.split(special, "".join(t.replace("{}", "\n") for t in _qwen_templates()))
    chunks += [" ".join(WORDS), " ".join(w.capitalize() for w in WORDS)]
    pre = Qwen2Tokenizer()._tokenizer.pre_tokenizer  # the real split regex + byte-level map
    assert isinstance(pre, pre_tokenizers.Sequence)
    pieces = list(dict.fromkeys(p for c in chunks for p, _ in pre.pre_tokenize_str(c)))
    for _ in range(8):  # add left-to-right merge chains, then repair the words they split
        bpe = BPE(vocab=dict(vocab), merges=list(merges))
        bad = 0
        for piece in pieces:
            parts = bpe.tokenize(piece)
            cur = [p.value for p in parts]
            if len(cur) == 1:
                continue
            bad += 1
            acc = cur[0]
            for nxt in cur[1:]:
                merges.append((acc, nxt))
                acc += nxt
                vocab.setdefault(acc, len(vocab))
        if not bad:
            break
    else:  # pragma: no cover - the loop converges in two or three rounds
        raise RuntimeError("Qwen tokenizer merges did not converge")
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                       encoding="utf-8")
    return folder


def make_qwen_tokenizer(tmp: Path) -> Qwen2Tokenizer:
    """The tiny Qwen2Tokenizer with Qwen's special tokens (ids after the BPE vocab)."""
    from transformers import AddedToken, Qwen2Tokenizer

    folder = write_qwen_tokenizer_files(tmp / "_qwen_tok")
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    merges = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    tok = Qwen2Tokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges if m],
                         model_max_length=32768)
    tok.add_special_tokens({"additional_special_tokens": [AddedToken(t, special=True)
                                                          for t in QWEN_SPECIAL[1:]]})
    return tok


def make_qwen_text_encoder(tok: Qwen2Tokenizer) -> Qwen2_5_VLForConditionalGeneration:
    """A 2-layer Qwen2.5-VL (text hidden 16, vision depth 2 hidden 16) sized to `tok`."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    cfg = Qwen2_5_VLConfig(
        text_config={"hidden_size": QWEN_DIM, "intermediate_size": 16, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": len(tok),
                     "max_position_embeddings": 4096, "bos_token_id": ids["<|endoftext|>"],
                     "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"],
                     "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
                                         "mrope_section": [1, 1, 2]}},
        vision_config={"depth": 2, "hidden_size": QWEN_DIM, "intermediate_size": 16, "num_heads": 2,
                       "out_hidden_size": QWEN_DIM, "patch_size": 14, "spatial_merge_size": 2,
                       "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [1]},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        vocab_size=len(tok))
    return Qwen2_5_VLForConditionalGeneration(cfg).eval()


def make_qwen_vae() -> AutoencoderKLQwenImage:
    """AutoencoderKLQwenImage with 16 latent channels and scale factor 8 (3 downsamples)."""
    from diffusers import AutoencoderKLQwenImage

    return AutoencoderKLQwenImage(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                                  temperal_downsample=[False, True, True],
                                  latents_mean=[0.0] * 16, latents_std=[1.0] * 16)


def make_qwen_transformer() -> QwenImageTransformer2DModel:
    """A 2-block QwenImageTransformer2DModel: packed 16-channel latents in (64), 16 out."""
    from diffusers import QwenImageTransformer2DModel

    return QwenImageTransformer2DModel(
        patch_size=2, in_channels=64, out_channels=16, num_layers=2, attention_head_dim=16,
        num_attention_heads=3, joint_attention_dim=QWEN_DIM, guidance_embeds=False,
        axes_dims_rope=(8, 4, 4))


def make_qwen_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """Qwen-Image's FlowMatchEuler settings (exponential dynamic shift, shift_terminal 0.02)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9, base_image_seq_len=256,
        max_image_seq_len=8192, shift_terminal=0.02, time_shift_type="exponential")


def make_qwen_processor(tok: Qwen2Tokenizer, image_processor: Any = None) -> Qwen2VLProcessor:
    """A Qwen2VLProcessor (tokenizer + an image processor capping images at 56x56 pixels, so an
    image is 4 merged vision tokens), built as the engine builds one (no video processor)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from app.engine.families.qwen_image import image_processor_only

    ip = image_processor or Qwen2VLImageProcessorPil(
        min_pixels=56 * 56, max_pixels=56 * 56, patch_size=14, temporal_patch_size=2, merge_size=2)
    return image_processor_only(tok, ip)


def load_qwen_processor(folder: Path) -> Qwen2VLProcessor:
    """The processor of a saved Qwen-Image-Edit folder's `processor/`, as the engine loads it."""
    from app.engine.families.qwen_image import load_processor

    return load_processor(folder)


def make_qwen_pipeline(tmp: Path, edit: bool = False) -> QwenImagePipeline | QwenImageEditPipeline:
    """A tiny QwenImagePipeline, or QwenImageEditPipeline (the same weights plus a processor)."""
    import torch
    from diffusers import QwenImageEditPipeline, QwenImagePipeline

    tok = make_qwen_tokenizer(tmp)
    torch.manual_seed(SEED + 30)
    transformer = make_qwen_transformer()
    torch.manual_seed(SEED + 31)
    vae = make_qwen_vae()
    torch.manual_seed(SEED + 32)
    comps = dict(transformer=transformer, vae=vae, text_encoder=make_qwen_text_encoder(tok), tokenizer=tok,
                 scheduler=make_qwen_scheduler())
    if edit:
        return QwenImageEditPipeline(processor=make_qwen_processor(tok), **comps)
    return QwenImagePipeline(**comps)


#: What Qwen/Qwen-Image-Edit's processor/video_preprocessor_config.json holds (less its sizes),
#: so a venv with torchvision loads the folder's processor as transformers would.
_QWEN_VIDEO_CONFIG = {
    "video_processor_type": "Qwen2VLVideoProcessor", "processor_class": "Qwen2VLProcessor",
    "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "merge_size": 2, "patch_size": 14, "temporal_patch_size": 2, "resample": 3,
    "rescale_factor": 0.00392156862745098, "min_pixels": 3136, "max_pixels": 3136,
    "size": {"shortest_edge": 3136, "longest_edge": 3136}}


def save_qwen_edit_folder(pipe: QwenImageEditPipeline, folder: Path) -> Path:
    """Save a QwenImageEditPipeline: diffusers' save_pretrained cannot write a processor without
    a video processor, so the other components are saved as usual and `processor/` is written
    like the released one (tokenizer files, preprocessor_config.json, video_preprocessor_config)."""
    from diffusers import QwenImagePipeline

    comps = {k: getattr(pipe, k) for k in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")}
    QwenImagePipeline(**comps).save_pretrained(folder, safe_serialization=True)
    proc = folder / "processor"
    pipe.processor.tokenizer.save_pretrained(proc)
    pipe.processor.image_processor.save_pretrained(proc)
    cfg = json.loads((proc / "preprocessor_config.json").read_text(encoding="utf-8"))
    cfg["processor_class"] = "Qwen2VLProcessor"
    (proc / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    (proc / "video_preprocessor_config.json").write_text(json.dumps(_QWEN_VIDEO_CONFIG, indent=2),
                                                          encoding="utf-8")
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    index["_class_name"] = "QwenImageEditPipeline"
    index["processor"] = ["transformers", "Qwen2VLProcessor"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True), encoding="utf-8")
    return folder


# ------------------------------------------------------------------------------- file layouts

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")


def save_folder(pipe: DiffusionPipeline, folder: Path) -> Path:
    """Save `pipe` as a diffusers folder (safetensors) and return it."""
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def save_config_folder(src: Path, dest: Path) -> Path:
    """Copy a diffusers folder without its weight files (model_index, configs, tokenizers)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=lambda _d, names: [n for n in names if n.endswith(WEIGHT_SUFFIXES)])
    return dest


def save_tensors(state_dict: Mapping[str, Any], path: Path, metadata: dict[str, str] | None = None) -> Path:
    """`safetensors.torch.save_file` of `state_dict` (contiguous, shared storage broken) at `path`."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().clone() for k, v in state_dict.items()}, str(path),
              metadata={"format": "pt", **(metadata or {})})
    return path


def save_original(state_dict: Mapping[str, Any], path: Path, rename: Callable[[dict], dict]) -> Path:
    """Write `rename(state_dict)` (a diffusers -> original-key converter, e.g. BFL Flux or SAI SD3;
    it may also split or fuse tensors) as a .safetensors file: the hook for original-key fixtures."""
    return save_tensors(rename(dict(state_dict)), path)


def save_denoiser_file(pipe: DiffusionPipeline, path: Path) -> Path:
    """The transformer's state dict as is (diffusers keys), one .safetensors file."""
    return save_tensors(pipe.transformer.state_dict(), path)


def save_split_layout(pipe: DiffusionPipeline, folder: Path, root: Path, name: str) -> dict[str, Path]:
    """The per-model part of a ComfyUI-style split layout under `root` for a Flux or SD3 pipeline
    saved at `folder`: diffusion_models/<name>.safetensors (diffusers keys),
    vae/<name>_vae.safetensors (diffusers keys) and config/<name>/ (the folder without weights)."""
    return {"denoiser": save_denoiser_file(pipe, root / "diffusion_models" / f"{name}.safetensors"),
            "vae": save_tensors(pipe.vae.state_dict(), root / "vae" / f"{name}_vae.safetensors"),
            "config": save_config_folder(folder, root / "config" / name)}


def save_text_encoders(sd3_pipe: StableDiffusion3Pipeline, root: Path) -> dict[str, Path]:
    """text_encoders/clip_l, clip_g and t5xxl_tiny .safetensors from an SD3 pipeline, named as the
    released files are (clip_*: `text_model.*` + `text_projection.weight`; T5: `shared.weight` +
    `encoder.*`). Flux's CLIP-L and T5 are the same weights (Flux ignores the projection)."""
    folder = root / "text_encoders"
    return {"clip_l": save_tensors(clip_text_state(sd3_pipe.text_encoder), folder / "clip_l.safetensors"),
            "clip_g": save_tensors(clip_text_state(sd3_pipe.text_encoder_2), folder / "clip_g.safetensors"),
            "t5": save_tensors(t5_state(sd3_pipe.text_encoder_3), folder / "t5xxl_tiny.safetensors")}


# --------------------------------------------------------------------- header-only key files

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def write_header_only(keys: Mapping[str, list[int]], path: Path, prefix: str = "", dtype: str = "BF16",
                      sparse: bool = False, metadata: dict[str, str] | None = None,
                      dtypes: Mapping[str, str] | None = None) -> Path:
    """A .safetensors file with these tensor names (each prefixed) and shapes but no real data.

    Default: every tensor's `data_offsets` point at one shared 0-byte range, which
    `app.engine.probe` accepts (it checks only that offsets lie inside the file; safetensors
    itself would refuse the file); it is a few hundred kB. `sparse=True` writes real,
    back-to-back offsets instead and extends the file with a hole to its full size (valid for
    any safetensors reader, no disk used on Linux, but reading it all, e.g. to hash it, reads
    gigabytes of zeros)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt", **(metadata or {})}}
    pos = 0
    for name, shape in keys.items():
        dt = (dtypes or {}).get(name, dtype)
        n = _DTYPE_BYTES[dt]
        for d in shape:
            n *= d
        start, end = (pos, pos + n) if sparse else (0, 0)
        header[prefix + name] = {"dtype": dt, "shape": list(shape), "data_offsets": [start, end]}
        pos += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        if sparse and pos:
            f.truncate(8 + len(raw) + pos)
    return path


def family_keys(name: str) -> dict[str, Any]:
    """One stored real-size key set (tests/fixtures/family_keys/<name>.json)."""
    return json.loads((KEYS_DIR / f"{name}.json").read_text(encoding="utf-8"))


def family_names() -> list[str]:
    """The names of the stored key sets."""
    return sorted(p.stem for p in KEYS_DIR.glob("*.json"))


def write_family_file(name: str, path: Path, prefix: str | None = None, extras: bool = True,
                      sparse: bool = False) -> Path:
    """A header-only .safetensors file of a stored key set, named as the real file is: the keys
    under the set's `prefix` (or `prefix` given here, e.g. "" for a bare denoiser) plus, unless
    `extras` is False, its other tensors (text encoders, VAE) as they are."""
    d = family_keys(name)
    pre = d["prefix"] if prefix is None else prefix
    keys = {pre + k: v for k, v in d["keys"].items()}
    if extras:
        keys.update(d["extra_keys"])
    return write_header_only(keys, path, dtype=d["dtype"], sparse=sparse, dtypes=d.get("dtypes"),
                             metadata={"imagebash.fixture": name})


# ------------------------------------------------------------- real-size key sets (generators)
# The JSONs under tests/fixtures/family_keys/ are written by `python -m tests.tiny_families`
# from these functions; tests compare them with diffusers' own converters and detectors.

Shapes = dict[str, list[int]]

#: The released diffusers configs (transformer/config.json) of the real models.
REAL_CONFIGS: dict[str, dict[str, Any]] = {
    "flux-dev": {"attention_head_dim": 128, "guidance_embeds": True, "in_channels": 64,
                 "joint_attention_dim": 4096, "num_attention_heads": 24, "num_layers": 19,
                 "num_single_layers": 38, "patch_size": 1, "pooled_projection_dim": 768,
                 "axes_dims_rope": [16, 56, 56]},
    "sd35-large": {"attention_head_dim": 64, "caption_projection_dim": 2432, "in_channels": 16,
                   "joint_attention_dim": 4096, "num_attention_heads": 38, "num_layers": 38,
                   "out_channels": 16, "patch_size": 2, "pooled_projection_dim": 2048,
                   "pos_embed_max_size": 192, "qk_norm": "rms_norm", "sample_size": 128,
                   "dual_attention_layers": []},
    "sd35-medium": {"attention_head_dim": 64, "caption_projection_dim": 1536, "in_channels": 16,
                    "joint_attention_dim": 4096, "num_attention_heads": 24, "num_layers": 24,
                    "out_channels": 16, "patch_size": 2, "pooled_projection_dim": 2048,
                    "pos_embed_max_size": 384, "qk_norm": "rms_norm", "sample_size": 128,
                    "dual_attention_layers": list(range(13))},
    "qwen-image": {"attention_head_dim": 128, "axes_dims_rope": [16, 56, 56], "guidance_embeds": False,
                   "in_channels": 64, "joint_attention_dim": 3584, "num_attention_heads": 24,
                   "num_layers": 60, "out_channels": 16, "patch_size": 2},
}
REAL_CONFIGS["flux-schnell"] = {**REAL_CONFIGS["flux-dev"], "guidance_embeds": False}
REAL_CONFIGS["flux-fill"] = {**REAL_CONFIGS["flux-dev"], "in_channels": 384, "out_channels": 64}
REAL_CONFIGS["flux-kontext"] = dict(REAL_CONFIGS["flux-dev"])

_VAE_BIG = {"in_channels": 3, "out_channels": 3, "layers_per_block": 2, "norm_num_groups": 32,
            "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4}


def _lin(keys: Shapes, name: str, out: int, inp: int, bias: bool = True) -> None:
    keys[name + ".weight"] = [out, inp]
    if bias:
        keys[name + ".bias"] = [out]


def flux_bfl_keys(variant: str = "flux-dev") -> Shapes:
    """Every tensor of a BFL-layout Flux.1 file (flux1-dev.safetensors and kin), with its shape:
    19 double and 38 single blocks, hidden 3072 (24 heads x 128), MLP 12288."""
    h, mlp, head = 3072, 12288, 128
    cfg = REAL_CONFIGS[variant]
    keys: Shapes = {}
    _lin(keys, "img_in", h, cfg["in_channels"])
    _lin(keys, "time_in.in_layer", h, 256)
    _lin(keys, "time_in.out_layer", h, h)
    _lin(keys, "vector_in.in_layer", h, 768)
    _lin(keys, "vector_in.out_layer", h, h)
    if cfg["guidance_embeds"]:
        _lin(keys, "guidance_in.in_layer", h, 256)
        _lin(keys, "guidance_in.out_layer", h, h)
    _lin(keys, "txt_in", h, 4096)
    for i in range(19):
        for s in ("img", "txt"):
            p = f"double_blocks.{i}.{s}_"
            _lin(keys, p + "mod.lin", 6 * h, h)
            _lin(keys, p + "attn.qkv", 3 * h, h)
            keys[p + "attn.norm.query_norm.scale"] = [head]
            keys[p + "attn.norm.key_norm.scale"] = [head]
            _lin(keys, p + "attn.proj", h, h)
            _lin(keys, p + "mlp.0", mlp, h)
            _lin(keys, p + "mlp.2", h, mlp)
    for i in range(38):
        p = f"single_blocks.{i}."
        _lin(keys, p + "linear1", 3 * h + mlp, h)
        _lin(keys, p + "linear2", h, h + mlp)
        keys[p + "norm.query_norm.scale"] = [head]
        keys[p + "norm.key_norm.scale"] = [head]
        _lin(keys, p + "modulation.lin", 3 * h, h)
    _lin(keys, "final_layer.linear", cfg.get("out_channels") or cfg["in_channels"], h)
    _lin(keys, "final_layer.adaLN_modulation.1", 2 * h, h)
    return keys


def sd3_sai_keys(variant: str = "sd35-large") -> Shapes:
    """The MMDiT tensors of an SAI-layout SD 3.5 file (no `model.diffusion_model.` prefix):
    joint blocks with x_block / context_block, rms qk-norm (ln_q/ln_k), MMDiT-X attn2 in the
    medium's first 13 x_blocks (9 modulations instead of 6), a pre-only last context block."""
    cfg = REAL_CONFIGS[variant]
    h, head, n = cfg["num_attention_heads"] * cfg["attention_head_dim"], cfg["attention_head_dim"], cfg["num_layers"]
    dual = set(cfg["dual_attention_layers"])
    keys: Shapes = {"pos_embed": [1, cfg["pos_embed_max_size"] ** 2, h],
                    "x_embedder.proj.weight": [h, 16, 2, 2], "x_embedder.proj.bias": [h]}
    _lin(keys, "t_embedder.mlp.0", h, 256)
    _lin(keys, "t_embedder.mlp.2", h, h)
    _lin(keys, "y_embedder.mlp.0", h, cfg["pooled_projection_dim"])
    _lin(keys, "y_embedder.mlp.2", h, h)
    _lin(keys, "context_embedder", h, cfg["joint_attention_dim"])
    for i in range(n):
        for part in ("x_block", "context_block"):
            p = f"joint_blocks.{i}.{part}."
            pre_only = part == "context_block" and i == n - 1
            mods = 2 if pre_only else (9 if part == "x_block" and i in dual else 6)
            _lin(keys, p + "adaLN_modulation.1", mods * h, h)
            attns = ["attn", "attn2"] if part == "x_block" and i in dual else ["attn"]
            for a in attns:
                _lin(keys, p + a + ".qkv", 3 * h, h)
                keys[p + a + ".ln_q.weight"] = [head]
                keys[p + a + ".ln_k.weight"] = [head]
                if not pre_only:
                    _lin(keys, p + a + ".proj", h, h)
            if not pre_only:
                _lin(keys, p + "mlp.fc1", 4 * h, h)
                _lin(keys, p + "mlp.fc2", h, 4 * h)
    _lin(keys, "final_layer.linear", 2 * 2 * 16, h)
    _lin(keys, "final_layer.adaLN_modulation.1", 2 * h, h)
    return keys


def meta_shapes(module: Any) -> Shapes:
    """Name -> shape of a module's state dict (works on meta-device modules)."""
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def diffusers_keys(cls_name: str, config: Mapping[str, Any]) -> Shapes:
    """The state-dict shapes of a diffusers model class built from `config` on the meta device."""
    import diffusers
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=True):
        model = getattr(diffusers, cls_name)(**config)
    return meta_shapes(model)


def _meta_transformers(cls_name: str, config: Any) -> Any:
    import transformers
    from accelerate import init_empty_weights

    with init_empty_weights():
        return getattr(transformers, cls_name)(config)


def clip_l_keys() -> Shapes:
    """CLIP ViT-L/14 text model tensors with the `text_model.` level the released files have."""
    from transformers import CLIPTextConfig

    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, max_position_embeddings=77, projection_dim=768)
    sd = meta_shapes(_meta_transformers("CLIPTextModel", cfg))
    return {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in sd.items()}


def t5xxl_keys() -> Shapes:
    """T5 v1.1 XXL encoder tensors as t5xxl_fp16.safetensors has them (`shared.weight`, no tied
    `encoder.embed_tokens.weight`)."""
    from transformers import T5Config

    cfg = T5Config(vocab_size=32128, d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24,
                   relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", is_encoder_decoder=False)
    sd = meta_shapes(_meta_transformers("T5EncoderModel", cfg))
    sd.pop("encoder.embed_tokens.weight", None)
    return sd


def openclip_bigg_keys() -> Shapes:
    """OpenCLIP ViT-bigG/14 text tower tensors (SDXL's `conditioner.embedders.1.model.`)."""
    w, layers = 1280, 32
    keys: Shapes = {"positional_embedding": [77, w], "token_embedding.weight": [49408, w],
                    "text_projection": [w, w], "logit_scale": [], "ln_final.weight": [w], "ln_final.bias": [w]}
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        keys[p + "attn.in_proj_weight"] = [3 * w, w]
        keys[p + "attn.in_proj_bias"] = [3 * w]
        _lin(keys, p + "attn.out_proj", w, w)
        for ln in ("ln_1", "ln_2"):
            keys[p + ln + ".weight"] = [w]
            keys[p + ln + ".bias"] = [w]
        _lin(keys, p + "mlp.c_fc", 4 * w, w)
        _lin(keys, p + "mlp.c_proj", w, 4 * w)
    return keys


def ldm_vae_keys(latent_channels: int, quant_conv: bool) -> Shapes:
    """An SD-family AutoencoderKL (128-256-512-512) in LDM names, without a prefix (as in BFL's
    ae.safetensors; `first_stage_model.` / `vae.` go in front inside checkpoints)."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL

    from tests.tiny_models import vae_to_ldm

    with init_empty_weights():
        vae = AutoencoderKL(latent_channels=latent_channels, use_quant_conv=quant_conv,
                            use_post_quant_conv=quant_conv, **_VAE_BIG)
    sd = vae_to_ldm({k: torch.empty(v.shape, device="meta") for k, v in vae.state_dict().items()},
                    dict(vae.config))
    return {k.removeprefix("first_stage_model."): list(v.shape) for k, v in sd.items()}


def ldm_unet_keys(config: Mapping[str, Any]) -> Shapes:
    """A diffusers UNet2DConditionModel config's tensors in LDM (`input_blocks...`) names."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    from tests.tiny_models import unet_to_ldm

    with init_empty_weights():
        unet = UNet2DConditionModel(**config)
    sd = unet_to_ldm({k: torch.empty(v.shape, device="meta") for k, v in unet.state_dict().items()},
                     dict(unet.config))
    return {k.removeprefix("model.diffusion_model."): list(v.shape) for k, v in sd.items()}


SDXL_UNET = {"sample_size": 128, "block_out_channels": (320, 640, 1280), "layers_per_block": 2,
             "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
             "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
             "transformer_layers_per_block": (1, 2, 10), "attention_head_dim": (5, 10, 20),
             "cross_attention_dim": 2048, "use_linear_projection": True, "addition_embed_type": "text_time",
             "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816}


def _prefixed(prefix: str, keys: Shapes) -> Shapes:
    return {prefix + k: v for k, v in keys.items()}


_KONTEXT_NOTE = (
    "FLUX.1-Kontext-dev has exactly FLUX.1-dev's tensor names and shapes (guidance_in present, "
    "img_in [3072, 64]): it cannot be told from dev by its keys. ComfyUI does not try (both load "
    "as Flux; Kontext editing comes from the ReferenceLatent / FluxKontextImageScale nodes, and "
    "model_detection.py reads only block counts, guidance_in and img_in); diffusers' "
    "infer_diffusers_model_type also returns 'flux-dev' for it. A loader can only go by the "
    "file name, the modelspec metadata (modelspec.architecture / title, when present) or the "
    "user's choice.")


def family_key_sets() -> dict[str, dict[str, Any]]:
    """Every real-size key fixture: name -> JSON document (keys, prefix, extra_keys, notes)."""
    docs: dict[str, dict[str, Any]] = {}

    def doc(name: str, family: str, layout: str, source: str, keys: Shapes, prefix: str = "",
            extra: Shapes | None = None, notes: str = "", config: Mapping[str, Any] | None = None,
            dtype: str = "BF16", dtypes: Mapping[str, str] | None = None) -> None:
        d: dict[str, Any] = {"name": name, "family": family, "layout": layout, "source": source,
                             "dtype": dtype, "prefix": prefix, "notes": notes}
        if config is not None:
            d["config"] = dict(config)
        d["count"] = len(keys) + len(extra or {})
        d["keys"] = dict(sorted(keys.items()))
        d["extra_keys"] = dict(sorted((extra or {}).items()))
        if dtypes:
            d["dtypes"] = dict(dtypes)
        docs[name] = d

    bfl_note = ("BFL original keys, no prefix: what {f} from black-forest-labs and ComfyUI's "
                "models/diffusion_models/ files hold. Norms without weights (img_norm1/2, pre_norm, "
                "norm_final) have no tensors.")
    for v, src in (("dev", "black-forest-labs/FLUX.1-dev flux1-dev.safetensors"),
                   ("schnell", "black-forest-labs/FLUX.1-schnell flux1-schnell.safetensors"),
                   ("fill", "black-forest-labs/FLUX.1-Fill-dev flux1-fill-dev.safetensors"),
                   ("kontext", "black-forest-labs/FLUX.1-Kontext-dev flux1-kontext-dev.safetensors")):
        notes = bfl_note.format(f=src.split()[-1])
        if v == "schnell":
            notes += " No guidance_in: that is what tells schnell from dev."
        if v == "fill":
            notes += (" img_in takes 384 = 64 packed latent + 64 packed masked-image latent + 256 packed "
                      "8x8 mask channels; final_layer still outputs 64.")
        if v == "kontext":
            notes += " " + _KONTEXT_NOTE
        doc(f"flux-{v}", "flux", "bfl", src, flux_bfl_keys(f"flux-{v}"), notes=notes,
            config=REAL_CONFIGS[f"flux-{v}"])
    doc("flux-dev-diffusers", "flux", "diffusers",
        "black-forest-labs/FLUX.1-dev transformer/diffusion_pytorch_model-0000N-of-00003.safetensors (union)",
        diffusers_keys("FluxTransformer2DModel", REAL_CONFIGS["flux-dev"]), config=REAL_CONFIGS["flux-dev"],
        notes="diffusers keys (the diffusers repo's transformer folder, three shards; union here).")
    te: Shapes = _prefixed("text_encoders.clip_l.transformer.", clip_l_keys())
    te["text_encoders.clip_l.transformer.text_projection.weight"] = [768, 768]
    te.update(_prefixed("text_encoders.t5xxl.transformer.", t5xxl_keys()))
    te.update(_prefixed("vae.", ldm_vae_keys(16, quant_conv=False)))
    doc("flux-dev-comfy-aio", "flux", "comfy-checkpoint",
        "Comfy-Org flux1-dev-fp8.safetensors style all-in-one checkpoint (models/checkpoints/)",
        flux_bfl_keys("flux-dev"), prefix="model.diffusion_model.", extra=te, config=REAL_CONFIGS["flux-dev"],
        notes=("ComfyUI all-in-one: the BFL keys under model.diffusion_model., CLIP-L under "
               "text_encoders.clip_l.transformer. (text_model.* + text_projection.weight), T5-XXL under "
               "text_encoders.t5xxl.transformer., the VAE in LDM names under vae.. The released fp8 file "
               "stores the denoiser (and T5) as F8_E4M3; dtype here is nominal. The text-encoder and VAE "
               "parts are derived from transformers'/diffusers' module layouts, not read off the file."))
    sai_vae = _prefixed("first_stage_model.", ldm_vae_keys(16, quant_conv=False))
    for v, src, notes in (
            ("large", "stabilityai/stable-diffusion-3.5-large sd3.5_large.safetensors",
             "38 joint blocks, hidden 2432, pos_embed [1, 36864, 2432] (192^2)."),
            ("medium", "stabilityai/stable-diffusion-3.5-medium sd3.5_medium.safetensors",
             "24 joint blocks, hidden 1536, pos_embed [1, 147456, 1536] (384^2); MMDiT-X: x_block.attn2.* "
             "and 9-way adaLN_modulation in blocks 0-12.")):
        doc(f"sd35-{v}", "sd3", "sai", src, sd3_sai_keys(f"sd35-{v}"), prefix="model.diffusion_model.",
            extra=sai_vae, config=REAL_CONFIGS[f"sd35-{v}"],
            notes=(f"SAI original keys under model.diffusion_model.; {notes} The last joint block's "
                   "context_block is pre-only (adaLN 2*hidden, qkv and ln_q/ln_k, no proj, no mlp). The "
                   "file carries no text encoders (ComfyUI: load clip_l/clip_g/t5xxl separately) but has "
                   "the VAE under first_stage_model. (LDM names; derived, not read off the file)."))
    qwen_cfg = REAL_CONFIGS["qwen-image"]
    doc("qwen-image", "qwen-image", "diffusers",
        "Qwen/Qwen-Image transformer/diffusion_pytorch_model-0000N-of-00009.safetensors (union)",
        diffusers_keys("QwenImageTransformer2DModel", qwen_cfg), config=qwen_cfg,
        notes=("Released in diffusers keys (60 transformer_blocks, img_in [3072, 64], txt_in [3072, 3584], "
               "txt_norm, time_text_embed, norm_out, proj_out [64, 3072]); ComfyUI's split file "
               "(qwen_image_bf16.safetensors) uses the same names. Qwen-Image-Edit has the same keys and "
               "shapes: it cannot be told from Qwen-Image by its keys either."))
    sd1_te = _prefixed("cond_stage_model.transformer.", clip_l_keys())
    sd1_te["cond_stage_model.transformer.text_model.embeddings.position_ids"] = [1, 77]
    sd1_te.update(_prefixed("first_stage_model.", ldm_vae_keys(4, quant_conv=True)))
    doc("sd15", "sd1", "ldm", "stable-diffusion-v1-5 v1-5-pruned-emaonly.safetensors",
        ldm_unet_keys({}), prefix="model.diffusion_model.", extra=sd1_te, dtype="F16",
        dtypes={"cond_stage_model.transformer.text_model.embeddings.position_ids": "I64"},
        notes="LDM layout, for contrast (the DDPM schedule buffers of the released file are left out).")
    xl = _prefixed("conditioner.embedders.0.transformer.", clip_l_keys())
    xl["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"] = [1, 77]
    xl.update(_prefixed("conditioner.embedders.1.model.", openclip_bigg_keys()))
    xl.update(_prefixed("first_stage_model.", ldm_vae_keys(4, quant_conv=True)))
    doc("sdxl", "sdxl", "ldm", "stabilityai/stable-diffusion-xl-base-1.0 sd_xl_base_1.0.safetensors",
        ldm_unet_keys(SDXL_UNET), prefix="model.diffusion_model.", extra=xl, dtype="F16",
        dtypes={"conditioner.embedders.0.transformer.text_model.embeddings.position_ids": "I64"},
        notes="SGM layout, for contrast: CLIP-L (embedders.0) + OpenCLIP bigG (embedders.1).")
    return docs


def _dump_key_doc(d: Mapping[str, Any]) -> str:
    """JSON with one tensor per line (readable, diff-friendly)."""
    lines = ["{"]
    items = list(d.items())
    for i, (k, v) in enumerate(items):
        end = "," if i < len(items) - 1 else ""
        if isinstance(v, dict) and k in ("keys", "extra_keys", "dtypes"):
            body = [f"  {json.dumps(n)}: {json.dumps(x, separators=(', ', ': '))}" for n, x in v.items()]
            lines.append(f" {json.dumps(k)}: {{" + ("\n" + ",\n".join(body) + "\n }" if body else "}") + end)
        else:
            lines.append(f" {json.dumps(k)}: {json.dumps(v, separators=(', ', ': '))}{end}")
    return "\n".join(lines) + "\n}\n"


def write_family_key_jsons(folder: Path = KEYS_DIR) -> list[Path]:
    """(Re)write tests/fixtures/family_keys/*.json from the generators above."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, d in family_key_sets().items():
        path = folder / f"{name}.json"
        path.write_text(_dump_key_doc(d), encoding="utf-8")
        out.append(path)
    return out


# ---------------------------------------------------------------------------------- build all


def build_all(root: Path) -> dict[str, Path]:
    """Build every tiny artefact under `root`; returns name -> path and writes `manifest.json`
    (the same names, paths relative to `root`). See tests/fixtures_families.py for the names."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / "_build"
    out: dict[str, Path] = {}
    dev = make_flux_pipeline(tmp, "dev")
    out["flux_dev_dir"] = save_folder(dev, root / "tiny-flux-dev")
    for v in ("schnell", "fill", "kontext"):
        out[f"flux_{v}_dir"] = save_folder(make_flux_pipeline(tmp, v), root / f"tiny-flux-{v}")
    sd3 = make_sd3_pipeline(tmp)
    out["sd3_dir"] = save_folder(sd3, root / "tiny-sd35")
    out["sd3_medium_dir"] = save_folder(make_sd3_pipeline(tmp, medium=True), root / "tiny-sd35-medium")
    out["sd3_no_t5_dir"] = save_folder(make_sd3_pipeline(tmp, with_t5=False), root / "tiny-sd35-no-t5")
    out["qwen_dir"] = save_folder(make_qwen_pipeline(tmp), root / "tiny-qwen-image")
    out["qwen_edit_dir"] = save_qwen_edit_folder(make_qwen_pipeline(tmp, edit=True), root / "tiny-qwen-image-edit")
    out["flux_dev_file"] = save_denoiser_file(dev, root / "single" / "tiny-flux-dev.safetensors")
    out["sd3_file"] = save_denoiser_file(sd3, root / "single" / "tiny-sd35.safetensors")
    comfy = root / "comfy"
    out["comfy_dir"] = comfy
    for part, path in save_text_encoders(sd3, comfy).items():
        out[f"comfy_{part}"] = path
    for key, pipe, name in (("flux_dev", dev, "tiny-flux-dev"), ("sd3", sd3, "tiny-sd35")):
        for part, path in save_split_layout(pipe, out[f"{key}_dir"], comfy, name).items():
            out[f"comfy_{key}_{part}"] = path
    shutil.rmtree(tmp, ignore_errors=True)
    manifest = {k: Path(os.path.relpath(v, root)).as_posix() for k, v in out.items()}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    out["manifest"] = root / "manifest.json"
    return out


if __name__ == "__main__":
    for p in write_family_key_jsons():
        print(p, p.stat().st_size)
