"""The event log: numbered records in SQLite, pushed to every WebSocket; `after=` replays what a
client missed and then goes live with no gap and no duplicate; progress thinned to ~30/s per
node; the same records over HTTP; records turn back into engine events."""

from __future__ import annotations

import base64
import json
import statistics
import threading
import time

from app.engine import events as ev
from app.engine.client import PROGRESS_PER_SECOND
from app.engine.wire import decode_png
from tests.server.conftest import wait_for, workflow


def progress(steps: int, delay: float = 0.0, size: int = 8) -> dict:
    return {"id": "p", "type": "test.progress", "params": {"steps": steps, "delay": delay, "size": size}}


def records(server, **params) -> list[dict]:
    out, after = [], params.pop("after", 0)
    while True:
        page = server.get("/events", params={"after": after, "limit": 100, **params}).json()["events"]
        out += page
        if len(page) < 100:
            return out
        after = page[-1]["seq"]


def test_reconnect_with_after_replays_then_goes_live_without_gap_or_duplicate(server):
    server.put("/jobs/a", json={"workflow": workflow(progress(20))})
    assert server.wait("a")["status"] == "done"
    before = records(server)
    k = before[len(before) // 2]["seq"]
    server.put("/jobs/b", json={"workflow": workflow(progress(400, delay=0.005))})  # ~2 s of live events
    assert wait_for(lambda: any(r["job"] == "b" and r["event"]["type"] == "NodeProgress" for r in records(server)))
    got: list[dict] = []
    with server.client.websocket_connect(f"/api/v1/events?after={k}", headers=server.h) as ws:
        while True:  # connected mid-run: the replay and the live part meet while records keep coming
            rec = json.loads(ws.receive_text())
            got.append(rec)
            if rec["job"] == "b" and rec["event"]["type"] == "RunFinished":
                break
    seqs = [r["seq"] for r in got]
    assert seqs == list(range(k + 1, seqs[-1] + 1))  # every seq once, in order
    assert got == [r for r in records(server, after=k) if r["seq"] <= seqs[-1]]  # exactly what SQLite holds
    assert any(r["job"] == "a" for r in got) and got[-1]["event"]["type"] == "RunFinished"


def test_live_only_without_after_and_filtered_by_job(server, tmp_path):
    door = tmp_path / "door"
    server.put("/jobs/old", json={"workflow": workflow(progress(3))})
    server.wait("old")
    server.put("/jobs/live", json={"workflow": workflow(
        {"id": "g", "type": "test.gate", "params": {"path": str(door)}})})
    assert wait_for(lambda: server.get("/jobs/live").json()["status"] == "running")
    with server.client.websocket_connect("/api/v1/events?job=live", headers=server.h) as ws:
        threading.Timer(0.3, door.touch).start()
        types = []
        while True:
            rec = json.loads(ws.receive_text())
            assert rec["job"] == "live"
            types.append(rec["event"]["type"])
            if types[-1] == "RunFinished":
                break
    assert "RunStarted" not in types and types[-1] == "RunFinished"  # only what happened after connecting
    assert "NodeFinished" in types


def test_bad_after_is_refused(server):
    import pytest
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as err:
        with server.client.websocket_connect("/api/v1/events?after=-3", headers=server.h) as ws:
            ws.receive_text()
    assert err.value.code == 1008
    assert server.get("/events", params={"after": -1}).status_code == 422


def test_progress_is_thinned_per_node_and_keeps_previews(server):
    t0 = time.monotonic()
    server.put("/jobs/fast", json={"workflow": workflow(progress(3000, size=16))})
    assert server.wait("fast", 60)["status"] == "done"
    elapsed = time.monotonic() - t0
    prog = [r["event"] for r in records(server, job="fast") if r["event"]["type"] == "NodeProgress"]
    assert 2 <= len(prog) <= elapsed * PROGRESS_PER_SECOND + 3, (len(prog), elapsed)
    assert prog[-1]["fraction"] == 1.0  # the last step always passes
    png = base64.b64decode(prog[-1]["preview"]["b64"])
    assert decode_png(png).shape == (16, 16, 3)


def test_records_are_engine_events_on_the_wire(server):
    server.put("/jobs/w", json={"workflow": workflow(progress(2), {"id": "t", "type": "test.write_text"}),
                                "targets": ["p", "t"]})
    server.wait("w")
    recs = records(server, job="w")
    events = [ev.from_wire(r["event"]) for r in recs]
    assert isinstance(events[0], ev.RunStarted) and isinstance(events[-1], ev.RunFinished)
    assert all(e.run_id == "w" for e in events)
    finished = next(e for e in events if isinstance(e, ev.NodeFinished) and e.node_id == "p")
    summary = finished.outputs["image"]
    assert summary.kind == "Image" and summary.shape == (1, 8, 8, 3) and summary.ref.run_id == "w"
    file_rec = next(r for r in recs if r["event"]["type"] == "NodeFile")
    listed = server.get("/jobs/w/files").json()
    assert file_rec["file"] == listed[0] and listed[0]["path"] == "note.txt"  # the manifest entry rides along
    page = server.get("/events", params={"after": recs[0]["seq"], "limit": 2}).json()
    assert [r["seq"] for r in page["events"]] == [recs[1]["seq"], recs[2]["seq"]]
    assert page["last_seq"] >= recs[-1]["seq"]


def test_event_latency(server):
    """Engine emit -> WebSocket receipt, for live progress (printed; bounded loosely for slow CI)."""
    server.put("/jobs/warm", json={"workflow": workflow(progress(2))})
    server.wait("warm")
    delays = []
    with server.client.websocket_connect("/api/v1/events?job=lat", headers=server.h) as ws:
        server.put("/jobs/lat", json={"workflow": workflow(progress(40, delay=0.03))})
        while True:
            rec = json.loads(ws.receive_text())
            now = time.time()
            e = rec["event"]
            if e["type"] == "NodeProgress" and e["text"]:
                delays.append(now - float(e["text"][2:]))
            if e["type"] == "RunFinished":
                break
    assert len(delays) >= 20
    median = statistics.median(delays)
    print(f"\nevent latency over {len(delays)} progress events: median {median * 1000:.1f} ms, "
          f"max {max(delays) * 1000:.1f} ms")
    assert median < 0.5


def test_a_subscriber_that_falls_behind_is_told_to_reconnect(tmp_path):
    import asyncio

    import pytest

    from app.server.db import Database
    from app.server.hub import EventHub, Overflow

    hub = EventHub(Database(tmp_path / "db.sqlite3"), subscriber_limit=3)

    async def scenario() -> list[str]:
        got: list[str] = []
        stream = hub.replay_then_live(None)
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0.05)  # subscribed, waiting for live records
        for i in range(10):  # a burst the consumer does not read
            hub.append("j", {"type": "NodeLog", "n": i})
        got.append(await first)
        with pytest.raises(Overflow, match="reconnect with after="):
            async for text in stream:
                got.append(text)
        return got

    got = asyncio.run(scenario())
    assert 1 <= len(got) <= 4 and json.loads(got[0])["seq"] == 1
    assert hub.subscribers == 0
    assert [s for s, _ in hub.page(0, 100)] == list(range(1, 11))  # the log has them all for the replay
