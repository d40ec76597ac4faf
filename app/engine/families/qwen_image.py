"""Qwen-Image (Alibaba Qwen): a 20B MMDiT with Qwen2.5-VL as its text encoder; Qwen-Image-Edit.

Its released weights already use diffusers' names, so ComfyUI's `diffusion_model.` files only
differ by the prefix. The VAE is Wan's video VAE (5-D latents of one frame) normalised per
channel by `latents_mean`/`latents_std` instead of one scaling factor. Guidance is real
classifier-free guidance (`true_cfg_scale`, which needs a negative prompt: a blank one when
none is given). Qwen-Image and Qwen-Image-Edit share keys: a single file is the base model
unless its metadata says edit; the edit node runs the edit pipeline on either.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.engine.families.base import TrainingSpec, Variant
from app.engine.families.dit_common import PerChannelLatents, TransformerFamily, separate_cfg_rows, token_weight
from app.engine.probe import Probe

ORDER = 40
PREFIXES = ("", "model.diffusion_model.", "diffusion_model.")
DENOISER = 40_870_000_000
ENCODER = 16_580_000_000


@dataclass
class QwenImage(PerChannelLatents, TransformerFamily):
    def detect(self, header: Probe) -> str | None:
        p = next((p for p in PREFIXES if f"{p}transformer_blocks.0.img_mod.1.weight" in header
                  and f"{p}txt_norm.weight" in header), None)
        if p is None:
            return None
        text = " ".join(header.metadata.get(k, "") for k in ("modelspec.title", "modelspec.architecture")).lower()
        return "edit" if "edit" in text else "base"

    def detect_folder(self, index: Mapping[str, Any], folder: Path) -> str | None:
        name = str(index.get("_class_name", ""))
        if not name.startswith("QwenImage"):
            return None
        return "edit" if "Edit" in name else "base"

    def call_kwargs(self, variant: str, *, prompt: Any, negative_prompt: Any, guidance: float,
                    steps: int) -> dict[str, Any]:
        negative = negative_prompt
        if guidance > 1 and not negative:  # the pipeline runs CFG only with a negative prompt
            negative = [" "] * len(prompt) if isinstance(prompt, list) else " "
        return {"prompt": prompt, "negative_prompt": negative, "true_cfg_scale": guidance,
                "num_inference_steps": steps}

    def encode_prompts(self, pipe: Any, captions: list[str], device: str, grad: bool = False) -> dict[str, Any]:
        import torch

        with torch.no_grad():  # Qwen2.5-VL stays frozen
            hidden, mask = pipe.encode_prompt(prompt=captions, device=device,
                                              max_sequence_length=self.training.max_sequence_length)
        if mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        return {"hidden": hidden, "mask": mask}

    def collate_text(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Captions differ in length: pad the embeddings with zeros, the mask with 0."""
        import torch

        longest = max(int(it["mask"].shape[0]) for it in items)
        hidden = torch.zeros(len(items), longest, items[0]["hidden"].shape[-1], dtype=items[0]["hidden"].dtype)
        mask = torch.zeros(len(items), longest, dtype=items[0]["mask"].dtype)
        for i, it in enumerate(items):
            n = int(it["mask"].shape[0])
            hidden[i, :n], mask[i, :n] = it["hidden"], it["mask"]
        return {"hidden": hidden, "mask": mask}

    def flow_forward(self, pipe: Any, noisy: Any, sigmas: Any, emb: dict[str, Any], guidance: float | None) -> Any:
        n, c, h, w = noisy.shape
        packed = pipe._pack_latents(noisy, n, c, h, w)
        out = pipe.transformer(hidden_states=packed, timestep=sigmas.to(noisy.dtype), guidance=None,
                               encoder_hidden_states_mask=emb["mask"], encoder_hidden_states=emb["hidden"],
                               img_shapes=[[(1, h // 2, w // 2)]] * n, return_dict=False)[0]
        scale = pipe.vae_scale_factor
        return pipe._unpack_latents(out, h * scale, w * scale, scale)[:, :, 0]

    # -- regional prompts --------------------------------------------------------------------
    def region_inputs(self, pipe: Any, prompt: str, device: str,
                      call: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A region's Qwen2.5-VL states and their mask (None when no token is padding: the forward
        takes the text length from the states); an edit pipeline encodes it with the source image
        its own call had."""
        hidden, mask = self.region_encode(pipe, prompt, device, call)
        return {"encoder_hidden_states": hidden, "encoder_hidden_states_mask": mask}

    def region_rows(self, pipe: Any, call: Mapping[str, Any], seen: dict[str, Any]) -> slice | None:
        return separate_cfg_rows(call, seen)  # true CFG calls the transformer again for the negative

    def region_weight(self, pipe: Any, mask: Any, size: tuple[int, int], pred: Any) -> Any:
        return token_weight(pipe, mask, size, pred)  # packed 2x2 patches (+ an edit's reference tokens)

    def vae_decode(self, vae: Any, z: Any) -> Any:
        return vae.decode(z[:, :, None]).sample[:, :, 0]

    def vae_encode(self, vae: Any, x: Any) -> Any:
        return vae.encode(x[:, :, None]).latent_dist.mode()[:, :, 0]

    def unpack(self, pipe: Any, latents: Any, width: int, height: int) -> Any:
        if latents.ndim == 3:
            latents = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
        return latents[:, :, 0] if latents.ndim == 5 else latents

    def pack(self, pipe: Any, latents: Any) -> Any:
        n, c, h, w = latents.shape
        return pipe._pack_latents(latents, n, c, h, w)

    def folder_components(self, folder: Path) -> dict[str, Any]:
        if (folder / "processor").is_dir():
            return {"processor": load_processor(folder / "processor")}
        return {}

    def convert_vae(self, state: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
        from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

        return convert_wan_vae_to_diffusers(state)


def image_processor_only(tokenizer: Any, image_processor: Any) -> Any:
    """Qwen-Image-Edit's Qwen2VLProcessor (tokenizer + image processor) without a video processor.

    transformers 5 builds Qwen2-VL's video processor on torchvision, which imagebash keeps out of
    its dependencies (it would replace the CPU torch wheel); `Qwen2VLProcessor` insists on one,
    so its argument check is skipped for the missing video processor. Editing only sends images,
    which never reach the video processor.
    """
    from transformers import Qwen2VLProcessor

    with _PROCESSOR_LOCK:
        check = Qwen2VLProcessor.check_argument_for_proper_class
        try:
            Qwen2VLProcessor.check_argument_for_proper_class = (  # type: ignore[method-assign]
                lambda self, name, arg: None if arg is None else check(self, name, arg))
            return Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=None)
        finally:
            Qwen2VLProcessor.check_argument_for_proper_class = check  # type: ignore[method-assign]


def load_processor(folder: Path) -> Any:
    """The processor saved in a Qwen-Image-Edit folder's `processor/` (see `image_processor_only`)."""
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return image_processor_only(Qwen2Tokenizer.from_pretrained(str(folder), local_files_only=True),
                                Qwen2VLImageProcessorPil.from_pretrained(str(folder), local_files_only=True))


_PROCESSOR_LOCK = threading.Lock()

_NOTE = "Qwen-Image and Qwen-Image-Edit files have the same keys: edits need Qwen-Image-Edit weights"

FAMILY = QwenImage(
    name="qwen_image", title="Qwen-Image",
    variants=(
        Variant("base", "Qwen-Image", "qwen-image", DENOISER, ENCODER, steps=50, guidance=4.0,
                tasks=("txt2img", "img2img", "inpaint", "edit"), note=_NOTE),
        Variant("edit", "Qwen-Image-Edit", "qwen-image-edit", DENOISER, ENCODER, steps=50, guidance=4.0,
                tasks=("edit", "txt2img")),
    ),
    pipelines={"txt2img": "QwenImagePipeline", "img2img": "QwenImageImg2ImgPipeline",
               "inpaint": "QwenImageInpaintPipeline", "edit": "QwenImageEditPipeline"},
    text_encoders=("text_encoder",), latent_channels=16, size_multiple=16, guidance_kind="true_cfg",
    lora_components=("transformer",),
    lora_words=("qwen",), lora_keys=("img_mlp", "txt_mlp", "img_mod.1", "txt_mod.1", "img_mod_1", "txt_mod_1"),
    kohya_prefixes={"lora_unet_": "transformer", "lora_transformer_": "transformer", "lycoris_": "transformer"},
    dotted_prefixes={"transformer.": "transformer", "diffusion_model.": "transformer",
                     "model.diffusion_model.": "transformer"},
    training=TrainingSpec("style-qwen-image", "qwen_image", "qwen-image", objective="flow",
                          timestep_sampling="logit_normal", shift=3.0,
                          attention=("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj",
                                     "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"),
                          ff=("img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj", "txt_mlp.net.2"),
                          block_groups={"blocks": "transformer_blocks"}, encoders=(), max_sequence_length=512),
    encoder_renames={"text_encoder": ((r"^visual\.", "model.visual."),
                                      (r"^model\.(?!language_model\.|visual\.)", "model.language_model."))},
)
