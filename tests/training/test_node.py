"""The Train LoRA node in a workflow: trains, feeds the LoRA node, is not retrained when up to
date, and a cancel saves a checkpoint that `resume` continues."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from app.engine import Engine, EngineSettings, NodeLog, NodeProgress
from nodes.registry import default_registry
from tests.diffusion.conftest import make_graph


@pytest.fixture
def engine():
    eng = Engine(default_registry(), EngineSettings(device="cpu", max_workers=2))
    yield eng
    eng.shutdown()


def _graph(folder, base, out, config, steps=4, **extra):
    train = {"folder": str(folder), "base": str(base), "out": str(out), "steps": steps, "resolution": 64,
             "rank": 4, "alpha": 4.0, "batch_size": 2, "learning_rate": 1e-2, "trigger": "zzstyle",
             "save_every": 0, "config": str(config), **extra}
    gen = {"prompt": "zzstyle", "width": 64, "height": 64, "steps": 2, "seed": 1, "scheduler": "euler"}
    nodes = {"train": ("imagebash.training.train_lora", train), "load": ("load_model", {"checkpoint": str(base)}),
             "lora": ("lora", {"weight": 1.0}), "gen": ("txt2img", gen), "plain": ("txt2img", gen)}
    links = ["train.path>lora.file", "load.model>lora.model", "lora.model>gen.model", "load.model>plain.model"]
    return make_graph(nodes, links)


@pytest.fixture
def settings_file(tmp_path):
    f = tmp_path / "quick.toml"
    f.write_text(f'warmup_steps = 0\ncache_dir = "{tmp_path / "cache"}"\ndevice = "cpu"\n')
    return f


def test_workflow_trains_then_uses_the_lora_and_skips_when_up_to_date(tmp_path, style_folder, tiny_sd_dir, engine,
                                                                         settings_file):
    from app.engine.models import ModelManager

    class Manager(ModelManager):
        def offload_all(self) -> None:  # a no-op on the CPU: record when training asked for it
            offloads.append(len([e for e in events if isinstance(e, NodeProgress) and e.node_id == "train"]))
            super().offload_all()

    offloads = []
    engine.services.set("models", Manager(engine.settings))
    out = tmp_path / "loras" / "style.safetensors"
    events = []
    engine.events.subscribe(events.append)
    result = engine.run(_graph(style_folder, tiny_sd_dir, out, settings_file), targets=["train", "gen", "plain"])
    assert result.ok, result.errors
    assert offloads == [0]  # the engine's pipelines left the GPU before training loaded its own base copy
    assert result.output("train") == out and out.is_file()
    assert np.abs(result.output("gen") - result.output("plain")).mean() > 1e-3
    texts = [e.text for e in events if isinstance(e, NodeProgress) and e.node_id == "train" and e.text]
    assert any(t.startswith("step 4/4 loss ") for t in texts)

    stamp = out.stat().st_mtime_ns
    fresh = Engine(default_registry(), EngineSettings(device="cpu", max_workers=2))
    logs = []
    fresh.events.subscribe(lambda e: logs.append(e.message) if isinstance(e, NodeLog) else None)
    again = fresh.run(_graph(style_folder, tiny_sd_dir, out, settings_file), targets=["train"])
    fresh.shutdown()
    assert again.ok and out.stat().st_mtime_ns == stamp
    assert any("up to date" in m for m in logs)


def test_cancel_saves_a_checkpoint_and_resume_continues(tmp_path, style_folder, tiny_sd_dir, engine, settings_file):
    out = tmp_path / "c.safetensors"
    cancel = threading.Event()

    def on_event(e):
        if isinstance(e, NodeProgress) and e.node_id == "train" and (e.text or "").startswith("step 2/"):
            cancel.set()

    engine.events.subscribe(on_event)
    graph = _graph(style_folder, tiny_sd_dir, out, settings_file, steps=50)
    result = engine.run(graph, targets=["train"], cancel=cancel)
    assert result.cancelled and result.status["train"] == "cancelled"
    ck = sorted((tmp_path / "c_checkpoints").glob("step_*"))
    assert len(ck) == 1 and 2 <= int(ck[0].name[5:]) < 50
    graph.set_param("train", "resume", True)
    graph.set_param("train", "steps", int(ck[0].name[5:]) + 1)
    done = engine.run(graph, targets=["train"])
    assert done.ok, done.errors
    assert out.is_file()


def test_bad_folder_fails_the_node_with_one_line(tmp_path, tiny_sd_dir, engine, settings_file):
    result = engine.run(_graph(tmp_path / "nope", tiny_sd_dir, tmp_path / "x.safetensors", settings_file),
                        targets=["train"])
    assert "training folder not found" in result.errors["train"]
    assert "\n" not in result.errors["train"]


def test_default_output_lands_in_the_models_folder_where_the_lora_node_lists_it(tmp_path, style_folder, tiny_sd_dir,
                                                                                engine, settings_file):
    from nodes.diffusion.catalog import list_loras

    graph = _graph(style_folder, tiny_sd_dir, "", settings_file, steps=1)
    graph.set_param("train", "out", None)
    result = engine.run(graph, targets=["train"])
    assert result.ok, result.errors
    path = result.output("train")
    assert path.name == "data.safetensors" and path.parent.name == "loras"
    assert path.name in {Path(p).name for p in list_loras()}


def test_replacing_the_base_model_file_invalidates_the_cached_lora(tmp_path, style_folder, tiny_sd_ckpt):
    """`base` is a name, not a Path port: the node's cache must still follow the file's content."""
    from safetensors.torch import load_file, save_file

    from app.engine.plan import compute_signatures, make_plan

    base = tmp_path / "base.safetensors"
    shutil.copyfile(tiny_sd_ckpt, base)
    graph = make_graph({"train": ("imagebash.training.train_lora", {"folder": str(style_folder),
                                                                    "base": str(base)})}, [])

    def signature() -> str:
        plan = make_plan(graph, default_registry(), ["train"])
        compute_signatures(plan, nonce="run")
        return plan.nodes["train"].signature

    before = signature()
    assert signature() == before
    weights = load_file(str(base))
    name = next(k for k in weights if k.endswith("attn1.to_q.weight"))
    weights[name] = weights[name] * 1.5  # a retrained base, same name and size
    save_file(weights, str(base))
    assert signature() != before


def test_the_trained_model_copy_is_freed_when_the_node_returns(tmp_path, style_folder, tiny_sd_dir, engine,
                                                               settings_file, monkeypatch):
    """Sampling nodes after Train LoRA load the base again: training's own copy must be gone by then,
    not left for the garbage collector (on a GPU it would hold a second model's worth of memory)."""
    import gc
    import weakref

    import app.training.base

    copies = []
    load_base = app.training.base.load_base

    def spy(*args, **kwargs):
        base = load_base(*args, **kwargs)
        copies.append(weakref.ref(base.unet))
        return base

    monkeypatch.setattr(app.training.base, "load_base", spy)
    gc.disable()  # what the collector might free by chance must not pass the test
    try:
        result = engine.run(_graph(style_folder, tiny_sd_dir, tmp_path / "f.safetensors", settings_file, steps=1),
                            targets=["train"])
        alive = [ref() is not None for ref in copies]
    finally:
        gc.enable()
    assert result.ok, result.errors
    assert alive == [False]


def test_the_train_lora_node_trains_flux_with_its_preset_and_the_lora_node_uses_it(tmp_path, style_folder,
                                                                                     tiny_flux_dev_dir, engine,
                                                                                     settings_file):
    """No preset named: the family's (style-flux-24gb: fp8 base, flow matching) is used, at the
    node's 64 px resolution (the preset's 512 px minimum image size follows it down)."""
    out = tmp_path / "loras" / "flux-style.safetensors"
    logs = []
    engine.events.subscribe(lambda e: logs.append(e.message) if isinstance(e, NodeLog) else None)
    result = engine.run(_graph(style_folder, tiny_flux_dev_dir, out, settings_file), targets=["train", "gen", "plain"])
    assert result.ok, result.errors
    assert out.is_file() and np.abs(result.output("gen") - result.output("plain")).mean() > 1e-4
    assert any("frozen base stored in fp8" in m for m in logs), logs
    assert any("flow matching, sigmoid timesteps (shift 3)" in m for m in logs), logs


def test_the_up_to_date_key_ignores_flow_settings_at_their_defaults(tmp_path, style_folder, tiny_sd_dir):
    """A LoRA trained before flow matching existed stays up to date: the key is what it was."""
    import hashlib
    import json

    from app.engine.fingerprint import fingerprint
    from app.training.config import TrainConfig
    from nodes.training import FLOW_FIELDS, _train_key

    cfg = TrainConfig().replace(data=str(style_folder), base=str(tiny_sd_dir), out=str(tmp_path / "o.safetensors"))
    old = {k: v for k, v in cfg.to_dict().items()
           if k not in (*FLOW_FIELDS, "out", "checkpoint_dir", "cache_dir", "device", "extra")}
    old |= {"data_fingerprint": fingerprint(cfg.data), "base_fingerprint": fingerprint(cfg.base)}
    assert _train_key(cfg) == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:32]
    assert _train_key(cfg.replace(shift=2.0)) != _train_key(cfg)
