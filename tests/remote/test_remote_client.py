"""The remote engine through its client, as the editor and the CLI use it: the same pixels as a
local run, inputs uploaded once by hash, personal models adopted, missing ones named before
anything runs, cancel, a server that dies and comes back, a client that restarts mid-run."""

from __future__ import annotations

import pathlib
import time

import numpy as np
import pytest
from PIL import Image as PILImage

from app.engine import EngineSettings, events
from app.engine.client import LocalEngine
from app.engine.remote import RemoteEngine, wait_for
from app.graph.io import load
from app.graph.model import Graph, Link, NodeInstance
from app.paths import WORKFLOWS
from tests.diffusion.conftest import txt2img_graph
from tests.server.conftest import wait_for as wait_until


def _follow(client, graph, targets=None, output_dir=None, run_id=None, timeout=60.0):
    seen: list[events.Event] = []
    client.subscribe(seen.append, throttle=False)
    handle = client.submit(graph, targets, output_dir, run_id=run_id)
    assert wait_until(lambda: handle.done, timeout), "the run did not finish"
    mine = [e for e in seen if e.run_id == handle.run_id]
    return handle, mine


def _local(graph, out, targets=None):
    local = LocalEngine(settings=EngineSettings(device="cpu"))
    try:
        return _follow(local, graph, targets, out)
    finally:
        local.shutdown()


def _pixels(path):
    with PILImage.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_a_workflow_run_remotely_gives_the_local_pixels_and_its_files_come_back(remote, tmp_path):
    graph = load(WORKFLOWS / "blend_and_grade.json")
    _handle, local_events = _local(graph, tmp_path / "local")
    client = remote()
    _handle, seen = _follow(client, graph, output_dir=tmp_path / "remote")
    assert [type(e).__name__ for e in seen][-1] == "RunFinished" and not seen[-1].failed
    (here,) = (tmp_path / "local").glob("*.png")
    (there,) = (tmp_path / "remote").glob("*.png")
    np.testing.assert_array_equal(_pixels(there), _pixels(here))
    files = [e.file for e in seen if isinstance(e, events.NodeFile)]
    assert [client.fetch_file(f) for f in files] == [there]  # a local path, already downloaded
    grade = next(e for e in seen if isinstance(e, events.NodeFinished) and e.node_id == "grade").outputs["image"]
    assert grade.shape == (1, 384, 512, 3) and grade.thumbnail
    expected = next(e for e in local_events if isinstance(e, events.NodeFinished) and e.node_id == "grade")
    assert grade.thumbnail == expected.outputs["image"].thumbnail
    np.testing.assert_array_equal(client.fetch(grade.ref)[0, :2, :2], client.fetch(grade.ref)[0, :2, :2])
    frame = client.fetch_frame(grade.ref, 0)
    assert frame.shape == (384, 512, 3) and frame.dtype == np.float32


def test_inputs_go_up_once_by_hash(remote, tmp_path):
    client = remote()
    sent: list[int] = []
    real = client.upload

    def counting(path, sha, size, progress=None):
        sent.append(size)
        return real(path, sha, size, progress)

    client.upload = counting
    graph = load(WORKFLOWS / "blend_and_grade.json")
    _follow(client, graph, output_dir=tmp_path / "a")
    first = sum(sent)
    assert first > 0
    sent.clear()
    _follow(client, graph, output_dir=tmp_path / "b")
    assert sum(sent) == 0  # the server has every input already: no byte is sent again


def test_a_personal_model_is_uploaded_and_adopted_and_gives_the_local_pixels(remote, tmp_path, tiny_sd_ckpt,
                                                                            tiny_sd_dir):
    graph = txt2img_graph(tiny_sd_ckpt, seed=3)
    graph.set_param("load", "config", str(tiny_sd_dir))
    save = NodeInstance("save", "imagebash.image.save", {"filename_prefix": "gen"})
    graph.add_node(save)
    graph.connect(Link("gen", "image", "save", "image"))
    _local(graph, tmp_path / "local")
    client = remote()
    assert tiny_sd_ckpt.name not in client.models("checkpoint")
    assert client.loaded_models() == set()  # the server holds no model yet
    _handle, seen = _follow(client, graph, output_dir=tmp_path / "remote", timeout=120)
    assert not seen[-1].failed and not seen[-1].error, [e for e in seen if isinstance(e, events.NodeFailed)]
    np.testing.assert_array_equal(_pixels(next((tmp_path / "remote").glob("gen_*.png"))),
                                  _pixels(next((tmp_path / "local").glob("gen_*.png"))))
    assert tiny_sd_ckpt.name in client.models("checkpoint")  # adopted: in the server's model list now
    assert tiny_sd_ckpt.name in client.loaded_models()  # and in memory: a pool sends it work first
    assert not any(pathlib.Path(n).is_absolute() for n in client.loaded_models())  # no server paths


def test_a_model_missing_on_the_server_is_one_line_before_anything_runs(remote, tmp_path):
    client = remote()
    graph = txt2img_graph("nowhere-v3.safetensors")
    handle, seen = _follow(client, graph, output_dir=tmp_path)
    (end,) = seen
    assert isinstance(end, events.RunFinished) and "'nowhere-v3.safetensors' is missing on the server" in end.error
    assert "\n" not in end.error
    assert all(j["id"] != handle.run_id for j in client.jobs()["jobs"])  # nothing was queued


def _gate_graph(door) -> Graph:
    """A job that runs until the file `door` exists (its node gives 1.0), then writes note.txt."""
    g = Graph()
    g.add_node(NodeInstance("g", "test.gate", {"path": str(door)}))
    return g


def _status(client, job_id: str) -> str | None:
    """The job's status on the server (None until the client's submit thread has put it there)."""
    try:
        return client.job(job_id)["status"]
    except LookupError:
        return None


def _gate_value(seen) -> float:
    return next(e for e in seen if isinstance(e, events.NodeFinished) and e.node_id == "g").outputs["float"].value


def test_cancel_reaches_the_running_node(remote, tmp_path):
    client = remote()
    seen: list[events.Event] = []
    client.subscribe(seen.append, throttle=False)
    handle = client.submit(_gate_graph(tmp_path / "never"), ["g"], tmp_path / "out")
    assert wait_until(lambda: any(isinstance(e, events.NodeStarted) and e.node_id == "g" for e in seen), 30)
    handle.cancel()
    assert wait_until(lambda: handle.done, 15)
    assert handle.finished.cancelled and client.job(handle.run_id)["status"] == "cancelled"


def test_a_killed_server_is_reported_and_its_job_reruns_after_a_restart(server, remote, tmp_path):
    client = remote()
    statuses: list[events.EngineStatus] = []
    seen: list[events.Event] = []
    client.subscribe(lambda e: statuses.append(e) if isinstance(e, events.EngineStatus) else None)
    client.subscribe(seen.append, throttle=False)
    door = tmp_path / "door"
    handle = client.submit(_gate_graph(door), ["g"], tmp_path / "out")
    assert wait_until(lambda: _status(client, handle.run_id) == "running", 30)
    server.kill()
    assert wait_for(client, handle, give_up_s=1.0) is None  # the client says the engine went away
    assert any(not s.connected and "went away" in s.message for s in statuses)
    server.start()
    assert wait_until(lambda: client.connected, 30)  # it reconnected by itself
    assert client.job(handle.run_id)["status"] == "interrupted"
    door.write_text("open")
    client.rerun(handle.run_id)
    assert wait_until(lambda: _status(client, handle.run_id) == "done", 30)
    assert wait_until(lambda: any(isinstance(e, events.NodeFinished) for e in seen), 10)
    assert _gate_value(seen) == 1.0  # the rerun's events reached the client that submitted it


def test_a_restarted_client_reattaches_and_sees_the_run_to_its_end(remote, tmp_path):
    door = tmp_path / "door"
    first = remote()
    handle = first.submit(_gate_graph(door), ["g"], tmp_path / "out", run_id="job-reattach")
    assert wait_until(lambda: _status(first, "job-reattach") == "running", 30)
    first.shutdown()  # the desktop closes mid-run

    again = remote()
    seen: list[events.Event] = []
    again.subscribe(seen.append, throttle=False)
    run = again.attach("job-reattach", tmp_path / "out")
    assert any(isinstance(e, events.NodeStarted) and e.node_id == "g" for e in seen)  # its progress so far
    door.write_text("open")
    assert wait_until(lambda: run.done, 30)
    assert [type(e).__name__ for e in seen].count("RunFinished") == 1 and not run.finished.failed
    assert _gate_value(seen) == 1.0 and handle.run_id == run.run_id


def test_a_wrong_token_and_an_absent_server_are_one_line(server, remote, tmp_path):
    from app.engine.remote import EngineUnavailable

    with pytest.raises(EngineUnavailable, match="refused the token"):
        remote(token="not-the-token").info()
    gone = RemoteEngine("http://127.0.0.1:9", "x", timeout=2)
    with pytest.raises(EngineUnavailable, match="cannot be reached"):
        gone.info()
    handle = gone.submit(load(WORKFLOWS / "blend_and_grade.json"), None, tmp_path)
    assert wait_until(lambda: handle.done, 10)
    assert "cannot be reached" in handle.finished.error
    gone.shutdown()


def test_progress_arrives_while_the_node_runs(remote, tmp_path):
    client = remote()
    times: list[float] = []
    client.subscribe(lambda e: times.append(time.time()) if isinstance(e, events.NodeProgress) and e.node_id else None)
    g = Graph()
    g.add_node(NodeInstance("p", "test.progress", {"steps": 20, "delay": 0.05}))
    _follow(client, g, output_dir=tmp_path)
    assert len(times) >= 10 and times[-1] - times[0] > 0.5  # streamed as they happen, not at the end


def test_an_interrupted_upload_resumes_where_the_server_stopped(remote, server, tmp_path):
    """Half a file already on the server (a dropped connection): the client sends only the rest."""
    import hashlib

    import httpx

    data = np.random.default_rng(5).bytes(3 << 20)
    f = tmp_path / "big.bin"
    f.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    half = len(data) // 2
    r = httpx.put(f"{server.url}/api/v1/blobs/{sha}", params={"offset": 0}, content=data[:half],
                  headers={**server.headers(), "X-Blob-Size": str(len(data))})
    assert r.status_code == 200
    client = remote()
    sent: list[int] = []
    client.upload(f, sha, len(data), lambda name, done, total: sent.append(done))
    assert sent == [len(data)] and client.missing([sha]) == []
    got = httpx.get(f"{server.url}/api/v1/blobs/{sha}", headers={**server.headers(), "Range": f"bytes={half}-"})
    assert got.status_code == 206 and got.content == data[half:]


def test_a_submit_whose_answer_is_lost_is_retried_and_stays_one_job(remote, tmp_path):
    """The server took the job, then the connection dropped before its answer arrived (a server
    killed right then, a tunnel hiccup): the client puts it again, gets 'already there' and
    follows that one job to its end, instead of calling it failed."""
    from app.engine.remote import EngineUnavailable

    client = remote()
    client.info()  # the engine answered once: a later drop is worth waiting out
    real = client._request
    lost: list[str] = []

    def drop_first_put_answer(method, path, **kw):
        r = real(method, path, **kw)
        if method == "PUT" and path.startswith("/jobs/") and not lost:
            lost.append(path)
            raise EngineUnavailable("the engine cannot be reached (RemoteProtocolError)", transient=True)
        return r

    client._request = drop_first_put_answer
    handle, seen = _follow(client, load(WORKFLOWS / "blend_and_grade.json"), output_dir=tmp_path)
    assert lost and not seen[-1].error and not seen[-1].failed
    assert [type(e).__name__ for e in seen].count("RunFinished") == 1
    assert sum(1 for j in client.jobs()["jobs"] if j["id"] == handle.run_id) == 1
    assert len(list(tmp_path.glob("*.png"))) == 1
