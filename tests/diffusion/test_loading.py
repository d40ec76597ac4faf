"""Load Model: diffusers folders, single-file checkpoints, SDXL, refusals, the models folder."""

from __future__ import annotations

import numpy as np
import pytest

from app.engine.fingerprint import short_hash
from nodes.diffusion.catalog import list_checkpoints, list_loras
from tests.diffusion.conftest import make_graph, run_ok, txt2img_graph


def test_single_file_checkpoint_gives_the_same_pixels_as_the_folder(engine, tiny_sd_dir, tiny_sd_ckpt):
    folder = run_ok(engine, txt2img_graph(tiny_sd_dir, seed=4), targets=["load", "gen"])
    g = txt2img_graph(tiny_sd_ckpt, seed=4)
    g.set_param("load", "config", str(tiny_sd_dir))
    single = run_ok(engine, g, targets=["load", "gen"])
    model = single.output("load")
    assert model.family == "sd1" and model.hash == short_hash(tiny_sd_ckpt)
    np.testing.assert_array_equal(single.output("gen"), folder.output("gen"))
    assert engine.services.get("models").loads == 2


def test_sdxl_folder_is_detected_and_generates(engine, tiny_sdxl_dir, tiny_sd_dir):
    result = run_ok(engine, txt2img_graph(tiny_sdxl_dir, seed=2), targets=["load", "gen"])
    assert result.output("load").family == "sdxl"
    img = result.output("gen")
    assert img.shape == (1, 64, 64, 3) and img.std() > 0.005
    # an SD latent cannot go into an SDXL decoder
    g = make_graph({"sd": ("load_model", {"checkpoint": str(tiny_sd_dir)}),
                    "xl": ("load_model", {"checkpoint": str(tiny_sdxl_dir)}),
                    "empty": ("empty_latent", {"width": 64, "height": 64}), "dec": ("decode", {})},
                   ["sd.model>empty.model", "xl.model>dec.model", "empty.latent>dec.latent"])
    bad = engine.run(g)
    assert "latent belongs to a sd1 model but the model is sdxl" in bad.errors["dec"]


def test_bad_sources_fail_with_one_clear_line(engine, tmp_path, tiny_lora_kohya):
    (tmp_path / "old.ckpt").write_bytes(b"\x80\x02}q\x00.")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors at all")
    cases = {
        str(tmp_path / "old.ckpt"): "pickle checkpoint",
        str(tmp_path / "missing.safetensors"): "model file not found",
        str(tmp_path / "junk.safetensors"): "not a readable .safetensors file",
        str(tiny_lora_kohya): "is a LoRA, not a base model",
        str(tmp_path): "not a diffusers model",
        "": "no model chosen",
    }
    for source, message in cases.items():
        result = engine.run(make_graph({"load": ("load_model", {"checkpoint": source})}, []), targets=["load"])
        assert message in result.errors["load"], (source, result.errors)
        assert "\n" not in result.errors["load"]


def test_models_folder_lists_checkpoints_and_loras(engine, monkeypatch, tmp_path, tiny_sd_ckpt, tiny_sd_dir,
                                                   tiny_lora_kohya):
    import shutil

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "loras").mkdir()
    shutil.copy(tiny_sd_ckpt, tmp_path / "checkpoints" / "mine.safetensors")
    shutil.copytree(tiny_sd_dir, tmp_path / "checkpoints" / "tiny-folder")
    shutil.copy(tiny_lora_kohya, tmp_path / "loras" / "style.safetensors")
    monkeypatch.setenv("IMAGEBASH_MODELS", str(tmp_path))
    assert list_checkpoints() == [str(tmp_path / "checkpoints" / "mine.safetensors"),
                                  str(tmp_path / "checkpoints" / "tiny-folder")]
    assert list_loras() == [str(tmp_path / "loras" / "style.safetensors")]
    # names resolve inside the models folder
    g = txt2img_graph("tiny-folder", loras=[("style.safetensors", 0.7)])
    result = run_ok(engine, g, targets=["lora0"])
    assert result.output("lora0").loras[0].path == str((tmp_path / "loras" / "style.safetensors").resolve())


@pytest.mark.parametrize("family, unet_params, te_params", [
    ("sd1", 859_520_964, 123_060_480), ("sd2", 865_910_724, 340_387_840), ("sdxl", 2_567_463_684, 123_060_480)])
def test_shipped_configs_have_the_official_geometry(family, unet_params, te_params):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from app.engine.model_configs import shipped_config

    folder = shipped_config(family)
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(folder / "unet")))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(folder / "vae")))
        te = CLIPTextModel(CLIPTextConfig.from_pretrained(str(folder / "text_encoder")))
    assert sum(p.numel() for p in unet.parameters()) == unet_params
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863
    assert sum(p.numel() for p in te.parameters()) == te_params
    tok = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    # the ids OpenAI's CLIP tokenizer gives this prompt
    assert tok("a photograph of an astronaut riding a horse").input_ids == [
        49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]
