"""imagebash Graph -> ComfyUI API ("prompt") JSON, the reverse of `mapping`.

What `mapping` folds is unfolded again: a Load Model is a CheckpointLoaderSimple whose MODEL, CLIP
and VAE outputs feed the consumers (its `vae` a VAELoader feeding the decodes); a sampler's prompt
and negative prompt are CLIPTextEncode nodes; Regional Prompt and ControlNet nodes on the model
chain become conditioning nodes in front of each sampler that uses the chain. A placeholder
(`imagebash.comfy.unmapped`) is written back as its own class and inputs. ComfyUI's API has no node
modes: muted nodes are left out, bypassed ones pass their input through. A node with no ComfyUI
counterpart is left out with the nodes that need it, and named in one report line.

Node ids: our "n<k>" (what `mapping` names ComfyUI node k) is written back as k; everything else
gets the next free number, so import -> export -> import keeps ids.

Reverse mapping (imagebash -> ComfyUI):

    Load Model          CheckpointLoaderSimple (+ VAELoader for `vae`)
    LoRA                LoraLoader on MODEL and CLIP (LoraLoaderModelOnly without a CLIP)
    Sample              KSampler + CLIPTextEncode x2
    Text to Image       CLIPTextEncode x2 + EmptyLatentImage + KSampler + VAEDecode
    Image to Image      VAEEncode + CLIPTextEncode x2 + KSampler (denoise = strength) + VAEDecode
    Empty Latent        EmptyLatentImage
    Encode / Decode     VAEEncode / VAEDecode (tiled: VAEEncodeTiled / VAEDecodeTiled)
    Regional Prompt     CLIPTextEncode + ConditioningSetMask | ConditioningSetArea + ConditioningCombine
    ControlNet          ControlNetLoader + ControlNetApplyAdvanced (positive and negative)
    Canny               Canny (thresholds / 255)
    Load Image          LoadImage (its mask output: InvertMask of ComfyUI's, which is 1 - alpha)
    Save Image          SaveImage
    Invert / Invert Mask  ImageInvert / InvertMask
    Blend               ImageBlend
    Resize / Scale      ImageScale / ImageScaleBy
    placeholder         its class_type and inputs, links restored
"""

from __future__ import annotations

import enum
import json
import pathlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from app.comfy.mapping import UNMAPPED, ensure_pack
from app.graph.model import Graph, NodeInstance, NodeMode

D = "imagebash.diffusion."
IMG = "imagebash.image."
G = "imagebash.guidance."

#: our Scheduler -> ComfyUI (sampler_name, scheduler); the reverse of mapping's table
SCHEDULERS: dict[str, tuple[str, str]] = {
    "euler": ("euler", "normal"), "euler_a": ("euler_ancestral", "normal"), "dpmpp_2m": ("dpmpp_2m", "normal"),
    "dpmpp_2m_karras": ("dpmpp_2m", "karras"), "ddim": ("ddim", "ddim_uniform"), "unipc": ("uni_pc", "normal"),
}
#: a flow-matching family's own scheduler, as ComfyUI's templates sample Flux / SD 3.5 / Qwen-Image
FLOW_DEFAULT = ("euler", "simple")
_INTERP = {"nearest": "nearest-exact", "bilinear": "bilinear", "bicubic": "bicubic", "lanczos": "lanczos",
           "area": "area"}
_BLEND = {"normal": "normal", "multiply": "multiply", "screen": "screen", "overlay": "overlay",
          "soft light": "soft_light", "difference": "difference"}
#: placeholder inputs that take a part of our Model handle; any other model input takes MODEL
_MODEL_PARTS = {"clip": "CLIP", "vae": "VAE"}
#: ComfyUI classes with more than one output, and how many (for checking links)
OUTPUTS = {"CheckpointLoaderSimple": 3, "LoraLoader": 2, "LoadImage": 2, "ControlNetApplyAdvanced": 2,
           "ImagePadForOutpaint": 2}
_OUTPUT_NODES = ("SaveImage", "PreviewImage", "SaveAnimatedWEBP", "SaveWEBM")
_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".gguf")


# report ------------------------------------------------------------------------------------------
@dataclass
class NodeExport:
    """What became of one of our nodes: exported (as `comfy` ids), folded, bypassed or left out."""

    id: str
    type: str
    name: str
    status: str = "exported"  # exported | folded | bypassed | muted | unsupported | dropped | failed
    comfy: list[str] = field(default_factory=list)
    primary: str | None = None  # the ComfyUI node that stands for it (what re-import names n<id>)
    notes: list[str] = field(default_factory=list)


@dataclass
class ExportReport:
    """Per-node outcome of an export, the lines a user should read, and a one-line summary."""

    nodes: dict[str, NodeExport] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    comfy_nodes: int = 0

    def _with(self, status: str) -> list[NodeExport]:
        return [r for r in self.nodes.values() if r.status == status]

    @property
    def left_out(self) -> list[NodeExport]:
        return [r for r in self.nodes.values() if r.status in ("muted", "unsupported", "dropped", "failed")]

    def summary(self) -> str:
        """'5 nodes: 4 exported as 9 ComfyUI nodes, 1 bypassed; 2 left out (...)'."""
        out, by = len(self.left_out), len(self._with("bypassed"))
        line = f"{len(self.nodes)} nodes: {len(self.nodes) - out - by} exported as {self.comfy_nodes} ComfyUI nodes"
        line += f", {by} bypassed" if by else ""
        if out:
            line += f"; {out} left out ({', '.join(_named(r) for r in self.left_out[:4])}"
            line += ", ...)" if out > 4 else ")"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "comfy_nodes": self.comfy_nodes, "warnings": list(self.warnings),
                "per_node": {k: {"type": r.type, "status": r.status, "comfy": r.comfy, "primary": r.primary,
                                 "notes": r.notes}
                             for k, r in self.nodes.items()}}


def _named(r: NodeExport) -> str:
    return f"node '{r.id}' ({r.name})"


class Unexportable(Exception):
    """This node cannot be written for ComfyUI as it stands; the message says why."""


class _Depends(Exception):
    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.root = root


# values on our wires, in ComfyUI terms -----------------------------------------------------------
@dataclass(frozen=True)
class Ref:
    """A ComfyUI output (node id, slot); `invert`: ComfyUI's value is 1 - ours (a LoadImage mask)."""

    node: str
    slot: int
    ctype: str = ""
    invert: bool = False


@dataclass(frozen=True)
class RegionSpec:
    source: str  # our Regional Prompt id
    prompt: str
    strength: float
    mask: Ref | None
    rect: tuple[int, int, int, int] | None  # x, y, w, h


@dataclass(frozen=True)
class ControlSpec:
    source: str  # our ControlNet id
    file: str
    image: Ref
    strength: float
    start: float
    end: float


@dataclass(frozen=True)
class Chain:
    """Our Model handle: ComfyUI's MODEL, CLIP and VAE, plus the conditioning nodes on the chain."""

    model: Ref | None
    clip: Ref | None = None
    vae: Ref | None = None
    vae_file: str = ""
    checkpoint: str = ""
    regions: tuple[RegionSpec, ...] = ()
    controls: tuple[ControlSpec, ...] = ()


Value = Ref | Chain


def _plain(v: Any) -> Any:
    return v.value if isinstance(v, enum.Enum) else v


def _file(name: Any) -> str:
    return pathlib.PurePath(str(name or "")).name


def _model_file(ex: _Exporter, name: Any, what: str, folder: str) -> str:
    """The file name ComfyUI's loader takes; a note when ours is a repo id or a bare name."""
    f = _file(name)
    if not f.lower().endswith(_FILE_SUFFIXES):
        ex.note(f"{what} {name or '(none)'} is not a file name: ComfyUI needs the file in models/{folder}")
    return f


def guess_family(checkpoint: str) -> tuple[Any, Any]:
    """(Family, Variant) a checkpoint file name suggests; SD 1.x when it says nothing."""
    from app.engine.families import get_family

    n = checkpoint.lower()
    name = ("flux" if "flux" in n else "sd3" if re.search(r"sd3|sd_3|stable-diffusion-3", n)
            else "qwen_image" if "qwen" in n else "sdxl" if re.search(r"xl|pony|illustrious", n)
            else "sd2" if re.search(r"sd2|v2-|768-v", n) else "sd1")
    fam = get_family(name)
    variant = next((v for v in fam.variants if v.name in n and v.name != "base"), fam.variants[0])
    return fam, variant


# the exporter ------------------------------------------------------------------------------------
class _Exporter:
    def __init__(self, graph: Graph, registry: Any) -> None:
        self.g, self.registry = graph, registry
        self.api: dict[str, dict[str, Any]] = {}
        self.report = ExportReport()
        self.values: dict[str, dict[str, Value]] = {}
        self.reserved: dict[str, str] = {}  # our id -> its ComfyUI id, where `mapping` made it
        for nid in graph.nodes:
            m = re.fullmatch(r"n(\d+)", nid)
            if m:
                self.reserved[nid] = str(int(m.group(1)))
        self.taken = set(self.reserved.values())
        self.next_id = 1
        self.cur: NodeInstance | None = None
        self.made: list[str] = []
        self.cache: dict[Any, str] = {}  # shared ComfyUI nodes: VAE / ControlNet loaders, mask inverts
        self.blame: dict[str, str] = {}  # left-out node -> the root node it is left out for

    # helpers -------------------------------------------------------------------------------------
    def note(self, text: str) -> None:
        assert self.cur is not None
        self.report.nodes[self.cur.id].notes.append(text)

    def spec(self, node: NodeInstance) -> Any:
        return self.registry.get(node.type)

    def param(self, node: NodeInstance, name: str) -> Any:
        if name in node.params:
            return _plain(node.params[name])
        from nodes.registry import REQUIRED

        port = self.spec(node).input(name, node.params)
        return None if port is None or port.default is REQUIRED else _plain(port.default)

    def fresh_id(self) -> str:
        while str(self.next_id) in self.taken:
            self.next_id += 1
        self.taken.add(str(self.next_id))
        return str(self.next_id)

    def emit(self, class_type: str, inputs: dict[str, Any], primary: bool = False, title: str = "") -> str:
        """Write one ComfyUI node for the current node; the primary one takes the node's reserved id."""
        node = self.cur
        assert node is not None
        cid = self.reserved.pop(node.id, None) if primary else None
        cid = cid or self.fresh_id()
        clean = {k: ([v.node, v.slot] if isinstance(v, Ref) else v) for k, v in inputs.items() if v is not None}
        if not title:
            title = (node.title or self.spec(node).title) if primary else class_type
        self.api[cid] = {"inputs": clean, "class_type": class_type, "_meta": {"title": title}}
        self.made.append(cid)
        rep = self.report.nodes[node.id]
        rep.comfy.append(cid)
        if primary and rep.primary is None:
            rep.primary = cid
        return cid

    def get(self, node: NodeInstance, port: str) -> Value | None:
        """The value on an input, None when unlinked; a required input from a left-out node leaves this one out."""
        link = self.g.link_into(node.id, port)
        if link is None:
            return None
        v = self.values.get(link.src, {}).get(link.src_port)
        if v is not None:
            return v
        spec_port = self.spec(node).input(port, node.params)
        if spec_port is None or spec_port.required:
            raise _Depends(self.blame.get(link.src, link.src))
        self.note(f"input '{port}' comes from '{link.src}', which is not exported: left unset")
        return None

    def need(self, node: NodeInstance, port: str) -> Value:
        v = self.get(node, port)
        if v is None:
            raise Unexportable(f"input '{port}' is not connected")
        return v

    def ref(self, v: Value | None, part: str = "MODEL") -> Ref | None:
        """A ComfyUI link for a value: a part of a Model handle, or a mask made ComfyUI's way round."""
        if v is None:
            return None
        if isinstance(v, Chain):
            return self.vae(v) if part == "VAE" else v.clip if part == "CLIP" else v.model
        if not v.invert:
            return v
        key = ("invert", v.node, v.slot)
        if key not in self.cache:
            self.cache[key] = self.emit("InvertMask", {"mask": Ref(v.node, v.slot)})
        return Ref(self.cache[key], 0, "MASK")

    def chain(self, node: NodeInstance, port: str = "model") -> Chain:
        v = self.need(node, port)
        if not isinstance(v, Chain):
            v = Chain(model=v)
        return v

    def vae(self, c: Chain) -> Ref:
        if c.vae_file:
            key = ("vae", c.vae_file)
            if key not in self.cache:
                self.cache[key] = self.emit("VAELoader", {"vae_name": c.vae_file})
            return Ref(self.cache[key], 0, "VAE")
        if c.vae is None:
            raise Unexportable("no VAE reaches this node")
        return c.vae

    def clip(self, c: Chain) -> Ref:
        if c.clip is not None:
            return c.clip
        first = next((v for vals in self.values.values() for v in vals.values()
                      if isinstance(v, Chain) and v.clip is not None), None)
        if first is None:
            raise Unexportable("no CLIP reaches this node to encode its prompts")
        self.note("no CLIP on its model chain: the prompts use the first checkpoint's")
        return first.clip  # type: ignore[return-value]

    # conditioning and sampling -------------------------------------------------------------------
    def text_cond(self, c: Chain, text: Any, title: str) -> Ref:
        if isinstance(text, Ref) and text.ctype == "CONDITIONING":
            return text
        return Ref(self.emit("CLIPTextEncode", {"text": text if isinstance(text, Ref) else str(text or ""),
                                                "clip": self.clip(c)}, title=title), 0, "CONDITIONING")

    def sdxl_inputs(self, node: NodeInstance) -> dict[str, Any] | None:
        """A Sample's SDXL size conditioning in CLIPTextEncodeSDXL's terms, or None when none is set."""
        if node.type != "imagebash.diffusion.sample":
            return None
        p = {k: self.param(node, k) for k in ("prompt_2", "negative_prompt_2", "original_width", "original_height",
                                              "crop_left", "crop_top", "target_width", "target_height",
                                              "aesthetic_score", "negative_aesthetic_score")}
        if not (p["prompt_2"] or p["negative_prompt_2"] or any(p[k] for k in list(p)[2:8])
                or float(p["aesthetic_score"] or 6.0) != 6.0 or float(p["negative_aesthetic_score"] or 2.5) != 2.5):
            return None
        w = h = 1024  # ComfyUI's default; 0 (the image size) is not known here
        if p["original_width"] == 0 or p["target_width"] == 0:
            self.note("SDXL size 0 (the image size) written as 1024: set the sizes to match the latent")
        ow, oh = int(p["original_width"] or w), int(p["original_height"] or h)
        return {"width": ow, "height": oh, "crop_w": int(p["crop_left"] or 0), "crop_h": int(p["crop_top"] or 0),
                "target_width": int(p["target_width"] or ow), "target_height": int(p["target_height"] or oh),
                "refiner": float(p["aesthetic_score"] or 6.0) != 6.0
                or float(p["negative_aesthetic_score"] or 2.5) != 2.5, **p}

    def sdxl_cond(self, c: Chain, node: NodeInstance, text: str, second: str, sdxl: dict[str, Any], score: str,
                  title: str) -> Ref:
        """CLIPTextEncodeSDXL (text_l the prompt, text_g prompt_2 or the prompt) or, with an aesthetic score,
        CLIPTextEncodeSDXLRefiner."""
        if sdxl["refiner"]:
            inputs = {"ascore": float(sdxl[score]), "width": sdxl["width"], "height": sdxl["height"], "text": text}
            return Ref(self.emit("CLIPTextEncodeSDXLRefiner", {**inputs, "clip": self.clip(c)}, title=title), 0,
                       "CONDITIONING")
        inputs = {k: sdxl[k] for k in ("width", "height", "crop_w", "crop_h", "target_width", "target_height")}
        inputs.update(text_g=str(sdxl[second] or text), text_l=text, clip=self.clip(c))
        return Ref(self.emit("CLIPTextEncodeSDXL", inputs, title=title), 0, "CONDITIONING")

    def conditioning(self, node: NodeInstance, c: Chain, prompt_port: str = "prompt") -> tuple[Ref, Ref]:
        """Positive and negative conditioning for a sampler: prompts, then the chain's regions and ControlNets."""
        prompt = self.get(node, prompt_port) or self.param(node, prompt_port)
        negative = self.get(node, "negative_prompt") or self.param(node, "negative_prompt")
        sdxl = self.sdxl_inputs(node)
        if sdxl is not None and not isinstance(prompt, Ref) and not isinstance(negative, Ref):
            pos = self.sdxl_cond(c, node, str(prompt or ""), "prompt_2", sdxl, "aesthetic_score", "Positive")
            neg = self.sdxl_cond(c, node, str(negative or ""), "negative_prompt_2", sdxl, "negative_aesthetic_score",
                                 "Negative")
        else:
            pos = self.text_cond(c, prompt, "Positive")
            neg = self.text_cond(c, negative, "Negative")
        for r in c.regions:
            enc = self.text_cond(c, r.prompt, "Region prompt")
            if r.mask is not None:
                area = self.emit_for(r.source, "ConditioningSetMask", {
                    "conditioning": enc, "mask": self.ref(r.mask), "strength": r.strength,
                    "set_cond_area": "default"})
            elif r.rect is not None:
                x, y, w, h = r.rect
                area = self.emit_for(r.source, "ConditioningSetArea", {
                    "conditioning": enc, "width": w, "height": h, "x": x, "y": y, "strength": r.strength})
            else:
                area = enc.node
            pos = Ref(self.emit("ConditioningCombine", {"conditioning_1": pos, "conditioning_2": Ref(area, 0)}),
                      0, "CONDITIONING")
        for ctl in c.controls:
            key = ("controlnet", ctl.file)
            if key not in self.cache:
                self.cache[key] = self.emit("ControlNetLoader", {"control_net_name": ctl.file})
            apply = self.emit_for(ctl.source, "ControlNetApplyAdvanced", {
                "positive": pos, "negative": neg, "control_net": Ref(self.cache[key], 0), "image": self.ref(ctl.image),
                "strength": ctl.strength, "start_percent": ctl.start, "end_percent": ctl.end})
            pos, neg = Ref(apply, 0, "CONDITIONING"), Ref(apply, 1, "CONDITIONING")
        return pos, neg

    def emit_for(self, source: str, class_type: str, inputs: dict[str, Any]) -> str:
        """A node made for a sampler on behalf of a chain node (`source`): it is listed under both."""
        src = self.g.nodes[source]
        cur = self.cur
        self.cur = src
        try:
            cid = self.emit(class_type, inputs, primary=True)
        finally:
            self.cur = cur
        return cid

    def ksampler(self, node: NodeInstance, c: Chain, latent: Ref, denoise: float,
                 prompt_port: str = "prompt") -> str:
        if c.model is None:
            raise Unexportable("no MODEL reaches this node")
        pos, neg = self.conditioning(node, c, prompt_port)
        fam, variant = guess_family(c.checkpoint)
        steps, cfg = int(self.param(node, "steps") or 0), float(self.param(node, "guidance") or 0.0)
        if steps <= 0:
            steps = variant.steps
            self.note(f"steps 0 (the model's default): wrote {steps}, {variant.title}'s default")
        if cfg <= 0:
            cfg = variant.guidance or 1.0
            self.note(f"guidance 0 (the model's default): wrote cfg {cfg}, {variant.title}'s default")
        ours = str(self.param(node, "scheduler") or "auto")
        if ours in SCHEDULERS:
            sampler, scheduler = SCHEDULERS[ours]
        else:
            default = fam.default_scheduler
            sampler, scheduler = SCHEDULERS.get(default, FLOW_DEFAULT)
            self.note(f"scheduler {ours}: wrote {fam.title}'s default, {sampler} / {scheduler}")
        exact_sampler = str(getattr(self.param(node, "sampler"), "value", self.param(node, "sampler")) or "auto")
        exact_schedule = str(getattr(self.param(node, "schedule"), "value", self.param(node, "schedule")) or "default")
        if exact_sampler != "auto":  # ComfyUI's own names, set on import or by hand: written as they are
            sampler = exact_sampler
        if exact_schedule != "default":
            scheduler = exact_schedule
        if float(self.param(node, "shift") or 0.0):
            self.note("shift is not carried over: ComfyUI sets it with a ModelSampling node")
        seed_v = self.get(node, "seed")
        seed: Any = self.ref(seed_v) if seed_v is not None else int(self.param(node, "seed") or 0)
        if isinstance(seed, int) and seed < 0:
            self.note(f"seed {seed} is negative: ComfyUI takes 0 and up, wrote 0")
            seed = 0
        return self.emit("KSampler", {
            "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler,
            "denoise": round(float(denoise), 6), "model": c.model, "positive": pos, "negative": neg,
            "latent_image": latent}, primary=True)

    # the run -------------------------------------------------------------------------------------
    def order(self) -> list[NodeInstance]:
        deps = {nid: set() for nid in self.g.nodes}
        for ln in self.g.links:
            if ln.src in deps and ln.dst in deps:
                deps[ln.dst].add(ln.src)
        done: set[str] = set()
        out: list[NodeInstance] = []
        while len(out) < len(deps):
            ready = [nid for nid in deps if nid not in done and deps[nid] <= done]
            if not ready:  # a cycle: validation names it; export what can be ordered
                break
            for nid in ready:
                done.add(nid)
                out.append(self.g.nodes[nid])
        return out

    def run(self) -> tuple[dict[str, Any], ExportReport]:
        for node in self.order():
            self.cur = node
            spec = self.spec(node)
            rep = self.report.nodes[node.id] = NodeExport(node.id, node.type, node.title or (spec.title if spec
                                                                                             else node.type))
            if node.mode is NodeMode.MUTED:
                rep.status = "muted"
                rep.notes.append("muted: left out (ComfyUI's API has no node modes)")
                continue
            handler = HANDLERS.get(node.type)
            if spec is None or handler is None:
                rep.status = "unsupported"
                continue
            snapshot = len(self.made)
            saved = dict(self.reserved), set(self.taken), self.next_id, dict(self.cache)
            try:
                if node.mode is NodeMode.BYPASSED:
                    outs = self.bypass(node)
                    rep.status = "bypassed"
                    rep.notes.append("bypassed: its input passed through (ComfyUI's API has no node modes)")
                else:
                    outs = handler(self, node)
            except (_Depends, Unexportable) as exc:
                for cid in self.made[snapshot:]:
                    self.api.pop(cid, None)
                for r in self.report.nodes.values():
                    r.comfy = [c for c in r.comfy if c not in self.made[snapshot:]]
                    r.primary = r.primary if r.primary in r.comfy else None
                del self.made[snapshot:]
                self.reserved, self.taken, self.next_id, self.cache = saved
                if isinstance(exc, _Depends):
                    rep.status = "dropped"
                    self.blame[node.id] = exc.root
                    rep.notes.append(f"left out: it needs '{exc.root}', which is not exported")
                else:
                    rep.status = "failed"
                    rep.notes.append(f"left out: {exc}")
                continue
            if not rep.comfy and rep.status == "exported":
                rep.status = "folded"
            self.values[node.id] = {k: v for k, v in outs.items() if v is not None}
        self.finish()
        return self.api, self.report

    def bypass(self, node: NodeInstance) -> dict[str, Value]:
        """As the engine does: each output takes the first linked input of a compatible kind."""
        from nodes.registry import compatible

        spec = self.spec(node)
        out: dict[str, Value] = {}
        for o in spec.outputs:
            for p in spec.inputs_for(node.params):
                link = self.g.link_into(node.id, p.name)
                if link is not None and compatible(p.kind, o.kind):
                    v = self.values.get(link.src, {}).get(link.src_port)
                    if v is not None:
                        out[o.name] = v
                        break
        return out

    def finish(self) -> None:
        r = self.report
        r.comfy_nodes = len(self.api)
        unsupported = r._with("unsupported")
        dropped = [x for x in r.left_out if x.status == "dropped" and self.root(x.id) in {u.id for u in unsupported}]
        if unsupported:
            line = "no ComfyUI counterpart for: " + ", ".join(_named(u) for u in unsupported)
            if dropped:
                line += "; left out with what needs them: " + ", ".join(_named(d) for d in dropped)
            r.warnings.append(line)
        muted = r._with("muted")
        if muted:
            r.warnings.append("muted, left out (ComfyUI's API has no node modes): "
                              + ", ".join(_named(m) for m in muted))
        for x in r._with("failed"):
            r.warnings.append(f"{_named(x)} left out: {x.notes[-1].removeprefix('left out: ')}")
        others = [x for x in r._with("dropped") if x not in dropped]
        if others:
            r.warnings.append("left out because what they need is not exported: "
                              + ", ".join(_named(x) for x in others))
        if self.api and not any(n["class_type"] in _OUTPUT_NODES for n in self.api.values()) \
                and not any(n.type == UNMAPPED for n in self.g.nodes.values()):
            r.warnings.append("no Save Image: ComfyUI runs only workflows with an output node")

    def root(self, nid: str) -> str:
        while nid in self.blame:
            nid = self.blame[nid]
        return nid


# handlers: (exporter, node) -> {our output port: value} --------------------------------------------
Handler = Callable[[_Exporter, NodeInstance], dict[str, Value | None]]


def _load_model(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    ckpt = str(ex.param(node, "checkpoint") or "")
    name = _model_file(ex, ckpt, "checkpoint", "checkpoints")
    for p in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        if ex.param(node, p):
            ex.note(f"{p} {ex.param(node, p)} not carried over: ComfyUI uses the checkpoint's own CLIP here")
    if ex.param(node, "config"):
        ex.note("config not carried over: ComfyUI detects the model's config")
    cid = ex.emit("CheckpointLoaderSimple", {"ckpt_name": name}, primary=True)
    return {"model": Chain(Ref(cid, 0, "MODEL"), Ref(cid, 1, "CLIP"), Ref(cid, 2, "VAE"),
                           _file(ex.param(node, "vae")), ckpt)}


def _lora(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    c = ex.chain(node)
    w = float(ex.param(node, "weight"))
    name = _model_file(ex, ex.param(node, "file"), "LoRA", "loras")
    if c.clip is None:
        cid = ex.emit("LoraLoaderModelOnly", {"lora_name": name, "strength_model": w, "model": c.model}, primary=True)
        return {"model": replace(c, model=Ref(cid, 0, "MODEL"))}
    cid = ex.emit("LoraLoader", {"lora_name": name, "strength_model": w, "strength_clip": w, "model": c.model,
                                 "clip": c.clip}, primary=True)
    return {"model": replace(c, model=Ref(cid, 0, "MODEL"), clip=Ref(cid, 1, "CLIP"))}


def _latent(ex: _Exporter, node: NodeInstance, port: str = "latent") -> Ref:
    v = ex.ref(ex.need(node, port))
    assert v is not None
    return v


def _sample(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    c = ex.chain(node)
    cid = ex.ksampler(node, c, _latent(ex, node), float(ex.param(node, "denoise")))
    return {"latent": Ref(cid, 0, "LATENT")}


def _batch_note(ex: _Exporter, node: NodeInstance) -> None:
    if int(ex.param(node, "batch_size") or 1) > 1:
        ex.note(f"batch_size {ex.param(node, 'batch_size')} not carried over: ComfyUI samples the image's batch")


def _txt2img(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    c = ex.chain(node)
    empty = ex.emit("EmptyLatentImage", {"width": int(ex.param(node, "width")), "height": int(ex.param(node, "height")),
                                         "batch_size": int(ex.param(node, "batch_size") or 1)})
    ks = ex.ksampler(node, c, Ref(empty, 0, "LATENT"), 1.0)
    return {"image": Ref(ex.emit("VAEDecode", {"samples": Ref(ks, 0), "vae": ex.vae(c)}), 0, "IMAGE")}


def _img2img(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    c = ex.chain(node)
    enc = ex.emit("VAEEncode", {"pixels": ex.ref(ex.need(node, "image")), "vae": ex.vae(c)})
    _batch_note(ex, node)
    ks = ex.ksampler(node, c, Ref(enc, 0, "LATENT"), float(ex.param(node, "strength")))
    return {"image": Ref(ex.emit("VAEDecode", {"samples": Ref(ks, 0), "vae": ex.vae(c)}), 0, "IMAGE")}


def _empty_latent(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    cid = ex.emit("EmptyLatentImage", {"width": int(ex.param(node, "width")), "height": int(ex.param(node, "height")),
                                       "batch_size": int(ex.param(node, "batch_size"))}, primary=True)
    return {"latent": Ref(cid, 0, "LATENT")}


def _tiled(ex: _Exporter, node: NodeInstance, class_type: str, inputs: dict[str, Any]) -> str:
    if str(ex.param(node, "tiling_mode")) == "on":
        size = int(ex.param(node, "tile_size"))
        overlap = int(size * float(ex.param(node, "tile_overlap")) // 32 * 32)
        return ex.emit(class_type + "Tiled", {**inputs, "tile_size": size, "overlap": overlap, "temporal_size": 64,
                                              "temporal_overlap": 8}, primary=True)
    return ex.emit(class_type, inputs, primary=True)


def _decode(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    c = ex.chain(node)
    cid = _tiled(ex, node, "VAEDecode", {"samples": _latent(ex, node), "vae": ex.vae(c)})
    return {"image": Ref(cid, 0, "IMAGE")}


def _encode(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    c = ex.chain(node)
    cid = _tiled(ex, node, "VAEEncode", {"pixels": ex.ref(ex.need(node, "image")), "vae": ex.vae(c)})
    return {"latent": Ref(cid, 0, "LATENT")}


def _encode_for_inpaint(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    c = ex.chain(node)
    cid = ex.emit("VAEEncodeForInpaint", {"pixels": ex.ref(ex.need(node, "image")), "vae": ex.vae(c),
                                          "mask": ex.ref(ex.need(node, "mask")),
                                          "grow_mask_by": int(ex.param(node, "grow_mask_by"))}, primary=True)
    return {"latent": Ref(cid, 0, "LATENT")}


def _set_noise_mask(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    cid = ex.emit("SetLatentNoiseMask", {"samples": _latent(ex, node), "mask": ex.ref(ex.need(node, "mask"))},
                  primary=True)
    return {"latent": Ref(cid, 0, "LATENT")}


def _regional(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    c = ex.chain(node)
    mask = ex.get(node, "mask")
    rect = None
    if mask is None:
        x, y, w, h = (int(ex.param(node, k)) for k in ("x", "y", "width", "height"))
        if w > 0 and h > 0:
            if w < 64 or h < 64:
                ex.note(f"a {w}x{h} area is below ComfyUI's 64 px minimum: wrote at least 64")
            rect = (x, y, max(w, 64), max(h, 64))
        else:
            ex.note("no mask and no rectangle: the prompt is combined with the sampler's everywhere")
    if c.controls:
        ex.note("ComfyUI combines regional prompts before applying ControlNets: a re-import puts this node "
                "before the ControlNet on the chain")
    region = RegionSpec(node.id, str(ex.param(node, "prompt") or ""), float(ex.param(node, "strength")),
                        mask if isinstance(mask, Ref) else None, rect)
    return {"model": replace(c, regions=(*c.regions, region))}


def _controlnet(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    c = ex.chain(node)
    image = ex.need(node, "image")
    if int(ex.param(node, "mode") if ex.param(node, "mode") is not None else -1) != -1:
        ex.note("the Union ControlNet mode is not carried over: add ComfyUI's SetUnionControlNetType")
    if ex.g.link_into(node.id, "mask") is not None:
        ex.note("the ControlNet mask is not carried over: ControlNetApplyAdvanced has none")
    assert isinstance(image, Ref)
    file = _model_file(ex, ex.param(node, "controlnet"), "ControlNet", "controlnet")
    ctl = ControlSpec(node.id, file, image, float(ex.param(node, "strength")),
                      float(ex.param(node, "start")), float(ex.param(node, "end")))
    return {"model": replace(c, controls=(*c.controls, ctl))}


def _load_image(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    name = _file(ex.param(node, "path"))
    ex.note(f"{name} must be in ComfyUI's input/ folder")
    cid = ex.emit("LoadImage", {"image": name}, primary=True)
    return {"image": Ref(cid, 0, "IMAGE"), "mask": Ref(cid, 1, "MASK", invert=True)}


def _save(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    if str(ex.param(node, "format")) != "png":
        ex.note(f"format {ex.param(node, 'format')} not carried over: SaveImage writes PNG")
    ex.emit("SaveImage", {"filename_prefix": str(ex.param(node, "filename_prefix") or "ComfyUI"),
                          "images": ex.ref(ex.need(node, "image"))}, primary=True)
    return {}


def _canny(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    def thr(name: str) -> float:
        v = int(ex.param(node, name)) / 255
        c = min(max(v, 0.01), 0.99)
        if round(c, 4) != round(v, 4):
            ex.note(f"{name} {ex.param(node, name)} is outside ComfyUI's 0.01-0.99 (x 255): wrote {c}")
        return round(c, 4)

    if ex.param(node, "l2_gradient"):
        ex.note("l2_gradient is not carried over: ComfyUI's Canny has no such option")
    cid = ex.emit("Canny", {"image": ex.ref(ex.need(node, "image")), "low_threshold": thr("low_threshold"),
                            "high_threshold": thr("high_threshold")}, primary=True)
    return {"image": Ref(cid, 0, "IMAGE")}


def _invert(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    return {"image": Ref(ex.emit("ImageInvert", {"image": ex.ref(ex.need(node, "image"))}, primary=True), 0, "IMAGE")}


def _mask_invert(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    v = ex.need(node, "mask")
    assert isinstance(v, Ref)
    if v.invert:  # ComfyUI's LoadImage mask already is 1 - alpha
        return {"mask": replace(v, invert=False)}
    return {"mask": Ref(ex.emit("InvertMask", {"mask": ex.ref(v)}, primary=True), 0, "MASK")}


def _blend(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    mode = str(ex.param(node, "mode"))
    if mode not in _BLEND:
        ex.note(f"blend mode {mode} has no ComfyUI equivalent: wrote normal")
    if ex.g.link_into(node.id, "mask") is not None:
        ex.note("the blend mask is not carried over: ImageBlend has none")
    cid = ex.emit("ImageBlend", {"image1": ex.ref(ex.need(node, "base")), "image2": ex.ref(ex.need(node, "layer")),
                                 "blend_factor": float(ex.param(node, "opacity")),
                                 "blend_mode": _BLEND.get(mode, "normal")}, primary=True)
    return {"image": Ref(cid, 0, "IMAGE")}


def _resize(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    mode = str(ex.param(node, "mode"))
    w, h = int(ex.param(node, "width")), int(ex.param(node, "height"))
    if mode == "fit" and w and h:
        ex.note("mode fit has no ComfyUI equivalent (ImageScale stretches or crops): wrote stretch")
    cid = ex.emit("ImageScale", {"image": ex.ref(ex.need(node, "image")),
                                 "upscale_method": _INTERP.get(str(ex.param(node, "interpolation")), "bicubic"),
                                 "width": w, "height": h, "crop": "center" if mode == "fill" else "disabled"},
                  primary=True)
    return {"image": Ref(cid, 0, "IMAGE")}


def _scale(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    f = float(ex.param(node, "factor"))
    if f > 8.0:
        ex.note(f"factor {f} is above ComfyUI's 8: wrote 8")
    cid = ex.emit("ImageScaleBy", {"image": ex.ref(ex.need(node, "image")),
                                   "upscale_method": _INTERP.get(str(ex.param(node, "interpolation")), "bicubic"),
                                   "scale_by": min(f, 8.0)}, primary=True)
    return {"image": Ref(cid, 0, "IMAGE")}


def _scale_to_pixels(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    inputs: dict[str, Any] = {"image": ex.ref(ex.need(node, "image")),
                              "upscale_method": _INTERP.get(str(ex.param(node, "interpolation")), "bicubic"),
                              "megapixels": float(ex.param(node, "megapixels"))}
    if int(ex.param(node, "resolution_steps") or 1) != 1:
        inputs["resolution_steps"] = int(ex.param(node, "resolution_steps"))
    return {"image": Ref(ex.emit("ImageScaleToTotalPixels", inputs, primary=True), 0, "IMAGE")}


def _pad_for_outpaint(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    cid = ex.emit("ImagePadForOutpaint", {"image": ex.ref(ex.need(node, "image")),
                                          **{k: int(ex.param(node, k)) for k in ("left", "top", "right", "bottom",
                                                                                  "feathering")}}, primary=True)
    return {"image": Ref(cid, 0, "IMAGE"), "mask": Ref(cid, 1, "MASK")}


def _save_video(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    codec = str(getattr(ex.param(node, "codec"), "value", ex.param(node, "codec")))
    images = ex.ref(ex.need(node, "video"))
    prefix = str(ex.param(node, "filename_prefix") or "ComfyUI")
    fps = float(ex.param(node, "fps") or 24.0)
    if codec == "webp":
        quality = ex.param(node, "quality")
        ex.emit("SaveAnimatedWEBP", {"images": images, "filename_prefix": prefix, "fps": fps,
                                     "lossless": bool(ex.param(node, "lossless") or False),
                                     "quality": int(quality if quality is not None else 80), "method": "default"},
                primary=True)
    elif codec in ("vp9", "av1"):
        crf = ex.param(node, "crf")
        ex.emit("SaveWEBM", {"images": images, "filename_prefix": prefix, "codec": codec, "fps": fps,
                             "crf": float(crf if crf is not None and crf >= 0 else 32.0)}, primary=True)
    else:
        raise Unexportable(f"codec {codec} has no ComfyUI core node (SaveAnimatedWEBP writes webp, SaveWEBM vp9 / av1)")
    return {}


def _placeholder(ex: _Exporter, node: NodeInstance) -> dict[str, Value | None]:
    from nodes.comfy.unmapped import input_port_name, output_port_names

    class_type = str(ex.param(node, "class_type") or "")
    if not class_type:
        raise Unexportable("the placeholder names no ComfyUI class")
    try:
        saved = json.loads(str(ex.param(node, "inputs") or "{}"))
        outputs = [tuple(o) for o in json.loads(str(ex.param(node, "outputs") or "[]"))]
    except (ValueError, TypeError):
        raise Unexportable("its saved inputs or outputs are not valid JSON") from None
    inputs: dict[str, Any] = {}
    for name, v in (saved.items() if isinstance(saved, dict) else ()):
        if not (isinstance(v, dict) and "link" in v):
            inputs[name] = v
            continue
        folded = v.get("folded")
        if isinstance(folded, dict):
            inputs[name] = _refold(ex, folded)
            continue
        link = ex.g.link_into(node.id, input_port_name(name))
        if link is None:
            ex.note(f"input '{name}' is no longer connected: left unset")
            continue
        got = ex.values.get(link.src, {}).get(link.src_port)
        if got is None:
            raise _Depends(ex.blame.get(link.src, link.src))
        inputs[name] = ex.ref(got, _MODEL_PARTS.get(name, "MODEL"))
    cid = ex.emit(class_type, inputs, primary=True)
    types = [str(o[1]).upper() for o in outputs]

    def first(ctype: str) -> Ref | None:
        return Ref(cid, types.index(ctype), ctype) if ctype in types else None

    out: dict[str, Value | None] = {}
    for slot, port in enumerate(output_port_names(outputs)):
        if port is not None:
            ref = Ref(cid, slot, types[slot])
            # a MODEL output is a Model handle: it takes the node's own CLIP and VAE outputs, if it has them
            out[port] = Chain(ref, first("CLIP"), first("VAE")) if types[slot] == "MODEL" else ref
    return out


def _refold(ex: _Exporter, folded: dict[str, Any]) -> Ref:
    """A placeholder input that `mapping` folded (a prompt, a VAE, a ControlNet file) made a node again."""
    if "vae" in folded:
        return ex.vae(Chain(None, vae_file=str(folded["vae"])))
    if "controlnet" in folded:
        return Ref(ex.emit("ControlNetLoader", {"control_net_name": str(folded["controlnet"])}), 0)
    return ex.text_cond(Chain(None), str(folded.get("prompt", "")), "Prompt")


HANDLERS: dict[str, Handler] = {
    D + "load_model": _load_model,
    D + "lora": _lora,
    D + "sample": _sample,
    D + "txt2img": _txt2img,
    D + "img2img": _img2img,
    D + "empty_latent": _empty_latent,
    D + "decode": _decode,
    D + "encode": _encode,
    D + "encode_for_inpaint": _encode_for_inpaint,
    D + "set_noise_mask": _set_noise_mask,
    G + "regional_prompt": _regional,
    G + "controlnet": _controlnet,
    G + "canny": _canny,
    IMG + "load": _load_image,
    IMG + "save": _save,
    IMG + "invert": _invert,
    IMG + "mask_invert": _mask_invert,
    IMG + "blend": _blend,
    IMG + "resize": _resize,
    IMG + "scale": _scale,
    IMG + "scale_to_pixels": _scale_to_pixels,
    IMG + "pad_for_outpaint": _pad_for_outpaint,
    "imagebash.video.save": _save_video,
    UNMAPPED: _placeholder,
}


def to_api(graph: Graph, registry: Any) -> tuple[dict[str, Any], ExportReport]:
    """The graph as a ComfyUI API prompt ({id: {class_type, inputs, _meta}}), and what became of each node."""
    ensure_pack(registry)
    return _Exporter(graph, registry).run()


def export_file(graph: Graph, path: str | pathlib.Path, registry: Any = None) -> ExportReport:
    """Write the graph's ComfyUI API JSON to `path` (File > Export > ComfyUI API); OSError when it cannot."""
    from nodes.registry import default_registry

    api, report = to_api(graph, registry or default_registry())
    p = pathlib.Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(api, indent=2), encoding="utf-8")
    tmp.replace(p)
    return report
