"""State a long-lived engine (an editor open all day, a rented GPU server) keeps must stay bounded
and in the right memory: provenance leaves with its cache entry, file hashes are memoised within
a bound, cached latents live on the CPU."""

from __future__ import annotations

import numpy as np
import torch

from app.engine import Engine, EngineSettings
from app.engine import fingerprint as fp
from app.engine.cache import OutputCache
from app.graph.model import Graph, Link, NodeInstance
from nodes.registry import Registry, node
from nodes.types import Context, Latent


def _annotating_registry() -> Registry:
    reg = Registry(load_packs=False)

    @node("test.tag", registry=reg)
    def tag(value: float = 0.0, ctx: Context = None) -> float:
        """Records provenance, as Load Model does."""
        ctx.annotate("model", {"value": value})
        return value

    return reg


def test_provenance_is_kept_with_its_cache_entry_and_leaves_with_it():
    engine = Engine(_annotating_registry(), EngineSettings(cache_budget_bytes=64 * 20))  # room for ~20 floats
    g = Graph()
    g.add_node(NodeInstance("t", "test.tag"))
    for i in range(3000):  # slider tweaks: every value is a new signature
        g.set_param("t", "value", float(i))
        engine.run(g)
    assert len(engine.cache) <= 20
    kept = [e.annotations for e in engine.cache._entries.values()]
    assert len(kept) == len(engine.cache) and all(a["model"]["value"] >= 2980 for a in kept)
    assert not hasattr(engine, "_annotations")
    g.set_param("t", "value", 2999.0)
    hit = engine.run(g)
    assert hit.status["t"] == "cached"


def test_file_hash_memo_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(fp, "MEMO_ENTRIES", 50)
    monkeypatch.setattr(fp, "_memo", type(fp._memo)())
    for i in range(120):
        f = tmp_path / f"f{i}.bin"
        f.write_bytes(bytes([i]) * 10)
        fp.file_hash(f)
    assert len(fp._memo) == 50
    first = tmp_path / "f119.bin"
    assert fp.file_hash(first) == fp.file_hash(first)


class _DeviceTensor:
    """Stands in for a tensor on an accelerator (none here): `.to("cpu")` gives the host copy."""

    def __init__(self, host: torch.Tensor) -> None:
        self.host = host
        self.device = torch.device("cuda", 0)
        self.shape = host.shape
        self.dtype = host.dtype

    def numel(self) -> int:
        return self.host.numel()

    def element_size(self) -> int:
        return self.host.element_size()

    def to(self, device: str) -> torch.Tensor:
        assert device == "cpu"
        return self.host.clone()


def test_cached_latents_live_on_the_host_and_count_there():
    cache = OutputCache(1 << 20)
    on_gpu = Latent(_DeviceTensor(torch.ones(1, 4, 8, 8)), "sd1")
    cache.put("sig", {"latent": on_gpu}, {"latent": "Latent"})
    kept = cache.get("sig").outputs["latent"]
    assert isinstance(kept.samples, torch.Tensor) and kept.samples.device.type == "cpu"
    assert torch.equal(kept.samples, torch.ones(1, 4, 8, 8)) and kept.family == "sd1"
    assert cache.nbytes == 4 * 4 * 8 * 8
    on_cpu = Latent(torch.zeros(1, 4, 8, 8), "sd1")
    assert on_cpu.to_host() is on_cpu  # already there: no copy


def test_an_image_batch_is_checked_and_sized_by_its_wire_type(reg):
    g = Graph()
    g.add_node(NodeInstance("n", "test.noise", {"size": 16}))
    g.add_node(NodeInstance("d", "test.double"))
    g.connect(Link("n", "image", "d", "image"))
    engine = Engine(reg)
    engine.run(g)
    assert engine.cache.nbytes == 16 * 16 * 3 * 4 * (1 + 2)
    out = engine.run(g).output("d")
    assert out.shape == (2, 16, 16, 3) and out.dtype == np.float32
