"""Jobs: idempotent submit by client id, the CLI's message for a bad workflow, one at a time in
order, cancel (queued never runs; running stops in the node), rerun, pagination, outputs by
reference (.npy / JSON / PNG frames, 410 when gone), and the unknown job's 404."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image as PILImage

from app.cli import main as cli_main
from tests.server.conftest import wait_for, workflow


def gate(node_id: str, path, **params) -> dict:
    return {"id": node_id, "type": "test.gate", "params": {"path": str(path), **params}}


def test_submit_is_idempotent_and_an_id_is_one_workflow(server):
    wf = workflow({"id": "w", "type": "test.write_text", "params": {"text": "once"}})
    r1 = server.put("/jobs/job-1", json={"workflow": wf})
    assert r1.status_code == 201 and r1.json()["id"] == "job-1"
    r2 = server.put("/jobs/job-1", json={"workflow": wf})  # a retry after a dropped answer
    assert r2.status_code == 200 and r2.json()["id"] == "job-1"
    assert server.wait("job-1")["status"] == "done"
    assert server.put("/jobs/job-1", json={"workflow": wf}).status_code == 200
    assert len(server.get("/jobs/job-1/files").json()) == 1  # it ran once
    starts = [e for e in server.get("/events").json()["events"] if e["event"]["type"] == "RunStarted"]
    assert len(starts) == 1
    other = workflow({"id": "w", "type": "test.write_text", "params": {"text": "other"}})
    r3 = server.put("/jobs/job-1", json={"workflow": other})
    assert r3.status_code == 409 and "taken" in r3.json()["error"]
    assert server.put("/jobs/job-1", json={"workflow": wf, "targets": ["w"]}).status_code == 409


@pytest.mark.parametrize("job_id", ["../x", ".hidden", "-x", "a" * 129, "a b", "a%00b"])
def test_unusable_job_ids_are_refused(server, job_id):
    r = server.put(f"/jobs/{job_id}", json={"workflow": workflow()})
    assert r.status_code in (404, 422)  # a '/' never reaches the route; the rest are named
    if r.status_code == 422:
        assert "job id" in r.json()["error"]
    assert not (server.state.data_dir / "x").exists()


@pytest.mark.parametrize("doc", [
    {"format": "imagebash/1", "nodes": [{"id": "a", "type": "no.such.node"}]},
    {"format": "imagebash/1", "nodes": [{"id": "a", "type": "imagebash.image.blend", "params": {"opacity": 2}}]},
    {"format": "imagebash/9", "nodes": []},
    {"format": "imagebash/1", "nodes": [{"id": "a", "type": "test.write_text"}, {"id": "a", "type": "x"}]},
])
def test_a_bad_workflow_gets_the_cli_message(server, tmp_path, capsys, doc):
    r = server.put("/jobs/bad", json={"workflow": doc})
    assert r.status_code == 422
    body = r.json()
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(doc))
    assert cli_main(["validate", str(f)], registry=server.state.registry) == 2
    cli = capsys.readouterr().err.strip()
    assert "\n" not in body["error"]
    # the CLI says the same, with the file name in front; `validate` prints a line per problem
    lines = [line.split(f"{f}: ", 1)[-1] for line in cli.splitlines()]
    assert "; ".join(lines) == body["error"], (cli, body["error"])
    if len(lines) > 1:
        assert [p["message"] for p in body["problems"]] == [line.split(": ", 1)[1] for line in lines]
    assert isinstance(body["problems"], list)
    if "unknown node type" in cli or "opacity" in cli:
        assert body["problems"] and body["problems"][0]["node_id"] == "a"
    assert server.get("/jobs/bad").status_code == 404


def test_targets_must_be_nodes(server):
    r = server.put("/jobs/t", json={"workflow": workflow({"id": "w", "type": "test.write_text"}), "targets": ["zz"]})
    assert r.status_code == 422 and r.json()["problems"][0]["node_id"] == "zz"


@pytest.mark.parametrize("method,path", [("get", "/jobs/nope"), ("delete", "/jobs/nope"), ("post", "/jobs/nope/rerun"),
                                         ("get", "/jobs/nope/files"), ("get", "/jobs/nope/outputs/a/b"),
                                         ("get", "/jobs/nope/outputs/a/b/frames/0")])
def test_unknown_job_is_404(server, method, path):
    r = getattr(server, method)(path)
    assert r.status_code == 404 and "no job 'nope'" in r.json()["error"]


def test_queued_job_cancelled_never_runs_and_the_next_one_completes(server, tmp_path):
    door = tmp_path / "door"
    server.put("/jobs/first", json={"workflow": workflow(gate("g", door))})
    server.put("/jobs/second", json={"workflow": workflow(gate("g", door, x=1.0))})
    server.put("/jobs/third", json={"workflow": workflow({"id": "w", "type": "test.write_text"})})
    assert wait_for(lambda: server.get("/jobs/first").json()["status"] == "running")
    queued = server.get("/jobs/second").json()
    assert queued["status"] == "queued" and queued["position"] == 0
    r = server.delete("/jobs/second")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert server.delete("/jobs/second").status_code == 200  # a retried cancel
    door.touch()
    assert server.wait("first")["status"] == "done"
    assert server.wait("third")["status"] == "done"
    second = server.get("/jobs/second").json()
    assert second["status"] == "cancelled" and second["started"] is None and second["attempt"] == 0
    records = [e for e in server.get("/events").json()["events"] if e["job"] == "second"]
    assert [e["event"]["type"] for e in records] == ["RunFinished"] and records[0]["event"]["cancelled"]
    assert server.delete("/jobs/first").status_code == 409  # done: nothing to cancel


def test_cancel_reaches_the_running_node_and_rerun_completes(server, tmp_path):
    door = tmp_path / "door"
    server.put("/jobs/long", json={"workflow": workflow(gate("g", door), {"id": "w", "type": "test.write_text"}),
                                   "targets": ["g", "w"]})
    after = workflow({"id": "w", "type": "test.write_text", "params": {"text": "b"}})
    server.put("/jobs/after", json={"workflow": after})
    assert wait_for(lambda: server.get("/jobs/long").json()["nodes"].get("g", {}).get("status") == "running")
    r = server.delete("/jobs/long")
    assert r.status_code == 200 and r.json().get("cancel_requested") is True
    job = server.wait("long", 5)
    assert job["status"] == "cancelled"
    assert job["nodes"]["g"]["status"] == "cancelled"
    assert server.wait("after")["status"] == "done"  # the queue goes on
    last = server.get("/events", params={"job": "long"}).json()["events"][-1]["seq"]
    assert server.post("/jobs/after/rerun").status_code == 409  # done jobs are not rerun
    door.touch()
    r = server.post("/jobs/long/rerun")
    assert r.status_code == 200 and r.json()["status"] == "queued"
    job = server.wait("long")
    assert job["status"] == "done" and job["attempt"] == 2
    assert job["nodes"]["g"]["status"] == "done"
    again = server.get("/events", params={"job": "long", "after": last}).json()["events"]
    assert again[0]["event"]["type"] == "RunStarted" and again[-1]["event"]["type"] == "RunFinished"


def test_failed_node_fails_the_job_with_its_message(server, tmp_path):
    r = server.put("/jobs/f", json={"workflow": workflow(
        {"id": "load", "type": "imagebash.image.load", "params": {"path": str(tmp_path / "missing.png")}},
        {"id": "save", "type": "imagebash.image.save"}, links=[{"from": ["load", "image"], "to": ["save", "image"]}])})
    assert r.status_code == 201
    job = server.wait("f")
    assert job["status"] == "failed"
    assert job["error"].startswith("node 'load' failed:") and "missing.png" in job["error"]
    assert job["nodes"]["load"]["status"] == "failed" and job["nodes"]["save"]["upstream"] == "load"
    assert server.post("/jobs/f/rerun").json()["status"] == "queued"  # failed jobs can be rerun
    assert server.wait("f")["status"] == "failed"


def test_list_is_paginated_newest_first(server):
    for i in range(5):
        server.put(f"/jobs/p{i}", json={"workflow": workflow({"id": "w", "type": "test.write_text",
                                                              "params": {"text": str(i)}})})
    wait_for(lambda: all(server.get(f"/jobs/p{i}").json()["status"] == "done" for i in range(5)))
    page = server.get("/jobs", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 5 and [j["id"] for j in page["jobs"]] == ["p3", "p2"]
    assert server.get("/jobs", params={"status": "queued"}).json()["total"] == 0
    assert server.get("/jobs", params={"limit": 0}).status_code == 422
    assert server.get("/jobs", params={"status": "bogus"}).status_code == 422


def test_outputs_by_reference(server):
    wf = workflow({"id": "grad", "type": "imagebash.image.gradient", "params": {"width": 24, "height": 16}},
                  {"id": "luma", "type": "imagebash.image.mask_from_image"},
                  {"id": "n", "type": "test.gate", "params": {"path": "/"}},
                  links=[{"from": ["grad", "image"], "to": ["luma", "image"]}])
    r = server.put("/jobs/o", json={"workflow": wf, "targets": ["grad", "luma", "n"]})
    assert r.status_code == 201, r.text
    assert server.wait("o")["status"] == "done"
    r = server.get("/jobs/o/outputs/grad/image")
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-npy"
    img = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert img.shape == (1, 16, 24, 3) and img.dtype == np.float32
    r = server.get("/jobs/o/outputs/grad/image/frames/0")
    assert r.headers["content-type"] == "image/png"
    png = np.asarray(PILImage.open(io.BytesIO(r.content)))
    assert png.shape == (16, 24, 3)
    assert np.abs(png.astype(np.float32) / 255 - img[0]).max() <= 1 / 255 + 1e-6
    mask = server.get("/jobs/o/outputs/luma/mask/frames/0")
    assert mask.status_code == 200, mask.text
    assert np.asarray(PILImage.open(io.BytesIO(mask.content))).shape[:2] == (16, 24)
    assert server.get("/jobs/o/outputs/grad/image/frames/1").status_code == 404
    scalar = server.get("/jobs/o/outputs/n/float")
    assert scalar.headers["content-type"].startswith("application/json") and scalar.json() == {"value": 1.0}
    assert server.get("/jobs/o/outputs/n/float/frames/0").status_code == 422
    gone = server.get("/jobs/o/outputs/grad/nope")
    assert gone.status_code == 410 and "run the node again" in gone.json()["error"]
    server.state.client.release("o")  # the engine no longer keeps the job's values
    gone = server.get("/jobs/o/outputs/grad/image")
    assert gone.status_code == 410 and "no longer kept" in gone.json()["error"]


def test_a_clean_stop_leaves_the_running_job_interrupted_and_the_queue_for_later(tmp_path, monkeypatch):
    from tests.server.conftest import InProcess

    monkeypatch.setenv("IMAGEBASH_MODELS", str(tmp_path / "models"))
    door = tmp_path / "door"
    with InProcess(tmp_path / "srv") as s:
        s.put("/jobs/running", json={"workflow": workflow(gate("g", door))})
        s.put("/jobs/waiting", json={"workflow": workflow({"id": "w", "type": "test.write_text"})})
        assert wait_for(lambda: s.get("/jobs/running").json()["status"] == "running")
    # stopped (SIGTERM, Ctrl-C): the running job is interrupted, not cancelled; the queued one waits
    with InProcess(tmp_path / "srv") as s:
        job = s.get("/jobs/running").json()
        assert job["status"] == "interrupted" and job["nodes"]["g"]["status"] == "interrupted"
        assert s.wait("waiting")["status"] == "done"  # queued jobs run at the next start
        door.touch()
        assert s.post("/jobs/running/rerun").status_code == 200
        assert s.wait("running")["status"] == "done"
