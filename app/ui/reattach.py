"""Remote jobs outlive the window: each one in flight is remembered in Settings (engine URL, run
id, title, output folder) when it starts and forgotten when it ends, so a window started later
follows the ones still unfinished (`RunController.follow`: the queue shows them with their
progress, their files are downloaded into their output folder). Closing the window leaves them
running on their server; only a job the server no longer has, or one that ended, is forgotten.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject

from app.ui.runner import RunController, RunJob
from app.ui.settings import LOCAL, Settings


class InFlightJobs(QObject):
    """See the module docstring."""

    def __init__(self, settings: Settings, runner: RunController, engines: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.runner = runner
        self.engines = engines
        runner.jobStarted.connect(self._started)
        runner.jobFinished.connect(self._finished)

    def _started(self, job: RunJob) -> None:
        if job.engine_key != LOCAL and job.run_id:
            self.settings.remember_in_flight(job.engine_key, job.run_id, job.title, str(job.output_dir))

    def _finished(self, job: RunJob) -> None:
        if job.engine_key != LOCAL and job.run_id and not job.unreachable:
            self.settings.forget_in_flight(job.run_id)

    def reattach(self) -> list[RunJob]:
        """Follow every remembered job (on a worker thread each: nothing here waits on a server)."""
        jobs = []
        for item in self.settings.in_flight():
            url = item["url"]
            try:
                client = self.engines.client(url)
            except KeyError:
                self.settings.forget_in_flight(item["run_id"])
                continue
            jobs.append(self.runner.follow(client, item["run_id"], item.get("title", ""),
                                           item.get("output_dir") or str(self.settings.output_dir),
                                           url, self.engines.name(url)))
        return jobs
