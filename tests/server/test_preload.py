"""`serve --preload MODEL`: the checkpoint is loaded before the first job, as a job of its own
whose events carry the load progress (and log lines say so); the next workflow naming it finds
it loaded. A model that cannot be loaded fails its preload job with one line; the server serves."""

from __future__ import annotations

import logging

from tests.server.conftest import InProcess, workflow


def test_preload_loads_the_model_first_and_reports_progress(tmp_path, monkeypatch, caplog):
    from app.engine.executor import EngineSettings
    from tests.tiny_models import save_sd_folder

    models = tmp_path / "models"
    save_sd_folder(models / "checkpoints" / "tiny")  # a diffusers folder the models list names "tiny"
    monkeypatch.setenv("IMAGEBASH_MODELS", str(models))
    caplog.set_level(logging.INFO, logger="app.server")
    with InProcess(tmp_path / "srv", preload=("tiny", "missing.safetensors"),
                   settings=EngineSettings(device="cpu")) as s:
        first, second = s.state.preload_jobs
        job = s.wait(first, 120)
        assert job["status"] == "done", job
        assert job["nodes"]["model"]["status"] == "done"
        failed = s.wait(second, 60)
        assert failed["status"] == "failed" and "missing.safetensors" in failed["error"]
        assert "\n" not in failed["error"]
        events = [r["event"] for r in s.get("/events", params={"job": first}).json()["events"]]
        texts = [e.get("text") or "" for e in events if e["type"] == "NodeProgress"]
        assert any("loading SD 1.5 model tiny" in t for t in texts), texts
        logs = [e["message"] for e in events if e["type"] == "NodeLog"]
        assert any(m.startswith("tiny: SD 1.5 (sd1/base)") for m in logs), logs
        assert any("preload:" in r.getMessage() and "tiny" in r.getMessage() for r in caplog.records)
        manager = s.state.client.engine.services.get("models")
        assert manager.loads == 1
        r = s.put("/jobs/uses-it", json={"workflow": workflow(
            {"id": "m", "type": "imagebash.diffusion.load_model", "params": {"checkpoint": "tiny"}}),
            "targets": ["m"]})
        assert r.status_code == 201, r.text
        assert s.wait("uses-it", 60)["status"] == "done"
        assert manager.loads == 1  # already in memory: not read again
        assert len(s.state.jobs.list()["jobs"]) == 3
