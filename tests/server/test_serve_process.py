"""`imagebash serve` as a user starts it: a real process on a free 127.0.0.1 port. It prints the
URL, the token and how to connect (ssh -L, the Runpod proxy URL); HTTP and the WebSocket refuse
a missing or wrong token with 401; a workflow runs from uploaded files and is followed over the
WebSocket; the token never reaches a log line, an event or a job record; jobs survive a restart,
and a job running when the process is SIGKILLed is `interrupted` afterwards and reruns."""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from app.engine.protocol import API, blob_ref
from app.paths import REPO_ROOT, WORKFLOWS
from app.server.cli import bind_warning, connect_lines, register
from tests.server.conftest import sha, wait_for, workflow


def ws_url(p, query: str = "") -> str:
    return f"ws://127.0.0.1:{p.port}{API}/events{query}"


def upload(c: httpx.Client, data: bytes) -> str:
    digest = sha(data)
    r = c.put(f"{API}/blobs/{digest}", params={"offset": 0}, content=data, headers={"X-Blob-Size": str(len(data))})
    assert r.status_code == 201, r.text
    return digest


def test_serve_prints_how_to_connect_and_runs_a_workflow(spawn, tmp_path):
    models = tmp_path / "pod-models"
    p = spawn(args=("--models", str(models)), env={"RUNPOD_POD_ID": "abc123xyz"})
    token = p.token
    out = p.output
    assert f"listening on http://127.0.0.1:{p.port}" in out
    assert f"token: {token}" in out
    assert f"ssh -L {p.port}:127.0.0.1:{p.port} " in out
    assert f"https://abc123xyz-{p.port}.proxy.runpod.net" in out
    assert "warning" not in out.lower()  # loopback: nothing to warn about
    assert (models / "loras").is_dir() and (models / "checkpoints").is_dir()

    with httpx.Client(base_url=p.url, timeout=30) as anon:
        assert anon.get(f"{API}/health").json()["status"] == "ok"
        for headers in ({}, {"Authorization": "Bearer not-the-token-at-all"}):
            r = anon.get(f"{API}/jobs", headers=headers)
            assert r.status_code == 401 and list(r.json()) == ["error"]
            assert anon.get("/openapi.json", headers=headers).status_code == 401
    for headers in ({}, {"Authorization": "Bearer not-the-token-at-all"}):
        with pytest.raises(InvalidStatus) as err:
            connect(ws_url(p, "?after=0"), additional_headers=headers, open_timeout=10)
        assert err.value.response.status_code == 401

    doc = json.loads((WORKFLOWS / "blend_and_grade.json").read_text())
    with httpx.Client(base_url=p.url, headers=p.headers(), timeout=30) as c, \
            connect(ws_url(p, "?after=0"), additional_headers=p.headers(), open_timeout=10) as ws:
        sent = copy.deepcopy(doc)
        for n in sent["nodes"]:
            if n["type"] == "imagebash.image.load":
                f = (WORKFLOWS / n["params"]["path"]).resolve()
                n["params"]["path"] = blob_ref(upload(c, f.read_bytes()), f.name)
        assert c.put(f"{API}/jobs/blend-1", json={"workflow": sent}).status_code == 201
        types = []
        while True:
            rec = json.loads(ws.recv(timeout=60))
            assert rec["job"] == "blend-1"
            types.append(rec["event"]["type"])
            if types[-1] == "RunFinished":
                break
        assert types[0] == "RunStarted" and "NodeFile" in types and not rec["event"]["failed"]
        job = c.get(f"{API}/jobs/blend-1").json()
        assert job["status"] == "done" and job["nodes"]["save"]["status"] == "done"
        entry = c.get(f"{API}/jobs/blend-1/files").json()[0]
        png = c.get(f"{API}/blobs/{entry['sha256']}").content
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and sha(png) == entry["sha256"]
        assert token not in json.dumps(job) and token not in c.get(f"{API}/events").text
    assert p.stop() in (0, -15)  # SIGTERM: uvicorn stops cleanly, then re-raises the signal
    assert "Application shutdown complete" in p.output
    assert p.output.count(token) == 1  # printed once at start, in no log line after
    assert token.encode() not in (p.data_dir / "server.sqlite3").read_bytes()

    p.start()  # the next start: same token, same jobs
    assert f"token: {token}" in p.output
    with httpx.Client(base_url=p.url, headers=p.headers(), timeout=30) as c:
        assert c.get(f"{API}/jobs/blend-1").json()["status"] == "done"


def test_sigkill_mid_run_leaves_the_job_interrupted_and_rerun_completes(spawn, tmp_path):
    door = tmp_path / "door"
    p = spawn(module="tests.server.nodes_for_tests")
    with httpx.Client(base_url=p.url, headers=p.headers(), timeout=30) as c:
        wf = workflow({"id": "g", "type": "test.gate", "params": {"path": str(door)}},
                      {"id": "w", "type": "test.write_text", "params": {"text": "after the gate"}},
                      links=[{"from": ["g", "float"], "to": ["w", "after"]}])
        assert c.put(f"{API}/jobs/slow", json={"workflow": wf, "targets": ["w"]}).status_code == 201
        queued = workflow({"id": "w", "type": "test.write_text", "params": {"text": "queued"}})
        assert c.put(f"{API}/jobs/next", json={"workflow": queued}).status_code == 201
        assert wait_for(lambda: c.get(f"{API}/jobs/slow").json()["nodes"].get("g", {}).get("status") == "running")
    p.kill()  # no shutdown code runs

    p.start()
    with httpx.Client(base_url=p.url, headers=p.headers(), timeout=30) as c:
        slow = c.get(f"{API}/jobs/slow").json()
        assert slow["status"] == "interrupted" and "rerun" in slow["error"]
        assert slow["nodes"]["g"]["status"] == "interrupted"
        last = c.get(f"{API}/events", params={"job": "slow"}).json()["events"][-1]
        assert last["event"]["type"] == "RunFinished" and "interrupted" in last["event"]["error"]
        assert wait_for(lambda: c.get(f"{API}/jobs/next").json()["status"] == "done")  # queued jobs run
        door.touch()
        assert c.post(f"{API}/jobs/slow/rerun").json()["status"] == "queued"
        assert wait_for(lambda: c.get(f"{API}/jobs/slow").json()["status"] in ("done", "failed"))
        slow = c.get(f"{API}/jobs/slow").json()
        assert slow["status"] == "done" and slow["attempt"] == 2, slow
        files = c.get(f"{API}/jobs/slow/files").json()
        assert [f["path"] for f in files] == ["note.txt"]
        note = c.get(f"{API}/blobs/{files[0]['sha256']}").text
        assert note == "after the gate"
        after = c.get(f"{API}/events", params={"job": "slow", "after": last["seq"]}).json()["events"]
        assert after[0]["event"]["type"] == "RunStarted"  # the rerun continues the same log


def test_connect_lines_and_the_bind_warning():
    lines = connect_lines("127.0.0.1", 8188, False, "token: T", env={})
    assert lines[0].startswith("imagebash serve: listening on http://127.0.0.1:8188")
    assert any(line.startswith("from a laptop: ssh -L 8188:127.0.0.1:8188 ") for line in lines)
    assert not any("runpod" in line for line in lines)
    pod = connect_lines("0.0.0.0", 8188, False, None, env={"RUNPOD_POD_ID": "x1y2"})
    assert any("https://x1y2-8188.proxy.runpod.net" in line for line in pod)
    assert "0.0.0.0" not in pod[0]  # the host's name, something a laptop can use
    assert connect_lines("0.0.0.0", 8443, True, None, env={})[0].startswith("imagebash serve: listening on https://")
    assert bind_warning("127.0.0.1", False) is None and bind_warning("::1", False) is None
    assert bind_warning("0.0.0.0", True) is None
    warning = bind_warning("0.0.0.0", False)
    assert warning and "TLS" in warning and "ssh" in warning


def test_serve_is_an_imagebash_command():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--host", "0.0.0.0", "--port", "9000", "--data-dir", "/workspace/imagebash",
                              "--models", "/workspace/models", "--preload", "a.safetensors", "--max-upload", "10"])
    assert (args.command, args.host, args.port, args.preload, args.max_upload) == \
        ("serve", "0.0.0.0", 9000, ["a.safetensors"], 10)
    r = subprocess.run([sys.executable, "-m", "app", "serve", "--help"], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "--token-file" in r.stdout and "--tls-cert" in r.stdout


@pytest.mark.parametrize("args,words", [(("--tls-cert", "c.pem"), "go together"),
                                        (("--port", "70000"), "0-65535"),
                                        (("--token-file", "/nonexistent/tok"), "cannot read the token file")])
def test_bad_serve_arguments_are_one_line(args, words, capsys, tmp_path):
    from app.server.cli import main

    assert main([*args, "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imagebash: error:") and words in err and "\n" not in err


def test_the_server_modules_import_neither_torch_nor_qt():
    code = ("import sys, app.server.app, app.server.cli, app.server.state, app.server.models_api;"
            "print(sorted(m for m in ('torch', 'PySide6', 'diffusers') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
