"""ComfyUI workflow -> imagebash Graph, by meaning rather than node for node.

ComfyUI splits what imagebash keeps in one handle: a checkpoint's MODEL, CLIP and VAE are one
Load Model; a CLIPTextEncode is the prompt (or negative prompt) of the sampler that consumes its
conditioning; ControlNet and area/mask conditioning are nodes on the model chain in front of that
sampler. So conditioning is followed to its sampler and folded there, and each ComfyUI output
becomes a value: a wire in our graph, folded conditioning, or a file name (a VAE, a ControlNet)
that the consumer puts into a parameter. A node without an equivalent becomes an
`imagebash.comfy.unmapped` placeholder that keeps its class, pack, inputs, widgets and links.

Node ids are ComfyUI's, prefixed: ComfyUI node 3 is "n3"; nodes one ComfyUI node expands into get
a suffix ("n10_mask"). Titles, positions, modes, groups and notes are kept; colours and sizes, which
our nodes do not have, go to `graph.meta["comfy"]`.

Beyond the obvious (loaders, text encodes, KSampler, VAE encode/decode, image load/save/scale):
KSamplerAdvanced -> Sample's start_step / end_step / add_noise / leftover_noise; CLIPSetLastLayer ->
clip_skip on every sampler its CLIP reaches; LatentUpscale(By) -> Latent Upscale; LatentComposite ->
Latent Composite; UNETLoader + CLIPLoader / DualCLIPLoader / TripleCLIPLoader + VAELoader -> one Load
Model (checkpoint, text_encoder*, vae; fp8 weight_dtype -> memory fp8); EmptySD3LatentImage -> Empty
Latent; FluxGuidance -> the sampler's guidance; ModelSamplingFlux / SD3 / AuraFlow -> its shift (Flux: exp(mu) at
the node's size); ConditioningZeroOut -> an empty prompt; ConditioningAverage / Concat -> the prompts
joined (noted).

SetLatentNoiseMask / VAEEncodeForInpaint -> Set Latent Noise Mask / Encode for Inpaint (the latent
carries a noise mask that Sample honours); ImageScaleToTotalPixels / ImagePadForOutpaint -> Scale to
Megapixels / Pad for Outpaint; the custom-sampling set (KSamplerSelect, BasicScheduler, Karras /
ExponentialScheduler at rho 7, RandomNoise, DisableNoise, BasicGuider, CFGGuider) folds into the Sample
that SamplerCustom(Advanced) becomes; SaveAnimatedWEBP / SaveWEBM -> Save Video.

CLIPTextEncodeSDXL(Refiner) -> Sample's prompt (text_l, CLIP-L) / prompt_2 (text_g, OpenCLIP-G) and its SDXL
size / aesthetic-score conditioning.

What is left (placeholders): bislerp (bicubic, noted), SDTurboScheduler.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.comfy.model import MODE_BYPASS, MODE_MUTED, ComfyLink, ComfyNode, ComfyWorkflow
from app.graph.model import Graph, Group, Link, NodeInstance, NodeMode, Note

UNMAPPED = "imagebash.comfy.unmapped"
D = "imagebash.diffusion."
IMG = "imagebash.image."
G = "imagebash.guidance."


# report ------------------------------------------------------------------------------------------
@dataclass
class NodeReport:
    """What became of one ComfyUI node: mapped (to `into`), folded (into a consumer) or a placeholder."""

    comfy_id: str
    class_type: str
    status: str = "mapped"
    into: list[str] = field(default_factory=list)
    pack: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    """Per-node outcome of an import, with counts and a one-line summary."""

    nodes: dict[str, NodeReport] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def placeholders(self) -> list[NodeReport]:
        return [r for r in self.nodes.values() if r.status == "placeholder"]

    @property
    def placeholder_count(self) -> int:
        return len(self.placeholders)

    @property
    def mapped_count(self) -> int:
        return len(self.nodes) - self.placeholder_count

    def summary(self) -> str:
        """'12 nodes: 10 mapped, 2 placeholders (FooNode from pack-x, Bar)'."""
        n = self.placeholder_count
        line = f"{len(self.nodes)} nodes: {self.mapped_count} mapped, {n} placeholder{'' if n == 1 else 's'}"
        if self.placeholders:
            names = sorted({r.class_type + (f" from {r.pack}" if r.pack else "") for r in self.placeholders})
            line += " (" + ", ".join(names[:6]) + (", ..." if len(names) > 6 else "") + ")"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(), "source": self.source, "nodes": len(self.nodes),
            "mapped": self.mapped_count, "placeholders": self.placeholder_count, "warnings": list(self.warnings),
            "per_node": {k: {"class_type": r.class_type, "status": r.status, "into": r.into, "pack": r.pack,
                             "notes": r.notes} for k, r in self.nodes.items()},
        }


# values on ComfyUI's wires -------------------------------------------------------------------------
@dataclass(frozen=True)
class Wire:
    """A wire in our graph; `root` is the Load Model a model or latent wire descends from."""

    node: str
    port: str
    root: str | None = None
    shift: float = 0.0  # a model wire's sampling shift (ModelSamplingFlux / SD3)


@dataclass
class Region:
    prompt: str
    strength: float
    source: str  # ComfyUI id of the SetMask / SetArea node
    mask: Wire | None = None
    rect: tuple[int, int, int, int] | None = None


@dataclass
class Control:
    source: str  # ComfyUI id of the Apply node
    file: str
    image: Wire
    strength: float
    start: float = 0.0
    end: float = 1.0


@dataclass(frozen=True)
class Clip:
    """A CLIP output that is not the checkpoint's own wire: text-encoder files (CLIPLoader,
    DualCLIPLoader) and/or a CLIP skip (CLIPSetLastLayer), folded into the samplers it reaches."""

    wire: Wire | None = None
    files: tuple[str, ...] = ()
    skip: int = 0
    sources: tuple[str, ...] = ()


@dataclass
class Cond:
    """Folded conditioning: prompt texts (or a text wire), regions and ControlNets, the CLIP it was
    encoded with, a Flux guidance, and the ComfyUI nodes folded into it."""

    prompts: list[str | Wire] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)
    controls: list[Control] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    clip: Clip | None = None
    guidance: float | None = None
    #: CLIPTextEncodeSDXL(Refiner): the second encoder's text (text_g) and the size / aesthetic conditioning,
    #: as Sample's prompt_2 and original / crop / target / aesthetic parameters
    prompt_2: str | None = None
    sdxl: dict[str, Any] = field(default_factory=dict)

    def plus(self, other: Cond) -> Cond:
        return Cond(self.prompts + other.prompts, self.regions + other.regions,
                    self.controls + [c for c in other.controls if c not in self.controls],
                    self.sources + other.sources, self.clip or other.clip,
                    self.guidance if self.guidance is not None else other.guidance,
                    self.prompt_2 if self.prompt_2 is not None else other.prompt_2, self.sdxl or other.sdxl)

    def text(self) -> str:
        return ", ".join(p for p in self.prompts if isinstance(p, str) and p)


@dataclass(frozen=True)
class Named:
    """A file a loader names (a VAE, a ControlNet), used as a parameter by the node it feeds."""

    kind: str
    value: str
    source: str


@dataclass
class Part:
    """A piece of the custom-sampling set (KSamplerSelect, BasicScheduler, RandomNoise / DisableNoise,
    BasicGuider / CFGGuider), folded into the SamplerCustom(Advanced) that uses it: `inputs` are the
    KSampler inputs it stands for (values or links)."""

    kind: str  # sampler | sigmas | noise | guider
    inputs: dict[str, Any]
    source: str


Value = Wire | Cond | Named | Clip | Part


class Unmappable(Exception):
    """This node cannot be mapped as it stands; it becomes a placeholder, the message says why."""


# schedulers --------------------------------------------------------------------------------------
_EXACT = {("euler", "normal"): "euler", ("euler_ancestral", "normal"): "euler_a",
          ("dpmpp_2m", "normal"): "dpmpp_2m", ("dpmpp_2m", "karras"): "dpmpp_2m_karras",
          ("ddim", "normal"): "ddim", ("ddim", "ddim_uniform"): "ddim", ("uni_pc", "normal"): "unipc"}
_SAMPLER_ONLY = {"euler": "euler", "euler_ancestral": "euler_a", "dpmpp_2m": "dpmpp_2m", "ddim": "ddim",
                 "uni_pc": "unipc", "uni_pc_bh2": "unipc"}


def map_scheduler(sampler_name: str, scheduler: str) -> tuple[str, str | None]:
    """Our Scheduler value for ComfyUI's sampler_name + scheduler, and a note when it is the nearest."""
    s, sch = str(sampler_name), str(scheduler)
    if (s, sch) in _EXACT:
        return _EXACT[(s, sch)], None
    if s in _SAMPLER_ONLY:
        ours = "dpmpp_2m_karras" if s == "dpmpp_2m" and sch == "karras" else _SAMPLER_ONLY[s]
    elif "ancestral" in s or s.endswith("_a"):
        ours = "euler_a"
    elif s.startswith(("dpm", "lms", "heun", "deis", "res_")):
        ours = "dpmpp_2m_karras" if sch == "karras" else "dpmpp_2m"
    elif s == "ddpm":
        ours = "ddim"
    else:
        ours = "euler"
    return ours, f"sampler {s} with scheduler {sch} has no exact equivalent: using the nearest, {ours}"


_COMFY_SAMPLERS = {"euler", "euler_ancestral", "heun", "dpm_2", "lms", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_sde",
                   "dpmpp_3m_sde", "ddim", "uni_pc", "lcm"}
_SAMPLER_ALIAS = {"dpmpp_2m_sde_gpu": "dpmpp_2m_sde", "dpmpp_sde_gpu": "dpmpp_sde", "dpmpp_3m_sde_gpu": "dpmpp_3m_sde",
                  "uni_pc_bh2": "uni_pc"}
_COMFY_SCHEDULES = {"normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta"}


def map_sampler(sampler_name: str, scheduler: str) -> tuple[dict[str, Any], list[str]]:
    """Sample's params for ComfyUI's sampler_name + scheduler (sampler, schedule, noise and the nearest
    `scheduler` enum as a fallback), and notes where something is only the nearest."""
    s, sch = str(sampler_name), str(scheduler)
    ours, why = map_scheduler(s, sch)
    params: dict[str, Any] = {"scheduler": ours, "noise": "comfyui"}
    notes = []
    sampler = _SAMPLER_ALIAS.get(s, s)
    if sampler in _COMFY_SAMPLERS:
        params["sampler"] = sampler
        if sampler != s:
            notes.append(f"sampler {s}: using {sampler}")
        if sampler == "dpmpp_3m_sde":
            notes.append("dpmpp_3m_sde: diffusers' 3rd-order SDE DPM-Solver++ (not ComfyUI's exact 3M SDE)")
        if "sde" in sampler:  # ancestral / lcm steps draw ComfyUI's per-step randn sequence (noise "comfyui")
            notes.append(f"{sampler}: ComfyUI's SDE noise is a Brownian tree (torchsde), not reproduced: the "
                         "per-step noise differs")
    elif why:
        notes.append(why)
    if sch in _COMFY_SCHEDULES:
        params["schedule"] = sch
        if sampler == "lcm":
            notes.append(f"lcm: the schedule is LCM's own (diffusers' LCMScheduler takes no custom sigmas), "
                         f"not ComfyUI's {sch}")
        elif sampler in ("dpm_2", "dpmpp_sde") and sch not in ("karras", "exponential", "beta"):
            notes.append(f"{sampler} takes no custom sigmas: scheduler {sch} becomes diffusers' own spacing")
    else:
        notes.append(f"scheduler {sch} is not known here: using the diffusers scheduler's own spacing")
    return params, notes


_INTERP = {"nearest-exact": "nearest", "bilinear": "bilinear", "area": "area", "bicubic": "bicubic",
           "lanczos": "lanczos", "bislerp": "bicubic"}
_BLEND = {"normal": "normal", "multiply": "multiply", "screen": "screen", "overlay": "overlay",
          "soft_light": "soft light", "difference": "difference"}
#: ComfyUI input names -> the wire type, to type a placeholder's outputs by who consumes them.
_INPUT_TYPES = {"image": "IMAGE", "images": "IMAGE", "pixels": "IMAGE", "image1": "IMAGE", "image2": "IMAGE",
                "mask": "MASK", "samples": "LATENT", "latent_image": "LATENT", "latent": "LATENT",
                "model": "MODEL", "clip": "CLIP", "vae": "VAE", "positive": "CONDITIONING",
                "negative": "CONDITIONING", "conditioning": "CONDITIONING", "conditioning_1": "CONDITIONING",
                "conditioning_2": "CONDITIONING", "text": "STRING", "seed": "INT", "noise_seed": "INT"}


# the mapper --------------------------------------------------------------------------------------
class _Mapper:
    def __init__(self, wf: ComfyWorkflow, registry: Any, base_dir: pathlib.Path | None,
                 input_dirs: list[pathlib.Path]) -> None:
        self.wf, self.registry = wf, registry
        self.base_dir = base_dir
        self.input_dirs = input_dirs
        self.g = Graph()
        self.report = ImportReport(source=wf.source, warnings=list(wf.warnings))
        self.values: dict[tuple[str, int], Value] = {}
        self.consumers: dict[tuple[str, int], list[str]] = {}
        self.last_slot: dict[str, int] = {}
        for n in wf.nodes.values():
            for name, v in n.inputs.items():
                if isinstance(v, ComfyLink):
                    self.consumers.setdefault((v.node, v.slot), []).append(name)
                    self.last_slot[v.node] = max(self.last_slot.get(v.node, -1), v.slot)
        self.per_comfy: dict[str, int] = {}  # our nodes made per ComfyUI node (to offset their positions)
        self.loads: list[str] = []  # our Load Model ids, in order
        self.pending_latents: set[str] = set()  # Empty Latent nodes still without a model link
        self.extras: dict[str, dict[str, Any]] = {}
        self.cur: ComfyNode | None = None
        self.made: list[str] = []

    # helpers for handlers ------------------------------------------------------------------------
    def note(self, text: str) -> None:
        assert self.cur is not None
        self.report.nodes[self.cur.id].notes.append(text)

    def raw(self, cn: ComfyNode, name: str, default: Any = None) -> Any:
        v = cn.inputs.get(name, default)
        return default if isinstance(v, ComfyLink) else v

    def value(self, cn: ComfyNode, name: str) -> Value | None:
        v = cn.inputs.get(name)
        if not isinstance(v, ComfyLink):
            return None
        got = self.values.get((v.node, v.slot))
        if got is None:
            raise Unmappable(f"input '{name}' comes from node {v.node} output {v.slot}, which gives nothing here")
        return got

    def wire(self, cn: ComfyNode, name: str, required: bool = True) -> Wire | None:
        v = self.value(cn, name)
        if v is None:
            if required:
                raise Unmappable(f"input '{name}' is not connected")
            return None
        if not isinstance(v, Wire):
            raise Unmappable(f"input '{name}' gets {type(v).__name__.lower()} where imagebash needs a wire")
        return v

    def cond(self, cn: ComfyNode, name: str) -> Cond:
        v = self.value(cn, name)
        if v is None:
            return Cond()
        if isinstance(v, Wire):  # text from a placeholder
            return Cond(prompts=[v])
        if isinstance(v, Cond):
            return v
        raise Unmappable(f"input '{name}' gets a {v.kind} where conditioning is expected")

    def named(self, cn: ComfyNode, name: str, kind: str) -> Named:
        v = self.value(cn, name)
        if not isinstance(v, Named) or v.kind != kind:
            raise Unmappable(f"input '{name}' needs a {kind} from its loader")
        return v

    def folded(self, sources: list[str], into: str) -> None:
        for s in sources:
            r = self.report.nodes.get(s)
            if r is not None and r.status == "folded" and into not in r.into:
                r.into.append(into)

    def add(self, type_id: str, params: dict[str, Any], suffix: str = "",
            links: dict[str, Wire | None] | None = None) -> str:
        """Add our node for the current ComfyUI node (id n<id><suffix>), clamping numbers to its ranges."""
        cn = self.cur
        assert cn is not None
        spec = self.registry.get(type_id)
        if spec is None:
            raise Unmappable(f"{type_id} is not installed here")
        nid = f"n{cn.id}{suffix}"
        k = 2
        while nid in self.g.nodes:
            nid, k = f"n{cn.id}{suffix}_{k}", k + 1
        clean: dict[str, Any] = {}
        for name, v in params.items():
            port = spec.input(name)
            if port is not None and port.range is not None and isinstance(v, (int, float)) \
                    and not isinstance(v, bool):
                lo, hi = port.range.min, port.range.max
                c = max(lo, v) if lo is not None else v
                c = min(hi, c) if hi is not None else c
                if c != v:
                    self.note(f"{name} {v} is outside imagebash's range for {spec.title}: using {c}")
                    v = type(v)(c)
            clean[name] = v
        x, y = cn.pos or (0.0, 0.0)
        off = self.per_comfy[cn.id] = self.per_comfy.get(cn.id, -1) + 1
        mode = {MODE_MUTED: NodeMode.MUTED, MODE_BYPASS: NodeMode.BYPASSED}.get(cn.mode, NodeMode.NORMAL)
        self.g.add_node(NodeInstance(nid, type_id, clean, (float(x) + 30 * off, float(y) + 30 * off), mode,
                                     title=(cn.title or None) if not suffix else None))
        self.made.append(nid)
        self.report.nodes[cn.id].into.append(nid)
        for port, w in (links or {}).items():
            if w is not None:
                self.g.connect(Link(w.node, w.port, nid, port))
        return nid

    def load_model_wire(self, root: str | None) -> Wire:
        if root is None:
            if not self.loads:
                raise Unmappable("there is no checkpoint loader to take this from")
            root = self.loads[0]
            self.note(f"no model leads here: using {root}")
        return Wire(root, "model", root)

    def model_for_vae(self, v: Value | None, root: str | None) -> Wire:
        """The model handle a decode/encode uses: a VAELoader's file goes into the Load Model's vae."""
        if isinstance(v, Wire):
            return v if v.root is None else Wire(v.root, "model", v.root)
        if not isinstance(v, Named) or v.kind != "vae":
            raise Unmappable("input 'vae' is not connected to a VAE")
        base = self.load_model_wire(root)
        node = self.g.nodes[base.node]
        current = node.params.get("vae", "")
        if current in ("", v.value):
            node.params["vae"] = v.value
            self.folded([v.source], base.node)
            return base
        twin = f"{base.node}_vae{v.source}"
        if twin not in self.g.nodes:
            src = node
            self.g.add_node(NodeInstance(twin, src.type, {**src.params, "vae": v.value},
                                         (src.position[0], src.position[1] + 160), src.mode))
            self.note(f"a second VAE for {base.node}: a second Load Model {twin} with vae {v.value}")
        self.folded([v.source], twin)
        return Wire(twin, "model", twin)

    # the run -------------------------------------------------------------------------------------
    def order(self) -> list[ComfyNode]:
        nodes = self.wf.nodes
        deps = {nid: {v.node for v in n.inputs.values() if isinstance(v, ComfyLink) and v.node in nodes}
                for nid, n in nodes.items()}
        done: set[str] = set()
        out: list[ComfyNode] = []
        for start in nodes:  # iterative DFS, file order among independent nodes
            stack = [(start, iter(sorted(deps[start])))]
            if start in done:
                continue
            visiting = {start}
            while stack:
                nid, it = stack[-1]
                nxt = next((d for d in it if d not in done and d not in visiting), None)
                if nxt is None:
                    stack.pop()
                    visiting.discard(nid)
                    if nid not in done:
                        done.add(nid)
                        out.append(nodes[nid])
                else:
                    visiting.add(nxt)
                    stack.append((nxt, iter(sorted(deps[nxt]))))
        return out

    def run(self) -> tuple[Graph, ImportReport]:
        for cn in self.order():
            self.cur = cn
            self.report.nodes[cn.id] = NodeReport(cn.id, cn.class_type, pack=cn.pack)
            if cn.class_type in ("Note", "MarkdownNote"):
                text = str(self.raw(cn, "text", "") or next((v for v in cn.inputs.values() if isinstance(v, str)), ""))
                nid = f"note_n{cn.id}"
                self.g.add_item("note", Note(nid, text, tuple(cn.pos or (0.0, 0.0)),
                                             tuple(cn.size or (240.0, 120.0))))
                self.report.nodes[cn.id].into.append(nid)
                continue
            handler = HANDLERS.get(cn.class_type)
            snapshot = len(self.made)
            try:
                if handler is None:
                    raise Unmappable("")
                outs = handler(self, cn)
            except Unmappable as exc:
                for nid in self.made[snapshot:]:
                    self.g.remove_node(nid)
                del self.made[snapshot:]
                rep = self.report.nodes[cn.id]
                rep.into.clear()
                if str(exc):
                    rep.notes.append(f"kept as a placeholder: {exc}")
                outs = self.placeholder(cn)
            for slot, v in outs.items():
                self.values[(cn.id, slot)] = v
            self.keep_canvas(cn)
        self.finish()
        return self.g, self.report

    def keep_canvas(self, cn: ComfyNode) -> None:
        extra = {k: v for k, v in (("color", cn.color), ("bgcolor", cn.bgcolor),
                                   ("size", list(cn.size) if cn.size else None)) if v}
        if extra:
            self.extras[f"n{cn.id}"] = extra

    def finish(self) -> None:
        for nid in sorted(self.pending_latents):
            if self.g.link_into(nid, "model") is None and self.loads:
                self.g.connect(Link(self.loads[0], "model", nid, "model"))
        for i, gr in enumerate(self.wf.groups):
            self.g.add_item("group", Group(f"group_{i + 1}", gr.title, tuple(float(v) for v in gr.bounding),
                                           gr.color or "#3a5f8a"))
        for i, nt in enumerate(self.wf.notes):
            text = f"{nt.title}\n{nt.text}" if nt.title and nt.title not in ("Note", "MarkdownNote") else nt.text
            self.g.add_item("note", Note(f"note_{i + 1}", text, tuple(nt.pos or (0.0, 0.0)),
                                         tuple(nt.size or (240.0, 120.0))))
        for r in self.report.nodes.values():
            if r.status == "folded" and not r.into:
                r.notes.append("not used by any node that imagebash runs")
        meta: dict[str, Any] = {"source": self.wf.source}
        if self.extras:
            meta["canvas"] = self.extras
        folded = {f"n{r.comfy_id}": {"class_type": r.class_type, "into": r.into}
                  for r in self.report.nodes.values() if r.status == "folded"}
        if folded:
            meta["folded"] = folded
        self.g.meta["comfy"] = meta

    # placeholder ---------------------------------------------------------------------------------
    def placeholder(self, cn: ComfyNode) -> dict[int, Value]:
        from nodes.comfy.unmapped import input_port_name, output_port_names

        rep = self.report.nodes[cn.id]
        rep.status = "placeholder"
        inputs: dict[str, Any] = {}
        links: dict[str, Wire] = {}
        for name, v in cn.inputs.items():
            if not isinstance(v, ComfyLink):
                inputs[name] = v
                continue
            entry: dict[str, Any] = {"link": [v.node, v.slot]}
            got = self.values.get((v.node, v.slot))
            if isinstance(got, Wire):
                links[input_port_name(name)] = got
            elif isinstance(got, Cond):
                entry["folded"] = {"prompt": got.text(), "from": [f"n{s}" for s in got.sources]}
                self.folded(got.sources, f"n{cn.id}")
            elif isinstance(got, Named):
                entry["folded"] = {got.kind: got.value}
                self.folded([got.source], f"n{cn.id}")
            elif isinstance(got, Clip):
                entry["folded"] = {"clip": list(got.files), "clip_skip": got.skip}
                if got.wire is not None:
                    links[input_port_name(name)] = got.wire
                self.folded(list(got.sources), f"n{cn.id}")
            inputs[name] = entry
        outputs = list(cn.outputs)
        if not outputs:
            for s in range(self.last_slot.get(cn.id, -1) + 1):
                names = self.consumers.get((cn.id, s), [])
                outputs.append((names[0] if names else f"output_{s}",
                                next((_INPUT_TYPES[n] for n in names if n in _INPUT_TYPES), "*")))
        ports = output_port_names(outputs)
        self.cur = cn
        nid = self.add(UNMAPPED, {"class_type": cn.class_type, "pack": cn.pack or "",
                                  "inputs": json.dumps(inputs, default=str),
                                  "outputs": json.dumps([list(o) for o in outputs])}, links=links)
        out: dict[int, Value] = {}
        for slot, port in enumerate(ports):
            if port is None:
                rep.notes.append(f"output {slot} ({outputs[slot][0]}) has no free slot: links from it are lost")
            else:
                out[slot] = Wire(nid, port)
        return out

    def fold(self, cn: ComfyNode, v: Value) -> dict[int, Value]:
        """A node folded into its consumers (no node of its own)."""
        self.report.nodes[cn.id].status = "folded"
        if cn.mode == MODE_MUTED:
            self.note("muted in ComfyUI; folded nodes cannot be muted here, it is used as if active")
        return {0: v}


# handlers: (mapper, node) -> {output slot: value} ---------------------------------------------------
Handler = Callable[[_Mapper, ComfyNode], dict[int, Value]]


def _checkpoint(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    params = {"checkpoint": str(m.raw(cn, "ckpt_name", ""))}
    if m.raw(cn, "config_name"):
        m.note(f"config {m.raw(cn, 'config_name')} not carried over: imagebash detects the model's config")
    nid = m.add(D + "load_model", params)
    m.loads.append(nid)
    w = Wire(nid, "model", nid)
    return {0: w, 1: w, 2: w}


def _vae_loader(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    return m.fold(cn, Named("vae", str(m.raw(cn, "vae_name", "")), cn.id))


def _lora(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    model = m.wire(cn, "model")
    sm = float(m.raw(cn, "strength_model", 1.0))
    if "strength_clip" in cn.inputs and float(m.raw(cn, "strength_clip", sm)) != sm:
        m.note(f"strength_clip {m.raw(cn, 'strength_clip')} differs from strength_model {sm}: imagebash "
               f"applies one weight ({sm}) to the whole LoRA")
    nid = m.add(D + "lora", {"file": str(m.raw(cn, "lora_name", "")), "weight": sm}, links={"model": model})
    w = Wire(nid, "model", model.root, model.shift)
    clip = m.value(cn, "clip") if "clip" in cn.inputs else None
    return {0: w, 1: Clip(w, clip.files, clip.skip, clip.sources) if isinstance(clip, Clip) else w}


def _unet_loader(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    params: dict[str, Any] = {"checkpoint": str(m.raw(cn, "unet_name", ""))}
    dtype = str(m.raw(cn, "weight_dtype", "default"))
    if dtype.startswith("fp8"):
        params["memory"] = "fp8"
    elif dtype != "default":
        m.note(f"weight_dtype {dtype} not carried over: imagebash picks the dtype")
    nid = m.add(D + "load_model", params)
    m.loads.append(nid)
    return {0: Wire(nid, "model", nid)}


def _clip_loader(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    names = [str(m.raw(cn, k, "")) for k in ("clip_name", "clip_name1", "clip_name2", "clip_name3")]
    m.report.nodes[cn.id].status = "folded"
    return {0: Clip(files=tuple(n for n in names if n), sources=(cn.id,))}


def _clip_set_last_layer(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    v = m.value(cn, "clip")
    stop = int(m.raw(cn, "stop_at_clip_layer", -1))
    skip = max(0, -stop - 1)  # ComfyUI's -2 (A1111's Clip skip 2) skips one layer
    m.report.nodes[cn.id].status = "folded"
    if cn.mode == MODE_BYPASS:
        m.note("bypassed: its CLIP passes through unchanged")
        return {0: v} if v is not None else {}
    if isinstance(v, Clip):
        return {0: Clip(v.wire, v.files, skip, (*v.sources, cn.id))}
    if isinstance(v, Wire) or v is None:
        return {0: Clip(v, (), skip, (cn.id,))}
    raise Unmappable("input 'clip' is not a CLIP")


def _clip_text(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    text = cn.inputs.get("text", "")
    prompt: str | Wire = m.wire(cn, "text") if isinstance(text, ComfyLink) else str(text)
    clip = m.value(cn, "clip") if isinstance(cn.inputs.get("clip"), ComfyLink) else None
    clip = clip if isinstance(clip, Clip) else None
    return m.fold(cn, Cond(prompts=[prompt], sources=[cn.id, *(clip.sources if clip else ())], clip=clip))


def _clip_text_sdxl(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    """CLIPTextEncodeSDXL: text_l goes to CLIP-L (Sample's prompt), text_g to OpenCLIP-G (prompt_2), and the
    size conditioning (pixels) to Sample's original / crop / target sizes. CLIPTextEncodeSDXLRefiner: its
    text, its size as the original size and its aesthetic score."""
    for name in ("text", "text_g", "text_l"):
        if isinstance(cn.inputs.get(name), ComfyLink):
            raise Unmappable(f"a linked {name} is not supported on {cn.class_type}")
    clip = m.value(cn, "clip") if isinstance(cn.inputs.get("clip"), ComfyLink) else None
    clip = clip if isinstance(clip, Clip) else None
    w, h = int(m.raw(cn, "width", 1024)), int(m.raw(cn, "height", 1024))
    sdxl: dict[str, Any] = {"original_width": w, "original_height": h}
    if cn.class_type == "CLIPTextEncodeSDXLRefiner":
        text, text_2 = str(m.raw(cn, "text", "")), None
        sdxl["aesthetic_score"] = float(m.raw(cn, "ascore", 6.0))
    else:
        text, g = str(m.raw(cn, "text_l", "")), str(m.raw(cn, "text_g", ""))
        text_2 = g if g != text else None
        sdxl.update(crop_left=int(m.raw(cn, "crop_w", 0)), crop_top=int(m.raw(cn, "crop_h", 0)),
                    target_width=int(m.raw(cn, "target_width", w)), target_height=int(m.raw(cn, "target_height", h)))
    return m.fold(cn, Cond(prompts=[text], sources=[cn.id, *(clip.sources if clip else ())], clip=clip,
                           prompt_2=text_2, sdxl=sdxl))


def _sdxl_params(m: _Mapper, pos: Cond, neg: Cond) -> dict[str, Any]:
    """Sample's SDXL parameters from the positive and negative CLIPTextEncodeSDXL(Refiner)."""
    out: dict[str, Any] = {}
    if pos.prompt_2 is not None:
        out["prompt_2"] = pos.prompt_2
    if neg.prompt_2 is not None:
        out["negative_prompt_2"] = neg.prompt_2
    sizes = {k: v for k, v in pos.sdxl.items() if k != "aesthetic_score"} or \
        {k: v for k, v in neg.sdxl.items() if k != "aesthetic_score"}
    neg_sizes = {k: v for k, v in neg.sdxl.items() if k != "aesthetic_score"}
    if neg_sizes and neg_sizes != sizes:
        m.note("the negative's size conditioning differs from the positive's: both use the positive's")
    out.update(sizes)
    if "aesthetic_score" in pos.sdxl:
        out["aesthetic_score"] = pos.sdxl["aesthetic_score"]
    if "aesthetic_score" in neg.sdxl:
        out["negative_aesthetic_score"] = neg.sdxl["aesthetic_score"]
    return out


def _flux_guidance(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    base = m.cond(cn, "conditioning")
    if cn.mode == MODE_BYPASS:
        return _bypassed_cond(m, cn, "conditioning") or {}
    return m.fold(cn, Cond(base.prompts, base.regions, base.controls, [*base.sources, cn.id], base.clip,
                           float(m.raw(cn, "guidance", 3.5)), base.prompt_2, base.sdxl))


def _zero_out(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    m.note("zeroed conditioning becomes an empty prompt (imagebash encodes '' rather than zeros)")
    return m.fold(cn, Cond([""], [], [], [cn.id]))


def _cond_mix(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    a, b = m.cond(cn, "conditioning_to"), m.cond(cn, "conditioning_from")
    if cn.class_type == "ConditioningAverage":
        w = float(m.raw(cn, "conditioning_to_strength", 1.0))
        if w >= 1.0:
            return m.fold(cn, Cond(a.prompts, a.regions, a.controls, [*a.sources, cn.id], a.clip, a.guidance,
                                   a.prompt_2, a.sdxl))
        if w <= 0.0:
            return m.fold(cn, Cond(b.prompts, b.regions, b.controls, [*b.sources, cn.id], b.clip, b.guidance,
                                   b.prompt_2, b.sdxl))
        m.note(f"conditioning average ({w:g} of the first) has no equivalent: both prompts are joined into one")
    else:
        m.note("conditioning concat is read as the two prompts joined into one")
    c = a.plus(b)
    return m.fold(cn, Cond(c.prompts, c.regions, c.controls, [*c.sources, cn.id], c.clip, c.guidance,
                           c.prompt_2, c.sdxl))


def _model_sampling(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    model = m.wire(cn, "model")
    m.report.nodes[cn.id].status = "folded"
    if cn.mode == MODE_BYPASS:
        return {0: model}
    if cn.class_type == "ModelSamplingFlux":  # ComfyUI's resolution-dependent mu; our fixed shift is exp(mu)
        import math

        hi, lo = float(m.raw(cn, "max_shift", 1.15)), float(m.raw(cn, "base_shift", 0.5))
        w, h = int(m.raw(cn, "width", 1024)), int(m.raw(cn, "height", 1024))
        slope = (hi - lo) / (4096 - 256)
        shift = math.exp(w * h / 256 * slope + lo - slope * 256)
    else:
        shift = float(m.raw(cn, "shift", 3.0))
    return {0: Wire(model.node, model.port, model.root, round(shift, 6))}


def _bypassed_cond(m: _Mapper, cn: ComfyNode, name: str) -> dict[int, Value] | None:
    if cn.mode != MODE_BYPASS:
        return None
    m.report.nodes[cn.id].status = "folded"
    m.note("bypassed: its conditioning passes through unchanged")
    return {0: m.cond(cn, name)}


def _combine(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    a, b = m.cond(cn, "conditioning_1"), m.cond(cn, "conditioning_2")
    if a.prompts and b.prompts:
        m.note("two plain prompts combined: imagebash joins them into one prompt")
    c = a.plus(b)
    return m.fold(cn, Cond(c.prompts, c.regions, c.controls, [*c.sources, cn.id], prompt_2=c.prompt_2, sdxl=c.sdxl))


def _region(m: _Mapper, cn: ComfyNode, mask: bool) -> dict[int, Value]:
    passed = _bypassed_cond(m, cn, "conditioning")
    if passed is not None:
        return passed
    base = m.cond(cn, "conditioning")
    if any(isinstance(p, Wire) for p in base.prompts) or base.regions:
        raise Unmappable("its conditioning is not a plain prompt")
    strength = float(m.raw(cn, "strength", 1.0))
    if mask:
        r = Region(base.text(), strength, cn.id, mask=m.wire(cn, "mask"))
        if m.raw(cn, "set_cond_area", "default") != "default":
            m.note("set_cond_area 'mask bounds' is not supported: the prompt applies through the mask")
    else:
        r = Region(base.text(), strength, cn.id, rect=(int(m.raw(cn, "x", 0)), int(m.raw(cn, "y", 0)),
                                                       int(m.raw(cn, "width", 64)), int(m.raw(cn, "height", 64))))
    return m.fold(cn, Cond([], [r], base.controls, [*base.sources, cn.id]))


def _controlnet_loader(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    return m.fold(cn, Named("controlnet", str(m.raw(cn, "control_net_name", "")), cn.id))


def _control(m: _Mapper, cn: ComfyNode) -> Control:
    net = m.named(cn, "control_net", "controlnet")
    m.folded([net.source], f"n{cn.id}")
    return Control(cn.id, net.value, m.wire(cn, "image"), float(m.raw(cn, "strength", 1.0)),
                   float(m.raw(cn, "start_percent", 0.0)), float(m.raw(cn, "end_percent", 1.0)))


def _controlnet_apply(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    passed = _bypassed_cond(m, cn, "conditioning")
    if passed is not None:
        return passed
    base = m.cond(cn, "conditioning")
    c = _control(m, cn)
    return m.fold(cn, Cond(base.prompts, base.regions, [*base.controls, c], [*base.sources, cn.id],
                           prompt_2=base.prompt_2, sdxl=base.sdxl))


def _controlnet_apply_adv(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    pos, neg = m.cond(cn, "positive"), m.cond(cn, "negative")
    if cn.mode == MODE_BYPASS:
        m.report.nodes[cn.id].status = "folded"
        m.note("bypassed: its conditioning passes through unchanged")
        return {0: pos, 1: neg}
    c = _control(m, cn)
    m.report.nodes[cn.id].status = "folded"
    return {0: Cond(pos.prompts, pos.regions, [*pos.controls, c], [*pos.sources, cn.id], prompt_2=pos.prompt_2,
                    sdxl=pos.sdxl),
            1: Cond(neg.prompts, neg.regions, [*neg.controls, c], neg.sources, prompt_2=neg.prompt_2, sdxl=neg.sdxl)}


def _empty_latent(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    nid = m.add(D + "empty_latent", {"width": int(m.raw(cn, "width", 512)), "height": int(m.raw(cn, "height", 512)),
                                     "batch_size": int(m.raw(cn, "batch_size", 1))})
    m.pending_latents.add(nid)
    return {0: Wire(nid, "latent")}


def _prompt_into(m: _Mapper, c: Cond, nid: str, port: str, what: str) -> None:
    wires = [p for p in c.prompts if isinstance(p, Wire)]
    if wires:
        m.g.connect(Link(wires[0].node, wires[0].port, nid, port))
        if len(c.prompts) > 1:
            m.note(f"the {what} joins a linked text with others: only the linked text is kept")
    else:
        m.g.nodes[nid].params[port] = c.text()
    if len([p for p in c.prompts if isinstance(p, str)]) > 1 and not wires:
        m.note(f"{len(c.prompts)} prompts combined into one {what}")
    m.folded(c.sources, nid)


def _promote(m: _Mapper, source: str, nid: str) -> None:
    """A folded conditioning node that became a node of its own on the model chain."""
    rep = m.report.nodes.get(source)
    if rep is not None:
        rep.status = "mapped"
        if nid not in rep.into:
            rep.into.append(nid)


def _sampler(m: _Mapper, cn: ComfyNode, advanced: bool) -> dict[int, Value]:
    model = m.wire(cn, "model")
    latent = m.wire(cn, "latent_image")
    pos, neg = m.cond(cn, "positive"), m.cond(cn, "negative")
    chain = model
    for r in pos.regions:  # regional prompts and ControlNets sit on the model chain before the sampler
        m.cur = m.wf.nodes.get(r.source, cn)
        nid = m.add(G + "regional_prompt", {"prompt": r.prompt, "strength": r.strength,
                                            **({"x": r.rect[0], "y": r.rect[1], "width": r.rect[2],
                                                "height": r.rect[3]} if r.rect else {})},
                    links={"model": chain, "mask": r.mask})
        m.folded(pos.sources, nid)
        _promote(m, r.source, nid)
        chain = Wire(nid, "model", model.root)
    seen: set[str] = set()
    for c in pos.controls + neg.controls:
        if c.source in seen:
            continue
        seen.add(c.source)
        m.cur = m.wf.nodes.get(c.source, cn)
        nid = m.add(G + "controlnet", {"controlnet": c.file, "strength": c.strength, "start": c.start, "end": c.end},
                    links={"model": chain, "image": c.image})
        _promote(m, c.source, nid)
        chain = Wire(nid, "model", model.root)
    m.cur = cn
    if neg.regions:
        m.note("regional negative prompts are not supported: their text joins the negative prompt")
        neg = Cond(neg.prompts + [r.prompt for r in neg.regions], [], neg.controls, neg.sources,
                   prompt_2=neg.prompt_2, sdxl=neg.sdxl)
    window: dict[str, Any] = {}
    if advanced:
        steps, denoise, seed_name = int(m.raw(cn, "steps", 20)), 1.0, "noise_seed"
        start, end = int(m.raw(cn, "start_at_step", 0)), int(m.raw(cn, "end_at_step", 10000))
        if start > 0:
            window["start_step"] = start
        if end <= start:
            denoise = 0.0
            m.note(f"end_at_step {end} <= start_at_step {start}: nothing to sample, the latent passes through")
        elif end < steps:
            window["end_step"] = end
        if m.raw(cn, "add_noise", "enable") == "disable":
            window["add_noise"] = False
        if m.raw(cn, "return_with_leftover_noise", "disable") == "enable" and end < steps:
            window["leftover_noise"] = True
    else:
        steps, denoise, seed_name = int(m.raw(cn, "steps", 20)), float(m.raw(cn, "denoise", 1.0)), "seed"
    chosen, notes = map_sampler(m.raw(cn, "sampler_name", "euler"), m.raw(cn, "scheduler", "normal"))
    for text in notes:
        m.note(text)
    guidance = float(m.raw(cn, "cfg", 8.0))
    if pos.guidance is not None:  # FluxGuidance: the distilled guidance is our guidance; cfg 1 is its usual
        if guidance != 1.0:
            m.note(f"cfg {guidance:g} with FluxGuidance {pos.guidance:g}: imagebash uses the Flux guidance")
        guidance = pos.guidance
    params: dict[str, Any] = {"steps": steps, "guidance": guidance, **chosen, "denoise": round(denoise, 6),
                              **window}
    if model.shift:
        params["shift"] = model.shift
    params.update(_sdxl_params(m, pos, neg))
    clip = pos.clip or neg.clip
    if clip is not None and clip.skip:
        params["clip_skip"] = clip.skip
    seed_link = m.wire(cn, seed_name) if isinstance(cn.inputs.get(seed_name), ComfyLink) else None
    if seed_link is None:
        params["seed"] = int(m.raw(cn, seed_name, 0) or 0)
    nid = m.add(D + "sample", params, links={"model": chain, "latent": latent, "seed": seed_link})
    _prompt_into(m, pos, nid, "prompt", "prompt")
    _prompt_into(m, neg, nid, "negative_prompt", "negative prompt")
    if clip is not None and clip.files:
        _text_encoders_into(m, clip, model.root)
    if latent.node in m.pending_latents:  # an Empty Latent takes its layout from the model it is sampled with
        m.g.connect(Link(model.root or model.node, "model" if model.root else model.port, latent.node, "model"))
        m.pending_latents.discard(latent.node)
    return {0: Wire(nid, "latent", model.root)}


def _part(kind: str, names: tuple[str, ...]) -> Handler:
    def handler(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
        inputs = {k: cn.inputs[k] for k in names if k in cn.inputs}
        if cn.class_type == "DisableNoise":
            inputs["add_noise"] = "disable"
        elif cn.class_type in ("KarrasScheduler", "ExponentialScheduler"):
            if cn.class_type == "KarrasScheduler" and float(m.raw(cn, "rho", 7.0)) != 7.0:
                raise Unmappable(f"rho {m.raw(cn, 'rho')}: imagebash's karras schedule has rho 7")
            m.note(f"sigma_max / sigma_min ({m.raw(cn, 'sigma_max')} / {m.raw(cn, 'sigma_min')}) are not carried "
                   "over: the schedule spans the model's own sigmas")
            inputs["scheduler"] = "karras" if cn.class_type == "KarrasScheduler" else "exponential"
        elif cn.class_type == "BasicGuider":
            inputs.update(positive=cn.inputs.get("conditioning"), cfg=1.0)
        m.report.nodes[cn.id].status = "folded"
        return {0: Part(kind, inputs, cn.id)}
    return handler


def _sampler_custom(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    """SamplerCustom(Advanced) is a KSamplerAdvanced over its parts: the node is mapped as that KSampler."""
    inputs: dict[str, Any] = {"latent_image": cn.inputs.get("latent_image"), "add_noise": "enable",
                              "scheduler": "normal", "steps": 20}
    if cn.class_type == "SamplerCustom":
        inputs.update({k: cn.inputs[k] for k in ("model", "cfg", "positive", "negative", "noise_seed")
                       if k in cn.inputs})
        inputs["add_noise"] = "enable" if cn.inputs.get("add_noise", True) not in (False, "disable") else "disable"
    sources = []
    for name, kind in (("noise", "noise"), ("guider", "guider"), ("sampler", "sampler"), ("sigmas", "sigmas")):
        if name not in cn.inputs:
            continue
        part = m.value(cn, name)
        if not isinstance(part, Part) or part.kind != kind:
            raise Unmappable(f"input '{name}' does not come from a core {kind} node")
        inputs.update({k: v for k, v in part.inputs.items() if v is not None})
        sources.append(part.source)
    if isinstance(inputs.get("steps"), ComfyLink) or isinstance(inputs.get("denoise"), ComfyLink):
        raise Unmappable("linked steps / denoise of a scheduler are not supported")
    inputs["denoise"] = float(inputs.get("denoise", 1.0))
    virtual = ComfyNode(cn.id, "KSampler", inputs, cn.title, cn.pos, cn.size, mode=cn.mode)
    if "noise_seed" in inputs:
        inputs["seed"] = inputs.pop("noise_seed")
    out = _sampler(m, virtual, advanced=False)
    if inputs["add_noise"] == "disable":
        m.g.nodes[out[0].node].params["add_noise"] = False
    m.folded(sources, out[0].node)
    m.note("folded into one Sample: its noise, guider, sampler and sigmas nodes are its parameters")
    return {0: out[0], 1: out[0]}  # denoised_output: the output (the schedule ends at sigma 0)


def _text_encoders_into(m: _Mapper, clip: Clip, root: str | None) -> None:
    """A CLIPLoader's files become the text encoders of the Load Model the sampler's model comes from."""
    node = m.g.nodes[m.load_model_wire(root).node]
    ports = ("text_encoder", "text_encoder_2", "text_encoder_3")
    current = tuple(str(node.params.get(p, "") or "") for p in ports[:len(clip.files)])
    if any(current) and current != clip.files:
        m.note(f"{node.id} already has text encoders {', '.join(c for c in current if c)}: kept")
    else:
        node.params.update(dict(zip(ports, clip.files, strict=False)))
    m.folded(list(clip.sources), node.id)


def _decode(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    latent = m.wire(cn, "samples")
    model = m.model_for_vae(m.value(cn, "vae"), latent.root)
    params: dict[str, Any] = {}
    if cn.class_type == "VAEDecodeTiled":
        params = {"tiling_mode": "on", "tile_size": int(m.raw(cn, "tile_size", 512))}
    nid = m.add(D + "decode", params, links={"model": model, "latent": latent})
    return {0: Wire(nid, "image")}


def _encode(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    image = m.wire(cn, "pixels")
    v = m.value(cn, "vae")
    model = m.model_for_vae(v, v.root if isinstance(v, Wire) else None)
    params: dict[str, Any] = {}
    if cn.class_type == "VAEEncodeTiled":
        params = {"tiling_mode": "on", "tile_size": int(m.raw(cn, "tile_size", 512))}
    nid = m.add(D + "encode", params, links={"model": model, "image": image})
    return {0: Wire(nid, "latent", model.root)}


def _encode_for_inpaint(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    image, mask = m.wire(cn, "pixels"), m.wire(cn, "mask")
    v = m.value(cn, "vae")
    model = m.model_for_vae(v, v.root if isinstance(v, Wire) else None)
    nid = m.add(D + "encode_for_inpaint", {"grow_mask_by": int(m.raw(cn, "grow_mask_by", 6))},
                links={"model": model, "image": image, "mask": mask})
    return {0: Wire(nid, "latent", model.root)}


def _set_noise_mask(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    latent, mask = m.wire(cn, "samples"), m.wire(cn, "mask")
    nid = m.add(D + "set_noise_mask", {}, links={"latent": latent, "mask": mask})
    return {0: Wire(nid, "latent", latent.root)}


def _latent_upscale(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    latent = m.wire(cn, "samples")
    method = str(m.raw(cn, "upscale_method", "nearest-exact"))
    if method not in ("nearest-exact", "bilinear", "bicubic", "area"):
        m.note(f"upscale method {method} has no equivalent: using bicubic")
        method = "bicubic"
    if cn.class_type == "LatentUpscaleBy":
        params: dict[str, Any] = {"factor": float(m.raw(cn, "scale_by", 1.5)), "method": method}
    else:
        params = {"width": int(m.raw(cn, "width", 1024)), "height": int(m.raw(cn, "height", 1024)), "method": method,
                  "crop": m.raw(cn, "crop", "disabled") != "disabled"}
    nid = m.add(D + "latent_upscale", params, links={"latent": latent})
    return {0: Wire(nid, "latent", latent.root)}


def _latent_composite(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    dst, src = m.wire(cn, "samples_to"), m.wire(cn, "samples_from")
    nid = m.add(D + "latent_composite", {"x": int(m.raw(cn, "x", 0)), "y": int(m.raw(cn, "y", 0)),
                                         "feather": int(m.raw(cn, "feather", 0))},
                links={"destination": dst, "source": src})
    return {0: Wire(nid, "latent", dst.root or src.root)}


def _save(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    images = m.wire(cn, "images")
    if cn.class_type == "PreviewImage":
        m.note("PreviewImage kept as Save Image (imagebash shows every node's output in its preview)")
        prefix = "ComfyUI_preview"
    else:
        prefix = str(m.raw(cn, "filename_prefix", "ComfyUI") or "ComfyUI")
    m.add(IMG + "save", {"filename_prefix": prefix}, links={"image": images})
    return {}


def _save_video(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    images = m.wire(cn, "images")
    params: dict[str, Any] = {"filename_prefix": str(m.raw(cn, "filename_prefix", "ComfyUI") or "ComfyUI")}
    if cn.class_type == "SaveAnimatedWEBP":
        params.update(codec="webp", fps=float(m.raw(cn, "fps", 6.0)), lossless=bool(m.raw(cn, "lossless", False)),
                      quality=int(m.raw(cn, "quality", 80)), loop=0)
        if str(m.raw(cn, "method", "default")) != "default":
            m.note(f"webp method {m.raw(cn, 'method')} is not carried over: Save Video uses the encoder's default")
    else:
        codec = str(m.raw(cn, "codec", "vp9"))
        if codec not in ("vp9", "av1"):
            m.note(f"codec {codec}: using vp9")
            codec = "vp9"
        params.update(codec=codec, fps=float(m.raw(cn, "fps", 24.0)), crf=round(float(m.raw(cn, "crf", 32.0))))
    m.add("imagebash.video.save", params, links={"video": images})
    return {}


def _scale_to_pixels(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    method = str(m.raw(cn, "upscale_method", "nearest-exact"))
    params: dict[str, Any] = {"megapixels": float(m.raw(cn, "megapixels", 1.0)),
                              "interpolation": _INTERP.get(method, "bicubic")}
    if int(m.raw(cn, "resolution_steps", 1) or 1) != 1:
        params["resolution_steps"] = int(m.raw(cn, "resolution_steps", 1))
    return {0: Wire(m.add(IMG + "scale_to_pixels", params, links={"image": m.wire(cn, "image")}), "image")}


def _pad_for_outpaint(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    nid = m.add(IMG + "pad_for_outpaint", {k: int(m.raw(cn, k, 0)) for k in ("left", "top", "right", "bottom")}
                | {"feathering": int(m.raw(cn, "feathering", 40))}, links={"image": m.wire(cn, "image")})
    return {0: Wire(nid, "image"), 1: Wire(nid, "mask")}


def _resolve_image(m: _Mapper, name: str) -> str:
    for folder in ([m.base_dir, m.base_dir / "input"] if m.base_dir else []) + m.input_dirs:
        if folder is not None and (folder / name).is_file():
            return name if folder == m.base_dir else str((folder / name).resolve())
    m.note(f"image {name} not found next to the workflow or in a ComfyUI input/ folder: set its path")
    return name


def _load_image(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
    name = str(m.raw(cn, "image", "") or "")
    name = name.removesuffix(" [input]").removesuffix(" [output]")
    nid = m.add(IMG + "load", {"path": _resolve_image(m, name)})
    out: dict[int, Value] = {0: Wire(nid, "image")}
    if cn.class_type == "LoadImageMask":
        ch = str(m.raw(cn, "channel", "alpha"))
        src = {"A": "alpha", "R": "red", "G": "green", "B": "blue"}.get(ch, ch)
        mk = m.add(IMG + "mask_from_image", {"source": src, "invert": src == "alpha"}, "_mask",
                   links={"image": Wire(nid, "image")})
        return {0: Wire(mk, "mask")}
    if (cn.id, 1) in m.consumers:  # ComfyUI's mask is 1 - alpha; ours is alpha
        out[1] = Wire(m.add(IMG + "mask_invert", {}, "_mask", links={"mask": Wire(nid, "mask")}), "mask")
    return out


def _simple(type_id: str, inputs: dict[str, str], params: Callable[[_Mapper, ComfyNode], dict[str, Any]],
            out_port: str = "image") -> Handler:
    def handler(m: _Mapper, cn: ComfyNode) -> dict[int, Value]:
        links = {ours: m.wire(cn, theirs) for theirs, ours in inputs.items()}
        return {0: Wire(m.add(type_id, params(m, cn), links=links), out_port)}
    return handler


def _scale_params(m: _Mapper, cn: ComfyNode) -> dict[str, Any]:
    return {"width": int(m.raw(cn, "width", 512)), "height": int(m.raw(cn, "height", 512)),
            "mode": "stretch" if m.raw(cn, "crop", "disabled") == "disabled" else "fill",
            "interpolation": _INTERP.get(str(m.raw(cn, "upscale_method", "bilinear")), "bicubic")}


def _blend_params(m: _Mapper, cn: ComfyNode) -> dict[str, Any]:
    mode = str(m.raw(cn, "blend_mode", "normal"))
    if mode not in _BLEND:
        m.note(f"blend mode {mode} has no equivalent: using normal")
    return {"opacity": float(m.raw(cn, "blend_factor", 0.5)), "mode": _BLEND.get(mode, "normal")}


def _canny_params(m: _Mapper, cn: ComfyNode) -> dict[str, Any]:
    return {"low_threshold": round(float(m.raw(cn, "low_threshold", 0.4)) * 255),
            "high_threshold": round(float(m.raw(cn, "high_threshold", 0.8)) * 255)}


HANDLERS: dict[str, Handler] = {
    "CheckpointLoaderSimple": _checkpoint,
    "CheckpointLoader": _checkpoint,
    "VAELoader": _vae_loader,
    "LoraLoader": _lora,
    "LoraLoaderModelOnly": _lora,
    "CLIPTextEncode": _clip_text,
    "CLIPTextEncodeSDXL": _clip_text_sdxl,
    "CLIPTextEncodeSDXLRefiner": _clip_text_sdxl,
    "ConditioningCombine": _combine,
    "ConditioningSetMask": lambda m, cn: _region(m, cn, mask=True),
    "ConditioningSetArea": lambda m, cn: _region(m, cn, mask=False),
    "ControlNetLoader": _controlnet_loader,
    "DiffControlNetLoader": _controlnet_loader,
    "ControlNetApply": _controlnet_apply,
    "ControlNetApplyAdvanced": _controlnet_apply_adv,
    "EmptyLatentImage": _empty_latent,
    "EmptySD3LatentImage": _empty_latent,
    "UNETLoader": _unet_loader,
    "CLIPLoader": _clip_loader,
    "DualCLIPLoader": _clip_loader,
    "TripleCLIPLoader": _clip_loader,
    "CLIPSetLastLayer": _clip_set_last_layer,
    "FluxGuidance": _flux_guidance,
    "ConditioningZeroOut": _zero_out,
    "ConditioningAverage": _cond_mix,
    "ConditioningConcat": _cond_mix,
    "ModelSamplingFlux": _model_sampling,
    "ModelSamplingSD3": _model_sampling,
    "ModelSamplingAuraFlow": _model_sampling,  # the same discrete-flow shift (AuraFlow, Lumina, HiDream graphs)
    "LatentComposite": _latent_composite,
    "KSampler": lambda m, cn: _sampler(m, cn, advanced=False),
    "KSamplerAdvanced": lambda m, cn: _sampler(m, cn, advanced=True),
    "KSamplerSelect": _part("sampler", ("sampler_name",)),
    "BasicScheduler": _part("sigmas", ("scheduler", "steps", "denoise")),
    "KarrasScheduler": _part("sigmas", ("steps",)),
    "ExponentialScheduler": _part("sigmas", ("steps",)),
    "RandomNoise": _part("noise", ("noise_seed",)),
    "DisableNoise": _part("noise", ()),
    "BasicGuider": _part("guider", ("model",)),
    "CFGGuider": _part("guider", ("model", "positive", "negative", "cfg")),
    "SamplerCustom": _sampler_custom,
    "SamplerCustomAdvanced": _sampler_custom,
    "VAEDecode": _decode,
    "VAEDecodeTiled": _decode,
    "VAEEncode": _encode,
    "VAEEncodeTiled": _encode,
    "VAEEncodeForInpaint": _encode_for_inpaint,
    "SetLatentNoiseMask": _set_noise_mask,
    "LatentUpscale": _latent_upscale,
    "LatentUpscaleBy": _latent_upscale,
    "SaveImage": _save,
    "PreviewImage": _save,
    "LoadImage": _load_image,
    "LoadImageMask": _load_image,
    "ImageScaleToTotalPixels": _scale_to_pixels,
    "ImagePadForOutpaint": _pad_for_outpaint,
    "SaveAnimatedWEBP": _save_video,
    "SaveWEBM": _save_video,
    "ImageScale": _simple(IMG + "resize", {"image": "image"}, _scale_params),
    "ImageScaleBy": _simple(IMG + "scale", {"image": "image"}, lambda m, cn: {
        "factor": float(m.raw(cn, "scale_by", 1.0)),
        "interpolation": _INTERP.get(str(m.raw(cn, "upscale_method", "bilinear")), "bicubic")}),
    "ImageInvert": _simple(IMG + "invert", {"image": "image"}, lambda m, cn: {}),
    "InvertMask": _simple(IMG + "mask_invert", {"mask": "mask"}, lambda m, cn: {}, "mask"),
    "ImageBlend": _simple(IMG + "blend", {"image1": "base", "image2": "layer"}, _blend_params),
    "Canny": _simple(G + "canny", {"image": "image"}, _canny_params),
}


def ensure_pack(registry: Any) -> None:
    """Make sure `registry` knows the placeholder node (until nodes.comfy is a built-in pack)."""
    if registry.get(UNMAPPED) is None:
        import importlib

        registry.add_module(importlib.import_module("nodes.comfy"))


def to_graph(wf: ComfyWorkflow, registry: Any, base_dir: str | pathlib.Path | None = None,
             input_dirs: list[str | pathlib.Path] = ()) -> tuple[Graph, ImportReport]:
    """Map a ComfyUI workflow onto an imagebash Graph; `base_dir` (the file's folder) and
    `input_dirs` (ComfyUI input/ folders) are where Load Image names are looked up."""
    ensure_pack(registry)
    base = pathlib.Path(base_dir) if base_dir is not None else None
    g, report = _Mapper(wf, registry, base, [pathlib.Path(d) for d in input_dirs]).run()
    if base is not None:
        g.base_dir = str(base.resolve())
    return g, report
