"""`imagebash models list|info|verify|remove`: tables, JSON, exit codes and one-line errors."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from app.cli import main
from tests.library import sd1_checkpoint, sd1_lora, use_models


@pytest.fixture
def models(tmp_path, monkeypatch):
    root = tmp_path / "models"
    use_models(monkeypatch, root)
    files = {"ckpt": sd1_checkpoint(root / "checkpoints" / "tiny.safetensors"),
             "lora": sd1_lora(root / "loras" / "style.safetensors", {"modelspec.trigger_phrase": "zzstyle"})}
    return root, files


def _one_line_error(err: str, text: str) -> None:
    assert text in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_list_prints_a_table_and_json(models, capsys):
    _root, f = models
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "KIND", "FAMILY", "SIZE", "SHA256"]
    rows = {line.split()[0]: line.split() for line in out[1:]}
    sha = hashlib.sha256(f["ckpt"].read_bytes()).hexdigest()
    assert rows["tiny.safetensors"][1:3] == ["checkpoint", "sd1/base"] and rows["tiny.safetensors"][-1] == sha[:12]
    assert rows["style.safetensors"][1:3] == ["lora", "sd1"]

    assert main(["models", "list", "--json", "--kind", "lora"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in listed] == ["style.safetensors"]
    assert listed[0]["trigger_words"] == ["zzstyle"] and listed[0]["path"] == str(f["lora"])

    assert main(["models", "list", "--json", "--search", "ZZSTYLE"]) == 0
    assert [m["name"] for m in json.loads(capsys.readouterr().out)] == ["style.safetensors"]
    assert main(["models", "list", "--json", "--family", "sdxl"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_info_shows_everything_and_where_it_is_used(models, tmp_path, capsys):
    _root, f = models
    wf = tmp_path / "mine"
    wf.mkdir()
    (wf / "w.json").write_text(json.dumps({"format": "imagebash/1", "nodes": [
        {"id": "l", "type": "imagebash.diffusion.lora", "params": {"file": "style.safetensors"}}], "links": []}))
    assert main(["models", "info", "style", "--workflows", str(wf), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["kind"] == "lora" and got["family"] == "sd1" and got["size"] == f["lora"].stat().st_size
    assert got["sha256"] == hashlib.sha256(f["lora"].read_bytes()).hexdigest()
    assert got["used_in"] == [str(wf / "w.json")]
    assert main(["models", "info", str(f["ckpt"])]) == 0
    out = capsys.readouterr().out
    assert "sd1/base" in out and str(f["ckpt"]) in out and "no workflow found" in out


def test_verify_passes_then_fails_on_a_corrupted_file(models, capsys):
    _root, f = models
    assert main(["models", "list"]) == 0  # records the hashes
    capsys.readouterr()
    assert main(["models", "verify", "tiny.safetensors"]) == 0
    assert "ok" in capsys.readouterr().out
    path = f["ckpt"]
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x55  # bit rot: same size, same date
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert main(["models", "verify", "tiny.safetensors"]) == 1
    _one_line_error(capsys.readouterr().err, "tiny.safetensors: sha256 mismatch")
    assert main(["models", "verify", str(f["lora"]), "--sha256", "ab" * 32]) == 1
    _one_line_error(capsys.readouterr().err, "not the expected " + "ab" * 32)
    good = hashlib.sha256(f["lora"].read_bytes()).hexdigest()
    assert main(["models", "verify", str(f["lora"]), "--sha256", good.upper()]) == 0


def test_remove_with_yes_and_refusal_without_a_terminal(models, capsys, monkeypatch):
    _root, f = models
    f["lora"].with_name("style.preview.png").write_bytes(b"png")
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    assert main(["models", "remove", "style.safetensors"]) == 2
    _one_line_error(capsys.readouterr().err, "without --yes")
    assert f["lora"].exists()
    assert main(["models", "remove", "style.safetensors", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "style.preview.png" in out and not f["lora"].exists()
    assert not f["lora"].with_name("style.preview.png").exists()


def test_remove_asks_on_a_terminal(models, capsys, monkeypatch):
    _root, f = models
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["models", "remove", "tiny"]) == 0
    assert "nothing removed" in capsys.readouterr().out and f["ckpt"].exists()
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert main(["models", "remove", "tiny"]) == 0
    assert not f["ckpt"].exists()


def test_bad_input_is_one_line_and_exit_2(models, tmp_path, capsys):
    root, f = models
    for args, text in [
        (["models", "info", "nope.safetensors"], "no model named 'nope.safetensors'"),
        (["models", "verify", "nope"], "no model named 'nope'"),
        (["models", "remove", "nope", "--yes"], "no model named 'nope'"),
    ]:
        assert main(args) == 2
        _one_line_error(capsys.readouterr().err, text)
    cut = root / "loras" / "cut.safetensors"
    cut.write_bytes(f["lora"].read_bytes()[:30])
    assert main(["models", "info", "cut.safetensors"]) == 2
    _one_line_error(capsys.readouterr().err, "cut.safetensors is not a readable .safetensors file")
    (root / "checkpoints" / "old.ckpt").write_bytes(b"\x80\x04pickle")
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "old.ckpt" in out and "unsafe" in out and "never loaded" in out
    assert "cut.safetensors" in out and "unreadable" in out


def test_progress_line_shows_percent_speed_and_eta():
    import io
    from types import SimpleNamespace

    from app.library.cli import ProgressLine

    stream = io.StringIO()
    line = ProgressLine(stream)
    for done in (0, 50_000_000, 51_000_000, 100_000_000):
        line(SimpleNamespace(done=done, total=100_000_000, speed=2_500_000.0, eta=20.0, name="big.safetensors"))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # one line per 10 % off a terminal, not one per callback
    assert lines[1] == "big.safetensors:  50.0% 50.0/100.0 MB 2.5 MB/s ETA 00:00:20"
    line(SimpleNamespace(done=5, total=None, speed=0.0, eta=None, name="x"))
    assert stream.getvalue().splitlines()[-1] == "x:      ? 0.0 MB 0.0 MB/s ETA -"


def test_recent_files_of_the_editor_count_as_workflow_folders(tmp_path):
    from PySide6.QtCore import QSettings

    from app.library.cli import recent_files
    from app.paths import config_dir

    paths = [str(tmp_path / "a.json"), str(tmp_path / "with, comma.json")]
    q = QSettings(str(config_dir() / "imagebash.ini"), QSettings.Format.IniFormat)
    q.setValue("ui/recent_files", paths)
    q.sync()
    assert [str(p) for p in recent_files()] == paths


def test_verify_of_a_path_that_is_not_there_says_so(tmp_path, capsys, monkeypatch):
    from app.cli import main

    monkeypatch.setenv("IMAGEBASH_MODELS", str(tmp_path / "models"))
    assert main(["models", "verify", str(tmp_path / "nowhere.safetensors")]) == 2
    assert capsys.readouterr().err.strip() == f"imagebash: error: {tmp_path / 'nowhere.safetensors'}: no such file"
