"""Models: the list with family, size and a sha256 hashed once (remembered across restarts), and
adopting an uploaded .safetensors as a LoRA or checkpoint: header checked (nothing unpickled),
a safe name, no overwrite of a different file, then in the list and the dropdown choices."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest
from safetensors.numpy import save, save_file

from app.engine.protocol import API
from tests.server.conftest import InProcess, sha, wait_for


def lora_bytes(seed: int = 0, metadata: dict | None = None) -> bytes:
    rng = np.random.default_rng(seed)
    tensors = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": rng.random((4, 8), np.float32),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": rng.random((8, 4), np.float32)}
    return save(tensors, metadata=metadata)


def checkpoint_file(path) -> None:
    save_file({"cond_stage_model.transformer.text_model.embeddings.position_ids": np.zeros((1, 4), np.float32),
               "model.diffusion_model.input_blocks.0.0.weight": np.zeros((8, 4, 3, 3), np.float32)}, str(path))


def adopt(server, data: bytes, name: str, kind: str = "lora"):
    return server.post("/models", json={"blob": server.upload(data), "kind": kind, "name": name})


def test_listing_has_family_size_and_a_remembered_hash(tmp_path, monkeypatch):
    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    (models / "loras").mkdir()
    checkpoint_file(models / "checkpoints" / "base.safetensors")
    data = lora_bytes(metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    (models / "loras" / "style.safetensors").write_bytes(data)
    (models / "loras" / "broken.safetensors").write_bytes(b"not safetensors at all")
    monkeypatch.setenv("IMAGEBASH_MODELS", str(models))
    with InProcess(tmp_path / "srv") as s:
        def listed():
            got = {m["name"]: m for m in s.get("/models").json()}
            return got if all(m["sha256"] for m in got.values()) else None

        got = wait_for(listed, 10)  # hashed on a background thread, listed with null until then
        assert got is not None and set(got) == {"base.safetensors", "style.safetensors"}
        assert got["style.safetensors"] == {"name": "style.safetensors", "kind": "lora", "family": "sdxl",
                                            "size": len(data), "sha256": sha(data), "format": "safetensors"}
        ckpt = got["base.safetensors"]
        assert ckpt["kind"] == "checkpoint" and ckpt["family"] == "sd1"
        assert ckpt["sha256"] == sha((models / "checkpoints" / "base.safetensors").read_bytes())
        assert [m["name"] for m in s.get("/models", params={"kind": "lora"}).json()] == ["style.safetensors"]
        assert s.get("/models", params={"kind": "vae"}).json() == []
        assert s.get("/models", params={"kind": "unet"}).status_code == 422
        assert s.get("/info").json()["models"] == 2
    with InProcess(tmp_path / "srv") as s:  # the next start: remembered, no hashing needed
        rows = s.state.db.rows("SELECT path FROM model_hashes")
        assert len(rows) == 2
        assert all(m["sha256"] for m in s.state.models.list())


def test_adopt_an_uploaded_lora(server):
    data = lora_bytes(1)
    r = adopt(server, data, "../../my style.safetensors")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "my style.safetensors" and body["sha256"] == sha(data) and body["kind"] == "lora"
    models_dir = server.state.data_dir.parent / "models"
    assert (models_dir / "loras" / "my style.safetensors").read_bytes() == data
    assert "my style.safetensors" in [m["name"] for m in server.get("/models").json()]
    choices = server.get("/nodes/imagebash.diffusion.lora/choices/file").json()["choices"]
    assert "my style.safetensors" in choices  # the engine's dropdown sees it at once
    assert adopt(server, data, "my style.safetensors").status_code == 200  # the same file again: fine
    other = adopt(server, lora_bytes(2), "my style.safetensors")
    assert other.status_code == 409 and "already" in other.json()["error"]
    assert (models_dir / "loras" / "my style.safetensors").read_bytes() == data  # not overwritten


def test_adopt_a_checkpoint(server, tmp_path):
    f = tmp_path / "c.safetensors"
    checkpoint_file(f)
    r = adopt(server, f.read_bytes(), "c.safetensors", "checkpoint")
    assert r.status_code == 201 and r.json()["family"] == "sd1"
    assert "c.safetensors" in server.get("/nodes/imagebash.diffusion.load_model/choices/checkpoint").json()["choices"]


@pytest.mark.parametrize("data,name,kind,status,words", [
    (pickle.dumps({"weights": [1, 2]}), "evil.ckpt", "lora", 422, "only .safetensors"),
    (pickle.dumps({"weights": [1, 2]}), "evil.safetensors", "lora", 422, "not a readable .safetensors"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}xxxxxx", "bad.safetensors", "lora", 422, "header is not JSON"),
    (None, "lora.safetensors", "checkpoint", 422, "is a LoRA"),
    (None, "..", "lora", 422, "not a usable file name"),
    (None, ".safetensors", "lora", 422, "only .safetensors"),
])
def test_adopt_refuses_what_is_not_a_safe_model(server, data, name, kind, status, words):
    r = adopt(server, lora_bytes() if data is None else data, name, kind)
    assert r.status_code == status and words in r.json()["error"], r.text
    assert "\n" not in r.json()["error"]
    assert not list((server.state.data_dir.parent / "models").rglob("*.safetensors"))


def test_adopt_needs_the_blob_and_a_kind(server):
    r = server.post("/models", json={"blob": "a" * 64, "kind": "lora", "name": "x.safetensors"})
    assert r.status_code == 404 and "upload it first" in r.json()["error"]
    r = server.post("/models", json={"blob": "a" * 64, "kind": "unet", "name": "x.safetensors"})
    assert r.status_code == 422


def test_adopt_split_layout_parts_into_their_folders(server, tmp_path):
    """A denoiser-only model's text encoder and VAE files (ComfyUI's split layout) go to
    text_encoders/ and vae/, where Load Model's dropdowns look; a LoRA is refused as either."""
    import torch
    from safetensors.torch import save_file

    f = tmp_path / "clip_l.safetensors"
    save_file({"text_model.embeddings.token_embedding.weight": torch.zeros(4, 2)}, str(f))
    r = adopt(server, f.read_bytes(), "clip_l.safetensors", "text_encoder")
    assert r.status_code == 201 and r.json()["kind"] == "text_encoder", r.text
    models_dir = server.state.data_dir.parent / "models"
    assert (models_dir / "text_encoders" / "clip_l.safetensors").is_file()
    choices = server.get("/nodes/imagebash.diffusion.load_model/choices/text_encoder").json()["choices"]
    assert "clip_l.safetensors" in choices
    v = tmp_path / "ae.safetensors"
    save_file({"decoder.conv_in.weight": torch.zeros(2, 2)}, str(v))
    assert adopt(server, v.read_bytes(), "ae.safetensors", "vae").status_code == 201
    assert [m["name"] for m in server.get("/models", params={"kind": "vae"}).json()] == ["ae.safetensors"]
    r = adopt(server, lora_bytes(3), "style.safetensors", "vae")
    assert r.status_code == 422 and "is a LoRA" in r.json()["error"]


def test_catalogue_routes(server):
    nodes = server.get("/nodes").json()
    by_id = {n["id"]: n for n in nodes}
    assert "imagebash.image.blend" in by_id and "test.gate" in by_id
    lora_port = next(p for p in by_id["imagebash.diffusion.lora"]["inputs"] if p["name"] == "file")
    assert lora_port["suggestions"] is True and lora_port["model"] == "lora"
    assert server.get("/nodes/no.such/choices/x").status_code == 404
    assert server.get("/nodes/imagebash.diffusion.lora/choices/nope").status_code == 404
    assert server.get("/nodes/imagebash.image.blend/choices/opacity").json() == {"choices": []}
    t0 = time.monotonic()
    info = server.get("/info").json()
    assert info["device"] in ("cpu", "cuda", "mps") and info["version"] and info["protocol"] == 1
    if info["device"] != "cuda":
        assert info["vram_total"] is None and info["vram_free"] is None
    assert info["max_upload"] > 0 and time.monotonic() - t0 < 30
    assert server.client.get(f"{API}/health").json()["version"] == info["version"]
