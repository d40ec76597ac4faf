"""Flow-matching LoRA/DoRA training for Flux.1, SD 3.5 and Qwen-Image on the tiny models of
tests/tiny_families.py: the loss falls, resume is exact, cached epochs call no encoder, exported
files load through the LoRA node and reproduce the trained model, bad input is one clear line."""

from __future__ import annotations

import numpy as np
import pytest

from app.training.config import ConfigError, load_preset
from app.training.loop import Trainer, TrainingStopped
from tests.training.conftest import small_config, write_image


@pytest.fixture
def engine():
    from app.engine import Engine, EngineSettings
    from nodes.registry import default_registry

    eng = Engine(default_registry(), EngineSettings(device="cpu", max_workers=2))
    yield eng
    eng.shutdown()


@pytest.fixture
def one_image(tmp_path):
    root = tmp_path / "data"
    write_image(root / "1_stripes" / "a.png", 0, caption="stripes")
    return root


def flow_config(tmp_path, data, base, **kw):
    values = dict(batch_size=1, max_steps=30, learning_rate=5e-3)
    values.update(kw)
    return small_config(tmp_path, data, base, **values)


@pytest.mark.parametrize("folder", ["tiny_flux_dev_dir", "tiny_sd3_medium_dir", "tiny_qwen_dir"])
def test_the_flow_loss_falls_on_one_image(request, tmp_path, one_image, folder):
    logs: list[str] = []
    t = Trainer(flow_config(tmp_path, one_image, request.getfixturevalue(folder)), log=logs.append)
    t.prepare()
    before = t.validation_loss()
    result = t.run()
    after = t.validation_loss()
    assert after < 0.95 * before, (before, after)
    assert any("flow matching" in m for m in logs), logs
    assert result.lora.is_file() and result.peft.is_file()


def _adapter(trainer):
    from app.training import adapters

    return {k: v.clone() for k, v in adapters.adapter_tensors(trainer.base.denoiser).items()}


def test_a_stopped_flux_run_resumes_to_the_same_weights(tmp_path, one_image, tiny_flux_dev_dir):
    straight = Trainer(flow_config(tmp_path / "a", one_image, tiny_flux_dev_dir, max_steps=10))
    straight.run()
    stop_at = 4
    cfg = flow_config(tmp_path / "b", one_image, tiny_flux_dev_dir, max_steps=10)
    first = Trainer(cfg)
    first.progress = lambda p: first.stop.set() if p.phase == "train" and p.step == stop_at else None
    with pytest.raises(TrainingStopped):
        first.run()
    first.close()
    second = Trainer(cfg)
    second.run(resume=True)
    a, b = _adapter(straight), _adapter(second)
    assert a.keys() == b.keys() and a
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6


def test_encoders_run_once_per_image_before_training_and_never_during_it(tmp_path, tiny_flux_dev_dir):
    root = tmp_path / "data"
    for i in range(2):
        write_image(root / "1_x" / f"{i}.png", i, caption=f"stripes {i}")
    t = Trainer(flow_config(tmp_path, root, tiny_flux_dev_dir, max_steps=6))  # three epochs
    t.prepare()
    assert (t.cache.encoded_images, t.cache.encoded_texts) == (2, 2)  # cached before the first step
    assert t._parked  # and the VAE and text encoders moved off the training device
    calls = {"t5": 0, "clip": 0, "vae": 0}
    pipe = t.base.pipe

    def counting(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapped

    pipe.text_encoder_2.forward = counting("t5", pipe.text_encoder_2.forward)
    pipe.text_encoder.forward = counting("clip", pipe.text_encoder.forward)
    pipe.vae.encode = counting("vae", pipe.vae.encode)
    t.run()
    assert calls == {"t5": 0, "clip": 0, "vae": 0}


def test_exported_files_load_through_the_lora_node_and_reproduce_the_trained_model(
        tmp_path, one_image, tiny_flux_dev_dir, engine):
    import torch

    from app.engine.families import get_family
    from tests.diffusion.conftest import make_graph

    t = Trainer(flow_config(tmp_path, one_image, tiny_flux_dev_dir, max_steps=12, targets="attention+ff"))
    result = t.run()
    fam = get_family("flux")
    g = torch.Generator().manual_seed(0)
    noisy = torch.randn(1, 16, 8, 8, generator=g)
    sigmas = torch.tensor([0.6])
    emb = {k: v.unsqueeze(0) for k, v in t.cache.text("stripes").items()}
    t.base.denoiser.eval()
    with torch.no_grad():
        trained = fam.flow_forward(t.base.pipe, noisy, sigmas, emb, 1.0)
    models = engine.services.get("models")
    outputs = {}
    for name, path in (("kohya", result.lora), ("peft", result.peft)):
        graph = make_graph({"load": ("load_model", {"checkpoint": str(tiny_flux_dev_dir)}),
                            "lora": ("lora", {"file": str(path), "weight": 1.0})}, ["load.model>lora.model"])
        run = engine.run(graph)
        assert run.ok, run.errors
        model = run.output("lora")
        entry = models.entry(model)
        from nodes.diffusion.loras import adapter_name, ensure_adapter
        from nodes.diffusion.sampling import apply_loras

        info = ensure_adapter(entry, path, model.loras[-1].hash)
        assert info.unmatched == [] and info.matched_modules > 0, info.report()
        assert info.name == adapter_name(model.loras[-1].hash)
        with entry.lock, torch.no_grad():
            apply_loras(entry, model)
            outputs[name] = fam.flow_forward(entry.pipe, noisy, sigmas, emb, 1.0)
    assert float((outputs["kohya"] - trained).abs().max()) < 1e-4
    assert float((outputs["peft"] - trained).abs().max()) < 1e-4
    base = _base_output(engine, tiny_flux_dev_dir, fam, noisy, sigmas, emb)
    assert float((trained - base).abs().mean()) > 1e-4  # the LoRA changes the model


def _base_output(engine, folder, fam, noisy, sigmas, emb):
    import torch

    from tests.diffusion.conftest import make_graph

    run = engine.run(make_graph({"load": ("load_model", {"checkpoint": str(folder)})}, []))
    entry = engine.services.get("models").entry(run.output("load"))
    from nodes.diffusion.sampling import apply_loras

    with entry.lock, torch.no_grad():
        apply_loras(entry, run.output("load"))
        return fam.flow_forward(entry.pipe, noisy, sigmas, emb, 1.0)


def test_a_flux_dora_exports_in_kohya_form_and_round_trips(tmp_path, one_image, tiny_flux_dev_dir, engine):
    import torch

    from app.engine.families import get_family
    from app.engine.probe import probe
    from tests.diffusion.conftest import make_graph

    logs: list[str] = []
    t = Trainer(flow_config(tmp_path, one_image, tiny_flux_dev_dir, max_steps=8, network="dora"), log=logs.append)
    result = t.run()
    assert result.peft is None and any("no style.peft.safetensors written" in m for m in logs)
    assert any(k.endswith(".dora_scale") for k in probe(result.lora).keys)
    fam = get_family("flux")
    noisy = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    sigmas, emb = torch.tensor([0.4]), {k: v.unsqueeze(0) for k, v in t.cache.text("stripes").items()}
    t.base.denoiser.eval()
    with torch.no_grad():
        trained = fam.flow_forward(t.base.pipe, noisy, sigmas, emb, 1.0)
    graph = make_graph({"load": ("load_model", {"checkpoint": str(tiny_flux_dev_dir)}),
                        "lora": ("lora", {"file": str(result.lora), "weight": 1.0})}, ["load.model>lora.model"])
    run = engine.run(graph)
    assert run.ok, run.errors
    model = run.output("lora")
    entry = engine.services.get("models").entry(model)
    from nodes.diffusion.sampling import apply_loras

    with entry.lock, torch.no_grad():
        apply_loras(entry, model)
        loaded = fam.flow_forward(entry.pipe, noisy, sigmas, emb, 1.0)
    assert float((loaded - trained).abs().max()) < 1e-4


def test_block_ranges_and_an_fp8_base(tmp_path, one_image, tiny_flux_dev_dir):
    import torch

    t = Trainer(flow_config(tmp_path, one_image, tiny_flux_dev_dir, max_steps=10, blocks="double:0",
                            base_precision="fp8"))
    t.prepare()
    den = t.base.denoiser
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in den.named_parameters() if ".lora_A." in n}
    assert adapted and all(n.startswith("transformer_blocks.0.") for n in adapted), adapted
    assert den.transformer_blocks[0].attn.to_q.base_layer.weight.dtype == torch.float8_e4m3fn
    before = t.validation_loss()
    t.run()
    assert t.validation_loss() < before
    with pytest.raises(ValueError, match=r"blocks: unknown block group 'triple' for Flux.1 \(groups: double, single\)"):
        Trainer(flow_config(tmp_path / "x", one_image, tiny_flux_dev_dir, blocks="triple:0")).prepare()
    with pytest.raises(ConfigError, match=r"blocks: 'double:9-3' is not group:first-last"):
        flow_config(tmp_path / "y", one_image, tiny_flux_dev_dir, blocks="double:9-3")


def test_presets_name_their_family_and_refuse_another(tmp_path, one_image, tiny_sd_dir, tiny_flux_dev_dir):
    for name, family in (("style-flux-24gb", "flux"), ("style-flux-80gb", "flux"), ("style-sd35", "sd3"),
                         ("style-qwen-image", "qwen_image")):
        cfg = load_preset(name).validate()
        assert cfg.family == family and "VRAM" in _description(name)
    cfg = load_preset("style-flux-24gb").replace(data=str(one_image), base=str(tiny_sd_dir), out=str(tmp_path / "o"),
                                                 device="cpu", cache_dir=str(tmp_path / "c"), resolution=64,
                                                 min_image_size=64)
    with pytest.raises(ConfigError, match=r"this preset is for Flux.1 models, but .* is a Stable Diffusion 1.x model"):
        Trainer(cfg).prepare()


def _description(name: str) -> str:
    import tomllib

    from app.training.config import preset_dir

    return tomllib.loads((preset_dir() / f"{name}.toml").read_text(encoding="utf-8"))["description"]


def test_out_of_memory_on_the_first_step_is_one_line_and_writes_no_lora(tmp_path, one_image, tiny_flux_dev_dir):
    import torch

    t = Trainer(flow_config(tmp_path, one_image, tiny_flux_dev_dir))
    t.prepare()

    def no_memory(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    t.objective.loss = no_memory
    with pytest.raises(RuntimeError) as err:
        t.run()
    text = str(err.value)
    assert "out of memory on the first step" in text and "style-flux-24gb" in text and "\n" not in text
    assert not t.out_path.exists()


def test_a_batch_larger_than_the_dataset_is_refused(tmp_path, one_image, tiny_flux_dev_dir):
    with pytest.raises(ConfigError, match=r"batch_size 4 is more than the 1 image"):
        Trainer(flow_config(tmp_path, one_image, tiny_flux_dev_dir, batch_size=4)).prepare()


def test_another_base_never_reads_this_cache(tmp_path, one_image, tiny_flux_dev_dir, tiny_sd3_dir):
    a = Trainer(flow_config(tmp_path / "a", one_image, tiny_flux_dev_dir, max_steps=2, cache_dir=str(tmp_path / "c")))
    a.run()
    b = Trainer(flow_config(tmp_path / "b", one_image, tiny_sd3_dir, max_steps=2, cache_dir=str(tmp_path / "c")))
    b.run()
    assert b.cache.encoded_images == 1 and b.cache.encoded_texts >= 1  # its own latents, not Flux's
    assert np.isfinite(b.validation_loss())


def test_flux_clip_training_exports_te1_keys_and_t5_stays_frozen(tmp_path, one_image, tiny_flux_dev_dir, engine):
    from safetensors.torch import load_file

    from tests.diffusion.conftest import make_graph

    t = Trainer(flow_config(tmp_path, one_image, tiny_flux_dev_dir, max_steps=4, train_text_encoder=True,
                            gradient_checkpointing=True))
    result = t.run()
    keys = load_file(str(result.lora))
    assert any(k.startswith("lora_te1_text_model_encoder_layers_0_self_attn_q_proj.") for k in keys)
    assert not any(k.startswith("lora_te2_") for k in keys)  # T5 is never trained
    assert t.base.denoiser.is_gradient_checkpointing
    assert not any(p.requires_grad for p in t.base.pipe.text_encoder_2.parameters())
    graph = make_graph({"load": ("load_model", {"checkpoint": str(tiny_flux_dev_dir)}),
                        "lora": ("lora", {"file": str(result.lora), "weight": 1.0}),
                        "gen": ("txt2img", {"prompt": "stripes", "width": 64, "height": 64, "steps": 2})},
                       ["load.model>lora.model", "lora.model>gen.model"])
    run = engine.run(graph)
    assert run.ok, run.errors


def test_the_train_lora_command_trains_flux(tmp_path, one_image, tiny_flux_dev_dir, capsys):
    from app.cli import main

    out = tmp_path / "flux-style.safetensors"
    code = main(["train-lora", str(one_image), "--base", str(tiny_flux_dev_dir), "--out", str(out), "--steps", "3",
                 "--resolution", "64", "--rank", "4", "--device", "cpu", "--cache-dir", str(tmp_path / "c"),
                 "--timestep-sampling", "logit_normal", "--shift", "2", "--blocks", "single:0", "--quiet"])
    assert code == 0, capsys.readouterr()
    assert out.is_file() and out.with_name("flux-style.peft.safetensors").is_file()
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        assert all(k.startswith("lora_unet_single_blocks_0_") for k in f.keys())
    assert meta["ss_base_model_version"] == "flux1" and meta["modelspec.prediction_type"] == "flow"


@pytest.mark.parametrize("folder", ["tiny_flux_schnell_dir", "tiny_qwen_dir"])
def test_samples_and_checkpoints_every_n_steps(request, tmp_path, one_image, folder):
    from PIL import Image

    t = Trainer(flow_config(tmp_path, one_image, request.getfixturevalue(folder), max_steps=4, sample_every=2,
                            save_every=2, sample_steps=2, sample_prompts=("zzstyle, stripes",)))
    result = t.run()
    assert [p.name for p in result.samples] == ["step_000002_0.png", "step_000004_0.png"]
    with Image.open(result.samples[0]) as im:
        assert im.size == (64, 64) and np.asarray(im).std() > 0
    assert (t.checkpoint_root / "step_000002").is_dir()
