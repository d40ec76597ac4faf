"""The imagebash command: exit codes, one-line errors, --set, progress lines."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from app.cli import main
from app.graph import io
from tests.engine.conftest import chain


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True, timeout=120)


def test_help_without_arguments_or_gui(capsys):
    out = _run("--help")
    assert out.returncode == 0 and "run" in out.stdout and "validate" in out.stdout and "nodes" in out.stdout


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"format": "imagebash/1", "nodes": [{"id": "a", "type": "nope.nope"}]}', "unknown node type 'nope.nope'"),
])
def test_bad_workflows_exit_2_with_one_line(tmp_path, content, message):
    wf = tmp_path / "w.json"
    wf.write_text(content)
    for cmd in ("run", "validate"):
        out = _run(cmd, str(wf))
        assert out.returncode == 2, out.stderr
        assert message in out.stderr
        assert "Traceback" not in out.stderr


def test_missing_workflow_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: no such file" in capsys.readouterr().err


def test_bad_set_values_exit_2(tmp_path, capsys):
    from tests.engine.conftest import make_registry

    reg = make_registry()
    wf = tmp_path / "w.json"
    io.save(chain(2), wf)
    for bad, msg in [("n9.y=1", "no node 'n9'"), ("n1.zz=1", "has no parameter 'zz'"),
                     ("n1.y=abc", "'y' expects a number"), ("noequals", "expected NODE.PARAM=VALUE"),
                     ("n0.value=1000", "out of range")]:
        assert main(["run", str(wf), "--set", bad, "--output-dir", str(tmp_path)], registry=reg) == 2
        err = capsys.readouterr().err
        assert msg in err, (bad, err)


def _chain_into(tmp_path, length: int, node_type: str):
    """A saved workflow: a chain of `length` test nodes feeding one `node_type` node named 'end'."""
    from app.graph.model import Link, NodeInstance

    g = chain(length)
    g.add_node(NodeInstance("end", node_type))
    g.connect(Link(f"n{length - 1}", "float", "end", "x"))
    wf = tmp_path / "w.json"
    io.save(g, wf)
    return wf


def test_run_with_set_and_plain_progress_lines(tmp_path, capsys):
    from tests.engine.conftest import SINK, make_registry

    wf = _chain_into(tmp_path, 3, "test.sink")
    assert main(["run", str(wf), "--set", "n1.y=10", "--output-dir", str(tmp_path / "o")],
                registry=make_registry()) == 0
    assert SINK["end"] == 12.0
    err = capsys.readouterr().err
    assert "[n1] started" in err and "[end] done" in err and "4 nodes ran (0 cached), 0 failed" in err


def test_failed_node_exits_1_and_names_it(tmp_path, capsys):
    from tests.engine.conftest import make_registry

    wf = _chain_into(tmp_path, 1, "test.boom")
    assert main(["run", str(wf)], registry=make_registry()) == 1
    assert "node 'end' failed: boom at 1.0" in capsys.readouterr().err


def test_nodes_listing_text_and_json():
    out = _run("nodes", "--json")
    assert out.returncode == 0
    listed = json.loads(out.stdout)
    assert all({"id", "inputs", "outputs", "version", "category"} <= set(d) for d in listed)
    text = _run("nodes")
    assert text.returncode == 0
    for d in listed[:5]:
        assert d["id"] in text.stdout
    assert "(not included) Line Art: " in text.stdout  # what a pack leaves out is said, with why


def test_listing_into_a_closed_pipe_stops_quietly(monkeypatch):
    """Like `imagebash nodes | head -1`: the reader is gone before the listing is written."""
    import io as _io
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)
    closed = _io.TextIOWrapper(os.fdopen(write_end, "wb", buffering=0), write_through=True)
    monkeypatch.setattr(sys, "stdout", closed)
    assert main(["nodes"]) == 141


def test_a_too_deeply_nested_workflow_is_one_line(tmp_path):
    wf = tmp_path / "deep.json"
    wf.write_text("[" * 100_000 + "]" * 100_000)
    for cmd in ("run", "validate"):
        out = _run(cmd, str(wf))
        assert out.returncode == 2
        assert out.stderr.strip().count("\n") == 0 and "nested too deeply" in out.stderr, out.stderr
    params = {"value": 1.0, "deep": "x"}
    doc = {"format": "imagebash/1", "nodes": [{"id": "a", "type": "test.const", "params": params}]}
    text = json.dumps(doc).replace('"x"', "[" * 500 + "]" * 500)
    wf.write_text(text)
    assert main(["validate", str(wf)]) == 2


def test_an_older_workflow_is_upgraded_once_with_a_note(tmp_path, capsys):
    from tests.engine.conftest import make_registry

    wf = tmp_path / "old.json"
    wf.write_text(json.dumps({"format": "imagebash/1", "nodes": [
        {"id": "c", "type": "test.const"}, {"id": "m", "type": "test.old_math"}],
        "links": [{"from": ["c", "float"], "to": ["m", "x"]}]}))
    assert main(["validate", str(wf)], registry=make_registry()) == 0
    err = capsys.readouterr().err
    assert "was upgraded" in err and "node 'm': test.old_math is now test.math" in err
    assert "test.old_math" in wf.read_text()  # the file is data: never rewritten behind the user's back


@pytest.mark.parametrize("params, message", [
    ({"path": "a\u0000b.png"}, "'path'"),  # a NUL byte: no file system holds it
    ({"path": "~nosuchuser/x.png"}, "x.png"),  # an unknown ~user: not a traceback from expanduser
])
def test_impossible_paths_are_one_line_not_a_traceback(tmp_path, capsys, params, message):
    wf = tmp_path / "w.json"
    wf.write_text(json.dumps({"format": "imagebash/1", "nodes": [
        {"id": "a", "type": "imagebash.image.load", "params": params}, {"id": "s", "type": "imagebash.image.save"}],
        "links": [{"from": ["a", "image"], "to": ["s", "image"]}]}))
    code = main(["run", str(wf), "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code in (1, 2) and message in err and "Traceback" not in err


def test_a_non_finite_number_is_refused_by_its_port(tmp_path, capsys):
    wf = tmp_path / "w.json"
    wf.write_text(json.dumps({"format": "imagebash/1", "nodes": [
        {"id": "g", "type": "imagebash.image.gradient", "params": {"angle": "nan"}}]}))
    assert main(["validate", str(wf)]) == 2
    assert "'angle' expects a number, got 'nan'" in capsys.readouterr().err


def test_run_uses_a_comfyui_models_folder_given_on_the_command_line(tmp_path, capsys, monkeypatch, tiny_sd_dir):
    """`--comfy-models DIR`: a checkpoint named as the workflow names it is found in that install's layout."""
    import shutil

    comfy = tmp_path / "ComfyUI" / "models"
    shutil.copytree(tiny_sd_dir, comfy / "checkpoints" / "tiny_from_comfy")
    monkeypatch.setenv("IMAGEBASH_MODELS", str(tmp_path / "ours"))
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"format": "imagebash/1", "nodes": [
        {"id": "model", "type": "imagebash.diffusion.load_model",
         "params": {"checkpoint": "tiny_from_comfy"}}], "links": []}))
    assert main(["run", str(wf), "-q", "--output-dir", str(tmp_path / "out")]) == 1  # not in our folders
    assert "model not found: 'tiny_from_comfy'" in capsys.readouterr().err
    assert main(["run", str(wf), "-q", "--output-dir", str(tmp_path / "out"), "--comfy-models", str(comfy)]) == 0
    assert main(["run", str(wf), "--comfy-models", str(tmp_path / "nowhere")]) == 2
    assert "--comfy-models" in capsys.readouterr().err
