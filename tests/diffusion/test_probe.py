"""The safetensors probe: one header read per file version, shared by detection, the inpainting
check, LoRA sniffing and metadata; bad files give one line naming the file."""

from __future__ import annotations

import builtins
import json
import os
import shutil
import struct

import pytest
import torch
from safetensors.torch import save_file

from app.engine.probe import MAX_HEADER_BYTES, ProbeError, probe


def _write(path, tensors, metadata=None):
    save_file(tensors, str(path), metadata=metadata)
    return path


def _raw(path, header: bytes, data: bytes = b"", length: int | None = None):
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + data)
    return path


def test_keys_shapes_dtypes_and_metadata(tmp_path):
    path = _write(tmp_path / "m.safetensors",
                  {"a.weight": torch.zeros(3, 4, dtype=torch.float16), "b.bias": torch.zeros(2)},
                  {"modelspec.prediction_type": "epsilon"})
    p = probe(path)
    assert sorted(p.keys) == ["a.weight", "b.bias"]
    assert p.shape("a.weight") == (3, 4) and p.dtype("a.weight") == "F16" and p.dtype("b.bias") == "F32"
    assert "a.weight" in p and "c" not in p
    assert p.metadata == {"modelspec.prediction_type": "epsilon"}
    assert p.has_prefix("a.") and p.has_prefix("x.", "b.") and not p.has_prefix("c.")
    p.metadata["edited"] = "by a caller"  # a copy: the memoised probe is not changed
    assert probe(path).metadata == {"modelspec.prediction_type": "epsilon"}
    with pytest.raises(KeyError):
        p.shape("missing")


def test_memoised_per_file_version(tmp_path):
    path = _write(tmp_path / "m.safetensors", {"a": torch.zeros(1)})
    first = probe(path)
    assert probe(str(path)) is first  # same file, same size and mtime: no second read
    _write(path, {"a": torch.zeros(1), "b": torch.zeros(2)})
    os.utime(path, ns=(first.mtime_ns + 10**9, first.mtime_ns + 10**9))
    again = probe(path)
    assert again is not first and sorted(again.keys) == ["a", "b"]  # replaced on disk: read again


def test_lora_files_are_told_from_checkpoints(tmp_path, tiny_lora_kohya, tiny_lora_peft, tiny_dora, tiny_sd_ckpt):
    for lora in (tiny_lora_kohya, tiny_lora_peft, tiny_dora):
        assert probe(lora).looks_like_lora(), lora.name
    old_diffusers = _write(tmp_path / "old.safetensors",
                           {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight":
                            torch.zeros(4, 8)})
    assert probe(old_diffusers).looks_like_lora()
    assert not probe(tiny_sd_ckpt).looks_like_lora()
    # a merged checkpoint that kept a LoRA key is still a checkpoint
    merged = _write(tmp_path / "merged.safetensors", {"model.diffusion_model.out.2.bias": torch.zeros(4),
                                                      "lora_unet_x.lora_down.weight": torch.zeros(1, 1)})
    assert not probe(merged).looks_like_lora()


@pytest.mark.parametrize("case, expected", [
    ("empty", "too short for a header"),
    ("short", "too short for a header"),
    ("length past the end", "runs past the end of the file"),
    ("huge length", f"over the {MAX_HEADER_BYTES} byte limit"),
    ("not json", "header is not JSON"),
    ("json list", "header is a JSON list, not an object"),
    ("bad entry", "bad header entry for tensor 'w'"),
    ("truncated data", "truncated"),
    ("metadata not strings", "__metadata__ is not a mapping of strings"),
])
def test_bad_files_give_one_line_naming_the_file(tmp_path, case, expected):
    path = tmp_path / "bad-file.safetensors"
    entry = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}
    if case == "empty":
        path.write_bytes(b"")
    elif case == "short":
        path.write_bytes(b"\x01\x02\x03")
    elif case == "length past the end":
        _raw(path, b"{}", length=4096)
    elif case == "huge length":
        _raw(path, b"{}", length=MAX_HEADER_BYTES + 1)
    elif case == "not json":
        _raw(path, b"not safetensors at all")
    elif case == "json list":
        _raw(path, b"[1, 2]")
    elif case == "bad entry":
        _raw(path, json.dumps({"w": {"dtype": "F32", "shape": "2x2"}}).encode())
    elif case == "truncated data":
        _raw(path, json.dumps(entry).encode(), data=b"\0" * 10)  # 16 bytes promised
    elif case == "metadata not strings":
        _raw(path, json.dumps({"__metadata__": {"steps": 3}, **entry}).encode(), data=b"\0" * 16)
    with pytest.raises(ProbeError) as err:
        probe(path)
    message = str(err.value)
    assert message.startswith("bad-file.safetensors") and expected in message and "\n" not in message
    assert isinstance(err.value, ValueError)


def test_a_real_file_cut_short_is_refused(tmp_path, tiny_lora_kohya):
    data = tiny_lora_kohya.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ProbeError, match=r"^cut\.safetensors is not a readable \.safetensors file: truncated"):
        probe(cut)
    with pytest.raises(ProbeError, match=r"^missing\.safetensors cannot be read"):
        probe(tmp_path / "missing.safetensors")


def test_a_single_file_load_reads_the_header_once(tmp_path, tiny_sd_ckpt, tiny_sd_dir, monkeypatch):
    """Detection, the inpainting check and the reader share one header read of the checkpoint.

    Header reads are Python `open`s (the probe) and `safetensors.safe_open`s (what the manager
    used before, once per check); diffusers reads the weights through safetensors' own loader.
    """
    import safetensors

    from app.engine.models import ModelManager

    ckpt = tmp_path / "fresh.safetensors"  # a file no earlier test has probed
    shutil.copy(tiny_sd_ckpt, ckpt)
    reads = []
    real_open, real_safe_open = builtins.open, safetensors.safe_open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) == str(ckpt):
            reads.append("open")
        return real_open(file, *args, **kwargs)

    def counting_safe_open(file, *args, **kwargs):
        if os.fspath(file) == str(ckpt):
            reads.append("safe_open")
        return real_safe_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(safetensors, "safe_open", counting_safe_open)
    models = ModelManager()
    entry = models.load(str(ckpt), config=str(tiny_sd_dir))
    assert entry.family == "sd1" and models.loads == 1
    assert reads == ["open"]
    from nodes.diffusion.catalog import list_checkpoints, list_loras

    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors at all")
    monkeypatch.setenv("IMAGEBASH_MODELS", str(tmp_path))
    assert list_checkpoints() == ["fresh.safetensors"]  # listing the folder reuses that read
    assert reads == ["open"]
    assert list_loras() == []  # the unreadable file is listed as neither
