"""Flux.1, SD 3.5 and Qwen-Image through the engine, the way a user runs them: Load Model from a
diffusers folder, a single file or ComfyUI's split layout, then the same Text to Image, Image to
Image, Inpaint, Outpaint, Edit and latent nodes as for SD. The tiny random-weight models come
from tests/tiny_families.py; the real-size key sets from tests/fixtures/family_keys/."""

from __future__ import annotations

import numpy as np
import pytest

from app.engine.events import NodeLog
from tests.diffusion.conftest import direct_ctx, make_graph, run_ok

BASE = {"prompt": "a red house by a lake", "width": 64, "height": 64, "steps": 2, "seed": 1}


def render(engine, model: dict, node: str = "txt2img", **params):
    """(image, log lines) of Load Model -> `node`."""
    logs: list[str] = []
    unsubscribe = engine.events.subscribe(lambda e: logs.append(e.message) if isinstance(e, NodeLog) else None)
    try:
        g = make_graph({"load": ("load_model", model), "gen": (node, {**BASE, **params})}, ["load.model>gen.model"])
        result = engine.run(g)
    finally:
        unsubscribe()
    return result, logs


def image(engine, model: dict, node: str = "txt2img", **params) -> np.ndarray:
    result, _logs = render(engine, model, node, **params)
    assert result.ok, result.errors
    return result.output("gen")


FOLDERS = ["tiny_flux_dev_dir", "tiny_flux_schnell_dir", "tiny_sd3_dir", "tiny_sd3_medium_dir", "tiny_qwen_dir"]


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_family_renders_and_the_seed_reproduces(engine, request, folder):
    model = {"checkpoint": str(request.getfixturevalue(folder))}
    a = image(engine, model)
    engine.cache.clear()
    b = image(engine, model)
    c = image(engine, model, seed=2)
    assert a.shape == (1, 64, 64, 3) and a.std() > 0.001
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 1e-4


@pytest.mark.parametrize("folder, low, high", [("tiny_flux_dev_dir", 1.0, 8.0), ("tiny_sd3_dir", 1.5, 8.0),
                                               ("tiny_qwen_dir", 1.5, 8.0)])
def test_guidance_changes_the_pixels(engine, request, folder, low, high):
    """Flux dev's distilled guidance (an embedding), SD 3.5's CFG and Qwen's true CFG all reach the model."""
    model = {"checkpoint": str(request.getfixturevalue(folder))}
    assert np.abs(image(engine, model, guidance=low) - image(engine, model, guidance=high)).mean() > 1e-4


def test_each_node_logs_family_variant_dtype_and_memory_mode(engine, tiny_flux_dev_dir, tiny_sd3_dir):
    result, logs = render(engine, {"checkpoint": str(tiny_flux_dev_dir)})
    assert result.ok, result.errors
    assert any(m.startswith("Flux.1 dev (flux/dev), float32, memory: full") for m in logs), logs
    assert any("Flux.1 dev fp32 needs" in m and "full fp32 on the CPU" in m for m in logs), logs
    result, logs = render(engine, {"checkpoint": str(tiny_flux_dev_dir)}, negative_prompt="blurry")
    assert any("negative prompt ignored: Flux.1 has no negative prompt" in m for m in logs), logs
    result, logs = render(engine, {"checkpoint": str(tiny_sd3_dir)})
    assert any(m.startswith("SD 3.5 large (sd3/large), float32") for m in logs), logs
    meta = result.outputs["gen"]
    assert meta is not None


def test_flow_models_refuse_ddpm_schedulers_and_take_a_shift(engine, tiny_flux_dev_dir):
    model = {"checkpoint": str(tiny_flux_dev_dir)}
    result, _ = render(engine, model, scheduler="ddim")
    assert "Flux.1 samples with flow matching: scheduler 'ddim' does not apply" in result.errors["gen"]
    assert "\n" not in result.errors["gen"]
    plain, shifted = image(engine, model, steps=3), image(engine, model, steps=3, shift=6.0)
    assert np.abs(plain - shifted).mean() > 1e-4
    assert np.abs(image(engine, model, scheduler="euler_a", steps=3) - plain).mean() > 1e-4


def _source(h: int = 64, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin(xx / 5.0)], axis=-1)[None].astype(np.float32)


def _model(engine, path, **params):
    g = make_graph({"load": ("load_model", {"checkpoint": str(path), **params})}, [])
    return run_ok(engine, g).output("load")


@pytest.mark.parametrize("folder", ["tiny_flux_dev_dir", "tiny_flux_fill_dir", "tiny_sd3_dir", "tiny_qwen_dir"])
def test_inpaint_keeps_the_pixels_outside_the_mask(engine, request, folder):
    from nodes.diffusion import generate

    model = _model(engine, request.getfixturevalue(folder))
    src = _source()
    mask = np.zeros((1, 64, 64), np.float32)
    mask[:, 16:48, 16:48] = 1
    out = generate.inpaint(model, src, mask, "a door", steps=2, seed=3, ctx=direct_ctx(engine))
    assert out.shape == (1, 64, 64, 3)
    outside = mask[0] == 0
    np.testing.assert_allclose(out[0][outside], src[0][outside], atol=1e-6)
    assert np.abs(out[0, 16:48, 16:48] - src[0, 16:48, 16:48]).mean() > 0.01


def test_a_fill_model_refuses_text_to_image_and_outpaints(engine, tiny_flux_fill_dir):
    from nodes.diffusion import generate

    model = _model(engine, tiny_flux_fill_dir)
    with pytest.raises(ValueError, match=r"is an inpainting model \(Flux.1 Fill\): use it with the Inpaint node"):
        generate.txt2img(model, "a lake", width=64, height=64, steps=2, ctx=direct_ctx(engine))
    src = _source(64, 48)
    out = generate.outpaint(model, src, "a lake", right=16, feather=8, steps=2, seed=1, ctx=direct_ctx(engine))
    assert out.shape == (1, 64, 64, 3)
    np.testing.assert_allclose(out[0, :, :40], src[0, :, :40], atol=1e-6)  # untouched left of the feather
    assert np.abs(out[0, :, 48:] - src[0, :, -1:]).mean() > 0.01  # the new strip is painted, not the edge


@pytest.mark.parametrize("folder", ["tiny_flux_kontext_dir", "tiny_qwen_edit_dir"])
def test_edit_follows_an_instruction_and_changes_the_image(engine, request, folder):
    from nodes.diffusion import generate

    model = _model(engine, request.getfixturevalue(folder))
    src = _source()
    ctx = direct_ctx(engine)
    out = generate.edit(model, src, "make it night", steps=2, seed=4, ctx=ctx)
    assert out.shape == (1, 64, 64, 3) and np.abs(out - src).mean() > 0.01
    other = generate.edit(model, src[:, ::-1].copy(), "make it night", steps=2, seed=4, ctx=ctx)
    assert np.abs(other - out).mean() > 1e-5  # the image conditions the result (weakly, in a random model)
    with pytest.raises(ValueError, match="write an instruction"):
        generate.edit(model, src, "  ", ctx=ctx)


def test_text_models_refuse_edit_with_the_tasks_they_offer(engine, tiny_sd3_dir):
    from nodes.diffusion import generate

    model = _model(engine, tiny_sd3_dir)
    with pytest.raises(ValueError, match=r"SD 3.5 large cannot do edit \(it offers: txt2img, img2img, inpaint\)"):
        generate.edit(model, _source(), "make it night", steps=2, ctx=direct_ctx(engine))


@pytest.mark.parametrize("folder", ["tiny_flux_dev_dir", "tiny_sd3_dir"])
def test_image_to_image_keeps_structure_at_low_strength(engine, request, folder):
    from nodes.diffusion import generate

    model = _model(engine, request.getfixturevalue(folder))
    src = _source()
    ctx = direct_ctx(engine)
    weak = generate.img2img(model, src, "a lake", strength=0.3, steps=4, seed=1, ctx=ctx)
    strong = generate.img2img(model, src, "a lake", strength=1.0, steps=4, seed=1, ctx=ctx)
    assert weak.shape == (1, 64, 64, 3)
    assert np.abs(weak - src).mean() < np.abs(strong - src).mean()


def test_latents_carry_their_family_and_never_mix(engine, tiny_flux_dev_dir, tiny_sd3_dir):
    g = make_graph({
        "flux": ("load_model", {"checkpoint": str(tiny_flux_dev_dir)}),
        "sd3": ("load_model", {"checkpoint": str(tiny_sd3_dir)}),
        "empty": ("empty_latent", {"width": 64, "height": 64}),
        "sample": ("sample", {"prompt": "a lake", "steps": 2, "seed": 1}),
        "dec": ("decode", {}),
        "bad": ("decode", {}),
    }, ["flux.model>empty.model", "flux.model>sample.model", "empty.latent>sample.latent", "flux.model>dec.model",
        "sample.latent>dec.latent", "sd3.model>bad.model", "sample.latent>bad.latent"])
    result = engine.run(g, targets=["sample", "dec", "bad"])
    latent = result.output("sample")
    assert tuple(latent.samples.shape) == (1, 16, 8, 8) and latent.family == "flux"
    assert result.output("dec").shape == (1, 64, 64, 3)
    assert result.errors["bad"] == ("Decode: the latent belongs to a Flux.1 model but the model is Stable "
                                    "Diffusion 3.5; decode and re-encode to switch families")


def test_partial_denoise_of_a_flux_latent(engine, tiny_flux_dev_dir):
    from nodes.diffusion import latent_nodes

    model = _model(engine, tiny_flux_dev_dir)
    ctx = direct_ctx(engine)
    z = latent_nodes.encode(model, _source(), ctx=ctx)
    assert tuple(z.samples.shape) == (1, 16, 8, 8)
    out = latent_nodes.sample(model, z, "a lake", denoise=0.5, steps=4, seed=2, ctx=ctx)
    assert out.samples.shape == z.samples.shape and out.family == "flux"
    assert float((out.samples - z.samples).abs().mean()) > 1e-3


# --------------------------------------------------------------------------- files and layouts


def test_a_comfyui_split_layout_loads_like_the_diffusers_folder(engine, tiny_families):
    f = tiny_families
    folder = image(engine, {"checkpoint": str(f["flux_dev_dir"])})
    split = image(engine, {"checkpoint": str(f["comfy_flux_dev_denoiser"]), "config": str(f["comfy_flux_dev_config"]),
                           "text_encoder": str(f["comfy_t5"]), "text_encoder_2": str(f["comfy_clip_l"]),
                           "vae": str(f["comfy_flux_dev_vae"])})
    np.testing.assert_allclose(split, folder, atol=1e-5)  # encoders go where their weights fit, any order
    sd3 = image(engine, {"checkpoint": str(f["comfy_sd3_denoiser"]), "config": str(f["comfy_sd3_config"]),
                         "text_encoder": str(f["comfy_clip_l"]), "text_encoder_2": str(f["comfy_clip_g"]),
                         "text_encoder_3": str(f["comfy_t5"]), "vae": str(f["comfy_sd3_vae"])})
    np.testing.assert_allclose(sd3, image(engine, {"checkpoint": str(f["sd3_dir"])}), atol=1e-5)


def test_sd35_runs_without_t5_and_says_so(engine, tiny_families):
    f = tiny_families
    result, logs = render(engine, {"checkpoint": str(f["comfy_sd3_denoiser"]), "config": str(f["comfy_sd3_config"]),
                                   "text_encoder": str(f["comfy_clip_l"]), "text_encoder_2": str(f["comfy_clip_g"]),
                                   "vae": str(f["comfy_sd3_vae"])})
    assert result.ok, result.errors
    assert any("no text_encoder_3 file given, running without it" in m for m in logs), logs
    assert image(engine, {"checkpoint": str(f["sd3_no_t5_dir"])}).std() > 0.001


def test_split_layout_mistakes_are_one_clear_line(engine, tiny_families, tmp_path):
    f = tiny_families
    common = {"checkpoint": str(f["comfy_flux_dev_denoiser"]), "config": str(f["comfy_flux_dev_config"]),
              "vae": str(f["comfy_flux_dev_vae"])}
    result, _ = render(engine, {**common, "text_encoder": str(f["comfy_clip_l"])})
    assert "Flux.1 needs its text_encoder_2 (T5EncoderModel): set Load Model's text encoder files" in \
        result.errors["load"]
    result, _ = render(engine, {**common, "text_encoder": str(f["comfy_clip_l"]), "text_encoder_2": str(f["comfy_t5"]),
                                "text_encoder_3": str(f["comfy_flux_dev_vae"])})
    assert "fits none of Flux.1's text encoder slots" in result.errors["load"]
    result, _ = render(engine, {**common, "text_encoder": "nowhere/clip_l.safetensors"})
    assert result.errors["load"] == ("text encoder file not found: 'nowhere/clip_l.safetensors' (download it with "
                                     "`imagebash models download hf:comfyanonymous/flux_text_encoders/clip_l."
                                     "safetensors` or from the Models panel)")  # a starter's companion
    result, _ = render(engine, {"checkpoint": str(f["flux_dev_dir"]), "vae": str(f["comfy_flux_dev_vae"])})
    assert "is a diffusers folder: it holds its own text encoders and VAE" in result.errors["load"]
    notes = tmp_path / "notes.txt"
    notes.write_text("not weights")
    result, _ = render(engine, {**common, "text_encoder": str(f["comfy_clip_l"]), "text_encoder_2": str(notes)})
    assert result.errors["load"].startswith("notes.txt is not a readable .safetensors file")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + bytes(20))
    result, _ = render(engine, {**common, "checkpoint": str(junk)})
    assert result.errors["load"].startswith("junk.gguf is not a readable GGUF file")
    for message in result.errors.values():
        assert "\n" not in message


def test_original_bfl_keys_load_through_the_size_aware_converter(engine, tiny_families, tmp_path):
    """A Flux file in BFL naming (as black-forest-labs and ComfyUI store it) at a tiny width:
    diffusers' own converter assumes 3072 and cannot read it."""
    from safetensors.torch import load_file, save_file

    from app.engine.families import flux_names
    from app.engine.families.loading import load_config

    f = tiny_families
    config = load_config(f["comfy_flux_dev_config"], "transformer")
    original = flux_names.to_original(load_file(str(f["comfy_flux_dev_denoiser"])), config)
    path = tmp_path / "flux1-tiny-bfl.safetensors"
    save_file({f"model.diffusion_model.{k}": v.contiguous() for k, v in original.items()}, str(path))
    parts = {"config": str(f["comfy_flux_dev_config"]), "text_encoder": str(f["comfy_clip_l"]),
             "text_encoder_2": str(f["comfy_t5"]), "vae": str(f["comfy_flux_dev_vae"])}
    np.testing.assert_allclose(image(engine, {"checkpoint": str(path), **parts}),
                               image(engine, {"checkpoint": str(f["flux_dev_dir"])}), atol=1e-5)


EXPECTED = {"flux-dev": ("flux", "dev"), "flux-schnell": ("flux", "schnell"), "flux-fill": ("flux", "fill"),
            "flux-kontext": ("flux", "dev"), "flux-dev-diffusers": ("flux", "dev"),
            "flux-dev-comfy-aio": ("flux", "dev"), "sd35-large": ("sd3", "large"),
            "sd35-medium": ("sd3", "medium"), "qwen-image": ("qwen_image", "base"), "sd15": ("sd1", "base"),
            "sdxl": ("sdxl", "base")}


def test_real_size_key_sets_are_recognised_by_their_keys(family_key_files, family_key_file):
    """Released files' key names and shapes (header-only fixtures, no weights)."""
    from app.engine.models import identify

    assert set(EXPECTED) <= set(family_key_files)
    for name, (family, variant) in EXPECTED.items():
        fam, var = identify(family_key_files[name])
        assert (fam.name, var) == (family, variant), name
    for prefix in ("model.diffusion_model.", "diffusion_model."):  # ComfyUI's and some trainers' prefixes
        fam, var = identify(family_key_file("flux-schnell", prefix=prefix, extras=False))
        assert (fam.name, var) == ("flux", "schnell")


def test_a_file_of_no_known_family_lists_the_families_tried(tmp_path):
    import torch
    from safetensors.torch import save_file

    from app.engine.models import ModelError, identify

    path = tmp_path / "mystery.safetensors"
    save_file({"encoder.conv_in.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ModelError) as err:
        identify(path)
    text = str(err.value)
    assert text.startswith("mystery.safetensors is not a model of a known family (tried Flux.1, ")
    for title in ("Stable Diffusion 3.5", "Qwen-Image", "Stable Diffusion XL", "Stable Diffusion 1.x"):
        assert title in text


def test_a_lora_file_says_which_family_it_is_for(tmp_path):
    """The models list (and the remote server's) names each LoRA's family from its header."""
    import torch
    from safetensors.torch import save_file

    from app.engine.families import lora_family
    from app.engine.probe import probe

    cases = {
        "flux-kohya": ({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.zeros(1, 2)}, {}, "flux"),
        "flux-diffusers": ({"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(1, 2)},
                           {}, "flux"),
        "sd35": ({"lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight": torch.zeros(1, 2)}, {}, "sd3"),
        "qwen": ({"transformer.transformer_blocks.0.img_mlp.net.0.proj.lora_A.weight": torch.zeros(1, 2)}, {},
                 "qwen_image"),
        "sdxl": ({"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(1, 2)}, {}, "sdxl"),
        "sd2": ({"lora_unet_x.lora_down.weight": torch.zeros(1, 2)}, {"ss_v2": "True"}, "sd2"),
        "unsure": ({"lora_unet_x.lora_down.weight": torch.zeros(1, 2)}, {}, None),
    }
    for name, (tensors, meta, family) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path), metadata=meta)
        assert lora_family(probe(path)) == family, name


def test_adding_a_family_is_one_module(tmp_path, monkeypatch):
    """A new module with a FAMILY in the families package is found, detected and offered; no other
    file names it."""
    import app.engine.families as families
    from app.engine.models import identify

    folder = tmp_path / "extra"
    folder.mkdir()
    (folder / "toy.py").write_text(
        "from app.engine.families.base import Variant\n"
        "from app.engine.families.sd_common import SD_PIPELINES, StableDiffusion\n"
        "ORDER = 5\n"
        "FAMILY = StableDiffusion(name='toy', title='Toy Diffusion', pipelines=SD_PIPELINES,\n"
        "    variants=(Variant('base', 'Toy 1', 'sd1', 1, steps=3, guidance=2.0),), marker='toy_model.')\n",
        encoding="utf-8")
    monkeypatch.setattr(families, "__path__", [*families.__path__, str(folder)])
    monkeypatch.setattr(families, "_families", None)
    monkeypatch.syspath_prepend(str(tmp_path))
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "toy.safetensors"
    save_file({"toy_model.weight": torch.zeros(2)}, str(path))
    fam, variant = identify(path)
    assert (fam.name, fam.title, variant) == ("toy", "Toy Diffusion", "base")
    assert families.get_family("toy").variant("base").steps == 3
    assert next(f.name for f in families.all_families()) == "toy"
    monkeypatch.setattr(families, "_families", None)


# ------------------------------------------------------------------------------ memory modes


def test_fp8_forced_on_load_model_stays_close_to_full(engine, tiny_flux_dev_dir):
    full = image(engine, {"checkpoint": str(tiny_flux_dev_dir)})
    result, logs = render(engine, {"checkpoint": str(tiny_flux_dev_dir), "memory": "fp8"})
    assert result.ok, result.errors
    assert any("memory: fp8 (fp8 weights" in m for m in logs), logs
    assert any("(forced)" in m for m in logs), logs
    fp8 = result.output("gen")
    assert 0 < np.abs(fp8 - full).mean() < 0.05


def test_nf4_on_the_cpu_is_refused_with_the_mode_and_device(engine, tiny_flux_dev_dir):
    result, _ = render(engine, {"checkpoint": str(tiny_flux_dev_dir), "memory": "nf4"})
    assert "nf4" in result.errors["load"] and "cpu" in result.errors["load"]


def test_a_gguf_denoiser_loads_and_stays_close(engine, tiny_families, tmp_path):
    from safetensors.torch import load_file

    from tests.diffusion.test_memory_modes import write_gguf

    f = tiny_families
    path = tmp_path / "flux1-tiny-Q8_0.gguf"
    write_gguf(path, load_file(str(f["comfy_flux_dev_denoiser"])), "Q8_0")
    parts = {"config": str(f["comfy_flux_dev_config"]), "text_encoder": str(f["comfy_clip_l"]),
             "text_encoder_2": str(f["comfy_t5"]), "vae": str(f["comfy_flux_dev_vae"])}
    result, logs = render(engine, {"checkpoint": str(path), **parts})
    assert result.ok, result.errors
    assert any("Flux.1 dev (flux/dev)" in m and "memory: gguf" in m for m in logs), logs
    full = image(engine, {"checkpoint": str(f["flux_dev_dir"])})
    assert np.abs(result.output("gen") - full).mean() < 0.05


def test_out_of_memory_steps_down_to_the_next_cheaper_mode(fresh_engine, tiny_flux_dev_dir):
    """What a GPU OOM retry does to the model (on the CPU the retry keeps the mode)."""
    from app.engine.memory_modes import resident_weight_bytes

    model = _model(fresh_engine, tiny_flux_dev_dir)
    manager = fresh_engine.services.get("models")
    entry = manager.entry(model)
    before = resident_weight_bytes(entry.pipe.transformer)
    assert manager.degrade(entry).startswith("fp8 (fp8 weights")
    assert entry.state["memory"] == "fp8" and resident_weight_bytes(entry.pipe.transformer) < 0.7 * before
    out = image(fresh_engine, {"checkpoint": str(tiny_flux_dev_dir)})
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()
