"""What a model family declares: the one place that knows a family's names, files and defaults.

A family module (`sd1.py`, `flux.py`, ...) holds one `Family` instance, `FAMILY`. The model
manager, the LoRA loader, the sampling nodes and the trainer ask it: how a checkpoint of it is
recognised from its keys and shapes, which shipped config folder and pipeline classes each
variant uses, how its latents are scaled, packed and previewed, which components LoRAs reach and
under which key prefixes, which sampler, steps and guidance it wants, and how much memory its
weights need. None of them branch on a family's name, so a new family is one new module plus its
configs under `resources/model_configs/`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.engine.probe import Probe

TASKS = ("txt2img", "img2img", "inpaint", "edit")
"""What a sampling node asks a family for: generate, restyle, repaint a mask, follow an instruction."""


@dataclass(frozen=True)
class Target:
    """Where one module of an original (BFL/SAI/LDM) checkpoint lives in the diffusers model.

    A fused original layer (Flux's `img_attn.qkv`, `single_blocks.N.linear1`) maps to several
    diffusers modules, each taking a slice of its output rows; adaLN output layers whose two
    halves diffusers stores the other way round have `swap` set.
    """

    module: str
    rows: tuple[int, int] | None = None
    swap: bool = False


NameMap = Mapping[str, tuple[Target, ...]]
"""Original module name (dotted, no file prefix) -> the diffusers module(s) it becomes."""


@dataclass(frozen=True)
class TrainingSpec:
    """What the LoRA trainer and its exporter need to know of a family they can train."""

    preset: str  # preset stem in resources/presets/ ("style-sdxl")
    base_version: str  # kohya's ss_base_model_version ("sdxl_base_v1-0")
    architecture: str  # SAI model-spec architecture stem ("stable-diffusion-xl-v1-base")
    implementation: str = "diffusers"  # modelspec.implementation
    v2: bool = False  # kohya's ss_v2 flag (SD 2.x)
    size_conditioning: bool = False  # the U-Net takes pooled text embeds and size/crop ids (SDXL)
    penultimate_hidden: bool = False  # text conditioning from the encoders' penultimate layer (SDXL)
    sgm_lora_names: bool = False  # exported kohya U-Net keys use SGM/LDM block names (SDXL)
    numbered_te_prefixes: bool = False  # lora_te1_/lora_te2_ rather than lora_te_ (two encoders)
    objective: str = "ddpm"  # "ddpm" (noise/v prediction) or "flow" (flow matching: predict noise - x0)
    #: flow matching: how timesteps are drawn (uniform | sigmoid | logit_normal) and shifted
    timestep_sampling: str = "uniform"
    shift: float = 1.0
    weighting: str = "none"  # flow loss weighting (diffusers' compute_loss_weighting_for_sd3 schemes)
    guidance: float | None = None  # distilled guidance fed while training (Flux dev); None: no embedder
    #: peft target names (suffixes) of the denoiser for "attention" and the extra ones "attention+ff" adds
    attention: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    ff: tuple[str, ...] = ("ff.net.0.proj", "ff.net.2")
    #: names whose suffix also occurs outside the blocks: matched only inside these block prefixes
    block_only: tuple[str, ...] = ()
    #: block groups a run may limit training to ("double" -> "transformer_blocks"), `blocks = "double:0-9"`
    block_groups: Mapping[str, str] = field(default_factory=dict)
    encoders: tuple[str, ...] = ("text_encoder", "text_encoder_2")  # CLIP slots a run may train
    max_sequence_length: int = 0  # text tokens for training (0: the pipeline's default)


@dataclass(frozen=True)
class Variant:
    """One released model of a family (Flux.1 dev, SD 3.5 large, ...)."""

    name: str  # "dev", "schnell", "fill", "large", ... (the family's own words)
    title: str  # "Flux.1 dev"
    config: str  # shipped config folder: resources/model_configs/<config>/
    denoiser_bytes: int  # bf16/fp16 bytes of the denoiser at full size (memory planner)
    encoder_bytes: int = 0  # bf16/fp16 bytes of the text encoders together
    steps: int = 25  # default sampling steps
    guidance: float = 7.0  # default guidance (classifier-free, or Flux dev's distilled guidance)
    tasks: tuple[str, ...] = ("txt2img", "img2img", "inpaint")
    inpaint_native: bool = False  # a model trained for masks (SD inpaint U-Net, Flux Fill)
    pipelines: tuple[tuple[str, str], ...] = ()  # task -> pipeline class, where it differs from the family's
    note: str = ""  # said in the log when this variant is used (e.g. what cannot be told from its keys)


@dataclass
class Family:
    """A model family. Subclasses override the methods whose behaviour differs from SD's."""

    name: str  # "sd1", "flux", ... (stored in Model/Latent handles and saved workflows)
    title: str  # "Stable Diffusion 1.x"
    variants: tuple[Variant, ...]
    pipelines: Mapping[str, str]  # task -> diffusers pipeline class name
    denoiser: str = "unet"  # the pipeline attribute holding the denoiser
    text_encoders: tuple[str, ...] = ("text_encoder",)  # pipeline attributes, in order
    latent_channels: int = 4
    latent_scale: int = 8  # pixels per latent cell
    size_multiple: int = 8  # width/height must be multiples of this
    flow_matching: bool = False  # flow-matching schedulers (shift) instead of the DDPM family
    negative_prompt: bool = True  # the pipeline takes a negative prompt
    guidance_kind: str = "cfg"  # "cfg", "distilled" (Flux dev: an embedding), "true_cfg" (Qwen)
    default_scheduler: str = "euler_a"
    lora_components: tuple[str, ...] = ("unet", "text_encoder")
    #: kohya-style flat prefixes -> component ("lora_unet_" -> "unet"); longest match wins
    kohya_prefixes: Mapping[str, str] = field(default_factory=dict)
    #: dotted prefixes of diffusers/peft/ComfyUI keys -> component ("transformer." -> "transformer")
    dotted_prefixes: Mapping[str, str] = field(default_factory=dict)
    #: a two-expert denoiser (Wan 2.2 A14B): LoRA "expert" choice -> the components that LoRA
    #: keys naming the denoiser generically (prefix-free, ComfyUI, kohya/musubi, `<denoiser>.`) go
    #: to; the first choice is the default. Empty: one denoiser, no choice.
    lora_experts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: latent -> RGB preview: (4 x 3 factors, 3 biases) for the first four channels
    preview: tuple[tuple[tuple[float, float, float], ...], tuple[float, float, float]] = ((), (0.0, 0.0, 0.0))
    training: TrainingSpec | None = None  # None: this family cannot be trained yet
    #: task -> diffusers ControlNet pipeline class; the multi-ControlNet container class
    control_pipelines: Mapping[str, str] = field(default_factory=dict)
    multi_controlnet: str = ""
    #: the same for Union ControlNets (one net, several control types: xinsir's SDXL promax)
    union_pipelines: Mapping[str, str] = field(default_factory=dict)
    multi_union: str = ""
    ip_adapters: bool = False  # the pipelines take diffusers IP-Adapters (ip_adapter_image)
    adapter_pipelines: Mapping[str, str] = field(default_factory=dict)  # task -> T2I-Adapter pipeline
    adapter_window: bool = False  # its T2I pipeline takes adapter_conditioning_factor (an end fraction)
    #: how a LoRA file for this family is told apart: words in its metadata (model-spec
    #: architecture, kohya base version) and key-name fragments only its LoRAs have
    lora_words: tuple[str, ...] = ()
    lora_keys: tuple[str, ...] = ()

    # -- recognising files ------------------------------------------------------------------
    def detect(self, header: Probe) -> str | None:
        """The variant name of a single-file checkpoint (full or denoiser-only), or None."""
        raise NotImplementedError

    def detect_folder(self, index: Mapping[str, Any], folder: Path) -> str | None:
        """The variant of a diffusers folder from its model_index.json (and configs), or None."""
        raise NotImplementedError

    # -- training ----------------------------------------------------------------------------
    def encode_prompts(self, pipe: Any, captions: list[str], device: str, grad: bool = False) -> dict[str, Any]:
        """Text conditioning of a batch of captions, batch-first tensors the trainer caches per caption."""
        raise NotImplementedError(f"{self.title}: no training text encoding")

    def collate_text(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Per-caption cached conditioning -> one batch (variable-length families pad here)."""
        import torch

        return {k: torch.stack([it[k] for it in items]) for k in items[0]}

    def flow_forward(self, pipe: Any, noisy: Any, sigmas: Any, emb: dict[str, Any], guidance: float | None) -> Any:
        """The denoiser's flow prediction (N, C, h, w) for noisy model-space latents at `sigmas` (N,)."""
        raise NotImplementedError(f"{self.title}: no flow-matching objective")

    def claims_controlnet(self, model: Any) -> bool:
        """Whether a loaded ControlNet model is one of this family's released kinds (by its widths)."""
        return False

    def controlnet_misfit(self, pipe: Any, model: Any) -> str | None:
        """Why a loaded ControlNet cannot steer this pipeline's denoiser (None when it fits)."""
        return f"{self.title} has no ControlNet support"

    def control_kwargs(self, task: str, images: list[Any], scales: list[float], starts: list[float],
                       ends: list[float], modes: list[int], union: bool = False) -> dict[str, Any]:
        """The ControlNet pipeline's keyword arguments for a stack (one entry per net); a Union
        pipeline takes lists of images and control types (it nests them per net itself)."""
        one = len(images) == 1
        if union:
            return {"control_image": list(images), "control_mode": list(modes),
                    "controlnet_conditioning_scale": scales[0] if one else scales,
                    "control_guidance_start": starts[0] if one else starts,
                    "control_guidance_end": ends[0] if one else ends}
        out: dict[str, Any] = {
            "control_image" if task != "txt2img" or self.denoiser != "unet" else "image": images[0] if one else images,
            "controlnet_conditioning_scale": scales[0] if one else scales,
            "control_guidance_start": starts[0] if one else starts,
            "control_guidance_end": ends[0] if one else ends}
        if any(m >= 0 for m in modes):
            out["control_mode"] = modes[0] if one else modes
        return out

    # -- regional prompts (nodes/guidance/regions.py) -----------------------------------------
    def region_encode(self, pipe: Any, prompt: str, device: str, call: Mapping[str, Any] | None = None) -> Any:
        """`pipe.encode_prompt` of a region's prompt alone (batch 1, no negative), keeping the
        other arguments of the pipeline's own first call (`call`, by name: LoRA scale, clip skip,
        sequence length, a Qwen edit's source image) when it is known."""
        import inspect

        params = inspect.signature(pipe.encode_prompt).parameters
        kwargs: dict[str, Any] = {"device": device, **(call or {})}
        for name in params:
            if name == "prompt":
                kwargs[name] = prompt
            elif name.startswith(("prompt_", "negative_", "pooled_")):  # prompt_2/3 default to prompt
                kwargs[name] = None
            elif name == "num_images_per_prompt":
                kwargs[name] = 1
            elif name == "do_classifier_free_guidance":
                kwargs[name] = False
        return pipe.encode_prompt(**{k: v for k, v in kwargs.items() if k in params})

    def region_inputs(self, pipe: Any, prompt: str, device: str,
                      call: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The denoiser forward's arguments that a region's prompt replaces (batch-first with one
        row; a dict value updates the call's dict): the U-Net's text states, and SDXL's pooled
        text embeds (`added_cond_kwargs["text_embeds"]`) too."""
        out = self.region_encode(pipe, prompt, device, call)
        kwargs: dict[str, Any] = {"encoder_hidden_states": out[0]}
        if len(out) == 4 and out[2] is not None:  # SDXL: (embeds, negative, pooled, negative pooled)
            kwargs["added_cond_kwargs"] = {"text_embeds": out[2]}
        return kwargs

    def region_expand(self, inputs: Mapping[str, Any], rows: int) -> dict[str, Any]:
        """`region_inputs` repeated to a call's `rows` conditional rows (tensors of one row)."""
        import torch

        def grow(v: Any) -> Any:
            if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == 1:
                return v.expand(rows, *v.shape[1:])
            return {k: grow(x) for k, x in v.items()} if isinstance(v, dict) else v

        return {k: grow(v) for k, v in inputs.items()}

    def region_rows(self, pipe: Any, call: Mapping[str, Any], seen: dict[str, Any]) -> slice | None:
        """The rows of one denoiser call (its arguments by name) that the main prompt conditions;
        None for a call that is all unconditional. `seen` lasts one sampling. The U-Net pipelines
        batch [unconditional, conditional] in one call while they do classifier-free guidance."""
        n = int(call["encoder_hidden_states"].shape[0])
        if getattr(pipe, "do_classifier_free_guidance", False) and n % 2 == 0:
            return slice(n // 2, n)
        return slice(0, n)

    def region_weight(self, pipe: Any, mask: Any, size: tuple[int, int], pred: Any) -> Any:
        """A region's weight (`mask`: an (H, W) float tensor in [0, 1], any size) laid out to
        broadcast against the denoiser's prediction `pred`: per latent cell, (1, 1, h, w)."""
        import torch

        return torch.nn.functional.interpolate(mask[None, None].float(), size=tuple(pred.shape[-2:]), mode="area")

    def ip_adapter_state(self, keys: list[str], get: Any) -> dict[str, dict[str, Any]]:
        """An IP-Adapter file's tensors (`get(key)`) split as diffusers' loader takes them; h94's
        layout (`image_proj.*`, `ip_adapter.N.to_k_ip.*`) is the SD families' one."""
        sd: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
        for k in keys:
            part, _, rest = k.partition(".")
            if part in sd:
                sd[part][rest] = get(k)
        return sd

    def claims_lora(self, header: Probe) -> bool:
        """Whether a LoRA file (its header) was made for this family."""
        md = header.metadata
        text = " ".join(md.get(k, "") for k in ("modelspec.architecture", "ss_base_model_version")).lower()
        if any(w in text for w in self.lora_words):
            return True
        return any(frag in k for k in header.keys for frag in self.lora_keys)

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"{self.title} has no variant '{name}' ({', '.join(v.name for v in self.variants)})")

    # -- pipelines ---------------------------------------------------------------------------
    def pipeline_class(self, task: str, variant: str) -> Any:
        """The diffusers pipeline class for `task` on `variant` (ValueError when it has none)."""
        import diffusers

        v = self.variant(variant)
        names = {**self.pipelines, **dict(v.pipelines)}
        if task not in v.tasks or task not in names:
            offered = ", ".join(t for t in v.tasks if t in names)
            raise ValueError(f"{v.title} cannot do {task} (it offers: {offered})")
        return getattr(diffusers, names[task])

    def base_pipeline(self, variant: str) -> Any:
        """The class the shared pipeline is built as (the variant's first task); the other tasks'
        pipelines are derived from it with `from_pipe`, sharing its modules."""
        return self.pipeline_class(self.variant(variant).tasks[0], variant)

    def folder_components(self, folder: Path) -> dict[str, Any]:
        """Components to build by hand when reading a diffusers folder (ones the library cannot
        load in this environment); merged into `from_pretrained`'s keyword arguments."""
        return {}

    def original_names(self, component: str, config: Mapping[str, Any]) -> NameMap:
        """Original-checkpoint module names of `component` (for LoRAs in BFL/SAI/LDM naming and
        for converting single files); empty when the original names are the diffusers ones."""
        return {}

    # -- latents -----------------------------------------------------------------------------
    def to_model_space(self, vae: Any, z: Any) -> Any:
        """VAE latents -> the denoiser's latent space (what wires and pipelines carry)."""
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return (z - shift) * vae.config.scaling_factor

    def from_model_space(self, vae: Any, z: Any) -> Any:
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return z / vae.config.scaling_factor + shift

    def vae_decode(self, vae: Any, z: Any) -> Any:
        """VAE-space latents (N, C, h, w) -> pixels (N, 3, H, W) in [-1, 1]."""
        return vae.decode(z).sample

    def vae_encode(self, vae: Any, x: Any) -> Any:
        """Pixels (N, 3, H, W) in [-1, 1] -> VAE-space latents (the posterior's mode: deterministic)."""
        return vae.encode(x).latent_dist.mode()

    def unpack(self, pipe: Any, latents: Any, width: int, height: int) -> Any:
        """A pipeline's `output_type="latent"` result -> (N, C, h, w) model-space latents."""
        return latents

    def pack(self, pipe: Any, latents: Any) -> Any:
        """(N, C, h, w) model-space latents -> what the pipeline's `latents=` argument takes."""
        return latents

    # -- sampling ----------------------------------------------------------------------------
    def call_kwargs(self, variant: str, *, prompt: Any, negative_prompt: Any, guidance: float,
                    steps: int) -> dict[str, Any]:
        """Keyword arguments of a pipeline call for prompts and guidance, in this family's terms."""
        out: dict[str, Any] = {"prompt": prompt, "num_inference_steps": steps, "guidance_scale": guidance}
        if self.negative_prompt:
            out["negative_prompt"] = negative_prompt
        return out

    def describe(self, variant: str) -> str:
        return self.variant(variant).title
