"""Ready-made Replicate nodes: a model reference plus a preset of inputs, nothing else.

Each preset names its model, the graph inputs it takes (their kinds), and starting values for
the inputs a user usually touches. Those become fixed ports, so the node shows and validates
offline; the rest of the model's schema joins as dynamic ports when it can be read. Adding a
preset is adding one entry to PRESETS.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Annotated, Any

from nodes.registry import node
from nodes.replicate.nodes import ReplicateOutputs, SchemaInputs, run_model
from nodes.types import Context, Image, Multiline, Range, Seed


@dataclass(frozen=True)
class Preset:
    """A model reference and a preset of inputs; `ports` gives the annotation of each input."""

    id: str
    title: str
    model: str
    description: str
    ports: dict[str, Any]
    values: dict[str, Any] = field(default_factory=dict)
    category: str = "online/replicate"


PRESETS = (
    Preset("imagebash.replicate.upscale_esrgan", "Upscale (Real-ESRGAN, Replicate)", "nightmareai/real-esrgan",
           "Upscale an image 2-10x with Real-ESRGAN on Replicate, optionally restoring faces.",
           ports={"image": Image, "scale": Annotated[float, Range(0, 10, 0.5)], "face_enhance": bool},
           values={"scale": 4.0, "face_enhance": False}),
    Preset("imagebash.replicate.flux_schnell", "Text to Image (FLUX schnell, Replicate)",
           "black-forest-labs/flux-schnell",
           "Generate images from a prompt with FLUX.1 [schnell] on Replicate (fast, 4 steps).",
           ports={"prompt": Annotated[str, Multiline()], "aspect_ratio": str,
                  "num_outputs": Annotated[int, Range(1, 4)], "output_format": str, "seed": Seed | None},
           values={"prompt": "a watercolor fox in a misty forest", "aspect_ratio": "1:1",
                   "num_outputs": 1, "output_format": "png", "seed": None}),
    Preset("imagebash.replicate.image_to_video_svd", "Image to Video (Stable Video Diffusion, Replicate)",
           "stability-ai/stable-video-diffusion",
           "Animate a still image into a short clip with Stable Video Diffusion on Replicate.",
           ports={"input_image": Image, "video_length": str, "frames_per_second": Annotated[int, Range(5, 30)],
                  "motion_bucket_id": Annotated[int, Range(1, 255)], "seed": Seed | None},
           values={"video_length": "14_frames_with_svd", "frames_per_second": 6, "motion_bucket_id": 127,
                   "seed": None}),
)


def make_preset_node(preset: Preset) -> Any:
    """Declare the node for one preset: fixed ports from the preset, the rest from the schema."""
    fixed = set(preset.ports)

    def run(ctx: Context, **inputs: Any) -> ReplicateOutputs:
        return run_model(ctx, preset.model, inputs)

    params = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)]
    for name, ann in preset.ports.items():
        default = preset.values.get(name, inspect.Parameter.empty)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann))
    params.append(inspect.Parameter("inputs", inspect.Parameter.VAR_KEYWORD, annotation=Any))
    run.__signature__ = inspect.Signature(params, return_annotation=ReplicateOutputs)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params} | {"return": ReplicateOutputs}
    run.__name__ = run.__qualname__ = preset.id.rsplit(".", 1)[-1]
    run.__doc__ = (f"{preset.description}\n\nModel: {preset.model} (more inputs appear from its schema "
                   "when Replicate can be reached).")
    return node(preset.id, version=1, title=preset.title, category=preset.category, io=True,
                dynamic_inputs=SchemaInputs(preset.model, fixed))(run)


PRESET_NODES = {p.id: make_preset_node(p) for p in PRESETS}
