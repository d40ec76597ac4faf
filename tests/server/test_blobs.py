"""Blobs and trees: chunked uploads that resume, refuse a wrong offset (409), a wrong hash (422,
dropped), an oversize blob (413, unread); Range downloads; trees built once; `blob:`/`tree:`
references resolved to paths that keep their names and never leave the data dir; and real
pixels: workflows/blend_and_grade.json run from uploaded samples gives the local run's image."""

from __future__ import annotations

import copy
import io
import json
import os

import numpy as np
import pytest
from PIL import Image as PILImage

from app.engine.client import LocalEngine
from app.engine.protocol import blob_ref, tree_hash, tree_ref
from app.graph.io import load
from app.paths import REPO_ROOT, WORKFLOWS
from tests.server.conftest import InProcess, sha, workflow
from tests.server.nodes_for_tests import make_registry

SAMPLES = REPO_ROOT / "resources" / "samples"


def put(server, digest, data, offset, total):
    return server.put(f"/blobs/{digest}", params={"offset": offset}, content=data,
                      headers={"X-Blob-Size": str(total)})


def test_chunked_upload_resumes_and_verifies(server):
    data = os.urandom(3 * 100_000 + 17)
    digest = sha(data)
    assert server.post("/blobs/missing", json={"hashes": [digest, digest]}).json() == {"missing": [digest]}
    assert server.client.head(f"/api/v1/blobs/{digest}", headers=server.h).status_code == 404
    r = put(server, digest, data[:100_000], 0, len(data))
    assert r.status_code == 200 and r.json()["received"] == 100_000
    # the connection dropped; the client asks where to resume
    status = server.get(f"/blobs/{digest}/upload").json()
    assert status == {"sha256": digest, "received": 100_000, "size": len(data), "complete": False}
    r = put(server, digest, data[50_000:150_000], 50_000, len(data))  # a stale offset
    assert r.status_code == 409 and r.json()["received"] == 100_000
    r = put(server, digest, data[100_000:], 100_000, len(data) + 1)  # another total than declared
    assert r.status_code == 409
    r = put(server, digest, data[100_000:], 100_000, len(data))
    assert r.status_code == 201 and r.json() == {"sha256": digest, "size": len(data)}
    assert server.post("/blobs/missing", json={"hashes": [digest]}).json() == {"missing": []}
    head = server.client.head(f"/api/v1/blobs/{digest}", headers=server.h)
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(data)
    assert put(server, digest, b"", 0, len(data)).status_code == 200  # already complete: nothing to send
    got = server.get(f"/blobs/{digest}")
    assert got.content == data
    part = server.get(f"/blobs/{digest}", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == data[1000:2000]
    stored = server.state.blobs.path(digest)
    assert oct(stored.stat().st_mode & 0o777) == "0o444"
    assert not list(server.state.blobs.partial_dir.iterdir())


def test_upload_survives_a_restart(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEBASH_MODELS", str(tmp_path / "models"))
    data = os.urandom(250_000)
    digest = sha(data)
    with InProcess(tmp_path / "srv") as s:
        assert put(s, digest, data[:90_000], 0, len(data)).json()["received"] == 90_000
    with InProcess(tmp_path / "srv") as s:  # a new process: the hash so far is read back from disk
        assert s.get(f"/blobs/{digest}/upload").json()["received"] == 90_000
        assert put(s, digest, data[90_000:], 90_000, len(data)).status_code == 201
        assert s.get(f"/blobs/{digest}").content == data


def test_bytes_that_do_not_match_the_hash_are_dropped(server):
    data = b"the real bytes" * 100
    digest = sha(data)
    r = put(server, digest, data[:-1] + b"!", 0, len(data))
    assert r.status_code == 422 and "hash to" in r.json()["error"]
    assert server.get(f"/blobs/{digest}/upload").json()["received"] == 0
    assert server.get(f"/blobs/{digest}").status_code == 404
    r = put(server, digest, data + b"more", 0, len(data))  # more bytes than declared
    assert r.status_code == 422 and server.get(f"/blobs/{digest}/upload").json()["received"] == 0
    assert put(server, digest, data, 0, len(data)).status_code == 201


def test_over_the_limit_is_413_before_any_byte(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEBASH_MODELS", str(tmp_path / "models"))
    with InProcess(tmp_path / "srv", max_upload=1000) as s:
        data = b"x" * 1001
        r = put(s, sha(data), data, 0, len(data))
        assert r.status_code == 413 and "--max-upload" in r.json()["error"]
        assert not list(s.state.blobs.partial_dir.iterdir())  # nothing was written
        assert put(s, sha(b"y" * 1000), b"y" * 1000, 0, 1000).status_code == 201


@pytest.mark.parametrize("path,params,headers", [
    ("/blobs/abc", {}, {"X-Blob-Size": "1"}),  # not a sha256
    (f"/blobs/{'0' * 64}", {}, {}),  # no X-Blob-Size
    (f"/blobs/{'0' * 64}", {"offset": -1}, {"X-Blob-Size": "1"}),
    (f"/blobs/{'0' * 64}", {}, {"X-Blob-Size": "-5"}),
])
def test_malformed_uploads_are_422(server, path, params, headers):
    r = server.put(path, params=params, content=b"x", headers=headers)
    assert r.status_code == 422 and set(r.json()) >= {"error"}


def test_trees_and_references_resolve_inside_the_data_dir(server):
    a, b = b"first file", b"second file"
    ha, hb = server.upload(a), server.upload(b)
    files = {"x/a.txt": ha, "b.txt": hb}
    r = server.post("/trees", json={"files": files})
    assert r.status_code == 200 and r.json() == {"tree": tree_hash(files), "missing": []}
    tree = r.json()["tree"]
    folder = server.state.blobs.tree_folder(tree)
    assert (folder / "x" / "a.txt").read_bytes() == a and (folder / "b.txt").read_bytes() == b
    assert server.state.blobs.tree_folder(tree) == folder  # built once
    wf = workflow({"id": "r", "type": "test.write_text", "params": {"text": blob_ref(hb, "notes.v2.txt")}},
                  {"id": "t", "type": "test.write_text", "params": {"text": tree_ref(tree), "name": "t.txt"}})
    graph = server.state.jobs.build(wf, None, server.state.jobs.job_dir("x"))
    path = graph.nodes["r"].params["text"]
    assert path.endswith("/notes.v2.txt") and open(path, "rb").read() == b  # keeps its name (and suffix)
    assert graph.nodes["t"].params["text"] == str(folder)
    unknown = "f" * 64
    r = server.post("/trees", json={"files": {"c.txt": unknown}})
    assert r.json()["missing"] == [unknown]
    r = server.put("/jobs/refs", json={"workflow": workflow(
        {"id": "l", "type": "imagebash.image.load", "params": {"path": blob_ref(unknown, "c.png")}})})
    assert r.status_code == 422 and "not on the server" in r.json()["error"]
    problem = r.json()["problems"][0]
    assert (problem["node_id"], problem["port"]) == ("l", "path") and unknown in problem["message"]
    r = server.put("/jobs/refs", json={"workflow": workflow(
        {"id": "l", "type": "imagebash.image.load", "params": {"path": tree_ref("0" * 64)}})})
    assert r.status_code == 422 and "POST /trees" in r.json()["error"]


@pytest.mark.parametrize("rel", ["../escape.txt", "a/../../escape.txt", "/etc/passwd", "C:\\Windows\\x",
                                 "a\\..\\..\\escape.txt", "a/\x00b", "", ".", "a//b", "./a"])
def test_path_like_tree_names_cannot_escape(server, rel):
    h = server.upload(b"payload")
    r = server.post("/trees", json={"files": {rel: h}})
    assert r.status_code == 422 and "\n" not in r.json()["error"]
    assert not (server.state.data_dir.parent / "escape.txt").exists()
    assert not list(server.state.blobs.tree_dir.glob("*.json"))


@pytest.mark.parametrize("name,stored", [("../../escape.png", "escape.png"), ("/etc/passwd", "passwd"),
                                         ("a\\..\\..\\escape.txt", "escape.txt"), ("..", None), ("", None),
                                         ("bad\x00name", None)])
def test_path_like_blob_names_cannot_escape(server, name, stored):
    h = server.upload(b"payload")
    ref = f"blob:{h}/{name}"
    wf = workflow({"id": "r", "type": "test.write_text", "params": {"text": ref}})
    r = server.put(f"/jobs/n{abs(hash(name))}", json={"workflow": wf})
    inputs = server.state.blobs.input_dir / h
    if stored is None:
        assert r.status_code == 422 and r.json()["problems"][0]["port"] == "text"
    else:
        assert r.status_code == 201
        assert [p.name for p in inputs.iterdir()] == [stored]
    escaped = [p for p in server.state.data_dir.parent.rglob("*") if p.name in ("escape.png", "escape.txt", "passwd")
               and inputs not in p.parents]
    assert not escaped


def test_a_file_that_is_both_file_and_folder_is_refused(server):
    h = server.upload(b"z")
    r = server.post("/trees", json={"files": {"a": h, "a/b": h}})
    assert r.status_code == 422 and "both a file and a folder" in r.json()["error"]


def _as_blobs(server, doc):
    """What the desktop does before submitting: upload each Load Image file, name it by hash."""
    doc = copy.deepcopy(doc)
    for n in doc["nodes"]:
        if n["type"] == "imagebash.image.load":
            p = (WORKFLOWS / n["params"]["path"]).resolve()
            n["params"]["path"] = blob_ref(server.upload(p.read_bytes()), p.name)
    return doc


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(data)).convert("RGB"))


def test_blend_and_grade_from_uploaded_samples_matches_a_local_run(server, tmp_path):
    doc = json.loads((WORKFLOWS / "blend_and_grade.json").read_text())
    r = server.put("/jobs/blend", json={"workflow": _as_blobs(server, doc)})
    assert r.status_code == 201, r.text
    job = server.wait("blend", 60)
    assert job["status"] == "done", job
    files = server.get("/jobs/blend/files").json()
    assert len(files) == 1 and files[0]["node_id"] == "save" and files[0]["kind"] == "image"
    entry = files[0]
    assert entry["path"].endswith(".png") and "/" not in entry["path"]
    half = entry["size"] // 2
    first = server.get(f"/blobs/{entry['sha256']}", headers={"Range": f"bytes=0-{half - 1}"})
    rest = server.get(f"/blobs/{entry['sha256']}", headers={"Range": f"bytes={half}-"})
    assert first.status_code == rest.status_code == 206
    data = first.content + rest.content
    assert len(data) == entry["size"] and sha(data) == entry["sha256"]
    local = LocalEngine(make_registry())
    try:
        result = local.submit(load(WORKFLOWS / "blend_and_grade.json"), None, tmp_path / "local").wait(60)
    finally:
        local.shutdown()
    assert result.ok
    expected = _pixels(next((tmp_path / "local").glob("*.png")).read_bytes())
    got = _pixels(data)
    assert got.shape == expected.shape == (384, 512, 3)
    assert np.array_equal(got, expected)


def test_load_folder_from_a_tree(server):
    pngs = sorted(SAMPLES.glob("*.png"))[:2]
    files = {p.name: server.upload(p.read_bytes()) for p in pngs}
    tree = server.post("/trees", json={"files": files}).json()["tree"]
    wf = workflow({"id": "f", "type": "imagebash.image.load_folder",
                   "params": {"folder": tree_ref(tree), "pattern": "*.png"}})
    r = server.put("/jobs/folder", json={"workflow": wf, "targets": ["f"]})
    assert r.status_code == 201, r.text
    assert server.wait("folder")["status"] == "done"
    batch = np.load(io.BytesIO(server.get("/jobs/folder/outputs/f/image").content), allow_pickle=False)
    assert batch.shape[0] == 2


def test_a_client_gone_mid_chunk_leaves_a_consistent_resume_point(tmp_path):
    import asyncio

    from starlette.requests import ClientDisconnect

    from app.server.blobs import WRITE_BYTES, BlobStore

    store = BlobStore(tmp_path)
    data = os.urandom(WRITE_BYTES * 3 + 12345)
    digest = sha(data)
    piece = WRITE_BYTES // 2

    async def dropped():  # 1.5 pieces' worth arrives, then the connection breaks
        for off in (0, piece, 2 * piece):
            yield data[off:off + piece]
        raise ClientDisconnect()

    async def rest(start: int):
        for off in range(start, len(data), 65536):
            yield data[off:off + 65536]

    async def scenario() -> tuple[int, dict]:
        with pytest.raises(ClientDisconnect):
            await store.receive(digest, 0, len(data), None, dropped())
        received = store.upload_status(digest)["received"]
        assert received == 3 * piece  # everything that arrived was kept, and hashed once
        return await store.receive(digest, received, len(data), None, rest(received))

    status, body = asyncio.run(scenario())
    assert status == 201 and body == {"sha256": digest, "size": len(data)}
    assert store.path(digest).read_bytes() == data
