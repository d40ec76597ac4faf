"""`imagebash --self-test`: passes on a working install, fails with one line naming the reason."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from app import selftest

pytestmark = pytest.mark.slow  # imports torch, diffusers and transformers


def test_self_test_passes_from_the_command_line():
    out = subprocess.run([sys.executable, "-m", "app", "--self-test"], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1].startswith("self-test passed"), out.stdout
    for name, _check in selftest.CHECKS:
        assert any(line.startswith(f"ok   {name}: ") for line in lines), (name, out.stdout)
    assert "blend_and_grade_00001.png 512x384" in out.stdout
    assert "Traceback" not in out.stderr


def _broken_workflow(tmp_path: pathlib.Path) -> pathlib.Path:
    """A valid workflow whose Load Image reads a file that is not an image: it fails when run."""
    bad = tmp_path / "not_an_image.png"
    bad.write_bytes(b"this is not a PNG")
    wf = tmp_path / "broken.json"
    wf.write_text(json.dumps({
        "format": "imagebash/1",
        "nodes": [{"id": "load", "type": "imagebash.image.load", "params": {"path": str(bad)}},
                  {"id": "save", "type": "imagebash.image.save", "params": {"filename_prefix": "x"}}],
        "links": [{"from": ["load", "image"], "to": ["save", "image"]}],
    }))
    return wf


@pytest.mark.parametrize("case, reason", [
    ("missing", "missing.json"),
    ("broken", "node 'load'"),
])
def test_a_failing_default_workflow_fails_with_one_line(tmp_path, monkeypatch, capsys, case, reason):
    target = tmp_path / "missing.json" if case == "missing" else _broken_workflow(tmp_path)
    monkeypatch.setattr(selftest, "default_workflow", lambda: target)
    assert selftest.run_self_test() == 1
    lines = capsys.readouterr().out.splitlines()
    failed = [line for line in lines if line.startswith("FAIL ")]
    assert len(failed) == 1 and failed[0].startswith("FAIL default workflow: ") and reason in failed[0], lines
    assert lines[-1].startswith("self-test failed: default workflow: ") and reason in lines[-1], lines
    assert "(and " not in lines[-1]
    assert any(line.startswith("ok   node packs: ") for line in lines)  # the other checks still ran
