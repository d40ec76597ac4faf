"""A schema-driven fuzz run (schemathesis 4's CLI) against /openapi.json of a real `serve`
process on 127.0.0.1, with the token: every operation, bounded examples, no 5xx allowed.

Path parameters draw from a dictionary of ids that exist (a finished job with outputs, an
uploaded blob, real node types) part of the time, so the fuzzer reaches cancel, rerun, outputs
and frames, not only their 404s."""

from __future__ import annotations

import sys

import httpx
import pytest

from app.engine.protocol import API
from tests.server.conftest import sha, wait_for, workflow

pytest.importorskip("schemathesis")

CONFIG = """
[dictionaries.ids]
values = ["fuzz", "fuzz-gate"]
[dictionaries.nodes]
values = ["grad", "g"]
[dictionaries.ports]
values = ["image", "float", "mask"]
[dictionaries.shas]
values = ["{blob}"]
[dictionaries.types]
values = ["imagebash.diffusion.lora", "imagebash.image.blend", "test.gate"]

[parameters]
"path.job_id" = {{ dictionary = "ids", probability = 0.5 }}
"path.node" = {{ dictionary = "nodes", probability = 0.6 }}
"path.port" = {{ dictionary = "ports", probability = 0.6 }}
"path.sha" = {{ dictionary = "shas", probability = 0.5 }}
"path.type_id" = {{ dictionary = "types", probability = 0.6 }}
"""


def test_fuzz_finds_no_server_error(spawn, tmp_path):
    import subprocess

    p = spawn(module="tests.server.nodes_for_tests")
    with httpx.Client(base_url=p.url, headers=p.headers(), timeout=30) as c:
        data = b"fuzz blob" * 100
        blob = sha(data)
        c.put(f"{API}/blobs/{blob}", content=data, headers={"X-Blob-Size": str(len(data))})
        wf = workflow({"id": "grad", "type": "imagebash.image.gradient", "params": {"width": 8, "height": 8}},
                      {"id": "g", "type": "test.gate", "params": {"path": "/"}})
        assert c.put(f"{API}/jobs/fuzz", json={"workflow": wf, "targets": ["grad", "g"]}).status_code == 201
        assert wait_for(lambda: c.get(f"{API}/jobs/fuzz").json()["status"] == "done")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(blob=blob))
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", f"{p.url}/openapi.json",
           "-H", f"Authorization: Bearer {p.token}", "--checks", "not_a_server_error", "--max-examples", "25",
           "--seed", "7", "--workers", "1", "--request-timeout", "30", "--phases", "coverage,fuzzing,stateful",
           "--report-dir", str(tmp_path / "report")]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=150)
    summary = r.stdout[-3000:]
    (tmp_path / "schemathesis-output.txt").write_text(r.stdout)  # the whole report, for a failure
    assert r.returncode == 0, summary
    assert "Server error" not in r.stdout and "passed" in r.stdout, summary
    assert "Traceback" not in p.output, p.output[-3000:]
