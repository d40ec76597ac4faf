"""LoRAs loaded into an offloaded model: the adapter's weights reach the layers that run.

Sequential offload keeps a component's weights in accelerate hooks (its parameters sit on the
meta device); without taking the hooks off first, peft's new layers land there too and the
file's weights load as a silent no-op. Group offload has to regroup so the new layers move with
their blocks. Both are put on with the CPU as the device here (the one device these tests have).
"""

from __future__ import annotations

import torch

from tests.diffusion.conftest import direct_ctx


def _sd_entry(engine, tiny_sd_dir):
    from nodes.diffusion.model_nodes import load_model

    model = load_model(checkpoint=str(tiny_sd_dir), ctx=direct_ctx(engine))
    return engine.services.get("models").entry(model)


def _with_lora(entry, lora):
    from app.engine.fingerprint import fingerprint
    from nodes.diffusion.loras import activate, ensure_adapter

    info = ensure_adapter(entry, lora, fingerprint(lora))
    activate(entry, [(info.name, 1.0)])
    return info


def _unet_out(unet):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, unet.config.in_channels, 8, 8, generator=g)
    text = torch.randn(1, 4, unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([10]), encoder_hidden_states=text).sample


def test_lora_into_a_sequentially_offloaded_model_keeps_its_weights(engine, fresh_engine, tiny_sd_dir, tiny_lora_kohya):
    """Sampling itself is not run: accelerate's sequential offload with the CPU as execution
    device fails inside any forward here, with or without a LoRA."""
    from accelerate.utils.modeling import get_state_dict_offloaded_model

    plain = _sd_entry(engine, tiny_sd_dir)
    name = _with_lora(plain, tiny_lora_kohya).name  # a shared model may hold other tests' LoRAs too
    want = {c: {k: v.clone() for k, v in getattr(plain.pipe, c).state_dict().items()
                if ".lora_" in k and k.endswith(f".{name}.weight")}
            for c in ("unet", "text_encoder")}
    assert want["unet"] and want["text_encoder"]

    entry = _sd_entry(fresh_engine, tiny_sd_dir)
    entry.pipe.enable_sequential_cpu_offload(device="cpu")
    _with_lora(entry, tiny_lora_kohya)
    for comp, lora in want.items():
        module = getattr(entry.pipe, comp)
        assert all(p.device.type == "meta" for p in module.parameters())  # still offloaded, LoRA too
        got = get_state_dict_offloaded_model(module)
        assert all(torch.equal(got[k], v) for k, v in lora.items()), comp
        assert any(v.abs().sum() > 0 for v in lora.values())


def test_lora_into_a_group_offloaded_model_changes_what_it_computes(engine, fresh_engine, tiny_sd_dir, tiny_lora_kohya):
    """On the CPU the groups do not move, so this shows the regrouped model computes what the plain
    one with the LoRA does; that the new layers travel with their blocks is seen on CUDA only."""
    from nodes.diffusion.loras import activate

    plain = _sd_entry(engine, tiny_sd_dir)
    activate(plain, [])  # a shared model: another test may have left a LoRA on
    base = _unet_out(plain.pipe.unet)
    _with_lora(plain, tiny_lora_kohya)
    want = _unet_out(plain.pipe.unet)
    assert not torch.allclose(want, base)

    entry = _sd_entry(fresh_engine, tiny_sd_dir)
    entry.pipe.unet.enable_group_offload(onload_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                                         offload_type="block_level", num_blocks_per_group=1)
    assert torch.allclose(_unet_out(entry.pipe.unet), base, atol=1e-5)
    _with_lora(entry, tiny_lora_kohya)
    assert torch.allclose(_unet_out(entry.pipe.unet), want, atol=1e-5)
