"""A1111 / Forge "parameters" infotext -> a ComfyUI API-form workflow that rebuilds the same image.

The text is the prompt, an optional "Negative prompt:" part, and a last line of `Key: value` pairs
(values may be JSON-quoted). `<lora:name:weight>` tags become a LoraLoader chain and are removed
from the prompt. The checkpoint's hash, which ComfyUI has no input for, is kept in the loader's
inputs as `_model_hash`: inputs that start with "_" are reader notes, never ComfyUI inputs.
"""

from __future__ import annotations

import json
import re
from typing import Any

from app.comfy.model import ComfyLink, ComfyNode, ComfyWorkflow

# one `Key: value` pair of the parameters line; a value is JSON-quoted or runs to the next comma
_PARAM = re.compile(r'\s*([\w][\w \-/+().]*?):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
_LORA = re.compile(r"<(lora|lyco):([^:>]+)((?::[^:>]*)*)>", re.IGNORECASE)
_OTHER_NETWORK = re.compile(r"<(hypernet|embedding):([^>]*)>", re.IGNORECASE)

#: A1111 sampler name (without the scheduler suffix) -> ComfyUI sampler_name
SAMPLERS: dict[str, str] = {
    "Euler a": "euler_ancestral", "Euler": "euler", "LMS": "lms", "Heun": "heun",
    "DPM2": "dpm_2", "DPM2 a": "dpm_2_ancestral", "DPM++ 2S a": "dpmpp_2s_ancestral",
    "DPM++ 2M": "dpmpp_2m", "DPM++ SDE": "dpmpp_sde", "DPM++ 2M SDE": "dpmpp_2m_sde",
    "DPM++ 2M SDE Heun": "dpmpp_2m_sde", "DPM++ 3M SDE": "dpmpp_3m_sde", "DPM fast": "dpm_fast",
    "DPM adaptive": "dpm_adaptive", "DDIM": "ddim", "UniPC": "uni_pc", "LCM": "lcm", "DDPM": "ddpm",
    "Euler CFG++": "euler_cfg_pp", "Euler a CFG++": "euler_ancestral_cfg_pp",
}
#: samplers whose A1111 schedule ComfyUI calls by another name
_DEFAULT_SCHEDULER = {"ddim": "ddim_uniform"}
#: A1111 "Schedule type" (or sampler suffix) -> ComfyUI scheduler
SCHEDULERS: dict[str, str] = {
    "Automatic": "normal", "Uniform": "normal", "Normal": "normal", "Karras": "karras",
    "Exponential": "exponential", "SGM Uniform": "sgm_uniform", "Simple": "simple", "DDIM": "ddim_uniform",
    "Beta": "beta", "KL Optimal": "kl_optimal", "Linear Quadratic": "linear_quadratic",
}
_LATENT_UPSCALERS = {
    "Latent": "nearest-exact", "Latent (nearest-exact)": "nearest-exact", "Latent (nearest)": "nearest-exact",
    "Latent (bilinear)": "bilinear", "Latent (antialiased)": "bilinear", "Latent (bicubic)": "bicubic",
    "Latent (bicubic antialiased)": "bicubic",
}


class InfotextError(ValueError):
    """The text is not A1111 infotext (no parameters line with Steps)."""


def looks_like_infotext(text: str) -> bool:
    """A cheap test the format sniffer uses: a line carrying `Steps: <number>`."""
    return re.search(r"(^|\n|, )Steps: \d", text) is not None


def parse_parameters(line: str) -> dict[str, str]:
    """The `Key: value, Key: value` line as a dict, quoted values unquoted."""
    out: dict[str, str] = {}
    for key, value in _PARAM.findall(line):
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                value = value[1:-1]
        out[key.strip()] = value
    return out


def split_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """(positive, negative, parameters) of an infotext, as A1111's own parser splits it."""
    lines = text.strip().replace("\r\n", "\n").split("\n")
    params: dict[str, str] = {}
    if lines and looks_like_infotext(lines[-1]):
        params = parse_parameters(lines.pop())
    if not params:
        raise InfotextError("no parameters line (Steps: ...) found")
    positive: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].lstrip()
        (negative if in_negative else positive).append(line)
    return "\n".join(positive).strip(), "\n".join(negative).strip(), params


def sampler_and_scheduler(name: str, schedule_type: str | None, warnings: list[str]) -> tuple[str, str]:
    """ComfyUI (sampler_name, scheduler) for an A1111 sampler like "DPM++ 2M Karras"."""
    base, scheduler = name.strip(), None
    for suffix in ("Karras", "Exponential", "Polyexponential", "SGM Uniform"):
        if base.endswith(" " + suffix) and base not in SAMPLERS:
            base, scheduler = base[: -len(suffix) - 1], SCHEDULERS.get(suffix, "exponential")
    sampler = SAMPLERS.get(base)
    if sampler is None:
        warnings.append(f"A1111 sampler {name!r} has no ComfyUI equivalent; using euler")
        sampler = "euler"
    if schedule_type:
        mapped = SCHEDULERS.get(schedule_type)
        if mapped is None:
            warnings.append(f"A1111 schedule type {schedule_type!r} has no ComfyUI equivalent; using normal")
            mapped = "normal"
        scheduler = mapped if schedule_type != "Automatic" or scheduler is None else scheduler
    return sampler, scheduler or _DEFAULT_SCHEDULER.get(sampler, "normal")


def _num(params: dict[str, str], key: str, kind: type, default: Any, warnings: list[str]) -> Any:
    raw = params.get(key)
    if raw is None or raw == "":
        return default
    try:
        return kind(float(raw)) if kind is int else kind(raw)
    except ValueError:
        warnings.append(f"A1111 {key}: {raw!r} is not a number; using {default}")
        return default


def _loras(prompt: str, warnings: list[str]) -> tuple[str, list[tuple[str, float, float]]]:
    """The prompt without extra-network tags, and (name, strength_model, strength_clip) per LoRA tag."""
    loras: list[tuple[str, float, float]] = []

    def take(match: re.Match[str]) -> str:
        numbers = [p for p in match.group(3).split(":") if p]
        try:
            values = [float(p) for p in numbers[:2]]
        except ValueError:
            warnings.append(f"LoRA tag {match.group(0)!r} has a weight that is not a number; using 1.0")
            values = []
        clip = values[0] if values else 1.0
        model = values[1] if len(values) > 1 else clip  # <lora:name:te:unet>
        loras.append((match.group(2).strip(), model, clip))
        return ""

    def drop(match: re.Match[str]) -> str:
        warnings.append(f"{match.group(1)} tag {match.group(0)!r} is not supported and was removed")
        return ""

    text = _OTHER_NETWORK.sub(drop, _LORA.sub(take, prompt))
    text = re.sub(r"[ \t]*,[ \t]*(,[ \t]*)+", ", ", text)
    text = re.sub(r"[ \t]+,", ",", text)
    text = re.sub(r"[ \t]{2,}", " ", text).strip().strip(",").strip()
    return text, loras


def _file(name: str) -> str:
    return name if re.search(r"\.(safetensors|ckpt|pt|pth|bin|gguf)$", name, re.IGNORECASE) else name + ".safetensors"


def infotext_to_workflow(text: str) -> ComfyWorkflow:
    """The API-form txt2img (+ hires fix) graph the infotext describes; what is lost goes to warnings."""
    positive, negative, params = split_infotext(text)
    wf = ComfyWorkflow(source="a1111")
    warn = wf.warnings
    next_id = iter(range(1, 1000))

    def add(class_type: str, title: str = "", **inputs: Any) -> ComfyLink:
        node_id = str(next(next_id))
        wf.nodes[node_id] = ComfyNode(node_id, class_type, dict(inputs), title=title)
        return ComfyLink(node_id, 0)

    ckpt_inputs: dict[str, Any] = {"ckpt_name": _file(params.get("Model") or "model")}
    if "Model" not in params:
        warn.append("A1111 infotext names no Model; the checkpoint is a placeholder 'model.safetensors'")
    if params.get("Model hash"):
        ckpt_inputs["_model_hash"] = params["Model hash"]
    ckpt = add("CheckpointLoaderSimple", **ckpt_inputs)
    model, clip, vae = ckpt, ComfyLink(ckpt.node, 1), ComfyLink(ckpt.node, 2)
    if params.get("VAE"):
        vae = add("VAELoader", vae_name=_file(params["VAE"]))

    positive, loras = _loras(positive, warn)
    for name, strength_model, strength_clip in loras:
        lora = add("LoraLoader", model=model, clip=clip, lora_name=_file(name),
                   strength_model=strength_model, strength_clip=strength_clip)
        model, clip = lora, ComfyLink(lora.node, 1)
    clip_skip = _num(params, "Clip skip", int, 1, warn)
    if clip_skip > 1:
        clip = add("CLIPSetLastLayer", clip=clip, stop_at_clip_layer=-clip_skip)

    pos = add("CLIPTextEncode", "Positive", clip=clip, text=positive)
    neg = add("CLIPTextEncode", "Negative", clip=clip, text=negative)
    width, height = 512, 512
    if "Size" in params:
        try:
            width, height = (int(v) for v in params["Size"].lower().split("x"))
        except ValueError:
            warn.append(f"A1111 Size {params['Size']!r} is not WxH; using 512x512")
    latent = add("EmptyLatentImage", width=width, height=height,
                 batch_size=_num(params, "Batch size", int, 1, warn))
    steps = _num(params, "Steps", int, 20, warn)
    cfg = _num(params, "CFG scale", float, 7.0, warn)
    seed = _num(params, "Seed", int, 0, warn)
    sampler, scheduler = sampler_and_scheduler(params.get("Sampler", "Euler"), params.get("Schedule type"), warn)
    sample = dict(seed=seed, steps=steps, cfg=cfg, sampler_name=sampler, scheduler=scheduler)
    latent = add("KSampler", model=model, positive=pos, negative=neg, latent_image=latent, denoise=1.0, **sample)

    hires = "Hires upscale" in params or "Hires resize" in params
    if hires:
        upscaler = params.get("Hires upscaler", "Latent")
        method = _LATENT_UPSCALERS.get(upscaler)
        if method is None:
            warn.append(f"hires upscaler {upscaler!r} is approximated by a nearest-exact latent upscale")
            method = "nearest-exact"
        if "Hires resize" in params:
            try:
                w, h = (int(v) for v in params["Hires resize"].lower().split("x"))
                latent = add("LatentUpscale", samples=latent, upscale_method=method, width=w, height=h, crop="disabled")
            except ValueError:
                warn.append(f"A1111 Hires resize {params['Hires resize']!r} is not WxH; hires fix skipped")
                hires = False
        else:
            latent = add("LatentUpscaleBy", samples=latent, upscale_method=method,
                         scale_by=_num(params, "Hires upscale", float, 2.0, warn))
    if hires:
        hires_steps = _num(params, "Hires steps", int, 0, warn) or steps
        if params.get("Hires sampler"):
            sample["sampler_name"], sample["scheduler"] = sampler_and_scheduler(
                params["Hires sampler"], params.get("Hires schedule type"), warn)
        sample["steps"] = hires_steps
        sample["cfg"] = _num(params, "Hires CFG Scale", float, cfg, warn)
        latent = add("KSampler", "Hires fix", model=model, positive=pos, negative=neg, latent_image=latent,
                     denoise=_num(params, "Denoising strength", float, 0.7, warn), **sample)
    elif "Denoising strength" in params:
        warn.append("A1111 img2img: the source image is not in the infotext; read as txt2img")
    image = add("VAEDecode", samples=latent, vae=vae)
    add("SaveImage", images=image, filename_prefix="imagebash")
    return wf
