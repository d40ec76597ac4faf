"""LoRAs and original checkpoints of the transformer families (Flux.1, SD 3.5, Qwen-Image).

Tiny models are built here from configs. One random A/B set per original module is written in
every format the family's trainers write; every file must load to the same per-module deltas,
equal to `alpha/rank * B @ A` cut as the family's name table says (fused q/k/v and `linear1`
rows, swapped adaLN halves), and change the model's output. The original <-> diffusers
checkpoint converters must round-trip bit-exactly and agree with diffusers' own converters.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from app.engine.families import Target, flux_names, get_family, sd3_names
from app.engine.models import Entry
from nodes.diffusion.loras import activate, ensure_adapter

FLUX = dict(patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
            guidance_embeds=True)
SD3_MEDIUM = dict(sample_size=32, patch_size=1, in_channels=4, num_layers=2, attention_head_dim=8,
                  num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64,
                  out_channels=4, dual_attention_layers=(0,), qk_norm="rms_norm")
SD3_LARGE = {**SD3_MEDIUM, "dual_attention_layers": (), "num_layers": 3}
QWEN = dict(patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=3,
            joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4))
FAMILY = {"flux": "flux", "sd3": "sd3", "sd3_large": "sd3", "qwen": "qwen_image"}
RANK, ALPHA = 4, 3.0  # alpha != rank: a scale of 0.75 that every format must keep
SCALE = ALPHA / RANK
_hashes = itertools.count()


def _model(kind: str, seed: int = 0) -> Any:
    """A tiny transformer with every parameter random (diffusers zero-initialises some layers)."""
    from diffusers import FluxTransformer2DModel, QwenImageTransformer2DModel, SD3Transformer2DModel

    cls, cfg = {"flux": (FluxTransformer2DModel, FLUX), "sd3": (SD3Transformer2DModel, SD3_MEDIUM),
                "sd3_large": (SD3Transformer2DModel, SD3_LARGE), "qwen": (QwenImageTransformer2DModel, QWEN)}[kind]
    torch.manual_seed(seed)
    model = cls(**cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def _inputs(kind: str) -> dict[str, Any]:
    g = torch.Generator().manual_seed(7)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    if kind == "flux":
        return dict(hidden_states=rand(1, 16, 4), encoder_hidden_states=rand(1, 6, 32), pooled_projections=rand(1, 32),
                    timestep=torch.tensor([0.5]), img_ids=rand(16, 3), txt_ids=torch.zeros(6, 3),
                    guidance=torch.tensor([3.5]))
    if kind.startswith("sd3"):
        return dict(hidden_states=rand(1, 4, 8, 8), encoder_hidden_states=rand(1, 6, 32),
                    pooled_projections=rand(1, 64), timestep=torch.tensor([500.0]))
    return dict(hidden_states=rand(1, 16, 16), encoder_hidden_states=rand(1, 7, 16),
                encoder_hidden_states_mask=torch.ones(1, 7), timestep=torch.tensor([0.5]), img_shapes=[(1, 4, 4)])


def _forward(kind: str, model: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(**_inputs(kind)).sample


def _entry(kind: str, model: Any) -> Entry:
    return Entry("k", "tiny", FAMILY[kind], SimpleNamespace(transformer=model), "cpu", 0)


def _load(entry: Entry, state: dict[str, torch.Tensor], folder, name: str = "lora"):
    path = folder / f"{name}.safetensors"
    save_file({k: v.clone().contiguous() for k, v in state.items()}, str(path))
    return ensure_adapter(entry, path, f"t{next(_hashes)}")


# ------------------------------------------------------------------------------------- converters
@pytest.mark.parametrize("kind", ["flux", "sd3", "sd3_large"])
def test_converters_round_trip_exactly_and_load_strict(kind):
    names = flux_names if kind == "flux" else sd3_names
    model = _model(kind)
    config = dict(model.config)
    state = model.state_dict()
    original = names.to_original(state, config)
    back = names.convert_checkpoint(original, config)
    assert set(back) == set(state)
    assert all(back[k].dtype == state[k].dtype and torch.equal(back[k], state[k]) for k in state)
    fresh = _model(kind, seed=1)
    assert not torch.equal(_forward(kind, fresh), _forward(kind, model))
    fresh.load_state_dict(back, strict=True)
    assert torch.equal(_forward(kind, fresh), _forward(kind, model))
    if kind == "flux":
        assert original["double_blocks.1.img_attn.qkv.weight"].shape == (96, 32)
        assert original["single_blocks.1.linear1.weight"].shape == (3 * 32 + 128, 32)
        assert "double_blocks.0.txt_attn.norm.key_norm.scale" in original
    else:
        last = f"joint_blocks.{config['num_layers'] - 1}.context_block."
        assert f"{last}attn.qkv.weight" in original and f"{last}adaLN_modulation.1.weight" in original
        assert not any(k.startswith((f"{last}attn.proj", f"{last}mlp")) for k in original)  # pre-only
        assert ("joint_blocks.0.x_block.attn2.qkv.weight" in original) == (kind == "sd3")
        assert original["pos_embed"] is state["pos_embed.pos_embed"]


@pytest.mark.parametrize("kind", ["sd3", "sd3_large"])
def test_sd3_converter_agrees_with_diffusers(kind):
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    model = _model(kind)
    state = model.state_dict()
    theirs = convert_sd3_transformer_checkpoint_to_diffusers(sd3_names.to_original(state, dict(model.config)))
    assert set(theirs) == set(state) and all(torch.equal(theirs[k], state[k]) for k in state)


def test_flux_converter_agrees_with_diffusers_at_full_width():
    """diffusers' Flux converter only knows the 3072-wide model: compare on tensors of its row
    counts (one column each, so this stays small)."""
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    config = dict(num_layers=2, num_single_layers=3, num_attention_heads=24, attention_head_dim=128,
                  guidance_embeds=True)
    g = torch.Generator().manual_seed(0)
    original = {}
    for name, targets in flux_names.original_modules(config).items():
        rows = max((t.rows[1] for t in targets if t.rows), default=6)
        original[f"{name}.weight"] = torch.randn(rows, 1, generator=g)
        original[f"{name}.bias"] = torch.randn(rows, generator=g)
    for key in flux_names.original_params(config):
        original[key] = torch.randn(3, generator=g)
    ours = flux_names.convert_checkpoint(original, config)
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(original))
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert flux_names.to_original(ours, config).keys() == original.keys()


@pytest.mark.parametrize("name", ["flux-dev", "flux-schnell", "flux-fill", "flux-kontext", "sd35-large",
                                  "sd35-medium"])
def test_real_size_key_sets_convert_to_the_diffusers_model_and_back(name):
    """The released files' keys and shapes (tests/fixtures/family_keys, header only) become exactly
    the state dict of the diffusers model built from the shipped config (on the meta device)."""
    import json
    from pathlib import Path

    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    data = json.loads((Path(__file__).parents[1] / "fixtures" / "family_keys" / f"{name}.json").read_text())
    config = {k: v for k, v in data["config"].items() if not k.startswith("_")}
    names, cls = (flux_names, FluxTransformer2DModel) if name.startswith("flux") else (sd3_names, SD3Transformer2DModel)
    state = {k: torch.empty(shape, device="meta") for k, shape in data["keys"].items()}
    converted = names.convert_checkpoint(state, config)
    with torch.device("meta"):
        model = cls(**config)
    def shapes(d: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in d.items()}

    assert shapes(converted) == shapes(model.state_dict())
    assert shapes(names.to_original(converted, config)) == {k: tuple(v) for k, v in data["keys"].items()}


def test_converters_name_what_they_cannot_place():
    model = _model("flux")
    config = dict(model.config)
    original = flux_names.to_original(model.state_dict(), config)
    with pytest.raises(ValueError, match=r"1 keys are not in the original layout.*double_blocks\.7\.img_attn\.qkv"):
        flux_names.convert_checkpoint({**original, "double_blocks.7.img_attn.qkv.weight": torch.zeros(1)}, config)
    narrow = {**original, "single_blocks.0.linear1.weight": torch.zeros(100, 32)}
    with pytest.raises(ValueError, match=r"linear1\.weight has 100 rows where this config has 224"):
        flux_names.convert_checkpoint(narrow, config)
    with pytest.raises(ValueError, match=r"keys are not in the diffusers layout.*extra\.weight"):
        flux_names.to_original({**model.state_dict(), "extra.weight": torch.zeros(1)}, config)


# ------------------------------------------------------------------------------------- LoRA formats
def _originals(kind: str, model: Any) -> dict[str, tuple[Target, ...]]:
    """Original module name -> targets (Qwen-Image's original names are the diffusers ones)."""
    names = dict(get_family(FAMILY[kind]).original_names("transformer", dict(model.config)))
    if not names:
        names = {n: (Target(n),) for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
    return names


def _random_lora(kind: str, model: Any, seed: int = 3) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One (A, B) per original module, B with the fused layer's rows."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, targets in _originals(kind, model).items():
        layer = model.get_submodule(targets[0].module)
        if isinstance(layer, torch.nn.Conv2d):
            n_in, n_out = (layer.in_channels, *layer.kernel_size), layer.out_channels
        else:
            n_in, n_out = (layer.in_features,), layer.out_features
        rows = max((t.rows[1] for t in targets if t.rows), default=n_out)
        out[name] = (torch.randn(RANK, *n_in, generator=g) * 0.3, torch.randn(rows, RANK, generator=g) * 0.3)
    return out


def _cut(t: torch.Tensor, target: Target) -> torch.Tensor:
    part = t if target.rows is None else t[target.rows[0]:target.rows[1]]
    return flux_names.swap_halves(part) if target.swap else part


def _expected(kind: str, model: Any, lora) -> dict[str, torch.Tensor]:
    """Hand-computed per-module deltas: scale * B @ A of the original layer, cut per target."""
    out = {}
    for name, targets in _originals(kind, model).items():
        a, b = lora[name]
        full = SCALE * b @ a.reshape(RANK, -1)
        for t in targets:
            out[t.module] = _cut(full, t).reshape(model.get_submodule(t.module).weight.shape)
    return out


def _flat(name: str) -> str:
    return name.replace(".", "_")


def _kohya(lora, prefix="lora_unet_"):
    state = {}
    for name, (a, b) in lora.items():
        state |= {f"{prefix}{_flat(name)}.lora_down.weight": a, f"{prefix}{_flat(name)}.lora_up.weight": b,
                  f"{prefix}{_flat(name)}.alpha": torch.tensor(ALPHA)}
    return state


def _comfy(lora, down=".lora_A.weight", up=".lora_B.weight"):
    state = {}
    for name, (a, b) in lora.items():
        state |= {f"diffusion_model.{name}{down}": a, f"diffusion_model.{name}{up}": b,
                  f"diffusion_model.{name}.alpha": torch.tensor(ALPHA)}
    return state


def _per_target(kind, model, lora):
    """(diffusers module, A, B cut for it) for every target."""
    for name, targets in _originals(kind, model).items():
        a, b = lora[name]
        for t in targets:
            yield t.module, a, _cut(b, t)


def _diffusers(kind, model, lora):
    """ai-toolkit / diffusers: peft keys on diffusers names, alpha folded into B (no alpha keys)."""
    state = {}
    for module, a, b in _per_target(kind, model, lora):
        state |= {f"transformer.{module}.lora_A.weight": a, f"transformer.{module}.lora_B.weight": SCALE * b}
    return state


def _onetrainer(kind, model, lora):
    state = {}
    for module, a, b in _per_target(kind, model, lora):
        key = f"lora_transformer_{_flat(module)}"
        state |= {f"{key}.lora_down.weight": a, f"{key}.lora_up.weight": b, f"{key}.alpha": torch.tensor(ALPHA)}
    return state


def _xlabs(lora, d: int):
    """XLabs: the attention layers only, no alpha (scale 1, so the scale is folded into up)."""
    state = {}
    for name, (a, b) in lora.items():
        block, _, rest = name.partition(".")
        block = f"{block}.{rest.split('.')[0]}"
        layer = {"img_attn.qkv": ("qkv_lora1", b), "txt_attn.qkv": ("qkv_lora2", b), "img_attn.proj": ("proj_lora1", b),
                 "txt_attn.proj": ("proj_lora2", b), "linear1": ("qkv_lora", b[:3 * d]), "linear2": ("proj_lora", b)}
        found = layer.get(name.removeprefix(block + "."))
        if found and name.startswith(("double_blocks.", "single_blocks.")):
            key = f"{block}.processor.{found[0]}"
            state |= {f"{key}.down.weight": a, f"{key}.up.weight": SCALE * found[1]}
    return state


def _formats(kind: str, model: Any, lora) -> dict[str, dict[str, torch.Tensor]]:
    if kind == "flux":
        d = FLUX["num_attention_heads"] * FLUX["attention_head_dim"]
        return {"kohya": _kohya(lora), "diffusers": _diffusers(kind, model, lora), "comfyui": _comfy(lora),
                "comfyui_down": _comfy(lora, ".lora_down.weight", ".lora_up.weight"),
                "onetrainer": _onetrainer(kind, model, lora), "xlabs": _xlabs(lora, d)}
    if kind == "sd3":
        return {"kohya": _kohya(lora), "diffusers": _diffusers(kind, model, lora), "comfyui": _comfy(lora)}
    return {"diffusers": _diffusers(kind, model, lora), "comfyui": _comfy(lora, ".lora_down.weight", ".lora_up.weight"),
            "comfyui_A": _comfy(lora), "kohya": _kohya(lora)}


def _deltas(model: Any, adapter: str) -> dict[str, torch.Tensor]:
    from peft.tuners.lora import LoraLayer

    return {n: m.get_delta_weight(adapter).detach().reshape(m.get_base_layer().weight.shape)
            for n, m in model.named_modules() if isinstance(m, LoraLayer) and adapter in m.lora_A}


STYLES = {"kohya": "kohya", "diffusers": "diffusers", "comfyui": "comfyui", "comfyui_down": "comfyui",
          "comfyui_A": "comfyui", "onetrainer": "onetrainer", "xlabs": "xlabs"}
MAX_DELTA: dict[str, float] = {}


@pytest.mark.parametrize("kind", ["flux", "sd3", "qwen"])
def test_every_format_loads_to_the_hand_computed_deltas(kind, tmp_path):
    model = _model(kind)
    entry = _entry(kind, model)
    lora = _random_lora(kind, model)
    expected = _expected(kind, model, lora)
    base = _forward(kind, model)
    outputs = {}
    for fmt, state in _formats(kind, model, lora).items():
        info = _load(entry, state, tmp_path, f"{kind}-{fmt}")
        assert not info.unmatched, (fmt, info.unmatched[:5])
        assert info.style == STYLES[fmt] and info.family == get_family(FAMILY[kind]).title, info.report()
        got = _deltas(model, info.name)
        want = expected
        if fmt == "xlabs":  # the attention layers only: q/k/v of linear1, not its MLP rows
            want = {k: v for k, v in expected.items()
                    if ".attn." in k or (k.startswith("single") and k.endswith("proj_out"))}
            assert any(k.endswith("proj_mlp") for k in expected) and not any(k.endswith("proj_mlp") for k in got)
        assert set(got) == set(want), (fmt, sorted(set(got) ^ set(want))[:6])
        assert info.matched_modules == len(want)
        worst = max(float((got[k] - want[k]).abs().max()) for k in want)
        MAX_DELTA[f"{kind}/{fmt}"] = worst
        assert worst < 1e-5, (fmt, worst)
        activate(entry, [(info.name, 1.0)])
        outputs[fmt] = _forward(kind, model)
        activate(entry, [])
        assert float((outputs[fmt] - base).abs().max()) > 1e-3, fmt
    assert torch.equal(_forward(kind, model), base)  # no adapter active: the base again
    full = [o for f, o in outputs.items() if f != "xlabs"]
    assert all(torch.allclose(o, full[0], atol=1e-4) for o in full)
    print(f"max |delta - hand-computed| {kind}:", {k: f"{v:.1e}" for k, v in MAX_DELTA.items() if k.startswith(kind)})


def test_fused_qkv_and_linear1_splits_and_swapped_final_halves(tmp_path):
    """Spelled out for one module of each kind, from the kohya file."""
    model = _model("flux")
    entry = _entry("flux", model)
    lora = _random_lora("flux", model)
    info = _load(entry, _kohya(lora), tmp_path)
    got = _deltas(model, info.name)
    d, mlp = 32, 128
    a, b = lora["double_blocks.0.img_attn.qkv"]
    torch.testing.assert_close(got["transformer_blocks.0.attn.to_v"], SCALE * b[2 * d:] @ a, rtol=0, atol=1e-6)
    a, b = lora["single_blocks.1.linear1"]
    torch.testing.assert_close(got["single_transformer_blocks.1.proj_mlp"], SCALE * b[3 * d:3 * d + mlp] @ a,
                               rtol=0, atol=1e-6)
    a, b = lora["final_layer.adaLN_modulation.1"]
    full = SCALE * b @ a  # BFL: (shift, scale); diffusers' norm_out.linear: (scale, shift)
    torch.testing.assert_close(got["norm_out.linear"][:d], full[d:], rtol=0, atol=1e-6)
    torch.testing.assert_close(got["norm_out.linear"][d:], full[:d], rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------ DoRA
def _dora_reference(layer: Any, delta: torch.Tensor, magnitude: torch.Tensor, axis: str,
                    whole: torch.Tensor | None = None) -> torch.Tensor:
    """W' of a DoRA merge: the magnitude over the norm of W + dW per output row ("out") or per
    input column ("in", of the whole fused layer `whole` when given)."""
    w = layer.get_base_layer().weight.detach() + delta
    if axis == "out":
        return magnitude.reshape(-1, 1) * w / torch.linalg.norm(w, dim=1, keepdim=True)
    norm = torch.linalg.norm(w if whole is None else whole, dim=0, keepdim=True)
    return w * magnitude.reshape(1, -1) / norm


def test_dora_magnitudes_are_applied_and_split_like_their_layer(tmp_path):
    model = _model("flux")
    entry = _entry("flux", model)
    lora = _random_lora("flux", model)
    plain = _kohya(lora)
    g = torch.Generator().manual_seed(11)
    d = 32
    mags = {"double_blocks.0.img_attn.qkv": torch.rand(3 * d, 1, generator=g) + 0.5,  # output axis
            "final_layer.adaLN_modulation.1": torch.rand(2 * d, 1, generator=g) + 0.5,  # output axis, swapped
            "single_blocks.0.linear1": torch.rand(1, d, generator=g) + 0.5,  # input axis, fused
            "final_layer.linear": torch.rand(1, d, generator=g) + 0.5}  # input axis
    dora = {**plain, **{f"lora_unet_{_flat(n)}.dora_scale": m for n, m in mags.items()}}
    p_info = _load(entry, plain, tmp_path, "plain")
    info = _load(entry, dora, tmp_path, "dora")
    assert info.dora and not p_info.dora and "DoRA" in info.report()
    activate(entry, [(p_info.name, 1.0)])
    out_plain = _forward("flux", model)
    activate(entry, [(info.name, 1.0)])
    out_dora = _forward("flux", model)
    assert float((out_dora - out_plain).abs().mean()) > 1e-3
    expected = _expected("flux", model, lora)
    x = torch.randn(5, d, generator=g)

    def check(module: str, weight: torch.Tensor) -> None:
        layer = model.get_submodule(module)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, weight, layer.get_base_layer().bias),
                                       rtol=1e-5, atol=1e-5)

    qkv = mags["double_blocks.0.img_attn.qkv"]
    check("transformer_blocks.0.attn.to_k",
          _dora_reference(model.get_submodule("transformer_blocks.0.attn.to_k"),
                          expected["transformer_blocks.0.attn.to_k"], qkv[d:2 * d], "out"))
    ada = flux_names.swap_halves(mags["final_layer.adaLN_modulation.1"])
    check("norm_out.linear", _dora_reference(model.get_submodule("norm_out.linear"), expected["norm_out.linear"],
                                             ada, "out"))
    check("proj_out", _dora_reference(model.get_submodule("proj_out"), expected["proj_out"],
                                      mags["final_layer.linear"], "in"))
    parts = ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"]
    whole = torch.cat([model.get_submodule(f"single_transformer_blocks.0.{p}").get_base_layer().weight.detach()
                       + expected[f"single_transformer_blocks.0.{p}"] for p in parts])
    for p in ("attn.to_q", "proj_mlp"):  # normalised by the fused layer's columns, as a fused loader does
        name = f"single_transformer_blocks.0.{p}"
        check(name, _dora_reference(model.get_submodule(name), expected[name], mags["single_blocks.0.linear1"],
                                    "in", whole))
    # a module of the same file without a magnitude stays a plain LoRA
    check("transformer_blocks.1.attn.to_q", model.get_submodule("transformer_blocks.1.attn.to_q").get_base_layer()
          .weight.detach() + expected["transformer_blocks.1.attn.to_q"])
    activate(entry, [])


@pytest.mark.parametrize("kind, key", [("sd3", "diffusers"), ("qwen", "comfyui")])
def test_dora_is_kept_for_sd3_and_qwen(kind, key, tmp_path):
    model = _model(kind)
    entry = _entry(kind, model)
    lora = _random_lora(kind, model)
    plain = _formats(kind, model, lora)[key]
    g = torch.Generator().manual_seed(5)
    dora = dict(plain)
    for k, v in plain.items():
        if k.endswith((".lora_B.weight", ".lora_up.weight")):
            stem = k.rsplit(".", 2)[0]
            suffix = ".lora_magnitude_vector" if key == "diffusers" else ".dora_scale"
            dora[stem + suffix] = torch.rand(v.shape[0], *(() if key == "diffusers" else (1,)), generator=g) + 0.5
    outs = {}
    for name, state in (("plain", plain), ("dora", dora)):
        info = _load(entry, state, tmp_path, name)
        assert info.dora == (name == "dora") and not info.unmatched
        activate(entry, [(info.name, 1.0)])
        outs[name] = _forward(kind, model)
    activate(entry, [])
    assert float((outs["dora"] - outs["plain"]).abs().mean()) > 1e-3


# ------------------------------------------------------------------------- refusals and reports
def test_a_lora_of_another_family_is_refused_in_one_line(tmp_path):
    flux = _model("flux")
    # block layers only: SD3 has a `final_layer.linear` too, which the tiny models size alike
    flux_lora = _kohya({k: v for k, v in _random_lora("flux", flux).items() if "_blocks." in k})
    sd3_entry = _entry("sd3", _model("sd3"))
    with pytest.raises(ValueError) as err:
        _load(sd3_entry, flux_lora, tmp_path, "flux-style")
    text = str(err.value)
    assert "\n" not in text and text.startswith("flux-style.safetensors: none of its")
    assert "Stable Diffusion 3.5 model" in text
    sd_lora = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 4)}
    with pytest.raises(ValueError, match=r"^sd15\.safetensors: none of its 2 keys match a module of this Flux\.1 mo"):
        _load(_entry("flux", flux), sd_lora, tmp_path, "sd15")
    # same module names, other sizes (a Qwen-Image diffusers file on Flux): refused before injection
    qwen = _model("qwen")
    qwen_lora = _diffusers("qwen", qwen, _random_lora("qwen", qwen))
    entry = _entry("flux", flux)
    with pytest.raises(ValueError, match=r"^qwen\.safetensors: \d+ of its modules do not fit this Flux\.1 model"):
        _load(entry, qwen_lora, tmp_path, "qwen")
    assert not getattr(flux, "peft_config", {})


def test_unmatched_keys_are_reported(tmp_path):
    model = _model("flux")
    state = _kohya(_random_lora("flux", model))
    state["lora_unet_no_such_block_qkv.lora_down.weight"] = torch.zeros(4, 8)
    state["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = torch.zeros(4, 8)
    info = _load(_entry("flux", model), state, tmp_path)
    assert len(info.unmatched) == 2 and any("no_such_block" in k for k in info.unmatched)
    report = info.report()
    assert f"2 of {len(state)} keys matched nothing" in report and "kohya LoRA" in report and "\n" not in report


def test_xlabs_lora_with_a_partial_layer_that_fits_nothing_is_refused(tmp_path):
    model = _model("flux")
    state = {"single_blocks.0.processor.qkv_lora.down.weight": torch.zeros(4, 32),
             "single_blocks.0.processor.qkv_lora.up.weight": torch.zeros(50, 4)}  # 50 rows: no run of targets
    with pytest.raises(ValueError, match="lora_up has 50 rows, the layer 224"):
        _load(_entry("flux", model), state, tmp_path)


# ----------------------------------------------------------------------------- weights are scales
def test_a_weight_change_is_a_scale_change_not_a_reload(tmp_path):
    """A LoRA on the final linear layer only: the model's output is affine in that layer's weight,
    so weight 0.5 must give exactly half the change of weight 1."""
    model = _model("flux")
    entry = _entry("flux", model)
    a, b = _random_lora("flux", model)["final_layer.linear"]
    path = tmp_path / "final.safetensors"
    save_file(_kohya({"final_layer.linear": (a, b)}), str(path))
    info = ensure_adapter(entry, path, "final")
    activate(entry, [])  # a freshly injected adapter is on until a stack is activated
    base = _forward("flux", model)
    outs = {}
    for w in (1.0, 0.5, 1.0, 0.0):
        assert ensure_adapter(entry, path, "final").name == info.name  # already there: nothing reloads
        activate(entry, [(info.name, w)])
        outs[w] = _forward("flux", model)
    assert entry.state["lora_loads"] == 1
    torch.testing.assert_close(outs[0.5] - base, 0.5 * (outs[1.0] - base), rtol=1e-4, atol=1e-5)
    assert float((outs[1.0] - base).abs().max()) > 1e-3
    assert torch.equal(outs[0.0], base)
