"""Widget names of ComfyUI's core nodes, in the order a UI file's `widgets_values` lists them.

A litegraph file stores a node's widget values as a bare list, so reading one needs the order of the
node's widget inputs in its INPUT_TYPES (required, then optional), with the frontend's extras:
`control_after_generate` after every seed / noise_seed INT, and LoadImage's `upload` button.
Names and order follow ComfyUI's nodes.py and comfy_extras/nodes_*.py.
"""

from __future__ import annotations

#: the frontend's extra value after a seed widget ("fixed", "randomize", ...; a boolean before mid-2023)
CONTROL = "control_after_generate"
#: values the control widget can hold, so a file without one can be told from a file with one
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
#: widgets that exist only in the UI and carry nothing the server reads
UI_ONLY = frozenset({"upload"})

_SEED_SAMPLER = ("seed", CONTROL, "steps", "cfg", "sampler_name", "scheduler", "denoise")

WIDGETS: dict[str, tuple[str, ...]] = {
    # loaders
    "CheckpointLoaderSimple": ("ckpt_name",),
    "VAELoader": ("vae_name",),
    "LoraLoader": ("lora_name", "strength_model", "strength_clip"),
    "LoraLoaderModelOnly": ("lora_name", "strength_model"),
    "UNETLoader": ("unet_name", "weight_dtype"),
    "CLIPLoader": ("clip_name", "type", "device"),
    "DualCLIPLoader": ("clip_name1", "clip_name2", "type", "device"),
    "ControlNetLoader": ("control_net_name",),
    # conditioning
    "CLIPSetLastLayer": ("stop_at_clip_layer",),
    "CLIPTextEncode": ("text",),
    "ConditioningCombine": (),
    "ConditioningAverage": ("conditioning_to_strength",),
    "ConditioningConcat": (),
    "ConditioningSetArea": ("width", "height", "x", "y", "strength"),
    "ConditioningSetAreaPercentage": ("width", "height", "x", "y", "strength"),
    "ConditioningSetMask": ("strength", "set_cond_area"),
    "ConditioningZeroOut": (),
    "ControlNetApply": ("strength",),
    "ControlNetApplyAdvanced": ("strength", "start_percent", "end_percent"),
    "FluxGuidance": ("guidance",),
    # latents
    "EmptyLatentImage": ("width", "height", "batch_size"),
    "EmptySD3LatentImage": ("width", "height", "batch_size"),
    "LatentUpscale": ("upscale_method", "width", "height", "crop"),
    "LatentUpscaleBy": ("upscale_method", "scale_by"),
    "LatentComposite": ("x", "y", "feather"),
    "SetLatentNoiseMask": (),
    # sampling
    "KSampler": _SEED_SAMPLER,
    "KSamplerAdvanced": (
        "add_noise", "noise_seed", CONTROL, "steps", "cfg", "sampler_name", "scheduler",
        "start_at_step", "end_at_step", "return_with_leftover_noise",
    ),
    "KSamplerSelect": ("sampler_name",),
    "BasicScheduler": ("scheduler", "steps", "denoise"),
    "RandomNoise": ("noise_seed", CONTROL),
    "BasicGuider": (),
    "CFGGuider": ("cfg",),
    "SamplerCustom": ("add_noise", "noise_seed", CONTROL, "cfg"),
    "SamplerCustomAdvanced": (),
    "ModelSamplingFlux": ("max_shift", "base_shift", "width", "height"),
    "ModelSamplingSD3": ("shift",),
    "ModelSamplingAuraFlow": ("shift",),
    # vae
    "VAEDecode": (),
    "VAEDecodeTiled": ("tile_size", "overlap", "temporal_size", "temporal_overlap"),
    "VAEEncode": (),
    "VAEEncodeForInpaint": ("grow_mask_by",),
    # images
    "LoadImage": ("image", "upload"),
    "LoadImageMask": ("image", "channel", "upload"),
    "SaveImage": ("filename_prefix",),
    "PreviewImage": (),
    "ImageScale": ("upscale_method", "width", "height", "crop"),
    "ImageScaleBy": ("upscale_method", "scale_by"),
    "ImageScaleToTotalPixels": ("upscale_method", "megapixels", "resolution_steps"),
    "ImagePadForOutpaint": ("left", "top", "right", "bottom", "feathering"),
    "ImageBlend": ("blend_factor", "blend_mode"),
    "ImageInvert": (),
    "Canny": ("low_threshold", "high_threshold"),
    "SaveAnimatedWEBP": ("filename_prefix", "fps", "lossless", "quality", "method"),
    "SaveWEBM": ("filename_prefix", "codec", "fps", "crf"),
}

#: nodes that gained trailing widgets over time: files saved by older ComfyUI list only the first n
MIN_WIDGETS: dict[str, int] = {
    "UNETLoader": 1,  # weight_dtype came with Flux (2024-08)
    "CLIPLoader": 2,  # device is a later optional widget
    "DualCLIPLoader": 3,
    "VAEDecodeTiled": 1,  # overlap, then temporal_size / temporal_overlap for video VAEs
    "ImageScaleToTotalPixels": 2,  # resolution_steps is recent
    "LoadImage": 1,  # files written by hand or by scripts often drop the upload button's value
    "LoadImageMask": 2,
}


def required_count(class_type: str) -> int:
    """How many real (non-control, non-UI) widget values a file must give for `class_type`."""
    names = WIDGETS[class_type]
    if class_type in MIN_WIDGETS:
        names = names[: MIN_WIDGETS[class_type]]
    return sum(1 for n in names if n != CONTROL and n not in UI_ONLY)


def is_control_value(value: object) -> bool:
    """True for what a seed's control widget stores: a mode name, or a boolean in pre-2023 files."""
    return isinstance(value, bool) or (isinstance(value, str) and value in CONTROL_VALUES)
