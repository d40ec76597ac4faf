"""The kohya exporter, key by key: real alpha, lora_te_ / lora_te1_ / lora_te2_, SGM names for
SDXL, input-axis dora_scale that ComfyUI's formula applies exactly, string metadata and hash."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from app.training import adapters
from app.training.export import (
    AdapterExport,
    export_lora,
    kohya_state_dict,
    kohya_unet_key,
    peft_state_dict,
    sgm_unet_name,
    tensor_hash,
)
from tests.tiny_models import _text_config, make_sd_unet, make_sdxl_unet


def _adapted(model, kind: str, dora: bool = False, alpha: float = 2.0, seed: int = 0):
    torch.manual_seed(seed)
    adapters.add_adapter(model, rank=4, alpha=alpha, targets=adapters.target_modules(kind, "attention"), dora=dora)
    with torch.no_grad():  # a trained-looking adapter: B no longer zero, magnitudes moved
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.3)
            if ".lora_magnitude_vector." in n:
                p.mul_(1 + 0.2 * torch.rand_like(p))
    return adapters.layer_weights(model)


def test_sgm_names_match_sdxl_checkpoints():
    assert sgm_unet_name("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", 2) == \
        "input_blocks.4.1.transformer_blocks.0.attn1.to_q"
    assert sgm_unet_name("down_blocks.2.attentions.1.proj_in", 2) == "input_blocks.8.1.proj_in"
    assert sgm_unet_name("mid_block.attentions.0.transformer_blocks.0.attn2.to_k", 2) == \
        "middle_block.1.transformer_blocks.0.attn2.to_k"
    assert sgm_unet_name("up_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0", 2) == \
        "output_blocks.0.1.transformer_blocks.0.attn1.to_out.0"
    assert sgm_unet_name("up_blocks.1.attentions.2.proj_out", 2) == "output_blocks.5.1.proj_out"
    assert sgm_unet_name("down_blocks.0.resnets.1.conv1", 2) == "input_blocks.2.0.in_layers.2"
    assert sgm_unet_name("down_blocks.0.downsamplers.0.conv", 2) == "input_blocks.3.0.op"
    assert sgm_unet_name("up_blocks.0.upsamplers.0.conv", 2, ("CrossAttnUpBlock2D",)) == "output_blocks.2.2.conv"
    with pytest.raises(ValueError, match="cannot name"):
        sgm_unet_name("something.else", 2)


# Names of real SDXL / SD 1.x checkpoints (model.diffusion_model.*) beyond the attention layers.
_SDXL_LDM = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
             "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
             "add_embedding.linear_2": "label_emb.0.2", "down_blocks.0.downsamplers.0.conv": "input_blocks.3.0.op",
             "down_blocks.1.resnets.0.conv_shortcut": "input_blocks.4.0.skip_connection",
             "down_blocks.1.resnets.0.time_emb_proj": "input_blocks.4.0.emb_layers.1",
             "mid_block.resnets.1.conv2": "middle_block.2.out_layers.3",
             "up_blocks.0.upsamplers.0.conv": "output_blocks.2.2.conv",
             "up_blocks.1.upsamplers.0.conv": "output_blocks.5.2.conv",
             "up_blocks.2.resnets.2.conv_shortcut": "output_blocks.8.0.skip_connection", "conv_out": "out.2"}
_SD_LDM = {"conv_in": "input_blocks.0.0", "down_blocks.2.downsamplers.0.conv": "input_blocks.9.0.op",
           "up_blocks.0.upsamplers.0.conv": "output_blocks.2.1.conv",
           "up_blocks.1.upsamplers.0.conv": "output_blocks.5.2.conv",
           "up_blocks.3.attentions.2.proj_out": "output_blocks.11.1.proj_out", "conv_out": "out.2"}


@pytest.mark.parametrize("make, known", [(make_sd_unet, _SD_LDM), (make_sdxl_unet, _SDXL_LDM)],
                         ids=["sd", "sdxl"])
def test_every_unet_layer_exported_with_sgm_names_reads_back_as_itself(make, known):
    """The exporter and the LoRA reader share one diffusers->LDM table: every Linear/Conv2d of the
    U-Net (not only the attention layers training targets) is written under its SGM name and the
    reader resolves that key to the same module, conv_in, embeddings and resamplers included."""
    from types import SimpleNamespace

    from nodes.diffusion.lora_keys import module_tables, parse_lora

    unet = make()
    names = [n for n, m in unet.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    layers = {n: adapters.LayerWeights(torch.zeros(1, 1), torch.zeros(1, 1), 1.0) for n in names}
    table = module_tables(SimpleNamespace(unet=unet))["unet"]
    types = tuple(unet.config.up_block_types)
    for name, ldm in known.items():
        assert sgm_unet_name(name, 2, types) == ldm
    for family in ("sdxl", "sd1"):  # SGM names for SDXL; SD 1.x keeps diffusers names
        sd = kohya_state_dict(AdapterExport(family, layers, up_block_types=types))
        assert len(sd) == 3 * len(names)
        for name in names:
            key = kohya_unet_key(name, family, 2, types)
            assert table.flat[key[len("lora_unet_"):]] == name, key
        parsed = parse_lora(sd, {"unet": table})
        assert parsed.unmatched == [] and sorted(parsed.modules["unet"]) == sorted(names)


def test_sdxl_unet_keys_agree_with_the_ldm_checkpoint_layout():
    """Every exported SDXL key names a real module of the same UNet saved in LDM layout."""
    from tests.tiny_models import unet_to_ldm

    unet = make_sdxl_unet()
    ldm = {k[len("model.diffusion_model."):].rsplit(".", 1)[0].replace(".", "_")
           for k in unet_to_ldm(unet.state_dict(), dict(unet.config))}
    layers = _adapted(unet, "unet")
    a = AdapterExport("sdxl", layers, layers_per_block=2, up_block_types=tuple(unet.config.up_block_types))
    keys = {k.rsplit(".", 2)[0] if k.endswith("weight") else k.rsplit(".", 1)[0] for k in kohya_state_dict(a)}
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q" in keys
    assert "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k" in keys
    assert "lora_unet_output_blocks_0_1_transformer_blocks_0_attn1_to_out_0" in keys
    assert all(k.startswith("lora_unet_") and k[len("lora_unet_"):] in ldm for k in keys)
    assert len(keys) == len(layers)


def test_sd15_keys_alpha_and_text_encoder_prefix():
    from transformers import CLIPTextModel

    unet = make_sd_unet()
    te = CLIPTextModel(_text_config(100))
    a = AdapterExport("sd1", _adapted(unet, "unet", alpha=2.0), [_adapted(te, "te", alpha=2.0)])
    sd = kohya_state_dict(a)
    k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    assert sd[k + ".lora_down.weight"].shape == (4, 16) and sd[k + ".lora_up.weight"].shape == (16, 4)
    assert float(sd[k + ".alpha"]) == 2.0  # the real alpha, not the rank (diffusers' converter writes 4)
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in sd
    assert not any(key.startswith(("lora_te1_", "lora_te_encoder_")) for key in sd)
    assert not any(key.endswith(".dora_scale") for key in sd)


def test_sdxl_text_encoders_are_te1_and_te2():
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    te1 = CLIPTextModel(_text_config(100))
    te2 = CLIPTextModelWithProjection(_text_config(100, projection=True))
    unet = make_sdxl_unet()
    a = AdapterExport("sdxl", _adapted(unet, "unet"), [_adapted(te1, "te"), _adapted(te2, "te")],
                      up_block_types=tuple(unet.config.up_block_types))
    sd = kohya_state_dict(a)
    assert "lora_te1_text_model_encoder_layers_1_self_attn_out_proj.alpha" in sd
    assert "lora_te2_text_model_encoder_layers_1_self_attn_out_proj.alpha" in sd
    assert not any(k.startswith(("lora_te_", "lora_te2_text_model_text_model")) for k in sd)
    peft = peft_state_dict(a)
    assert "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight" in peft
    assert "text_encoder.encoder.layers.0.self_attn.q_proj.lora_B.weight" in peft


def _comfy_weight_decompose(weight, down, up, alpha, dora_scale):
    """ComfyUI's `weight_decompose` (comfy/weight_adapter/base.py) for strength 1."""
    lora_diff = (up @ down) * (alpha / down.shape[0])
    weight_calc = weight + lora_diff
    if dora_scale.shape[0] == weight_calc.shape[0]:  # output axis: ComfyUI normalises by the ORIGINAL weight
        weight_norm = weight.reshape(weight.shape[0], -1).norm(dim=1, keepdim=True)
    else:  # input axis: the norm of W + dW per input column
        weight_norm = weight_calc.transpose(0, 1).reshape(weight_calc.shape[1], -1).norm(dim=1, keepdim=True)
        weight_norm = weight_norm.transpose(0, 1)
    weight_norm = weight_norm + torch.finfo(weight.dtype).eps
    return weight_calc * (dora_scale / weight_norm)


def test_dora_scale_is_input_axis_and_comfyui_formula_reproduces_the_trained_layer():
    unet = make_sd_unet()
    layers = _adapted(unet, "unet", dora=True)
    sd = kohya_state_dict(AdapterExport("sd1", layers))
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"  # 32 inputs -> 16 outputs
    key = "lora_unet_" + name.replace(".", "_")
    assert sd[key + ".dora_scale"].shape == (1, 32)
    layer = unet.get_submodule(name)
    x = torch.randn(3, 32)
    with torch.no_grad():
        trained = layer(x)
        w = _comfy_weight_decompose(layer.get_base_layer().weight, sd[key + ".lora_down.weight"],
                                    sd[key + ".lora_up.weight"], float(sd[key + ".alpha"]), sd[key + ".dora_scale"])
        comfy = x @ w.T  # to_k has no bias
    torch.testing.assert_close(comfy, trained, atol=2e-5, rtol=1e-4)
    plain = x @ (layer.get_base_layer().weight + layers[name].up @ layers[name].down * 0.5).T
    assert (plain - trained).abs().max() > 1e-3  # the magnitudes matter


def test_input_axis_dora_loads_back_into_a_fresh_model():
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    unet = make_sd_unet()
    layers = _adapted(unet, "unet", dora=True)
    fresh = make_sd_unet()
    fresh.load_state_dict({k: v for k, v in unet.state_dict().items() if "lora" not in k and "base_layer" not in k}
                          | {k.replace(".base_layer", ""): v for k, v in unet.state_dict().items()
                             if ".base_layer." in k})
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=2.0, target_modules=list(layers)), fresh, "loaded")
    set_peft_model_state_dict(fresh, {f"{n}.lora_A.weight": w.down for n, w in layers.items()}
                              | {f"{n}.lora_B.weight": w.up for n, w in layers.items()}, adapter_name="loaded")
    for n, w in layers.items():
        adapters.set_input_axis_dora(fresh.get_submodule(n), "loaded", w.magnitude.reshape(1, -1))
    x = torch.randn(2, 4, 8, 8)
    t = torch.tensor([10, 500])
    ctx = torch.randn(2, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x, t, ctx).sample, unet(x, t, ctx).sample, atol=1e-5, rtol=1e-4)


def test_files_have_string_metadata_hash_and_a_peft_twin(tmp_path):
    unet = make_sd_unet()
    a = AdapterExport("sd1", _adapted(unet, "unet"), targets={"unet": list(adapters.UNET_ATTENTION)})
    kohya, twin = export_lora(a, tmp_path / "style.safetensors", {"ss_network_dim": "4", "modelspec.title": "t"})
    with safe_open(str(kohya), framework="pt") as f:
        meta = f.metadata()
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["sshs_model_hash"] == tensor_hash(load_file(str(kohya)))
    assert meta["modelspec.hash_sha256"] == "0x" + meta["sshs_model_hash"]
    assert twin.name == "style.peft.safetensors"
    with safe_open(str(twin), framework="pt") as f:
        tmeta = f.metadata()
        keys = list(f.keys())
    cfg = json.loads(tmeta["lora_adapter_metadata"])
    assert cfg["unet.r"] == 4 and cfg["unet.lora_alpha"] == 4 and cfg["unet.use_dora"] is False  # scale in B
    assert tmeta["modelspec.title"] == "t"
    assert "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight" in keys


def test_input_axis_dora_has_no_peft_form():
    """peft's DoRA is output-axis: a peft state dict of the trainer's DoRA would be refused by
    diffusers (magnitudes (1, in) where it wants (out,)), or wrong if reshaped, so none is made."""
    a = AdapterExport("sd1", _adapted(make_sd_unet(), "unet", dora=True))
    with pytest.raises(ValueError, match="input channels"):
        peft_state_dict(a)
