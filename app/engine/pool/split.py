"""Splitting a run into shards: a seed sweep, a batch, or a Video's frames.

A shard is the same workflow with a few parameters rewritten (`Shard.overrides`) and a slice of
the whole output it is responsible for (items [lo, hi): seeds, images of a batch, or frames):
- a seed sweep (a Seeds node): its `base`/`count` become the shard's first seed and length, so
  the sampler's seed + i rule makes the same images (a non-consecutive list: one or more shards
  per consecutive stretch);
- a batch (a node with `batch_size` or `batch`): the batch size becomes hi - lo and every
  unlinked `seed` downstream becomes seed + lo;
- a Video's frames (Load Video): `start`/`max_frames` select frames [lo - before, hi + after),
  where before/after are the summed windows of the windowed nodes downstream; the margin frames
  are computed and dropped (`Shard.skip`), so a temporal filter sees the same neighbours as in
  one run and there are no seams. The joined clip gets the source's sound for the whole range
  (`SplitPlan.audio`, what Load Video's Video carries), so a Save Video at the end keeps it.

The workflow is cut in two: `work` (the source, the nodes that map over its items, and what they
need) runs on the engines, targets `cuts`' nodes; `finish` (what takes the whole result at
once: Save nodes, a Grid contact sheet) runs here once, on the joined items, where `pool.joined`
nodes stand in for the cut outputs. A graph whose split would change the result (a recursive
windowed node, a node needing the whole batch at once on a GPU, two sources, ...) runs unsplit
and `SplitPlan.note` says why.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from app.graph.model import Graph, Link, NodeInstance, NodeMode
from nodes.registry import Registry
from nodes.seeds import parse_seeds, runs

SEEDS = "imagebash.seeds"
LOAD_VIDEO = "imagebash.video.load"
JOINED_IMAGE = "imagebash.pool.joined"
JOINED_VIDEO = "imagebash.pool.joined_video"
BATCH_PARAMS = ("batch_size", "batch")
#: Node types that treat the images of a batch one by one (beyond the per-image categories).
ELEMENTWISE_TYPES = {
    "imagebash.seeds.noise", "imagebash.diffusion.sample", "imagebash.diffusion.decode",
    "imagebash.diffusion.encode", "imagebash.diffusion.txt2img", "imagebash.diffusion.empty_latent",
}
ELEMENTWISE_CATEGORIES = ("image/filter", "image/color", "image/transform", "image/mask")
#: Kinds a shard's result may be joined along (first axis / frames).
JOINABLE = ("Image", "Mask", "Video")
STREAM_KINDS = ("Image", "Mask", "Latent", "Video")


@dataclass(frozen=True)
class Shard:
    index: int
    lo: int
    hi: int
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    skip: int = 0  # leading items computed only as a margin, dropped

    @property
    def size(self) -> int:
        return self.hi - self.lo


@dataclass
class SplitPlan:
    mode: str  # "seeds", "batch", "frames" or "none" (runs unsplit)
    total: int
    shards: list[Shard]
    work: Graph
    targets: list[str] | None
    cuts: list[tuple[str, str]]  # (node, port) of `work` collected per shard, joined in order
    finish: Graph | None = None
    joined: dict[tuple[str, str], str] = field(default_factory=dict)  # cut -> its pool.joined node in finish
    fps: float = 24.0
    note: str = ""
    margins: tuple[int, int] = (0, 0)
    audio: Any = None  # frames: the source's sound for the whole range (nodes.video.audio.AudioTrack)

    @property
    def split(self) -> bool:
        return self.mode != "none"


def shard_graph(plan: SplitPlan, shard: Shard) -> Graph:
    """The workflow one shard runs: `plan.work` with the shard's parameters."""
    g = plan.work.copy()
    for nid, params in shard.overrides.items():
        for k, v in params.items():
            g.set_param(nid, k, v)
    return g


def unsplit(graph: Graph, targets: list[str] | None, note: str = "") -> SplitPlan:
    return SplitPlan("none", 1, [Shard(0, 0, 1)], graph, targets, [], note=note)


def _active(graph: Graph, targets: list[str] | None) -> set[str]:
    """Nodes the run executes: the targets and their ancestors (all when no targets), unmuted."""
    nodes = {n.id for n in graph if n.mode != NodeMode.MUTED}
    if not targets:
        return nodes
    seen, todo = set(), list(targets)
    while todo:
        nid = todo.pop()
        if nid in seen or nid not in nodes:
            continue
        seen.add(nid)
        todo.extend(ln.src for ln in graph.links_into(nid))
    return seen


def _ancestors(graph: Graph, ids: set[str]) -> set[str]:
    seen, todo = set(), list(ids)
    while todo:
        nid = todo.pop()
        if nid in seen:
            continue
        seen.add(nid)
        todo.extend(ln.src for ln in graph.links_into(nid))
    return seen


def _descendants(graph: Graph, ids: set[str], within: set[str]) -> set[str]:
    seen, todo = set(), list(ids)
    while todo:
        nid = todo.pop()
        if nid in seen or nid not in within:
            continue
        seen.add(nid)
        todo.extend(ln.dst for ln in graph.links_from(nid))
    return seen


def _param(graph: Graph, registry: Registry, nid: str, name: str) -> Any:
    node = graph.nodes[nid]
    if name in node.params:
        return node.params[name]
    spec = registry.get(node.type)
    port = spec.input(name, node.params) if spec else None
    return getattr(port, "default", None) if port is not None else None


def _elementwise(graph: Graph, registry: Registry, nid: str) -> tuple[bool, str]:
    node = graph.nodes[nid]
    spec = registry.get(node.type)
    if spec is None:
        return False, f"node '{nid}' ({node.type}) is unknown here"
    if node.type == "imagebash.diffusion.sample" and str(_param(graph, registry, nid, "noise")).endswith("comfyui"):
        return False, f"Sample '{nid}' uses ComfyUI noise (one randn of the whole batch)"
    if node.type in ELEMENTWISE_TYPES or spec.category in ELEMENTWISE_CATEGORIES:
        return True, ""
    return False, f"node '{nid}' ({spec.title}) needs the whole batch at once"


def plan_split(graph: Graph, registry: Registry, targets: list[str] | None = None, engines: int = 1,
               per_engine: int = 4, max_shards: int | None = None) -> SplitPlan:
    """How to run `graph` on `engines` engines (`per_engine` shards each, so a slow one gets
    less); see the module docstring."""
    active = _active(graph, targets)
    want = max(1, engines * per_engine if max_shards is None else max_shards)
    seeds = [nid for nid in active if graph.nodes[nid].type == SEEDS]
    videos = [nid for nid in active if graph.nodes[nid].type == LOAD_VIDEO]
    if len(seeds) + len(videos) > 1:
        return unsplit(graph, targets, "more than one Seeds / Load Video node: runs unsplit")
    try:
        if seeds:
            return _plan_seeds(graph, registry, targets, active, seeds[0], want)
        if videos:
            return _plan_frames(graph, registry, targets, active, videos[0], want)
        return _plan_batch(graph, registry, targets, active, want)
    except _Unsplittable as exc:
        return unsplit(graph, targets, f"{exc}: runs unsplit on one engine")


class _Unsplittable(Exception):
    pass


def _chunks(total: int, want: int) -> list[tuple[int, int]]:
    n = max(1, min(total, want))
    return [(total * k // n, total * (k + 1) // n) for k in range(n)]


def _region(graph: Graph, registry: Registry, active: set[str], start: str, frames: bool
            ) -> tuple[set[str], set[str], tuple[int, int]]:
    """The nodes that map over the source's items (from `start`), the tail (what takes the whole
    result), and the summed windowed margins (frames only)."""
    region: set[str] = set()
    tail: set[str] = set()
    before = after = 0
    todo = deque([start])
    while todo:
        src = todo.popleft()
        for ln in graph.links_from(src):
            dst = ln.dst
            if dst not in active or dst in region or dst in tail:
                continue
            spec = registry.get(graph.nodes[dst].type)
            src_spec = registry.get(graph.nodes[src].type)
            out_port = next((p for p in src_spec.outputs if p.name == ln.src_port), None) if src_spec else None
            if (out_port is None or out_port.kind not in STREAM_KINDS) and (src != start or frames):
                raise _Unsplittable(f"'{dst}' reads '{src}.{ln.src_port}', which differs per shard")
            if spec is None:
                raise _Unsplittable(f"node '{dst}' is unknown here")
            if frames:
                in_port = spec.input(ln.dst_port, graph.nodes[dst].params)
                kind = getattr(in_port, "kind", "")
                if spec.window is not None and ln.dst_port in spec.window_ports:
                    if spec.window.previous:
                        raise _Unsplittable(f"'{dst}' ({spec.title}) is recursive (each frame needs the one before)")
                    before += spec.window.before
                    after += spec.window.after
                    region.add(dst)
                elif kind in ("Image", "Mask"):
                    region.add(dst)
                else:
                    tail.add(dst)
                    continue
            else:
                if not _elementwise(graph, registry, dst)[0]:
                    tail.add(dst)
                    continue
            region.add(dst)
            todo.append(dst)
    tail = _descendants(graph, tail, active) - region
    for nid in tail:  # the tail runs here, once: it must be cheap finishing work
        spec = registry.get(graph.nodes[nid].type)
        if spec is None or spec.device == "gpu" or (spec.io and not spec.output):
            title = spec.title if spec else graph.nodes[nid].type
            raise _Unsplittable(f"node '{nid}' ({title}) needs the whole {'clip' if frames else 'batch'} at once")
    return region, tail, (before, after)


def _cut(graph: Graph, registry: Registry, plan_args: dict[str, Any], active: set[str], start: str,
         region: set[str], tail: set[str], targets: list[str] | None) -> dict[str, Any]:
    """`work`, `finish`, `cuts` and `joined` of a plan (see SplitPlan)."""
    streamed = region | {start}
    cut_links = [ln for ln in graph.links if ln.src in streamed and ln.dst in tail]
    cuts: list[tuple[str, str]] = []
    for ln in cut_links:
        spec = registry.get(graph.nodes[ln.src].type)
        port = next(p for p in spec.outputs if p.name == ln.src_port)
        if port.kind not in JOINABLE:
            raise _Unsplittable(f"'{ln.src}.{ln.src_port}' ({port.kind}) cannot be joined from shards")
        if (ln.src, ln.src_port) not in cuts:
            cuts.append((ln.src, ln.src_port))
    if not tail:  # nothing takes the whole result: collect the picture outputs of the last mapped nodes
        sinks = [n for n in streamed if not any(ln.dst in region for ln in graph.links_from(n))]
        if targets:
            sinks = [n for n in sinks if n in targets] or sinks
        for nid in sorted(sinks):
            spec = registry.get(graph.nodes[nid].type)
            cuts.extend((nid, p.name) for p in spec.outputs if p.kind in JOINABLE)
    if not cuts:
        raise _Unsplittable("no picture output to join")
    work_ids = _ancestors(graph, streamed) & active
    work = graph.subgraph(work_ids)
    finish = None
    joined: dict[tuple[str, str], str] = {}
    if tail:
        side = (_ancestors(graph, tail) & active) - streamed - tail
        if side & _descendants(graph, {start}, active):
            raise _Unsplittable("a node outside the mapped part reads the split items")
        finish = graph.subgraph(tail | side)
        for k, (nid, port) in enumerate(cuts):
            jid = finish.new_id(f"pool_join{k}_")
            spec = registry.get(graph.nodes[nid].type)
            kind = next(p.kind for p in spec.outputs if p.name == port)
            finish.add_node(NodeInstance(jid, JOINED_VIDEO if kind == "Video" else JOINED_IMAGE,
                                         params={"key": ""}))
            joined[(nid, port)] = jid
        for ln in cut_links:
            finish.connect(Link(joined[(ln.src, ln.src_port)], "video" if _is_video(registry, graph, ln) else "image",
                                ln.dst, ln.dst_port))
    return {"work": work, "cuts": cuts, "finish": finish, "joined": joined,
            "targets": sorted({nid for nid, _ in cuts}), **plan_args}


def _is_video(registry: Registry, graph: Graph, ln: Link) -> bool:
    spec = registry.get(graph.nodes[ln.src].type)
    return next(p.kind for p in spec.outputs if p.name == ln.src_port) == "Video" or \
        graph.nodes[ln.src].type == LOAD_VIDEO


def _plan_seeds(graph: Graph, registry: Registry, targets: list[str] | None, active: set[str], sid: str,
                want: int) -> SplitPlan:
    node = graph.nodes[sid]
    if graph.links_into(sid):
        raise _Unsplittable(f"Seeds '{sid}' has linked inputs")
    listed = parse_seeds(int(_param(graph, registry, sid, "base") or 0),
                         int(_param(graph, registry, sid, "count") or 1),
                         str(_param(graph, registry, sid, "seeds") or ""))
    uses = graph.links_from(sid)
    counted = [ln for ln in uses if ln.src_port == "count"]
    for ln in uses:
        if ln.src_port == "seeds" or (ln.src_port == "count" and ln.dst_port not in BATCH_PARAMS) or \
                (ln.src_port == "seed" and ln.dst_port != "seed"):
            raise _Unsplittable(f"'{ln.dst}.{ln.dst_port}' reads Seeds.{ln.src_port}")
    per_seed = not counted  # without a batch linked to count, each shard is one seed's run
    region, tail, _ = _region(graph, registry, active, sid, frames=False)
    for ln in uses:
        if ln.dst not in region:
            raise _Unsplittable(f"'{ln.dst}' ({graph.nodes[ln.dst].type}) takes the seeds but does not map over them")
    stretches = runs(listed)
    pieces: list[tuple[int, int]] = []  # (offset in the list, length)
    offset = 0
    if per_seed:
        pieces = [(i, 1) for i in range(len(listed))]
    else:
        share = max(1, -(-len(listed) // want))
        for _first, n in stretches:
            for a in range(0, n, share):
                pieces.append((offset + a, min(share, n - a)))
            offset += n
    shards = [Shard(k, a, a + n, {sid: {"base": listed[a], "count": n, "seeds": ""}})
              for k, (a, n) in enumerate(pieces)]
    parts = _cut(graph, registry, {}, active, sid, region, tail, targets)
    del node
    return SplitPlan("seeds", len(listed), shards, parts["work"], parts["targets"], parts["cuts"],
                     parts["finish"], parts["joined"],
                     note="" if not per_seed else "Seeds.count feeds no batch: one shard per seed")


def _plan_batch(graph: Graph, registry: Registry, targets: list[str] | None, active: set[str],
                want: int) -> SplitPlan:
    batch = []
    for nid in active:
        for name in BATCH_PARAMS:
            v = _param(graph, registry, nid, name)
            if isinstance(v, int) and not isinstance(v, bool) and v > 1 and not graph.link_into(nid, name):
                batch.append((nid, name, v))
    if not batch:
        return unsplit(graph, targets)  # nothing to split: no note needed
    if len(batch) > 1:
        raise _Unsplittable("more than one batch in the workflow")
    bid, bparam, total = batch[0]
    ok, why = _elementwise(graph, registry, bid)
    if not ok:
        raise _Unsplittable(why)
    region, tail, _ = _region(graph, registry, active, bid, frames=False)
    seeded: dict[str, int] = {}
    for nid in region | {bid}:
        if _param(graph, registry, nid, "seed") is None:
            continue
        if graph.link_into(nid, "seed"):
            raise _Unsplittable(f"'{nid}.seed' is linked (a Seeds node splits by seed)")
        seeded[nid] = int(_param(graph, registry, nid, "seed"))
    shards = []
    for k, (lo, hi) in enumerate(_chunks(total, want)):
        ov: dict[str, dict[str, Any]] = {bid: {bparam: hi - lo}}
        for nid, s in seeded.items():
            ov.setdefault(nid, {})["seed"] = s + lo
        shards.append(Shard(k, lo, hi, ov))
    parts = _cut(graph, registry, {}, active, bid, region, tail, targets)
    return SplitPlan("batch", total, shards, parts["work"], parts["targets"], parts["cuts"], parts["finish"],
                     parts["joined"])


def video_length(path: str, start: int, max_frames: int, stride: int) -> tuple[int, float, Any]:
    """Frames, fps and sound (an AudioTrack or None) Load Video gives for these parameters (from
    the file's index: no decoding)."""
    from nodes.video.reader import open_video

    v = open_video(path, start, max_frames, stride)
    return len(v), float(v.fps), getattr(v, "audio", None)


def _plan_frames(graph: Graph, registry: Registry, targets: list[str] | None, active: set[str], vid: str,
                 want: int) -> SplitPlan:
    if graph.links_into(vid):
        raise _Unsplittable(f"Load Video '{vid}' has linked inputs")
    path = str(_param(graph, registry, vid, "path") or "")
    start = int(_param(graph, registry, vid, "start") or 0)
    max_frames = int(_param(graph, registry, vid, "max_frames") or 0)
    stride = int(_param(graph, registry, vid, "stride") or 1)
    for ln in graph.links_from(vid):
        if ln.src_port not in ("video", "fps") and ln.dst in active:
            raise _Unsplittable(f"'{ln.dst}' reads Load Video's {ln.src_port}, which differs per shard")
    region, tail, (before, after) = _region(graph, registry, active, vid, frames=True)
    if not region:
        raise _Unsplittable("no node maps over the frames")
    try:
        total, fps, audio = video_length(path, start, max_frames, stride)
    except Exception as exc:  # noqa: BLE001 - the run itself reports a bad file in its one line
        raise _Unsplittable(f"the clip could not be read ({str(exc).splitlines()[0] if str(exc) else exc})") from None
    shards = []
    for k, (lo, hi) in enumerate(_chunks(total, want)):
        a, b = max(lo - before, 0), min(hi + after, total)
        shards.append(Shard(k, lo, hi, {vid: {"start": start + a * stride, "max_frames": b - a}}, skip=lo - a))
    parts = _cut(graph, registry, {}, active, vid, region, tail, targets)
    return SplitPlan("frames", total, shards, parts["work"], parts["targets"], parts["cuts"], parts["finish"],
                     parts["joined"], fps=fps, margins=(before, after), audio=audio)
