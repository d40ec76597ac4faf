"""The diffusers/peft twin of an exported LoRA, checked with diffusers itself.

Every twin the exporter writes must load through `pipe.load_lora_weights` and give what imagebash
gives the kohya file (and the trained model itself); an input-axis DoRA, which peft cannot
express, gets no twin, and the export log says why.
"""

from __future__ import annotations

import pytest
import torch

from app.training import adapters
from app.training.export import NO_DORA_TWIN, AdapterExport, export_lora, peft_path_for
from tests.tiny_models import make_sd_pipeline, make_sdxl_pipeline

PROMPT = "zzstyle, stripes"


def _pipe(family: str, folder):
    return make_sd_pipeline(folder) if family == "sd1" else make_sdxl_pipeline(folder)


def _text_encoders(pipe) -> list:
    return [te for te in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if te is not None]


def _adapt(pipe, dora: bool) -> AdapterExport:
    """Adapters on the U-Net and every text encoder, moved off their init as training would."""
    torch.manual_seed(0)
    models = [("unet", pipe.unet)] + [("te", te) for te in _text_encoders(pipe)]
    for kind, model in models:
        adapters.add_adapter(model, rank=4, alpha=2.0, targets=adapters.target_modules(kind, "attention"), dora=dora)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if ".lora_B." in n:
                    p.normal_(0, 0.2)
                if ".lora_magnitude_vector." in n:
                    p.mul_(1 + 0.3 * torch.rand_like(p))
    unet = pipe.unet
    return AdapterExport(
        family="sdxl" if hasattr(pipe, "text_encoder_2") else "sd1", unet=adapters.layer_weights(unet),
        text_encoders=[adapters.layer_weights(te) for te in _text_encoders(pipe)],
        layers_per_block=int(unet.config.layers_per_block), up_block_types=tuple(unet.config.up_block_types),
        targets={kind: adapters.target_modules(kind, "attention") for kind in ("unet", "te")})


def _latents(pipe) -> torch.Tensor:
    """Final latents (no VAE clipping to hide a difference) of a 2-step 64 px run."""
    with torch.no_grad():
        return pipe(PROMPT, width=64, height=64, num_inference_steps=2, guidance_scale=7.0,
                    generator=torch.Generator("cpu").manual_seed(1), output_type="latent").images


def _imagebash_latents(pipe, kohya) -> tuple[torch.Tensor, torch.Tensor]:
    """(with the kohya file at weight 1, at weight 0) through imagebash's own LoRA loading."""
    from app.engine.models import Entry
    from nodes.diffusion.loras import activate, ensure_adapter

    entry = Entry("k", "tiny", "sdxl" if hasattr(pipe, "text_encoder_2") else "sd1", pipe, "cpu", 0)
    info = ensure_adapter(entry, kohya, "h")
    assert not info.unmatched, info.unmatched
    activate(entry, [(info.name, 1.0)])
    with_lora = _latents(pipe)
    activate(entry, [(info.name, 0.0)])
    return with_lora, _latents(pipe)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_every_twin_loads_in_diffusers_with_the_effect_of_the_kohya_file(tmp_path, family, dora):
    trained = _pipe(family, tmp_path / "a")
    a = _adapt(trained, dora)
    assert a.is_dora == dora
    out = tmp_path / "out" / "style.safetensors"
    out.parent.mkdir()
    peft_path_for(out).write_bytes(b"an earlier export's twin")
    logs: list[str] = []
    kohya, twin = export_lora(a, out, {"modelspec.title": "t"}, log=logs.append)

    expected = _latents(trained)
    mine, base = _imagebash_latents(_pipe(family, tmp_path / "b"), kohya)
    torch.testing.assert_close(mine, expected, atol=2e-4, rtol=1e-4)  # the kohya file is the trained model
    assert (mine - base).abs().mean() > 1e-2  # ...and the adapter matters

    twins = sorted(out.parent.glob("*.peft.safetensors"))
    if dora:
        assert twin is None and twins == []
        assert len(logs) == 1 and NO_DORA_TWIN in logs[0] and "old one deleted" in logs[0], logs
    else:
        assert twins == [twin] and logs == []
    for path in twins:  # every twin written: diffusers' own loader, same effect as imagebash's
        pipe = _pipe(family, tmp_path / "c")
        pipe.load_lora_weights(str(path))
        torch.testing.assert_close(_latents(pipe), mine, atol=2e-4, rtol=1e-4)

