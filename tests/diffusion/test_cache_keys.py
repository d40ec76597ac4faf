"""Files named by str parameters (a checkpoint, a LoRA) key the cache on their content."""

from __future__ import annotations

import shutil

from safetensors.torch import load_file, save_file

from app.engine import Engine, EngineSettings
from tests.diffusion.conftest import make_graph, run_ok


def test_replacing_a_lora_file_on_disk_reruns_the_lora_node(tmp_path, tiny_sd_dir, tiny_lora_kohya):
    lora = tmp_path / "style.safetensors"
    shutil.copy(tiny_lora_kohya, lora)
    g = make_graph({"m": ("load_model", {"checkpoint": str(tiny_sd_dir)}),
                    "l": ("lora", {"file": str(lora), "weight": 1.0})}, ["m.model>l.model"])
    eng = Engine(settings=EngineSettings(device="cpu"))
    first = run_ok(eng, g, targets=["l"])
    assert run_ok(eng, g, targets=["l"]).status == {"m": "cached", "l": "cached"}
    tensors = load_file(str(lora))
    key = next(k for k in tensors if k.endswith("lora_up.weight"))
    tensors[key] = tensors[key] * 2
    save_file(tensors, str(lora))
    again = run_ok(eng, g, targets=["l"])
    assert again.status == {"m": "cached", "l": "done"}
    assert again.output("l").loras[0].hash != first.output("l").loras[0].hash


def test_replacing_a_checkpoint_on_disk_reloads_it(tmp_path, tiny_sd_ckpt, tiny_sd_dir):
    ckpt = tmp_path / "model.safetensors"
    shutil.copy(tiny_sd_ckpt, ckpt)
    g = make_graph({"m": ("load_model", {"checkpoint": str(ckpt), "config": str(tiny_sd_dir)})}, [])
    eng = Engine(settings=EngineSettings(device="cpu"))
    run_ok(eng, g)
    assert run_ok(eng, g).status["m"] == "cached"
    tensors = load_file(str(ckpt))
    save_file(tensors, str(ckpt), metadata={"edited": "yes"})  # same weights, new file content
    models = eng.services.get("models")
    loads = models.loads
    assert run_ok(eng, g).status["m"] == "done"
    assert models.loads == loads + 1  # the manager does not hand back the old file's pipeline


def test_replacing_a_diffusers_folder_reloads_it_and_unloads_the_old_one(tmp_path, tiny_sd_dir):
    import numpy as np

    from tests.diffusion.conftest import txt2img_graph

    folder = tmp_path / "model"
    shutil.copytree(tiny_sd_dir, folder)
    eng = Engine(settings=EngineSettings(device="cpu"))
    models = eng.services.get("models")
    first = run_ok(eng, txt2img_graph(folder, seed=2)).output("gen")
    weights = next((folder / "unet").glob("*.safetensors"))
    tensors = load_file(str(weights))
    tensors = {k: v * 1.5 if k.endswith("weight") else v for k, v in tensors.items()}
    save_file(tensors, str(weights))  # the folder is replaced by a retrained model
    second = run_ok(eng, txt2img_graph(folder, seed=2))
    assert second.status["load"] == "done" and models.loads == 2
    assert np.abs(second.output("gen") - first).mean() > 1e-3  # the new weights, not the old pipeline
    assert len(models.loaded()) == 1  # the old version's pipeline is gone, not kept beside it
    eng.shutdown()


def test_a_diffusers_folder_of_pickle_weights_is_refused(tmp_path, tiny_sd_dir):
    import torch

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_sd_dir, folder)
    weights = next((folder / "unet").glob("*.safetensors"))
    torch.save(load_file(str(weights)), folder / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    eng = Engine(settings=EngineSettings(device="cpu"))
    result = eng.run(make_graph({"load": ("load_model", {"checkpoint": str(folder)})}, []))
    error = result.errors["load"]
    assert "unet holds only pickle weights (diffusion_pytorch_model.bin)" in error
    assert "loads only .safetensors" in error and "\n" not in error
    assert eng.services.get("models").loads == 0
    eng.shutdown()


def test_a_pickled_safety_checker_does_not_block_a_folder(tmp_path, tiny_sd_dir):
    """Older SD 1.5 repos ship safety_checker/*.bin; imagebash never loads that part."""
    import json

    import torch

    folder = tmp_path / "with_checker"
    shutil.copytree(tiny_sd_dir, folder)
    (folder / "safety_checker").mkdir()
    torch.save({"w": torch.zeros(1)}, folder / "safety_checker" / "pytorch_model.bin")
    index = json.loads((folder / "model_index.json").read_text())
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    (folder / "model_index.json").write_text(json.dumps(index))
    eng = Engine(settings=EngineSettings(device="cpu"))
    result = eng.run(make_graph({"load": ("load_model", {"checkpoint": str(folder)})}, []))
    assert result.ok, result.errors
    eng.shutdown()
