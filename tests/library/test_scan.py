"""The library scan: kinds by folder and header, families, sizes, cached sha256, metadata, extra roots."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from app.library import scan as lib
from tests.library import diffusers_sd1, embedding, sd1_checkpoint, sd1_lora, tensors_file, use_models, write


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def models(tmp_path, monkeypatch):
    root = tmp_path / "models"
    use_models(monkeypatch, root)
    files = {
        "ckpt": sd1_checkpoint(root / "checkpoints" / "tiny.safetensors"),
        "lora": sd1_lora(root / "loras" / "style.safetensors"),
        "sub_lora": sd1_lora(root / "loras" / "sd15" / "ink.safetensors", seed=3),
        "vae": tensors_file(root / "vae" / "vae.safetensors"),
        "te": tensors_file(root / "text_encoders" / "clip_l.safetensors", seed=4),
        "emb": embedding(root / "embeddings" / "bad_hands.safetensors"),
        "denoiser": tensors_file(root / "diffusion_models" / "dit.safetensors", seed=5),
        "pipe": diffusers_sd1(root / "checkpoints" / "tiny-pipe"),
    }
    (root / "controlnet" / "canny").mkdir(parents=True)
    (root / "controlnet" / "canny" / "config.json").write_text("{}")
    files["cn"] = root / "controlnet" / "canny"
    tensors_file(files["cn"] / "diffusion_pytorch_model.safetensors", seed=6)
    return root, files


def test_scan_finds_each_kind_with_family_size_and_sha256(models):
    root, f = models
    by_name = {m.name: m for m in lib.scan()}
    expect = {"tiny.safetensors": ("checkpoint", "sd1", "base"), "style.safetensors": ("lora", "sd1", None),
              "sd15/ink.safetensors": ("lora", "sd1", None), "vae.safetensors": ("vae", None, None),
              "clip_l.safetensors": ("text_encoder", None, None), "bad_hands.safetensors": ("embedding", "sd1", None),
              "dit.safetensors": ("diffusion_model", None, None), "tiny-pipe": ("checkpoint", "sd1", "base"),
              "canny": ("controlnet", None, None)}
    assert set(by_name) == set(expect)
    for name, (kind, family, variant) in expect.items():
        m = by_name[name]
        assert (m.kind, m.family, m.variant) == (kind, family, variant), name
        assert m.root == root
    for key in ("ckpt", "lora", "vae", "emb"):
        m = next(m for m in by_name.values() if m.path == f[key])
        assert m.size == f[key].stat().st_size
        assert m.sha256 == _sha(f[key])
    pipe = by_name["tiny-pipe"]
    assert pipe.format == "diffusers" and pipe.sha256 is None
    assert pipe.size == sum(p.stat().st_size for p in f["pipe"].rglob("*") if p.is_file())
    assert sorted(m.name for m in lib.scan(kinds=["lora"])) == ["sd15/ink.safetensors", "style.safetensors"]


def test_sha256_is_cached_on_disk_and_rehashed_only_when_the_file_changes(models, monkeypatch):
    _root, f = models
    reads: list[str] = []
    real = lib._hash_file
    monkeypatch.setattr(lib, "_hash_file", lambda p: reads.append(p.name) or real(p))
    first = {m.name: m.sha256 for m in lib.scan()}
    hashed = len(reads)
    assert hashed == 7  # every file; the two folders have no single hash
    from app.engine import fingerprint

    fingerprint._memo.clear()  # as in a new process: only the file in the cache dir remembers
    reads.clear()
    assert {m.name: m.sha256 for m in lib.scan()} == first
    assert reads == []

    # Same size, same mtime, other bytes: the cache is trusted (no re-read) and verify catches it.
    path = f["lora"]
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert next(m for m in lib.scan() if m.path == path).sha256 == first["style.safetensors"]
    assert reads == []
    ok, sha = lib.verify(path)
    assert not ok and sha == _sha(path)

    # A new mtime invalidates the entry: hashed again, once.
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    fingerprint._memo.clear()
    assert next(m for m in lib.scan() if m.path == path).sha256 == _sha(path)
    assert reads == ["style.safetensors"]


def test_trigger_words_tags_preview_and_licence(tmp_path, monkeypatch):
    root = tmp_path / "models"
    use_models(monkeypatch, root)
    freq = {"10_zzstyle": {"zzstyle": 12, "red coat": 3}, "5_extra": {"red coat": 2, "hat": 1}}
    path = sd1_lora(root / "loras" / "style.safetensors", {
        "ss_tag_frequency": json.dumps(freq), "modelspec.trigger_phrase": "zzstyle, painterly",
        "modelspec.license": "CreativeML OpenRAIL-M", "modelspec.title": "ZZ Style"})
    (root / "loras" / "style.preview.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "loras" / "style.json").write_text(json.dumps({"activation text": "zz_style_v2"}))
    (root / "loras" / "style.civitai.info").write_text(json.dumps({"trainedWords": ["painterly", "zz"]}))
    sd1_lora(root / "loras" / "plain.safetensors", seed=9)
    (root / "loras" / "plain.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    m = lib.info("style")
    assert m.path == path
    assert m.trigger_words == ["zzstyle", "painterly", "zz_style_v2", "zz"]
    assert m.tags == [("zzstyle", 12), ("red coat", 5), ("hat", 1)]
    assert m.preview == root / "loras" / "style.preview.png"
    assert m.licence == "CreativeML OpenRAIL-M" and m.title == "ZZ Style"
    plain = lib.info("plain.safetensors")
    assert plain.preview == root / "loras" / "plain.png"
    assert plain.trigger_words == [] and plain.tags == [] and plain.licence is None


def test_a_comfyui_install_given_as_extra_root_is_listed_and_in_the_dropdowns(tmp_path, monkeypatch):
    ours = tmp_path / "ours"
    use_models(monkeypatch, ours)
    comfy = tmp_path / "ComfyUI"
    sd1_checkpoint(comfy / "models" / "checkpoints" / "comfy_ckpt.safetensors")
    sd1_lora(comfy / "models" / "loras" / "comfy_lora.safetensors")
    tensors_file(comfy / "models" / "vae" / "comfy_vae.safetensors")
    monkeypatch.setenv("IMAGEBASH_EXTRA_MODELS", str(comfy))  # the install's folder: its models/ is used

    from app.paths import extra_model_roots, models_dirs
    from nodes.diffusion.catalog import find, list_checkpoints, list_loras, list_vaes

    assert extra_model_roots() == [comfy / "models"]
    assert models_dirs() == [ours, comfy / "models"]  # new models still go to ours
    assert "comfy_ckpt.safetensors" in list_checkpoints()
    assert "comfy_lora.safetensors" in list_loras() and "comfy_vae.safetensors" in list_vaes()
    assert find("comfy_lora.safetensors", "lora") == comfy / "models" / "loras" / "comfy_lora.safetensors"
    found = {m.name: m for m in lib.scan()}
    assert found["comfy_ckpt.safetensors"].root == comfy / "models"
    assert found["comfy_ckpt.safetensors"].family == "sd1"


def test_an_a1111_install_from_the_settings_key(tmp_path, monkeypatch):
    ours = tmp_path / "ours"
    use_models(monkeypatch, ours)
    a1111 = tmp_path / "stable-diffusion-webui"
    sd1_checkpoint(a1111 / "models" / "Stable-diffusion" / "a1111.safetensors")
    sd1_lora(a1111 / "models" / "Lora" / "a1111_lora.safetensors")
    embedding(a1111 / "embeddings" / "easynegative.safetensors")  # beside models/, as A1111 keeps them
    (a1111 / "embeddings" / "old.pt").write_bytes(b"pickle")
    from app.paths import config_dir

    (config_dir() / "settings.json").write_text(json.dumps({"library/extra_roots": [str(a1111 / "models")]}))
    kinds = {m.name: m.kind for m in lib.scan()}
    assert kinds == {"a1111.safetensors": "checkpoint", "a1111_lora.safetensors": "lora",
                     "easynegative.safetensors": "embedding", "old.pt": "unsafe"}


def test_pickles_and_broken_headers_are_listed_with_a_note_and_never_opened(tmp_path, monkeypatch):
    root = tmp_path / "models"
    use_models(monkeypatch, root)
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "old.ckpt").write_bytes(b"\x80\x04not really a pickle")
    good = sd1_lora(root / "loras" / "good.safetensors")
    cut = root / "loras" / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:40])
    found = {m.name: m for m in lib.scan()}
    assert found["old.ckpt"].kind == "unsafe" and found["old.ckpt"].format == "pickle"
    assert "never loaded" in found["old.ckpt"].note
    assert found["cut.safetensors"].kind == "unreadable"
    assert "cut.safetensors" in found["cut.safetensors"].note and "\n" not in found["cut.safetensors"].note
    assert found["good.safetensors"].kind == "lora"


def test_info_of_a_missing_name_or_a_non_model_file_is_one_line(tmp_path, monkeypatch):
    use_models(monkeypatch, tmp_path / "models")
    with pytest.raises(lib.LibraryError, match=r"no model named 'nothing\.safetensors'"):
        lib.info("nothing.safetensors")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(lib.LibraryError, match=r"notes\.txt is not a model file"):
        lib.info(notes)
    folder = tmp_path / "just-a-folder"
    folder.mkdir()
    with pytest.raises(lib.LibraryError, match="not a diffusers model"):
        lib.info(folder)


def test_the_same_name_in_two_folders_asks_for_a_path(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    use_models(monkeypatch, a, b)
    sd1_lora(a / "loras" / "x.safetensors")
    sd1_lora(b / "loras" / "x.safetensors", seed=5)
    with pytest.raises(lib.LibraryError, match="names 2 models"):
        lib.info("x.safetensors")
    assert lib.info(b / "loras" / "x.safetensors").root == b


def test_verify_against_given_and_embedded_hashes(tmp_path, monkeypatch):
    use_models(monkeypatch, tmp_path / "models")
    path = sd1_lora(tmp_path / "x.safetensors")
    assert lib.verify(path, _sha(path)) == (True, _sha(path))
    assert lib.verify(path, "0" * 64) == (False, _sha(path))
    # kohya trainers embed the sha256 of the tensor data (sshs_model_hash): checked with no record.
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    data_sha = hashlib.sha256(blob[8 + n:]).hexdigest()
    import numpy as np

    from tests.library import LORA_KEY

    rng = np.random.default_rng(1)
    tensors = {LORA_KEY: rng.random((4, 8), np.float32), LORA_KEY.replace("lora_down", "lora_up"):
               rng.random((8, 4), np.float32)}
    signed = write(tmp_path / "signed.safetensors", tensors, {"ss_base_model_version": "sd_v1",
                                                              "sshs_model_hash": data_sha})
    v = lib.check(signed)
    assert v.ok and v.against == "embedded"
    raw = bytearray(signed.read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / "bad.safetensors").write_bytes(bytes(raw))
    v = lib.check(tmp_path / "bad.safetensors")
    assert not v.ok and v.against == "embedded"


def test_remove_deletes_the_model_its_sidecars_and_its_cache_entry(models):
    root, f = models
    lib.scan()
    path = f["lora"]
    preview = path.with_name("style.preview.png")
    preview.write_bytes(b"png")
    info_json = path.with_name("style.json")
    info_json.write_text("{}")
    assert lib.cached_sha256(path)
    gone = lib.remove(path)
    assert set(gone) == {path, preview, info_json}
    assert not path.exists() and not preview.exists() and not info_json.exists()
    assert str(path.absolute()) not in json.loads(lib._cache_file().read_text())
    assert "style.safetensors" not in {m.name for m in lib.scan()}
    lib.remove(f["pipe"])
    assert not f["pipe"].exists()
    with pytest.raises(lib.LibraryError, match="not a model folder"):
        lib.remove(root / "loras")
    assert (root / "loras").is_dir()


def test_used_in_finds_the_workflows_that_name_the_model(models, tmp_path):
    _root, f = models
    wf = tmp_path / "workflows"
    wf.mkdir()
    from app.paths import WORKFLOWS

    doc = json.loads((WORKFLOWS / "txt2img_two_loras.json").read_text())
    doc["nodes"][1]["params"]["file"] = "style.safetensors"
    (wf / "uses_style.json").write_text(json.dumps(doc))
    doc["nodes"][1]["params"]["file"] = str(f["sub_lora"])
    (wf / "by_path.json").write_text(json.dumps(doc))
    (wf / "broken.json").write_text("{not json")
    assert lib.used_in(lib.info("style.safetensors"), [wf]) == [wf / "uses_style.json"]
    assert lib.used_in(lib.info("sd15/ink.safetensors"), [wf]) == [wf / "by_path.json"]
