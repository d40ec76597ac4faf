"""The transformer-family exporter (Flux.1, SD 3.5, Qwen-Image), checked through the LoRA loader.

A tiny transformer (and CLIP encoders) gets a peft adapter as the trainer makes it, moved off its
init; both exported files are loaded into a fresh copy through imagebash's LoRA loader and must
match every key, give each module exactly the trained `alpha/r * B @ A` (fused q/k/v and
`linear1` rows, partly trained fused layers, swapped adaLN halves) and the trained model's
outputs; the kohya file of an input-axis DoRA must reproduce the trained DoRA model, and gets no
peft twin.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from app.engine.families import get_family
from app.engine.models import Entry
from app.training import adapters
from app.training.adapters import LayerWeights
from app.training.export import NO_DORA_TWIN, export_lora, peft_path_for
from app.training.export_dit import (
    DitAdapterExport,
    kohya_state_dict,
    peft_adapter_metadata,
    peft_state_dict,
)
from nodes.diffusion.loras import activate, ensure_adapter
from tests.diffusion.test_family_loras import FAMILY, _deltas, _forward, _model
from tests.tiny_models import _text_config

RANK, ALPHA = 4, 3.0  # alpha != rank: the scale 0.75 must survive both files
SCALE = ALPHA / RANK
ATT = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
       "attn.add_v_proj", "attn.to_add_out")
FF = ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")
SINGLE_ATT = ("attn.to_q", "attn.to_k", "attn.to_v")
#: (block kind, layer) pairs each target set trains; "partial" sets are explicit module names
TARGETS: dict[tuple[str, str], set[tuple[str, str]] | list[str]] = {
    ("flux", "attention"): {("transformer_blocks", s) for s in ATT} | {("single_transformer_blocks", s)
                                                                       for s in SINGLE_ATT},
    ("flux", "attention+ff"): {("transformer_blocks", s) for s in ATT + FF}
    | {("single_transformer_blocks", s) for s in (*SINGLE_ATT, "proj_mlp", "proj_out")},
    # q and v of one img qkv, k of one txt qkv, v + MLP of one linear1, swapped adaLN layers
    ("flux", "partial"): ["transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_v",
                          "transformer_blocks.1.attn.add_k_proj", "transformer_blocks.1.attn.to_add_out",
                          "single_transformer_blocks.1.attn.to_v", "single_transformer_blocks.1.proj_mlp",
                          "norm_out.linear"],
    ("sd3", "attention+ff"): {("transformer_blocks", s) for s in ATT + FF
                              + ("attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")},
    # the last (pre-only) context block's adaLN is stored with its halves swapped
    ("sd3", "partial"): ["transformer_blocks.0.attn2.to_k", "transformer_blocks.0.attn2.to_q",
                         "transformer_blocks.1.attn.add_q_proj", "transformer_blocks.1.norm1_context.linear",
                         "norm_out.linear"],
    ("qwen", "attention+ff"): {("transformer_blocks", s) for s in (*ATT, "img_mlp.net.0.proj", "img_mlp.net.2",
                                                                   "txt_mlp.net.0.proj", "txt_mlp.net.2")},
}
TE_SLOTS = {"flux": ("text_encoder",), "sd3": ("text_encoder", "text_encoder_2"), "qwen": ()}
MAX: dict[str, float] = {}
_hashes = itertools.count()


# --------------------------------------------------------------------------------------- helpers
def _target_names(kind: str, model: Any, targets: str) -> list[str]:
    chosen = TARGETS[(kind, targets)]
    if isinstance(chosen, list):
        return chosen
    out = []
    for n, m in model.named_modules():
        hit = re.match(r"^(transformer_blocks|single_transformer_blocks)\.\d+\.(.+)$", n)
        if isinstance(m, torch.nn.Linear) and hit and (hit.group(1), hit.group(2)) in chosen:
            out.append(n)
    return out


def _clip(slot: str, seed: int) -> Any:
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)  # CLIPTextModel (no text_model level in transformers 5) and one with it
    te = CLIPTextModel(_text_config(100)) if slot == "text_encoder" else \
        CLIPTextModelWithProjection(_text_config(100, projection=True))
    return te.eval()


def _train(model: Any, names: list[str], dora: bool, seed: int, exact: bool = True) -> dict[str, LayerWeights]:
    """A peft adapter as the trainer injects it, with B (and DoRA magnitudes) moved off their init."""
    got = adapters.add_adapter(model, rank=RANK, alpha=ALPHA, targets=names, dora=dora)
    assert not exact or sorted(got) == sorted(names)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_A." in n or ".lora_B." in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            if ".lora_magnitude_vector." in n:
                p.mul_(0.6 + 0.8 * torch.rand(p.shape, generator=g))
    return adapters.layer_weights(model)


def _trained(kind: str, targets: str, dora: bool) -> tuple[DitAdapterExport, SimpleNamespace, SimpleNamespace]:
    """(export, trained pipe-like object, fresh untouched copy of it)."""
    model = _model(kind)
    pipe = SimpleNamespace(transformer=model)
    for i, slot in enumerate(TE_SLOTS[kind]):
        setattr(pipe, slot, _clip(slot, 20 + i))
    fresh = copy.deepcopy(pipe)
    layers = _train(model, _target_names(kind, model, targets), dora, seed=1)
    tes = {slot: _train(getattr(pipe, slot), adapters.target_modules("te", "attention"), dora, seed=2 + i,
                        exact=False)
           for i, slot in enumerate(TE_SLOTS[kind])}
    return DitAdapterExport(FAMILY[kind], layers, dict(model.config), tes), pipe, fresh


def _load(entry: Entry, path) -> Any:
    """Load an exported file through imagebash's LoRA loader; no key may be left unmatched."""
    info = ensure_adapter(entry, path, f"x{next(_hashes)}")
    assert info.unmatched == [], info.report()
    return info


def _te_out(te: Any) -> torch.Tensor:
    ids = torch.randint(0, 98, (2, 9), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        return te(input_ids=ids).last_hidden_state


def _outputs(kind: str, pipe: SimpleNamespace) -> dict[str, torch.Tensor]:
    out = {"transformer": _forward(kind, pipe.transformer)}
    return out | {slot: _te_out(getattr(pipe, slot)) for slot in TE_SLOTS[kind]}


def _trained_delta(w: LayerWeights) -> torch.Tensor:
    return (w.alpha / w.rank) * w.up @ w.down


def _worst(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _record(key: str, value: float) -> None:
    MAX[key] = max(MAX.get(key, 0.0), value)
    print(f"max |difference| {key}: {value:.1e}")


# ------------------------------------------------------------------------------------- plain LoRA
@pytest.mark.parametrize("kind, targets", [("flux", "attention"), ("flux", "attention+ff"), ("flux", "partial"),
                                           ("sd3", "attention+ff"), ("sd3", "partial"), ("qwen", "attention+ff")])
def test_both_files_load_to_the_trained_deltas_and_outputs(kind, targets, tmp_path):
    a, trained, fresh = _trained(kind, targets, dora=False)
    kohya, twin = export_lora(a, tmp_path / "lora.safetensors", {"modelspec.title": "t", "ss_network_dim": "4"})
    assert twin == peft_path_for(kohya) and twin.is_file()
    want_out = _outputs(kind, trained)
    base_out = _outputs(kind, fresh)
    entry = Entry("k", "tiny", FAMILY[kind], fresh, "cpu", 0)
    infos = {"kohya": _load(entry, kohya), "peft": _load(entry, twin)}
    outs = {}
    for fmt, info in infos.items():
        for comp, layers in [("transformer", a.denoiser), *a.text_encoders.items()]:
            got = _deltas(getattr(fresh, comp), info.name)
            want = {n: _trained_delta(w) for n, w in layers.items()}
            assert set(want) <= set(got), (fmt, comp, sorted(set(want) - set(got))[:4])
            extra = set(got) - set(want)  # untrained rows of a fused layer: loaded as zero deltas
            if fmt == "peft" or comp != "transformer" or kind == "qwen":
                assert not extra, (fmt, comp, sorted(extra)[:4])
            assert all(float(got[n].abs().max()) == 0.0 for n in extra), fmt
            worst = max(float((got[n] - want[n]).abs().max()) for n in want)
            _record(f"{kind}/{targets}/{fmt}/{comp} delta", worst)
            assert worst < 1e-5, (fmt, comp, worst)
        activate(entry, [(info.name, 1.0)])
        outs[fmt] = _outputs(kind, fresh)
        activate(entry, [])
    assert _worst(_outputs(kind, fresh), base_out) == 0.0  # nothing active: the base again
    assert min(float((want_out[k] - base_out[k]).abs().max()) for k in want_out) > 1e-3  # the LoRA matters
    _record(f"{kind}/{targets} kohya vs peft outputs", _worst(outs["kohya"], outs["peft"]))
    _record(f"{kind}/{targets} kohya vs trained outputs", _worst(outs["kohya"], want_out))
    assert _worst(outs["kohya"], outs["peft"]) < 1e-5
    assert _worst(outs["kohya"], want_out) < 1e-5 and _worst(outs["peft"], want_out) < 1e-5
    if kind == "flux" and targets == "partial":  # untrained parts of a fused layer do load, at zero
        assert infos["kohya"].matched_modules > len(a.denoiser) + sum(len(t) for t in a.text_encoders.values())


@pytest.mark.parametrize("kind", ["flux", "sd3", "qwen"])
def test_the_peft_twin_loads_through_diffusers_with_its_metadata(kind, tmp_path):
    """diffusers' own `load_lora_adapter`, reading the twin's LoraConfig from its metadata, gives the
    trained transformer's output."""
    a, trained, _fresh = _trained(kind, "attention+ff", dora=False)
    _kohya, twin = export_lora(a, tmp_path / "lora.safetensors", {"modelspec.title": "t"})
    with safe_open(str(twin), "pt") as f:
        meta = json.loads(f.metadata()["lora_adapter_metadata"])
    assert meta == json.loads(json.dumps(peft_adapter_metadata(a)))
    assert meta["transformer.r"] == meta["transformer.lora_alpha"] == RANK and not meta["transformer.use_dora"]
    model = _model(kind)
    model.load_lora_adapter(load_file(str(twin)), prefix="transformer", metadata=meta, adapter_name="twin")
    diff = float((_forward(kind, model) - _forward(kind, trained.transformer)).abs().max())
    _record(f"{kind} diffusers-loaded twin vs trained outputs", diff)
    assert diff < 1e-5


# ----------------------------------------------------------------------------------------- names
def test_flux_kohya_keys_are_sd_scripts_names():
    a, _trained_pipe, _fresh = _trained("flux", "attention", dora=False)
    sd = kohya_state_dict(a)
    stems = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in sd}
    want = {f"lora_unet_double_blocks_{i}_{m}" for i in range(2)
            for m in ("img_attn_qkv", "txt_attn_qkv", "img_attn_proj", "txt_attn_proj")}
    want |= {f"lora_unet_single_blocks_{i}_linear1" for i in range(2)}
    want |= {f"lora_te1_text_model_encoder_layers_{i}_self_attn_{p}" for i in range(2)
             for p in ("q_proj", "k_proj", "v_proj", "out_proj")}
    assert stems == want
    assert len(sd) == 3 * len(want) and not any(k.endswith(".dora_scale") for k in sd)
    d, mlp = 32, 128
    assert sd["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"].shape == (3 * RANK, d)
    assert sd["lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"].shape == (3 * d, 3 * RANK)
    assert float(sd["lora_unet_double_blocks_0_img_attn_qkv.alpha"]) == 3 * ALPHA  # alpha / rank kept
    assert float(sd["lora_unet_double_blocks_0_img_attn_proj.alpha"]) == ALPHA
    up = sd["lora_unet_single_blocks_1_linear1.lora_up.weight"]  # q/k/v trained, the MLP rows not
    assert up.shape == (3 * d + mlp, 3 * RANK) and float(sd["lora_unet_single_blocks_1_linear1.alpha"]) == 3 * ALPHA
    assert torch.equal(up[3 * d:], torch.zeros(mlp, 3 * RANK))
    w = a.denoiser["single_transformer_blocks.1.attn.to_k"]
    assert torch.equal(up[d:2 * d, RANK:2 * RANK], w.up) and torch.equal(up[:d, RANK:2 * RANK], torch.zeros(d, RANK))
    assert torch.equal(sd["lora_unet_single_blocks_1_linear1.lora_down.weight"][RANK:2 * RANK], w.down)


def test_sd3_and_qwen_kohya_names():
    a, *_ = _trained("sd3", "attention+ff", dora=False)
    sd = kohya_state_dict(a)
    for stem in ("joint_blocks_0_x_block_attn_qkv", "joint_blocks_0_x_block_attn2_qkv",
                 "joint_blocks_0_context_block_attn_qkv", "joint_blocks_0_context_block_attn_proj",
                 "joint_blocks_1_context_block_attn_qkv", "joint_blocks_0_x_block_mlp_fc2"):
        assert f"lora_unet_{stem}.alpha" in sd, stem
    assert "lora_unet_joint_blocks_1_context_block_attn_proj.alpha" not in sd  # pre-only block
    assert "lora_te2_text_model_encoder_layers_1_self_attn_out_proj.lora_up.weight" in sd
    assert not any(k.startswith(("lora_transformer_", "lora_te_")) or "text_model_text_model" in k for k in sd)
    a, *_ = _trained("qwen", "attention+ff", dora=False)
    keys = set(kohya_state_dict(a))
    assert "lora_unet_transformer_blocks_1_img_mlp_net_0_proj.lora_down.weight" in keys
    assert "lora_unet_transformer_blocks_0_attn_add_v_proj.alpha" in keys
    assert len(keys) == 3 * len(a.denoiser)
    peft = peft_state_dict(a)
    assert "transformer.transformer_blocks.0.attn.to_out.0.lora_B.weight" in peft


def test_unequal_scales_in_one_fused_layer_are_folded_exactly():
    """Parts of one fused layer with other ranks and alphas: one fused key, each part's own scale."""
    from nodes.diffusion.lora_keys import module_tables, parse_lora

    model = _model("flux")
    g = torch.Generator().manual_seed(9)
    d = 32
    layers = {"transformer_blocks.0.attn.to_q": LayerWeights(torch.randn(4, d, generator=g),
                                                             torch.randn(d, 4, generator=g), 3.0),
              "transformer_blocks.0.attn.to_k": LayerWeights(torch.randn(2, d, generator=g),
                                                             torch.randn(d, 2, generator=g), 5.0)}
    sd = kohya_state_dict(DitAdapterExport("flux", layers, dict(model.config)))
    assert sd["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"].shape == (6, d)
    assert float(sd["lora_unet_double_blocks_0_img_attn_qkv.alpha"]) == 6.0  # scale 1: folded into up
    parsed = parse_lora(sd, module_tables(SimpleNamespace(transformer=model), get_family("flux")))
    assert parsed.unmatched == [] and parsed.problems == []
    mods = parsed.modules["transformer"]
    for name, w in layers.items():
        m = mods[name]
        torch.testing.assert_close(m.alpha / m.rank * m.up @ m.down, _trained_delta(w), rtol=0, atol=1e-5)
    assert float(mods["transformer_blocks.0.attn.to_v"].up.abs().max()) == 0.0


def test_what_cannot_be_exported_is_refused():
    model = _model("flux")
    cfg = dict(model.config)
    w = LayerWeights(torch.zeros(4, 32), torch.zeros(32, 4), 4.0)
    with pytest.raises(ValueError, match="no kohya prefix for the text encoder slot 'text_encoder'"):
        kohya_state_dict(DitAdapterExport("qwen_image", {}, {}, {"text_encoder": {"model.layers.0.mlp": w}}))
    t5 = {"text_encoder_2": {"encoder.block.0.layer.0.SelfAttention.q": w}}
    with pytest.raises(ValueError, match="not a CLIP text-encoder layer"):
        kohya_state_dict(DitAdapterExport("flux", {}, cfg, t5))
    wide = LayerWeights(torch.zeros(4, 32), torch.zeros(40, 4), 4.0)
    with pytest.raises(ValueError, match=r"to_q has 40 output rows where double_blocks\.0\.img_attn\.qkv gives it 32"):
        kohya_state_dict(DitAdapterExport("flux", {"transformer_blocks.0.attn.to_q": wide}, cfg))


# ------------------------------------------------------------------------------------------ DoRA
def _layer_outputs(model: Any, names: list[str], seed: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    with torch.no_grad():
        for n in names:
            layer = model.get_submodule(n)
            out[n] = layer(torch.randn(3, layer.get_base_layer().in_features, generator=g))
    return out


@pytest.mark.parametrize("kind, targets", [("flux", "attention+ff"), ("flux", "partial"), ("sd3", "attention+ff"),
                                           ("sd3", "partial"), ("qwen", "attention+ff")])
def test_dora_kohya_file_reproduces_the_trained_dora_and_has_no_twin(kind, targets, tmp_path):
    a, trained, fresh = _trained(kind, targets, dora=True)
    assert a.is_dora
    with pytest.raises(ValueError, match=re.escape(NO_DORA_TWIN)):
        peft_state_dict(a)
    stale = peft_path_for(tmp_path / "dora.safetensors")
    stale.write_bytes(b"old")
    logs: list[str] = []
    kohya, twin = export_lora(a, tmp_path / "dora.safetensors", {"modelspec.title": "t"}, log=logs.append)
    assert twin is None and not stale.exists() and len(logs) == 1 and NO_DORA_TWIN in logs[0]
    sd = load_file(str(kohya))
    n_layers = len(a.denoiser) + sum(len(t) for t in a.text_encoders.values())
    scales = {k: v for k, v in sd.items() if k.endswith(".dora_scale")}
    assert len(scales) == n_layers and all(v.ndim == 2 and v.shape[0] == 1 for v in scales.values())
    if kind == "flux":  # fused layers with DoRA: per part under OneTrainer's names; the rest original
        assert "lora_transformer_transformer_blocks_0_attn_to_q.dora_scale" in sd
        assert not any("_qkv." in k or "_linear1." in k for k in sd)
        if targets == "partial":
            assert sd["lora_unet_final_layer_adaLN_modulation_1.dora_scale"].shape == (1, 32)
        else:
            assert sd["lora_unet_double_blocks_1_img_attn_proj.dora_scale"].shape == (1, 32)
    entry = Entry("k", "tiny", FAMILY[kind], fresh, "cpu", 0)
    info = _load(entry, kohya)
    assert info.dora and info.matched_modules == n_layers
    activate(entry, [(info.name, 1.0)])
    worst_layer = 0.0
    for comp, layers in [("transformer", a.denoiser), *a.text_encoders.items()]:
        got = _layer_outputs(getattr(fresh, comp), list(layers))
        want = _layer_outputs(getattr(trained, comp), list(layers))
        worst_layer = max(worst_layer, _worst(got, want))
    got_out, want_out = _outputs(kind, fresh), _outputs(kind, trained)
    activate(entry, [])
    base_out = _outputs(kind, fresh)
    _record(f"{kind}/{targets} DoRA per-layer outputs", worst_layer)
    _record(f"{kind}/{targets} DoRA model outputs", _worst(got_out, want_out))
    assert worst_layer < 1e-4 and _worst(got_out, want_out) < 1e-4
    assert _worst(want_out, base_out) > 1e-3
