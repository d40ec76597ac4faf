"""Scale on paper: a discrete-event simulation of the engine pool.

Takes measured per-shard costs (model load once per engine, upload of the workflow's inputs,
per-frame compute, per-frame download, a fixed per-shard overhead) and predicts wall time and
cost for 1..256 engines with the pool's own rules: a work-stealing queue of `per_engine` shards
per engine, engines dropping out at `drop_per_hour` (exponential lifetimes; a dropped engine's
shard goes back to the queue, its work so far is lost, its time is billed). Run it:
`python tests/benchmarks/sim_pool.py [--price 2.0] [--frames 10000]` prints the README table.
"""

from __future__ import annotations

import argparse
import heapq
import random
from dataclasses import dataclass


@dataclass
class Costs:
    load_s: float = 20.0  # model load on an engine (once)
    upload_s: float = 2.0  # the workflow's inputs to an engine (once)
    frame_s: float = 0.5  # compute per frame (a 512² SD-class restyle on an H100-class GPU)
    download_s: float = 0.01  # one frame back (PNG/npy over the link)
    shard_s: float = 0.3  # per shard: submit, events, fetch round trips
    margin_frames: int = 0  # windowed margins computed twice at each border


def simulate(frames: int, engines: int, costs: Costs, per_engine: int = 4, drop_per_hour: float = 0.0,
             seed: int = 0, price_per_hour: float = 2.0) -> dict[str, float]:
    """Wall time (s), billed engine-hours, cost and frames/hour of one job."""
    rng = random.Random(seed)
    n_shards = max(1, min(frames, engines * per_engine))
    sizes = [frames * (k + 1) // n_shards - frames * k // n_shards for k in range(n_shards)]
    queue = list(range(n_shards))
    ready = [(costs.load_s + costs.upload_s, e) for e in range(engines)]  # (time free, engine)
    heapq.heapify(ready)
    death = {e: (rng.expovariate(drop_per_hour / 3600.0) if drop_per_hour > 0 else float("inf"))
             for e in range(engines)}
    billed = 0.0
    done_at = 0.0
    alive = set(range(engines))
    running: list[tuple[float, int, int]] = []  # (finish, engine, shard)
    while queue or running:
        while queue and ready:
            t, e = heapq.heappop(ready)
            s = queue.pop(0)
            work = costs.shard_s + (sizes[s] + costs.margin_frames) * (costs.frame_s + costs.download_s)
            heapq.heappush(running, (t + work, e, s))
        if not running:
            break  # every engine is gone: the job fails (what finished is kept)
        t, e, s = heapq.heappop(running)
        if death[e] < t:  # dropped out mid-shard: the shard goes back, the engine's time is billed
            queue.insert(0, s)
            alive.discard(e)
            billed += death[e]
            if not alive and not running:
                return {"wall_s": float("inf"), "gpu_hours": billed / 3600, "cost": billed / 3600 * price_per_hour,
                        "frames_per_hour": 0.0}
            continue
        done_at = max(done_at, t)
        heapq.heappush(ready, (t, e))
    billed += sum(done_at for e in alive)  # the survivors are billed to the end of the job
    return {"wall_s": done_at, "gpu_hours": billed / 3600, "cost": billed / 3600 * price_per_hour,
            "frames_per_hour": frames / done_at * 3600 if done_at else 0.0}


def table(frames: int = 10_000, price: float = 2.0, drop_per_hour: float = 0.05, costs: Costs | None = None,
          sizes: tuple[int, ...] = (1, 4, 16, 64)) -> str:
    costs = costs or Costs()
    rows = ["| GPUs | wall time | frames/hour | GPU-hours | cost |", "|---:|---:|---:|---:|---:|"]
    for n in sizes:
        runs = [simulate(frames, n, costs, drop_per_hour=drop_per_hour, seed=k, price_per_hour=price)
                for k in range(20)]
        wall = sorted(r["wall_s"] for r in runs)[len(runs) // 2]
        cost = sorted(r["cost"] for r in runs)[len(runs) // 2]
        hours = sorted(r["gpu_hours"] for r in runs)[len(runs) // 2]
        rows.append(f"| {n} | {wall / 60:.1f} min | {frames / wall * 3600:,.0f} | {hours:.2f} | ${cost:.2f} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--price", type=float, default=2.0, help="$ per GPU-hour (default 2.0, H100-class rental)")
    p.add_argument("--frame-s", type=float, default=Costs.frame_s, help="compute per frame, seconds")
    p.add_argument("--load-s", type=float, default=Costs.load_s)
    p.add_argument("--drop-per-hour", type=float, default=0.05, help="engine drop-outs per engine-hour")
    p.add_argument("--engines", type=int, nargs="*", default=[1, 4, 16, 64])
    a = p.parse_args()
    costs = Costs(load_s=a.load_s, frame_s=a.frame_s)
    print(f"{a.frames:,} frames, {a.frame_s} s/frame, model load {a.load_s} s, ${a.price}/GPU-hour, "
          f"{a.drop_per_hour} drop-outs per engine-hour (median of 20 runs)")
    print(table(a.frames, a.price, a.drop_per_hour, costs, tuple(a.engines)))
    for n in (128, 256):
        r = simulate(a.frames, n, costs, drop_per_hour=a.drop_per_hour, price_per_hour=a.price)
        print(f"{n} engines: {r['wall_s'] / 60:.1f} min, ${r['cost']:.2f}")


if __name__ == "__main__":
    main()
