"""LoRA stacks: kohya, peft and DoRA files change the output; weights never reload the base."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from app.engine import NodeLog
from tests.diffusion.conftest import run_ok, txt2img_graph


def _gen(engine, model, loras=(), seed=1):
    return run_ok(engine, txt2img_graph(model, seed=seed, loras=loras)).output("gen")


def test_kohya_and_peft_loras_change_output_and_weight_zero_is_base(engine, tiny_sd_dir, tiny_lora_kohya,
                                                                    tiny_lora_peft):
    base = _gen(engine, tiny_sd_dir)
    kohya = _gen(engine, tiny_sd_dir, [(tiny_lora_kohya, 1.0)])
    peft = _gen(engine, tiny_sd_dir, [(tiny_lora_peft, 1.0)])
    off = _gen(engine, tiny_sd_dir, [(tiny_lora_kohya, 0.0)])
    assert np.abs(kohya - base).mean() > 0.02
    assert np.abs(peft - base).mean() > 0.02
    assert np.abs(peft - kohya).mean() > 0.02
    np.testing.assert_array_equal(off, base)
    # a workflow without LoRAs on the same (shared) base still sees the base
    np.testing.assert_array_equal(_gen(engine, tiny_sd_dir), base)


def test_changing_a_weight_does_not_reload_base_or_lora(fresh_engine, tiny_sd_dir, tiny_lora_kohya, tiny_lora_kohya_b):
    outs = [_gen(fresh_engine, tiny_sd_dir, [(tiny_lora_kohya, w), (tiny_lora_kohya_b, 0.5)]) for w in (0.3, 0.9, 0.3)]
    models = fresh_engine.services.get("models")
    assert models.loads == 1
    (entry,) = models.entries()
    assert entry.state["lora_loads"] == 2
    assert np.abs(outs[0] - outs[1]).mean() > 0.005
    np.testing.assert_array_equal(outs[0], outs[2])


def test_two_workflows_share_one_base(fresh_engine, tiny_sd_dir, tiny_lora_kohya):
    a = run_ok(fresh_engine, txt2img_graph(tiny_sd_dir), targets=["load", "gen"]).output("load")
    g = txt2img_graph(tiny_sd_dir, seed=9, loras=[(tiny_lora_kohya, 1.0)])
    b = run_ok(fresh_engine, g, targets=["load", "gen"]).output("load")
    models = fresh_engine.services.get("models")
    assert a.key == b.key and models.loads == 1
    assert models.entry(a).pipe.unet is models.entry(b).pipe.unet


def test_dora_magnitudes_change_the_output(engine, tiny_sd_dir, tiny_dora, tiny_dora_plain):
    scales = [v for k, v in load_file(str(tiny_dora)).items() if k.endswith(".dora_scale")]
    assert scales and all(v.shape[0] == 1 for v in scales)  # input axis, as kohya/LyCORIS write it
    dora = _gen(engine, tiny_sd_dir, [(tiny_dora, 1.0)])
    plain = _gen(engine, tiny_sd_dir, [(tiny_dora_plain, 1.0)])
    base = _gen(engine, tiny_sd_dir)
    assert np.abs(dora - plain).mean() > 0.01
    assert np.abs(dora - base).mean() > 0.01


def test_unmatched_keys_are_counted_and_reported(engine, tiny_sd_dir, tiny_lora_kohya, tmp_path):
    import torch

    state = load_file(str(tiny_lora_kohya))
    state["lora_unet_no_such_block_to_q.lora_down.weight"] = torch.ones(4, 8)
    state["lora_te_text_model_encoder_layers_9_self_attn_q_proj.alpha"] = torch.tensor(4.0)
    path = tmp_path / "with_extra.safetensors"
    save_file(state, str(path))
    logs = []
    engine.events.subscribe(lambda e: logs.append(e) if isinstance(e, NodeLog) and e.node_id == "lora0" else None)
    run_ok(engine, txt2img_graph(tiny_sd_dir, loras=[(path, 1.0)]))
    (log,) = logs
    assert log.level == "warning" and "2 of" in log.message and "matched nothing" in log.message
    assert "no_such_block" in log.message


def test_text_encoder_keys_with_and_without_text_model_level(engine, tiny_sd_dir, tiny_lora_kohya, tmp_path):
    """kohya names TE modules `lora_te_text_model_encoder_...`; transformers 5 dropped `text_model`."""
    state = load_file(str(tiny_lora_kohya))
    te_only = {k: v for k, v in state.items() if k.startswith("lora_te_")}
    short = {k.replace("lora_te_text_model_", "lora_te_"): v for k, v in te_only.items()}
    save_file(te_only, str(tmp_path / "te.safetensors"))
    save_file(short, str(tmp_path / "te_short.safetensors"))
    base = _gen(engine, tiny_sd_dir)
    te = _gen(engine, tiny_sd_dir, [(tmp_path / "te.safetensors", 1.0)])
    te_short = _gen(engine, tiny_sd_dir, [(tmp_path / "te_short.safetensors", 1.0)])
    assert np.abs(te - base).mean() > 0.005
    np.testing.assert_array_equal(te, te_short)


def test_ldm_style_kohya_names_match_diffusers_style(engine, tiny_sd_dir, tiny_lora_kohya, tmp_path):
    from diffusers import UNet2DConditionModel

    from nodes.diffusion.lora_keys import ldm_unet_prefixes, to_ldm_name

    config = dict(UNet2DConditionModel.load_config(str(tiny_sd_dir / "unet")))
    pairs = ldm_unet_prefixes(config)
    state = load_file(str(tiny_lora_kohya))
    unet_modules = [n for n in dict(engine_unet_modules(tiny_sd_dir))]
    flat = {n.replace(".", "_"): n for n in unet_modules}
    renamed = {}
    for key, value in state.items():
        stem, _, suffix = key.partition(".")
        if stem.startswith("lora_unet_"):
            ldm = to_ldm_name(flat[stem[len("lora_unet_"):]], pairs)
            key = "lora_unet_" + ldm.replace(".", "_") + "." + suffix
        renamed[key] = value
    assert any("input_blocks" in k for k in renamed)
    save_file(renamed, str(tmp_path / "ldm.safetensors"))
    a = _gen(engine, tiny_sd_dir, [(tiny_lora_kohya, 1.0)])
    b = _gen(engine, tiny_sd_dir, [(tmp_path / "ldm.safetensors", 1.0)])
    np.testing.assert_array_equal(a, b)


def engine_unet_modules(folder):
    import torch
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(folder / "unet"))
    return [(n, m) for n, m in unet.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]


def test_lora_for_another_model_is_a_clear_error(engine, tiny_sd_dir, tmp_path):
    import torch

    save_file({"lora_unet_foo_bar.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_foo_bar.lora_up.weight": torch.zeros(8, 4)}, str(tmp_path / "other.safetensors"))
    result = engine.run(txt2img_graph(tiny_sd_dir, loras=[(tmp_path / "other.safetensors", 1.0)]))
    assert "none of its 2 keys match" in result.errors["lora0"]
    missing = engine.run(txt2img_graph(tiny_sd_dir, loras=[(tmp_path / "nope.safetensors", 1.0)]))
    assert "LoRA file not found" in missing.errors["lora0"]


def test_pickle_lora_is_refused(engine, tiny_sd_dir, tmp_path):
    (tmp_path / "old.ckpt").write_bytes(b"not really a pickle")
    result = engine.run(txt2img_graph(tiny_sd_dir, loras=[(tmp_path / "old.ckpt", 1.0)]))
    assert "pickle" in result.errors["lora0"] and ".safetensors" in result.errors["lora0"]


@pytest.mark.parametrize("weight", [0.5])
def test_lora_provenance_reaches_saved_png(engine, tiny_sd_dir, tiny_lora_kohya, tmp_path, weight):
    import json

    from PIL import Image as PILImage

    from app.engine.fingerprint import short_hash
    from app.graph.model import Link, NodeInstance

    g = txt2img_graph(tiny_sd_dir, loras=[(tiny_lora_kohya, weight)])
    g.add_node(NodeInstance("save", "imagebash.image.save", {"filename_prefix": "out"}))
    g.connect(Link("gen", "image", "save", "image"))
    run_ok(engine, g, output_dir=tmp_path)
    (png,) = tmp_path.glob("out*.png")
    with PILImage.open(png) as im:
        prov = json.loads(im.info["imagebash.provenance"])
    assert prov["lora"][0]["hash"] == short_hash(tiny_lora_kohya) and prov["lora"][0]["weight"] == weight
    assert prov["model"][0]["hash"] and prov["model"][0]["family"] == "sd1"


def test_every_key_style_resolves_to_the_same_modules(engine, tiny_sd_dir):
    import torch

    from nodes.diffusion.lora_keys import module_tables, parse_lora

    pipe = engine.services.get("models").load(str(tiny_sd_dir)).pipe
    tables = module_tables(pipe)
    unet_mod = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
    te_mod = "text_model.encoder.layers.1.self_attn.out_proj"
    down, up = torch.zeros(4, 16), torch.zeros(16, 4)
    te_down, te_up = torch.zeros(4, 32), torch.zeros(32, 4)
    styles = {
        "peft bare model": {f"base_model.model.{unet_mod}.to_q.lora_A.weight": down,
                            f"base_model.model.{unet_mod}.to_q.lora_B.weight": up},
        "diffusers": {f"unet.{unet_mod}.to_q.lora_A.weight": down, f"unet.{unet_mod}.to_q.lora_B.weight": up,
                      f"text_encoder.{te_mod}.lora_A.weight": te_down,
                      f"text_encoder.{te_mod}.lora_B.weight": te_up},
        "old diffusers processor": {f"unet.{unet_mod}.processor.to_q_lora.down.weight": down,
                                    f"unet.{unet_mod}.processor.to_q_lora.up.weight": up,
                                    f"unet.{unet_mod}.processor.to_out_lora.down.weight": down,
                                    f"unet.{unet_mod}.processor.to_out_lora.up.weight": up},
        "peft DoRA": {f"unet.{unet_mod}.to_q.lora_A.weight": down, f"unet.{unet_mod}.to_q.lora_B.weight": up,
                      f"unet.{unet_mod}.to_q.lora_magnitude_vector": torch.ones(16)},
    }
    expected = {
        "peft bare model": {("unet", f"{unet_mod}.to_q")},
        "diffusers": {("unet", f"{unet_mod}.to_q"), ("text_encoder", te_mod.removeprefix("text_model."))},
        "old diffusers processor": {("unet", f"{unet_mod}.to_q"), ("unet", f"{unet_mod}.to_out.0")},
        "peft DoRA": {("unet", f"{unet_mod}.to_q")},
    }
    for style, state in styles.items():
        parsed = parse_lora(state, tables)
        assert not parsed.unmatched, (style, parsed.unmatched)
        assert {(c, n) for c, mods in parsed.modules.items() for n in mods} == expected[style], style
    assert parse_lora(styles["peft DoRA"], tables).dora
    half = parse_lora({f"unet.{unet_mod}.to_q.lora_A.weight": down}, tables)
    assert half.unmatched == [f"unet:{unet_mod}.to_q (has only lora_down)"] and not half.modules


@pytest.mark.parametrize("axis", ["in", "out"])
def test_dora_with_the_norm_as_magnitude_equals_plain_lora(engine, tiny_sd_dir, tmp_path, axis):
    """DoRA rescales W + dW to the magnitude: a magnitude equal to its norm changes nothing."""
    from diffusers import StableDiffusionPipeline

    from tests.tiny_models import write_kohya_lora

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd_dir), local_files_only=True)
    exact = write_kohya_lora(pipe, tmp_path / "exact.safetensors", seed=5, dora=True, dora_axis=axis,
                             dora_jitter=0.0)
    scaled = write_kohya_lora(pipe, tmp_path / "scaled.safetensors", seed=5, dora=True, dora_axis=axis)
    plain = write_kohya_lora(pipe, tmp_path / "plain.safetensors", seed=5)
    out = {p.stem: _gen(engine, tiny_sd_dir, [(p, 1.0)]) for p in (exact, scaled, plain)}
    np.testing.assert_allclose(out["exact"], out["plain"], atol=2e-3)
    assert np.abs(out["scaled"] - out["plain"]).mean() > 0.01


def test_stack_longer_than_the_adapter_cap_keeps_every_adapter(engine, fresh_engine, tiny_sd_dir, tiny_lora_kohya,
                                                               tiny_lora_kohya_b, tiny_lora_peft, tiny_dora,
                                                               monkeypatch):
    from nodes.diffusion import loras as loras_mod

    stack = [(tiny_lora_kohya, 0.7), (tiny_lora_kohya_b, 0.6), (tiny_lora_peft, 0.5)]
    expected = _gen(engine, tiny_sd_dir, stack)  # default cap: nothing evicted
    monkeypatch.setattr(loras_mod, "MAX_ADAPTERS", 2)
    capped = _gen(fresh_engine, tiny_sd_dir, stack)
    np.testing.assert_array_equal(capped, expected)  # the first LoRA was not silently dropped
    (entry,) = fresh_engine.services.get("models").entries()
    before = set(entry.state["adapters"])
    assert len(before) == 3
    _gen(fresh_engine, tiny_sd_dir, [(tiny_dora, 1.0)])  # now the cap applies to the old stack
    after = set(entry.state["adapters"])
    evicted = before - after
    assert len(after) == 2 and len(evicted) == 2
    for comp in ("unet", "text_encoder"):
        assert not evicted & set(getattr(entry.pipe, comp).peft_config)
    with pytest.raises(RuntimeError, match="not loaded in the pipeline"):
        loras_mod.activate(entry, [(next(iter(evicted)), 1.0)])


def test_two_threads_on_one_pipeline_sample_with_their_own_stacks(engine, shared_models, tiny_sd_dir,
                                                                   tiny_lora_kohya, monkeypatch):
    """A stack is activated inside the sampling lock: another thread's stack cannot leak in."""
    import threading

    from app.engine import Engine, EngineSettings
    from nodes.diffusion import generate

    with_lora = _gen(engine, tiny_sd_dir, [(tiny_lora_kohya, 1.0)], seed=4)
    plain = _gen(engine, tiny_sd_dir, seed=4)
    engine.cache.clear()
    first_opened, second_opened = threading.Event(), threading.Event()
    real = generate.task_pipeline

    def interleave(ctx, entry, task):  # thread A waits here until thread B has opened its model
        if not first_opened.is_set():
            first_opened.set()
            second_opened.wait(10)
        else:
            second_opened.set()
        return real(ctx, entry, task)

    monkeypatch.setattr(generate, "task_pipeline", interleave)
    other = Engine(settings=EngineSettings(device="cpu"))
    other.services.set("models", shared_models)
    results = {}
    a = threading.Thread(target=lambda: results.setdefault(
        "lora", _gen(engine, tiny_sd_dir, [(tiny_lora_kohya, 1.0)], seed=4)))
    a.start()
    assert first_opened.wait(60)
    results["plain"] = _gen(other, tiny_sd_dir, seed=4)
    a.join(60)
    other.shutdown()
    np.testing.assert_array_equal(results["lora"], with_lora)
    np.testing.assert_array_equal(results["plain"], plain)
