"""Textual-inversion embeddings named as ComfyUI names them (`embedding:NAME`) on the tiny SD 1.5."""

from __future__ import annotations

import numpy as np
import pytest

from tests.diffusion.conftest import direct_ctx, make_graph

BASE = {"width": 64, "height": 64, "steps": 2, "seed": 3, "scheduler": "euler"}


@pytest.fixture
def embeddings_folder(tmp_path, monkeypatch, tiny_sd_dir):
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    width = CLIPTextModel.from_pretrained(str(tiny_sd_dir), subfolder="text_encoder").config.hidden_size
    folder = tmp_path / "models" / "embeddings"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    save_file({"emb_params": torch.randn(2, width) * 2}, str(folder / "inkwash.safetensors"))
    save_file({"emb_params": torch.randn(1, width + 8)}, str(folder / "too-wide.safetensors"))
    (folder / "pickled.pt").write_bytes(b"not read")
    monkeypatch.setenv("IMAGEBASH_MODELS", str(tmp_path / "models"))
    return folder


def render(engine, model_dir, prompt, negative=""):
    from nodes.diffusion import generate

    model = engine.run(make_graph({"load": ("load_model", {"checkpoint": str(model_dir)})}, [])).output("load")
    return generate.txt2img(model, prompt=prompt, negative_prompt=negative, ctx=direct_ctx(engine), **BASE)


def test_an_embedding_in_a_prompt_changes_the_picture_and_loads_once(engine, tiny_sd_dir, embeddings_folder):
    plain = render(engine, tiny_sd_dir, "a house")
    inked = render(engine, tiny_sd_dir, "a house, embedding:inkwash")
    assert np.abs(inked - plain).mean() > 1e-4
    np.testing.assert_array_equal(render(engine, tiny_sd_dir, "a house, embedding:inkwash.safetensors"), inked)
    negative = render(engine, tiny_sd_dir, "a house", negative="embedding:inkwash")
    assert np.abs(negative - plain).mean() > 1e-4  # negatives take them too
    np.testing.assert_array_equal(render(engine, tiny_sd_dir, "a house"), plain)  # nothing left behind


def test_missing_pickled_and_misfit_embeddings_are_one_line(engine, tiny_sd_dir, embeddings_folder):
    with pytest.raises(ValueError, match=r"^embedding 'nowhere' not found: put nowhere.safetensors in"):
        render(engine, tiny_sd_dir, "embedding:nowhere")
    with pytest.raises(ValueError, match=r"^embedding 'pickled' is a pickle"):
        render(engine, tiny_sd_dir, "embedding:pickled")
    with pytest.raises(ValueError, match=r"^embedding 'too-wide' is \d+ wide, the model's text encoder \d+"):
        render(engine, tiny_sd_dir, "embedding:too-wide")
