"""One server's parts wired together: its data dir, SQLite file, event hub, blob store, job
worker, model index and the engine they all share.

Why a separate object: the FastAPI app (`app.create_app`) only translates HTTP to calls on
this, so tests can build a server in-process on a test registry, and `serve` builds the same
thing on the default registry. The engine is the one `imagebash run` uses (`LocalEngine` with
default settings, which keep recent outputs for fetching by reference).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.engine.client import LocalEngine
from app.engine.executor import EngineSettings
from app.engine.protocol import CHUNK_BYTES, DEFAULT_MAX_UPLOAD, VERSION
from app.server.blobs import BlobStore
from app.server.db import Database
from app.server.hub import EventHub
from app.server.jobs import JobError, Jobs, new_preload_id, preload_workflow
from app.server.models_api import ModelIndex

log = logging.getLogger(__name__)

DB_NAME = "server.sqlite3"


@dataclass
class ServerConfig:
    data_dir: Path
    token: str
    max_upload: int = DEFAULT_MAX_UPLOAD
    preload: tuple[str, ...] = ()
    settings: EngineSettings = field(default_factory=EngineSettings)


class ServerState:
    """Everything one server holds; `start()` once before serving, `close()` once after."""

    def __init__(self, config: ServerConfig, registry: Any = None) -> None:
        self.config = config
        self.data_dir = Path(config.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.token = config.token
        self.db = Database(self.data_dir / DB_NAME)
        self.hub = EventHub(self.db)
        self.blobs = BlobStore(self.data_dir, config.max_upload)
        self.client = LocalEngine(registry, config.settings)
        self.jobs = Jobs(self.db, self.hub, self.blobs, self.client, self.data_dir)
        self.models = ModelIndex(self.db)
        self.preload_jobs: list[str] = []
        self._started = False
        self._closed = False
        self._gpu: dict[str, Any] | None = None

    @property
    def registry(self) -> Any:
        return self.client.registry

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.registry.ensure_loaded()
        for err in self.registry.load_errors:
            log.warning("node pack failed to load: %s", err)
        self.jobs.start()
        queued = []
        for model in reversed(self.config.preload):  # each goes to the front: the first given runs first
            job_id = new_preload_id(model)
            try:
                self.jobs.submit(job_id, preload_workflow(model), ["model"], preload=True)
            except JobError as exc:
                log.error("--preload %s: %s", model, exc.message)
                continue
            queued.insert(0, job_id)
            log.info("preload: loading %s first (job %s)", model, job_id)
        self.preload_jobs = queued
        self.jobs.run()
        self.models.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._started:
            self.jobs.close()
            self.models.close()
        self.client.shutdown()
        self.db.close()

    def info(self) -> dict[str, Any]:
        """What GET /info says: version, device, GPU and its memory, model count, limits."""
        from app import __version__

        gpu = self._device_info()
        vram_free = None
        if gpu["device"] == "cuda":
            try:
                import torch

                vram_free = int(torch.cuda.mem_get_info()[0])
            except Exception:  # noqa: BLE001 - a busy or lost device reads as unknown
                vram_free = None
        counts = {"queued": 0, "running": 0}
        for row in self.db.rows("SELECT status, COUNT(*) AS n FROM jobs WHERE status IN ('queued', 'running') "
                                "GROUP BY status"):
            counts[row["status"]] = int(row["n"])
        from nodes.diffusion.catalog import list_checkpoints, list_loras

        return {"version": __version__, "protocol": VERSION, "device": gpu["device"], "gpu": gpu["gpu"],
                "vram_total": gpu["vram_total"], "vram_free": vram_free,
                "models": len(list_checkpoints()) + len(list_loras()),
                "loaded": sorted(self._loaded_names()),
                "max_upload": self.blobs.max_upload, "chunk_bytes": CHUNK_BYTES, "jobs": counts}

    def _loaded_names(self) -> set[str]:
        """The models in memory, by the names a client uses: a file name relative to the model
        folders (what /models lists), not the server's absolute paths."""
        names = self.client.loaded_models()
        return {n for n in names if not Path(n).is_absolute()}

    def _device_info(self) -> dict[str, Any]:
        """Device, GPU name and total memory: torch is imported here, on the first /info only."""
        if self._gpu is None:
            info: dict[str, Any] = {"device": "cpu", "gpu": None, "vram_total": None}
            try:
                from app.engine.devices import pick_device

                device = pick_device(self.config.settings.device)
                info["device"] = "cuda" if device.startswith("cuda") else device
                if info["device"] == "cuda":
                    import torch

                    props = torch.cuda.get_device_properties(0)
                    info["gpu"] = str(props.name)
                    info["vram_total"] = int(props.total_memory)
            except Exception as exc:  # noqa: BLE001 - no torch / a broken driver: say cpu, log why
                log.warning("cannot read the device: %s", exc)
            self._gpu = info
        return dict(self._gpu)
