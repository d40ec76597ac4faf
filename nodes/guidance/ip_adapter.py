"""IP-Adapter: steer a model with a reference image's look (style, subject, composition).

Like the LoRA and ControlNet nodes, the node only adds the adapter, its image encoder, a weight
and the reference image to the model handle's stack; the sampling nodes load the stack's
adapters into the base pipeline's U-Net when it differs from what is loaded (diffusers' IP-Adapter
loader, fed the state dict we read from the .safetensors file: nothing is unpickled) and set the
weights per run, so a weight change never reloads. A run without IP-Adapters takes them out
again, so other workflows sharing the base see it unchanged. SD 1.x/2.x/XL for now.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from app.engine.families import get_family
from app.engine.fingerprint import fingerprint
from nodes.diffusion.catalog import find, list_image_encoders, list_ip_adapters
from nodes.guidance.controlnet import image_hash
from nodes.registry import node
from nodes.types import AdapterRef, Choices, Context, Help, Image, Model, Range


def _resolve(name: str, kind: str, what: str) -> Path:
    text = str(name).strip()
    if not text:
        raise ValueError(f"no {what} chosen")
    path = Path(text).expanduser()
    if not path.exists() and not path.is_absolute():
        path = find(text, kind) or path
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {text!r}")
    return path


def encoder_for(adapter: Path, encoder: str) -> Path:
    """The image encoder folder: the one named, else an `image_encoder/` beside the adapter file
    (the layout of h94/IP-Adapter's folders)."""
    if str(encoder).strip():
        return _resolve(encoder, "clip_vision", "image encoder")
    for folder in (adapter.parent / "image_encoder", adapter.parent.parent / "image_encoder"):
        if (folder / "config.json").is_file():
            return folder
    raise FileNotFoundError(f"IP-Adapter {adapter.name} needs its CLIP image encoder: choose a folder from "
                            "clip_vision/ (transformers format), or keep it as image_encoder/ beside the adapter")


def _key(params: dict) -> str:
    try:
        adapter = _resolve(str(params.get("ip_adapter", "")), "ipadapter", "IP-Adapter")
        return fingerprint(adapter) + "|" + fingerprint(encoder_for(adapter, str(params.get("image_encoder", ""))))
    except (ValueError, FileNotFoundError):
        return "missing"


@node("imagebash.guidance.ip_adapter", version=1, title="IP-Adapter", category="guidance", cache_key=_key)
def ip_adapter(
    model: Model,
    image: Image,
    ip_adapter: Annotated[str, Choices(list_ip_adapters, model="ipadapter"),
                          Help("an IP-Adapter .safetensors file (ipadapter/)")] = "",
    image_encoder: Annotated[str, Choices(list_image_encoders),
                             Help("its CLIP vision encoder folder (clip_vision/); empty: image_encoder/ "
                                  "beside the adapter")] = "",
    weight: Annotated[float, Range(0.0, 2.0, step=0.05)] = 0.6,
    ctx: Context = None,
) -> Model:
    """Add an IP-Adapter with a reference image to the model's stack (Load and Apply in one node).

    Args:
        image: The reference image; its look steers the sampling (several images: their mean).
        weight: How strongly; 0 leaves the sampling as without it.
    """
    fam = get_family(model.family)
    if not fam.ip_adapters:
        raise ValueError(f"IP-Adapter: {fam.title} is not supported yet (SD 1.x, 2.x and XL are)")
    adapter = _resolve(ip_adapter, "ipadapter", "IP-Adapter")
    if adapter.suffix.lower() != ".safetensors":
        raise ValueError(f"{adapter.name}: only .safetensors IP-Adapter files are loaded (a pickle can run code)")
    encoder = encoder_for(adapter, image_encoder)
    img = np.ascontiguousarray(np.asarray(image, np.float32)[..., :3])
    ctx.log(f"IP-Adapter {adapter.name} with {encoder.name}: weight {weight:g}")
    ref = AdapterRef(str(adapter.resolve()), str(encoder.resolve()), float(weight), image_hash(img), img)
    return replace(model, ip_adapters=(*model.ip_adapters, ref))


def apply_ip_adapters(models: Any, entry: Any, refs: list[AdapterRef]) -> dict[str, Any]:
    """Load `refs`' adapters into the entry's pipeline (when they are not what is loaded), set their
    weights; the pipeline keyword arguments (`ip_adapter_image`). Call with `entry.lock` held."""
    import PIL.Image
    from safetensors import safe_open

    wanted = tuple((r.path, r.encoder) for r in refs)
    pipe = entry.pipe
    if entry.state.get("ip_loaded", ()) != wanted:
        if entry.state.get("ip_loaded"):
            pipe.unload_ip_adapter()
        entry.state["slicing"] = None  # loading or unloading leaves unsliced attention processors
        if refs:
            encoder = models.image_encoder(refs[0].encoder)
            pipe.register_modules(image_encoder=encoder)
            dicts = []
            for r in refs:
                sd: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
                with safe_open(r.path, framework="pt", device="cpu") as f:
                    for k in f.keys():
                        part, _, rest = k.partition(".")
                        if part in sd:
                            sd[part][rest] = f.get_tensor(k)
                if not sd["image_proj"] or not sd["ip_adapter"]:
                    raise ValueError(f"{Path(r.path).name} is not an IP-Adapter file (no image_proj./ip_adapter. keys)")
                dicts.append(sd)
            pipe.load_ip_adapter(dicts, subfolder=[""] * len(dicts), weight_name=[""] * len(dicts),
                                 image_encoder_folder=None)
            pipe.unet.to(entry.device)
        for derived in entry.derived.values():  # views built with from_pipe share the U-Net, not these
            derived.register_modules(image_encoder=pipe.image_encoder, feature_extractor=pipe.feature_extractor)
        entry.state["ip_loaded"] = wanted
    if not refs:
        return {}
    pipe.set_ip_adapter_scale([r.weight for r in refs] if len(refs) > 1 else refs[0].weight)
    images = []
    for r in refs:
        arr = (np.clip(r.image, 0, 1) * 255).round().astype(np.uint8)
        pil = [PIL.Image.fromarray(a) for a in arr]
        images.append(pil if len(pil) > 1 else pil[0])
    return {"ip_adapter_image": images if len(images) > 1 else images[0]}
