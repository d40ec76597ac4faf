"""Seeds: a seed sweep as a node (N seeds from a base seed, or an explicit list), and Seed Noise,
a cheap seed-indexed picture (image i of a batch from seed + i) to try a sweep or a pool on.

How a sweep reaches a sampler, with nothing changed in the samplers: Seeds gives `seed` (its
first seed) and `count`; link `seed` into a Sample / Text to Image `seed` and `count` into the
batch size (Empty Latent's or Text to Image's `batch_size`). Image i of a batch uses seed + i, so
one run makes exactly the images of seeds base .. base+count-1. An engine pool
(`app.engine.pool`) splits the sweep by rewriting only this node per shard (base = the shard's
first seed, count = its length), so a shard's pictures are the same pixels one engine makes.
An explicit list that is not consecutive ("1, 5, 9") runs as one shard per consecutive stretch
(through the pool, which `imagebash run` always uses for a Seeds node); a plain single run of it
gives the consecutive seeds from its first (and says so).
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

import numpy as np

from nodes.registry import node
from nodes.types import Context, Help, Image, Range

MAX_SEEDS = 100_000


class SeedsOut(NamedTuple):
    seed: int
    count: int
    seeds: str


def parse_seeds(base: int, count: int, seeds: str = "") -> list[int]:
    """The sweep's seeds: the explicit list when given ("1, 5, 9", "10-13" for a range), else
    base, base+1, ... (`count` of them). ValueError (one line) on a bad list."""
    text = (seeds or "").replace(";", ",").replace(" ", ",")
    out: list[int] = []
    for part in (p for p in text.split(",") if p):
        try:
            if "-" in part[1:]:
                lo, hi = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
                a, b = int(lo), int(hi)
                if b < a or b - a >= MAX_SEEDS:
                    raise ValueError
                out.extend(range(a, b + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ValueError(f"seeds: '{part}' is not a seed or a range like 10-13") from None
    if not out:
        out = [int(base) + i for i in range(max(1, int(count)))]
    if len(out) > MAX_SEEDS:
        raise ValueError(f"seeds: {len(out)} seeds; at most {MAX_SEEDS}")
    return out


def runs(seeds: list[int]) -> list[tuple[int, int]]:
    """Consecutive stretches of a seed list as (first, count), in order."""
    out: list[tuple[int, int]] = []
    for s in seeds:
        if out and out[-1][0] + out[-1][1] == s:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((s, 1))
    return out


@node("imagebash.seeds", title="Seeds", category="utility")
def seeds_node(base: Annotated[int, Range(0, 2**53)] = 0,
               count: Annotated[int, Range(1, MAX_SEEDS)] = 4,
               seeds: Annotated[str, Help("An explicit list instead: '1, 5, 9' or '10-13'.")] = "",
               ctx: Context = None) -> SeedsOut:
    """A seed sweep: `count` seeds from `base` (base, base+1, ...), or an explicit list.

    Link `seed` into a sampler's seed and `count` into its batch size: image i uses seed + i.
    A pool of engines splits the sweep by seed (each engine makes some of the images).

    Args:
        base: The first seed.
        count: How many seeds.
        seeds: An explicit list instead ("1, 5, 9", "10-13").
    """
    listed = parse_seeds(base, count, seeds)
    stretches = runs(listed)
    if len(stretches) > 1 and ctx is not None:
        ctx.log(f"seeds {seeds!r} are not consecutive: one run makes seeds {listed[0]}..{listed[0] + len(listed) - 1}; "
                "`imagebash run` (a pool) runs each stretch", "warning")
    return SeedsOut(listed[0], len(listed), ", ".join(map(str, listed)))


@node("imagebash.seeds.noise", title="Seed Noise", category="image/generate")
def seed_noise(seed: Annotated[int, Range(0, 2**53)] = 0, batch_size: Annotated[int, Range(1, 4096)] = 1,
               width: Annotated[int, Range(1, 8192)] = 256, height: Annotated[int, Range(1, 8192)] = 256) -> Image:
    """Uniform noise, image i of the batch from seed + i (the same picture for a seed whatever
    the batch it is in): a cheap stand-in for a sampler to try a sweep on.

    Args:
        seed: The first image's seed.
        batch_size: How many images.
        width: Width in pixels.
        height: Height in pixels.
    """
    return np.stack([np.random.default_rng(int(seed) + i).random((height, width, 3), dtype=np.float32)
                     for i in range(batch_size)])
