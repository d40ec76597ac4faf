"""Load Model: diffusers folders, single-file checkpoints, SDXL, refusals, the models folder."""

from __future__ import annotations

import numpy as np
import pytest

from app.engine.fingerprint import short_hash
from nodes.diffusion.catalog import list_checkpoints, list_loras
from tests.diffusion.conftest import make_graph, run_ok, txt2img_graph


def test_single_file_checkpoint_gives_the_same_pixels_as_the_folder(fresh_engine, tiny_sd_dir, tiny_sd_ckpt):
    folder = run_ok(fresh_engine, txt2img_graph(tiny_sd_dir, seed=4), targets=["load", "gen"])
    g = txt2img_graph(tiny_sd_ckpt, seed=4)
    g.set_param("load", "config", str(tiny_sd_dir))
    single = run_ok(fresh_engine, g, targets=["load", "gen"])
    model = single.output("load")
    assert model.family == "sd1" and model.hash == short_hash(tiny_sd_ckpt)
    np.testing.assert_array_equal(single.output("gen"), folder.output("gen"))
    assert fresh_engine.services.get("models").loads == 2


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
    assert "latent belongs to a Stable Diffusion 1.x model but the model is Stable Diffusion XL" in bad.errors["dec"]


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
    assert list_checkpoints() == ["mine.safetensors", "tiny-folder"]
    assert list_loras() == ["style.safetensors"]
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


def test_family_is_read_from_the_checkpoint_key_layout(tmp_path):
    import torch
    from safetensors.torch import save_file

    from app.engine.models import ModelError, detect_family

    layouts = {
        "sd1": "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
        "sd2": "cond_stage_model.model.token_embedding.weight",
        "sdxl": "conditioner.embedders.1.model.positional_embedding",
    }
    for family, key in layouts.items():
        path = tmp_path / f"{family}.safetensors"
        save_file({key: torch.zeros(2, 2), "model.diffusion_model.out.2.bias": torch.zeros(4)}, str(path))
        assert detect_family(path) == family
    save_file({"first_stage_model.decoder.conv_in.bias": torch.zeros(2)}, str(tmp_path / "vae.safetensors"))
    with pytest.raises(ModelError, match=r"not a model of a known family \(tried Flux.1, .*Stable Diffusion 1.x\)"):
        detect_family(tmp_path / "vae.safetensors")


def test_hub_id_offline_and_uncached_is_a_clear_error(engine, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    result = engine.run(make_graph({"load": ("load_model", {"checkpoint": "someone/not-downloaded"})}, []))
    assert "cannot get 'someone/not-downloaded' from the Hugging Face hub" in result.errors["load"]
    assert "not in the local cache" in result.errors["load"]


def test_loading_reports_progress_and_lru_budget_evicts(tiny_sd_dir, tiny_sdxl_dir):
    from app.engine import Engine, EngineSettings, NodeProgress

    engine = Engine(settings=EngineSettings(device="cpu", model_budget_bytes=1))
    events = []
    engine.events.subscribe(lambda e: events.append(e.text) if isinstance(e, NodeProgress) else None)
    sd = run_ok(engine, txt2img_graph(tiny_sd_dir), targets=["load", "gen"]).output("load")
    assert any(t and t.startswith("loading SD 1.5 model") for t in events)
    assert any(t and t.startswith("loaded tiny-sd") for t in events)
    models = engine.services.get("models")
    run_ok(engine, txt2img_graph(tiny_sdxl_dir), targets=["load", "gen"])
    assert models.loaded() == [models.entries()[0].key] and models.entries()[0].family == "sdxl"
    # the evicted model's handle still works: it is read again
    first = run_ok(engine, txt2img_graph(tiny_sd_dir, seed=2), targets=["gen"])
    assert models.loads == 3 and sd.key in models.loaded()
    assert first.output("gen").shape == (1, 64, 64, 3)
    engine.shutdown()


def test_sdxl_kohya_lora_with_te1_and_te2_names(engine, tiny_sdxl_dir, tmp_path):
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(3)
    state = {}
    for prefix in ("lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
                   "lora_te2_text_model_encoder_layers_1_self_attn_v_proj",
                   "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"):
        fin = 64 if prefix.startswith("lora_unet") else 32
        fout = 32
        state[prefix + ".lora_down.weight"] = torch.randn(4, fin, generator=g)
        state[prefix + ".lora_up.weight"] = torch.randn(fout, 4, generator=g)
        state[prefix + ".alpha"] = torch.tensor(4.0)
    save_file(state, str(tmp_path / "xl.safetensors"))
    base = run_ok(engine, txt2img_graph(tiny_sdxl_dir)).output("gen")
    logs = []
    from app.engine import NodeLog

    engine.events.subscribe(lambda e: logs.append(e.message) if isinstance(e, NodeLog) else None)
    styled = run_ok(engine, txt2img_graph(tiny_sdxl_dir, loras=[(tmp_path / "xl.safetensors", 1.0)])).output("gen")
    assert np.abs(styled - base).mean() > 0.001
    assert any("kohya LoRA, 3 modules" in m and "matched nothing" not in m for m in logs)


def test_inpainting_single_file_loads_and_only_inpaints(engine, tiny_sd_ckpt, tiny_sd_dir, tmp_path):
    """A 9-channel (inpainting) UNet in a single file: loaded with the right geometry, refused by txt2img."""
    import torch
    from safetensors.torch import load_file, save_file

    from nodes.diffusion import generate
    from tests.diffusion.test_generate import _Ctx, _source

    state = load_file(str(tiny_sd_ckpt))
    key = "model.diffusion_model.input_blocks.0.0.weight"
    w = state[key]
    state[key] = torch.cat([w, torch.randn(w.shape[0], 5, *w.shape[2:], generator=torch.Generator().manual_seed(0))
                            * 0.05], dim=1)
    path = tmp_path / "tiny-inpainting.safetensors"
    save_file(state, str(path))
    g = make_graph({"load": ("load_model", {"checkpoint": str(path), "config": str(tiny_sd_dir)})}, [])
    model = run_ok(engine, g).output("load")
    src = _source()
    mask = np.zeros((1, 64, 64), np.float32)
    mask[:, 8:40, 8:40] = 1
    out = generate.inpaint(model, src, mask, "a door", steps=2, scheduler="euler", seed=3, ctx=_Ctx(engine))
    assert out.shape == (1, 64, 64, 3) and np.abs(out[0, 8:40, 8:40] - src[0, 8:40, 8:40]).mean() > 0.01
    with pytest.raises(ValueError, match=r"is an inpainting model .*use it with the Inpaint node"):
        generate.txt2img(model, "a door", width=64, height=64, steps=2, ctx=_Ctx(engine))


def test_on_a_gpu_the_least_recently_used_model_moves_to_the_cpu_first(tiny_sd_dir, tiny_sdxl_dir, monkeypatch):
    """The budget policy on a GPU, with placement stubbed (this machine has none)."""
    from app.engine import models as models_mod
    from app.engine.models import ModelManager

    models = ModelManager()
    models.device, models.budget, models.host_budget = "cuda", 1, 1 << 40
    monkeypatch.setattr(models, "_place", lambda pipe, family, plan: (pipe, f"{plan.mode} (stub)"))
    monkeypatch.setattr(models_mod, "free_memory", lambda device: 80 << 30)
    released = []
    monkeypatch.setattr(models_mod, "release_memory", released.append)
    sd = models.load(str(tiny_sd_dir))
    assert released == []
    xl = models.load(str(tiny_sdxl_dir))
    assert (sd.device, xl.device) == ("cpu", "cuda") and len(models.loaded()) == 2
    assert released == ["cuda"]  # the moved model's cached blocks go back to the driver
    handle = type("Handle", (), {"key": sd.key, "source": sd.source, "extra": {}})()
    assert models.entry(handle) is sd and (sd.device, xl.device) == ("cuda", "cpu")
    assert models.loads == 2  # moved back, not read again
    models.host_budget = 1  # over the host budget too: the model on the CPU is dropped
    models._enforce_budget(keep=sd.key)
    assert models.loaded() == [sd.key]


def test_sd2_single_file_prediction_type_from_metadata_or_a_stated_assumption(tmp_path):
    import torch
    from safetensors.torch import save_file

    from app.engine.families.sd2 import prediction_type as sd2_prediction

    weights = {"cond_stage_model.model.ln_final.weight": torch.zeros(2)}
    plain, eps, v = tmp_path / "plain.safetensors", tmp_path / "eps.safetensors", tmp_path / "v.safetensors"
    save_file(weights, str(plain))
    save_file(weights, str(eps), metadata={"modelspec.prediction_type": "epsilon"})
    save_file(weights, str(v), metadata={"modelspec.prediction_type": "v"})
    prediction, warning = sd2_prediction(plain, False)
    assert prediction is None
    assert "plain.safetensors" in warning and "v-prediction" in warning and "`config` port" in warning
    assert sd2_prediction(eps, False) == ("epsilon", "")
    assert sd2_prediction(v, False) == ("v_prediction", "")
    assert sd2_prediction(plain, True) == (None, "")  # an explicit config decides
